"""The integration kit: what a framework adapter (ChatCursor, CursorLLM, your own) shares, so the
adapter keeps only its framework's hooks and the conversion of messages and events.

- :class:`AdapterMixin`: mix into a pydantic framework model that has the usual cursorpipe fields
  (``model``, ``strategy``, ``backend_url``, ``agent_bin``, ``api_key``, ``max_retries``,
  ``timeout``, ``reasoning_effort``, ``max_tokens``, ``client``, ``session``). It gives client
  choice (an injected client, else one per event loop), runtime options from a call's keyword
  arguments (:class:`CallOptions`, with a warn-once for sampling parameters Cursor does not have),
  the turn's event stream (stateless, structured, or a turn of a bound session), sync streams that
  close themselves, and the session / lifecycle methods (``with_session``, ``aend_session``,
  ``end_session``, context managers, ``aclose``, ``close``).
- :func:`normalize_tool_choice`, :func:`extract_json`, :func:`estimate_tokens`,
  :func:`image_part`: the core's own rules, so adapters never re-implement them.

- :class:`EventTranslator`: the base of an adapter's event conversion; it folds the turn with
  :class:`~cursorpipe.TurnAccumulator` and calls one hook per kind of event a framework shows.

Adapters build :class:`~cursorpipe.ChatMessage` objects directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._bridge import SyncBridge
from ._client_cache import client_for_loop, close_clients
from ._fold import TurnAccumulator
from ._session_binding import SessionBinding
from ._structured import extract_json
from ._tool_choice import normalize_tool_choice
from .errors import ConfigurationError
from .types import (
    ChatMessage,
    Event,
    ImagePart,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolCallEvent,
    TurnEnd,
    TurnRequest,
    Usage,
    _parse_image_url,
    estimate_tokens,
)

if TYPE_CHECKING:
    from typing import Self

    from .client import CursorClient
    from .session import CursorSession

__all__ = [
    "AdapterMixin",
    "CallOptions",
    "EventTranslator",
    "estimate_tokens",
    "extract_json",
    "image_part",
    "normalize_tool_choice",
    "session_prompt",
    "sync_stream",
]

log = logging.getLogger("cursorpipe.integration")

T = TypeVar("T")
R = TypeVar("R")

#: Sampling parameters framework callers set that no Cursor transport has.
IGNORED_SAMPLING = ("temperature", "top_p", "seed")


def image_part(url: str) -> ImagePart:
    """An image given as a ``data:`` URL (base64) or an ``http(s)`` URL, as the core takes it.

    Raises :class:`~cursorpipe.ConfigurationError` for any other URL or bad base64."""
    return _parse_image_url(url)


def session_prompt(messages: Sequence[ChatMessage]) -> str:
    """The new messages of a session turn as the one user text a Cursor session takes.

    A single message is sent as is; several are joined, system instructions and earlier answers
    labelled, so the model reads them for what they are. Raises ``ConfigurationError`` without a
    user message or when a user message carries an image (session turns carry text only)."""
    if not any(m.role == "user" for m in messages):
        raise ConfigurationError("a session turn needs at least one new user message", code="invalid_request")
    for i, m in enumerate(messages):
        if m.role == "user" and m.images:
            raise ConfigurationError(
                f"messages[{i}]: session turns carry text only; send images in a stateless call",
                code="invalid_request",
            )
    if len(messages) == 1:
        return messages[0].text
    labels = {
        "system": "System instructions:\n{}",
        "user": "{}",
        "assistant": "(Earlier assistant answer: {})",
    }
    return "\n\n".join(labels.get(m.role, f"({m.role} message: {{}})").format(m.text) for m in messages)


def sync_stream(work: Callable[[], AsyncIterator[T]]) -> Generator[T, None, None]:
    """Iterate an async stream from sync code on the sync bridge; leaving early (``break``, an
    error, closing the generator) closes the async stream on the bridge loop, which cancels the
    Cursor run instead of leaving it streaming into nothing."""
    items = SyncBridge.default().iterate(work)
    try:
        yield from items
    finally:
        close = getattr(items, "close", None)
        if callable(close):
            close()


def _message_key(message: ChatMessage) -> tuple[str, str]:
    return (message.role, message.text)


@dataclass(frozen=True, slots=True)
class CallOptions:
    """One call's settings after the adapter's defaults and the call's keyword arguments."""

    model: str
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None
    tools: Sequence[Mapping[str, Any]] | None = None
    tool_choice: str | Mapping[str, Any] | None = None
    response_format: Mapping[str, Any] | None = None
    reasoning_effort: str | None = None
    parallel_tool_calls: bool = True

    def client_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``CursorClient.events``/``complete`` these options set
        (``response_format`` aside: it selects the structured path)."""
        return {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
            "timeout_s": self.timeout,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "reasoning_effort": self.reasoning_effort,
        }

    @property
    def first_tool_only(self) -> bool:
        """``parallel_tool_calls=False`` with tools: one tool call per answer."""
        return not self.parallel_tool_calls and bool(self.tools)


async def _structured_turn(
    client: CursorClient, messages: Sequence[ChatMessage], options: CallOptions
) -> AsyncGenerator[Event, None]:
    """A turn with a ``response_format``, validated (one repair round, then
    ``StructuredOutputError``) and ending in a :class:`~cursorpipe.ParsedOutput` before ``TurnEnd``.

    The one call site of structured output for every adapter: the core's validating stage
    (``validate=True``) holds each round's events until the round is judged, so a rejected answer
    never reaches the adapter."""
    events = client.events(
        options.model,
        messages,
        response_format=options.response_format,
        validate=True,
        **options.client_kwargs(),
    )
    async with aclosing(events) as stream:
        async for event in stream:
            yield event


class EventTranslator(Generic[R]):
    """Base of an adapter's translation of one turn's events into its framework's objects (``R``:
    a message chunk, a response).

    Every event is folded by :attr:`acc` (a :class:`~cursorpipe.TurnAccumulator`, the one answer
    to what the turn produced); :meth:`feed` then calls the hook for what a framework shows:
    :meth:`on_text` (model text; server notices and empty deltas never reach it, connect.md §7),
    :meth:`on_thinking`, :meth:`on_tool_delta`, :meth:`on_tool_call` and :meth:`on_end`. A hook
    returns the object to hand on, or ``None``; the defaults hand on nothing.
    """

    __slots__ = ("_hooks", "acc", "request")

    def __init__(self, request: TurnRequest) -> None:
        self.request = request
        """The turn as sent: its model names the answer when the transport reports none, its
        messages are the prompt of a usage estimate."""
        self.acc = TurnAccumulator()
        self._hooks: dict[type, Callable[[Any], R | None]] = {
            TextDelta: self._text,
            ThinkingDelta: self._thinking,
            ToolCallDelta: self.on_tool_delta,
            ToolCallEvent: self.on_tool_call,
            TurnEnd: self._end,
        }

    def feed(self, event: Event) -> R | None:
        """Fold ``event`` and return what the framework shows for it (``None``: nothing)."""
        self.acc.feed(event)
        hook = self._hooks.get(type(event))
        return hook(event) if hook is not None else None

    def _text(self, event: TextDelta) -> R | None:
        return None if event.notice or not event.text else self.on_text(event.text)

    def _thinking(self, event: ThinkingDelta) -> R | None:
        return self.on_thinking(event.text) if event.text else None

    def _end(self, event: TurnEnd) -> R | None:
        return self.on_end()

    def on_text(self, text: str) -> R | None:
        """A piece of the model's answer."""
        return None

    def on_thinking(self, text: str) -> R | None:
        """A piece of the model's reasoning."""
        return None

    def on_tool_delta(self, event: ToolCallDelta) -> R | None:
        """A piece of a streaming tool call."""
        return None

    def on_tool_call(self, event: ToolCallEvent) -> R | None:
        """A complete tool call (valid, or with ``error`` set)."""
        return None

    def on_end(self) -> R | None:
        """The turn ended (``acc`` holds its outcome)."""
        return None

    # -- what the final object reports ------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The model that answered (as the transport reported it, else the requested one)."""
        info = self.acc.info
        return info.model if info is not None and info.model else self.request.model

    @property
    def finish_reason(self) -> str:
        """OpenAI's ``finish_reason`` for the turn (``stop``, ``length``, ``tool_calls``, ...)."""
        return self.acc.stop_reason or "stop"

    @property
    def tools_emulated(self) -> bool:
        """Some tool call was parsed from the model's text (the transport has no tool channel)."""
        acc = self.acc
        return any(e.emulated for e in (*acc.tool_call_events, *acc.invalid_tool_calls))

    def usage(self) -> Usage:
        """The reported usage, else an estimate (``estimated=True``) from the request and answer."""
        return self.acc.usage_or_estimate(self.request)


class AdapterMixin:
    """Shared behaviour of cursorpipe's framework adapters; mix it in before the framework's base
    class (``class ChatCursor(AdapterMixin, BaseChatModel)``).

    The class sets :attr:`adapter_label` (its name in messages), :attr:`call_kwargs` (the call
    keyword arguments it accepts) and :attr:`adapter_log`, defines the fields listed in the
    module docstring plus two private attributes, ``_binding`` (``None``) and ``_warned_ignored``
    (``False``), and calls :meth:`_adapter_post_init` from ``model_post_init``.
    """

    adapter_label: ClassVar[str] = "model"
    call_kwargs: ClassVar[frozenset[str]] = frozenset()
    adapter_log: ClassVar[logging.Logger] = log
    """Where the adapter's warnings go (its own package's logger)."""

    if TYPE_CHECKING:
        model: str
        temperature: float | None
        max_tokens: int | None
        timeout: float | None
        max_retries: int | None
        reasoning_effort: str | None
        strategy: str | None
        backend_url: str | None
        agent_bin: str | None
        api_key: Any
        client: CursorClient | None
        session: CursorSession | None
        _binding: SessionBinding[ChatMessage] | None
        _warned_ignored: bool

        def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self: ...

    # -- set-up ------------------------------------------------------------------------------
    def _adapter_post_init(self) -> None:
        """Wrap a given ``session`` in a binding (never discarded by the adapter), and say once if
        sampling parameters were set that Cursor does not have."""
        if self.session is not None:
            self._binding = self._new_binding(self.session, owned=False)
        self._warn_ignored({name: getattr(self, name, None) for name in IGNORED_SAMPLING})

    def _new_binding(
        self, session: CursorSession | None = None, *, owned: bool = True
    ) -> SessionBinding[ChatMessage]:
        return SessionBinding(
            _message_key, label=self.adapter_label, reply_role="assistant", session=session, owned=owned
        )

    def _warn_ignored(self, values: Mapping[str, Any]) -> None:
        set_ = {name: value for name, value in values.items() if value is not None}
        if not set_ or self._warned_ignored:
            return
        self._warned_ignored = True
        self.adapter_log.warning(
            "%s: %s ignored: Cursor's API has no sampling parameters (temperature, top_p, "
            "seed); the model samples as Cursor configures it",
            self.adapter_label,
            ", ".join(f"{name}={value!r}" for name, value in set_.items()),
        )

    # -- clients -----------------------------------------------------------------------------
    def _config_overrides(self) -> dict[str, Any]:
        """The ``CursorPipeConfig`` fields this adapter's own fields override."""
        overrides: dict[str, Any] = {
            name: value
            for name, value in (
                ("strategy", self.strategy),
                ("backend_url", self.backend_url),
                ("agent_bin", self.agent_bin),
            )
            if value
        }
        if self.api_key is not None and self.api_key.get_secret_value():
            overrides["api_key"] = self.api_key.get_secret_value()
        if self.max_retries is not None:
            overrides["max_retries"] = self.max_retries
        if self.timeout is not None:
            overrides["request_timeout_s"] = self.timeout
        return overrides

    def _client(self) -> CursorClient:
        """The injected client, else the running loop's client for this configuration."""
        if self.client is not None:
            return self.client
        return client_for_loop(self._config_overrides())

    # -- options -----------------------------------------------------------------------------
    def _call_options(self, kwargs: Mapping[str, Any], *, stop: Sequence[str] | None = None) -> CallOptions:
        """The call's :class:`CallOptions`: its keyword arguments over the adapter's fields.

        An argument outside :attr:`call_kwargs` is a ``ConfigurationError`` naming it."""
        unknown = sorted(set(kwargs) - self.call_kwargs)
        if unknown:
            raise ConfigurationError(
                f"{self.adapter_label} does not understand the call argument(s) {', '.join(unknown)}; "
                f"supported: {', '.join(sorted(self.call_kwargs - {'stream'}))}",
                code="invalid_request",
            )
        model = kwargs.get("model") or self.model
        if not isinstance(model, str):
            raise ConfigurationError("model must be a string", code="invalid_request")
        self._warn_ignored({name: kwargs.get(name) for name in IGNORED_SAMPLING})
        return CallOptions(
            model=model,
            temperature=kwargs.get("temperature", self.temperature),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            stop=list(stop) if stop else None,
            timeout=kwargs.get("timeout", self.timeout),
            tools=kwargs.get("tools"),
            tool_choice=kwargs.get("tool_choice"),
            response_format=kwargs.get("response_format"),
            reasoning_effort=kwargs.get("reasoning_effort", self.reasoning_effort),
            parallel_tool_calls=kwargs.get("parallel_tool_calls") is not False,
        )

    # -- turns -------------------------------------------------------------------------------
    def _turn_events(
        self, messages: Sequence[ChatMessage], options: CallOptions
    ) -> AsyncGenerator[Event, None]:
        """The events of one turn: a turn of the bound session, a structured turn (with a
        ``response_format``), or a plain stateless turn."""
        binding = self._binding
        if binding is not None:
            return self._session_turn(binding, messages, options)
        if options.response_format is not None:
            return _structured_turn(self._client(), messages, options)
        return self._client().events(options.model, messages, **options.client_kwargs())

    async def _session_turn(
        self, binding: SessionBinding[ChatMessage], messages: Sequence[ChatMessage], options: CallOptions
    ) -> AsyncGenerator[Event, None]:
        if options.tools or options.response_format is not None:
            # A Cursor session takes one user text per turn; tool results and schemas travel in
            # stateless calls, which carry the whole exchange.
            raise ConfigurationError(
                "tools and structured output are not supported on session-bound calls; use the "
                f"{self.adapter_label} without with_session() for them",
                code="invalid_request",
            )
        binding.check_loop()
        if binding.lock is None:
            binding.lock = asyncio.Lock()
        async with binding.lock:
            new = binding.new_messages(messages)
            text = session_prompt(new)
            if binding.session is None:
                binding.session = await self._client().create_session(options.model)
            reply: list[str] = []
            events = binding.session.events(
                text,
                timeout_s=options.timeout,
                stop=options.stop,
                max_tokens=options.max_tokens,
                reasoning_effort=options.reasoning_effort,
            )
            async with aclosing(events) as stream:
                async for event in stream:
                    if type(event) is TextDelta and not event.notice:
                        reply.append(event.text)
                    yield event
            binding.record(messages, new, "".join(reply))

    # -- sessions ----------------------------------------------------------------------------
    def with_session(self) -> Self:
        """A copy bound to a new Cursor conversation (opened on the first call).

        Cursor keeps the history: pass the whole conversation or only the new messages, and only
        what Cursor has not seen is sent. Use it as a context manager (``with`` for sync calls,
        ``async with`` for async ones) or call ``end_session()`` / ``aend_session()`` when done.
        """
        bound = self.model_copy(update={"session": None})
        bound._binding = self._new_binding()
        return bound

    @property
    def session_id(self) -> str | None:
        """Cursor's id of the bound conversation (``None`` when unbound or not opened yet)."""
        return self._binding.session_id if self._binding is not None else None

    async def aend_session(self) -> None:
        """Discard the bound Cursor conversation (a later call opens a new one). Idempotent."""
        if self._binding is not None:
            await self._binding.aend()

    def end_session(self) -> None:
        """Sync twin of :meth:`aend_session` for sessions used through sync calls."""
        if self._binding is not None:
            self._binding.end()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end_session()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aend_session()

    # -- lifecycle ---------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the client this object built for the running loop (injected clients are left to
        their owner). The next call builds a fresh one."""
        await self.aend_session()
        if self.client is None:
            await close_clients(self._config_overrides())

    def close(self) -> None:
        """Close the client this object built for sync calls (on the sync bridge's loop)."""
        self.end_session()
        if self.client is None:
            overrides = self._config_overrides()
            SyncBridge.default().run(lambda: close_clients(overrides))
