"""Request building: a caller's arguments become one validated, transport-neutral
:class:`~cursorpipe.types.TurnRequest` (``CursorClient.build_request`` is
:meth:`RequestBuilder.build_request`).

Every surface (client, sessions, the server, the adapters) builds its requests here, so argument
checks, the system-prompt order (system, then the ``response_format`` instructions, then the
conversation) and the defaults taken from the configuration are the same everywhere.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._structured import ResponseFormat, parse_response_format
from ..errors import ConfigurationError
from ..types import ChatMessage, ToolHandler, ToolSpec, TurnRequest, normalize_messages

if TYPE_CHECKING:
    from ..config import CursorPipeConfig

__all__ = ["REASONING_EFFORTS", "REQUEST_ARGS", "RequestBuilder", "model_name"]

#: OpenAI's ``reasoning_effort`` values (plus ``none``/``xhigh`` that newer models take).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")


def model_name(config: CursorPipeConfig, model: str | None) -> str:
    """``model`` stripped, or the configured default when it is empty."""
    return (model or "").strip() or config.default_model


class RequestBuilder:
    """Gives a class holding a configuration (``_config``) the public ``build_request``; the
    client inherits it, so the argument list is written once."""

    _config: CursorPipeConfig

    def build_request(
        self,
        model: str | None,
        messages: Sequence[Mapping[str, Any] | ChatMessage] | None = None,
        *,
        prompt: str | None = None,
        system: str | None = None,
        temperature: float | None = 0,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        tools: Sequence[ToolSpec | Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        tool_handler: ToolHandler | None = None,
        reasoning_effort: str | None = None,
    ) -> TurnRequest:
        """Validate arguments and build the transport-neutral request.

        ``reasoning_effort`` (OpenAI's names: ``minimal``, ``low``, ``medium``, ``high``,
        ``xhigh``) is mapped to the model's effort parameter by the transport. ``response_format``
        is parsed (its schema checked) into ``TurnRequest.response_format``; a bad argument is a
        :class:`~cursorpipe.errors.ConfigurationError`."""
        config = self._config
        fmt = parse_response_format(response_format)
        msgs = _messages(system, fmt, messages, prompt)
        if max_tokens is not None and max_tokens < 1:
            raise ConfigurationError("max_tokens must be at least 1", code="invalid_request")
        if timeout_s is not None and timeout_s <= 0:
            raise ConfigurationError("timeout_s must be positive", code="invalid_request")
        return TurnRequest(
            model=model_name(config, model),
            messages=tuple(msgs),
            mode=config.default_mode,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout_s=timeout_s if timeout_s is not None else config.request_timeout_s,
            tools=tuple(_tool_spec(t) for t in tools or ()),
            tool_choice=tool_choice,
            tool_handler=tool_handler,
            tool_result_timeout_s=config.tool_result_timeout_s,
            reasoning_effort=_effort(reasoning_effort),
            response_format=fmt,
        )

    def _request_from(self, args: Mapping[str, Any]) -> TurnRequest:
        """``build_request`` from a public method's own arguments (its ``locals()``), so methods
        that take the request arguments and more (``events``, ``complete``) forward them without
        repeating the list."""
        return self.build_request(**{name: args[name] for name in REQUEST_ARGS})


#: The parameter names of :meth:`RequestBuilder.build_request`.
REQUEST_ARGS: tuple[str, ...] = tuple(inspect.signature(RequestBuilder.build_request).parameters)[1:]


def _messages(
    system: str | None,
    fmt: ResponseFormat | None,
    messages: Sequence[Mapping[str, Any] | ChatMessage] | None,
    prompt: str | None,
) -> list[ChatMessage]:
    """System prompt, then the format's instructions, then the conversation and the prompt."""
    msgs: list[ChatMessage] = []
    if system:
        msgs.append(ChatMessage.of("system", system))
    if fmt is not None:
        msgs.append(ChatMessage.of("system", fmt.instructions()))
    if messages is not None:
        msgs.extend(normalize_messages(messages))
    if prompt is not None:
        if not isinstance(prompt, str):
            raise ConfigurationError("prompt must be a string", code="invalid_request")
        msgs.append(ChatMessage.of("user", prompt))
    if not any(m.role != "system" for m in msgs):
        raise ConfigurationError("a request needs at least one user message", code="invalid_request")
    return msgs


def _effort(value: str | None) -> str | None:
    """Normalise ``reasoning_effort``; a value outside OpenAI's names is a typed error."""
    if value is None:
        return None
    if not isinstance(value, str) or value.strip().lower() not in REASONING_EFFORTS:
        raise ConfigurationError(
            f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)} (got {value!r}).",
            code="invalid_request",
        )
    return value.strip().lower()


def _tool_spec(tool: ToolSpec | Mapping[str, Any]) -> ToolSpec:
    if isinstance(tool, ToolSpec):
        return tool
    fn = tool.get("function", tool)
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ConfigurationError("each tool needs a function name", code="invalid_request")
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    return ToolSpec(name=fn["name"], description=str(fn.get("description") or ""), parameters=params)
