"""Serving the emulator: Hypercorn on a loopback socket (HTTP/1.1 and h2c prior knowledge)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from ...errors import ConfigurationError
from ._app import EmulatorState, RecordedRequest, make_app
from ._behaviour import Behaviour, Fault
from ._turn import RunRecord

__all__ = ["DEFAULT_API_KEY", "Emulator"]

#: The API key the emulator accepts unless told otherwise.
DEFAULT_API_KEY = "crsr_emulator_test_key"

_INSTALL_HINT = (
    "The Cursor API emulator needs Hypercorn, which comes with the cursorpipe-testing distribution: "
    'pip install "cursorpipe-testing @ git+https://github.com/cursorpipe/cursorpipe#subdirectory=packages/testing"'
)


def _import_hypercorn() -> tuple[Any, Any]:
    try:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config
    except ImportError as exc:
        raise ConfigurationError(_INSTALL_HINT, code="missing_extra") from exc
    _patch_hypercorn_h2()
    return serve, Config


def _patch_hypercorn_h2() -> None:
    """Drop DATA for streams Hypercorn has already closed instead of crashing the connection.

    Hypercorn (0.17, 0.18) removes an HTTP/2 stream as soon as the response is complete; when the
    client's DATA (often just the empty END_STREAM frame of a full-duplex ``Run``, which clients send
    after the server's end-stream) arrives afterwards, ``H2Protocol._handle_events`` raises KeyError
    and the whole connection, with every other stream on it, is torn down. RFC 9113 §5.1 says frames
    on a closed stream are to be ignored here; this wrapper does exactly that. Idempotent.
    """
    import h2.events
    from hypercorn.protocol.h2 import H2Protocol

    original = H2Protocol._handle_events
    if getattr(original, "_cursorpipe_patched", False):
        return

    async def handle_events(self: Any, events: list[Any]) -> None:
        # One event at a time: a RequestReceived earlier in the batch creates the stream its
        # DataReceived needs, so the check must happen after the preceding events were handled.
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                with contextlib.suppress(Exception):  # keep the connection window open
                    self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                continue
            await original(self, [event])
        if not events:
            await original(self, [])

    handle_events._cursorpipe_patched = True  # type: ignore[attr-defined]
    H2Protocol._handle_events = handle_events  # type: ignore[method-assign]


class Emulator:
    """A faithful stand-in for Cursor's backend on 127.0.0.1 (a real Connect server).

    Use as ``async with Emulator() as emu:`` (random free port) or, from sync code,
    ``with Emulator.start_in_thread() as emu:``. ``emu.url`` is the base URL for
    ``CURSOR_BACKEND_URL``/``backend_url``; ``emu.api_key`` is the API key it accepts, and
    ``accounts`` (API key -> account name) adds more, one account each (``emu.account_of(token)``
    says whose credentials a request carried).
    ``emu.inject(Fault.X)`` makes the next request of that kind fail; ``emu.requests`` and
    ``emu.runs`` record what happened. ``emu.behaviour`` may be changed between turns.
    """

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: Mapping[str, str] | None = None,
    ) -> None:
        self._state = EmulatorState(behaviour or Behaviour(), api_key, accounts)
        self._host = host
        self._port = port
        self._shutdown: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._bound_port: int | None = None

    # -- public state --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (serves HTTP/1.1 and h2c)."""
        if self._bound_port is None:
            raise RuntimeError("the emulator is not running")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._bound_port}"

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._bound_port is None:
            raise RuntimeError("the emulator is not running")
        return self._bound_port

    @property
    def api_key(self) -> str:
        """The main API key (keys that are neither this one nor in ``accounts`` get 401)."""
        return self._state.api_key

    def account_of(self, token: str) -> str | None:
        """The account an access token was issued to: ``"user_emulated"`` for ``api_key``, the name
        given in ``accounts`` for the other keys; ``None`` for a token the emulator did not issue."""
        return self._state.account_of(token)

    @property
    def behaviour(self) -> Behaviour:
        """The live behaviour; assign fields (or a new Behaviour) to change later turns."""
        return self._state.behaviour

    @behaviour.setter
    def behaviour(self, value: Behaviour) -> None:
        self._state.behaviour = value

    @property
    def models(self) -> list[str]:
        """Ids of the models the emulator serves."""
        return [m.id for m in self._state.behaviour.models]

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request received, in arrival order."""
        return self._state.requests

    @property
    def runs(self) -> list[RunRecord]:
        """One record per agent run (``Run`` or ``RunSSE``), in start order."""
        return self._state.runs

    @property
    def tokens_issued(self) -> int:
        """How many access tokens ``/auth/exchange_user_api_key`` has issued."""
        return self._state.tokens_issued

    def inject(self, fault: Fault, *, times: int = 1, **params: Any) -> None:
        """Make the next ``times`` requests of the fault's kind fail that way.

        ``Fault.UNAUTHENTICATED_EXCHANGE`` applies to the token exchange, every other fault to the
        next agent run. Parameters: ``seconds`` (``STALL``, ``SLOW_FIRST_TOKEN``, ``TOKEN_DELAY``),
        ``retry_after`` (``RATE_LIMIT``, default 1; ``HTTP_ERROR``), ``status`` (``HTTP_ERROR``,
        default 429). Thread-safe.
        """
        self._state.inject(fault, times, **params)

    @property
    def pending_faults(self) -> list[Fault]:
        """Faults injected but not yet used."""
        return self._state.pending_faults()

    def clear(self) -> None:
        """Forget recorded requests and runs (scheduled faults stay)."""
        self._state.requests.clear()
        self._state.runs.clear()

    def paths(self) -> list[str]:
        """The paths of all recorded requests, in order (handy for assertions)."""
        return [r.path for r in self._state.requests]

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start serving; returns once the socket accepts connections."""
        if self._task is not None:
            raise RuntimeError("the emulator is already running")
        serve, config_cls = _import_hypercorn()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(128)  # connections queue from now on, before Hypercorn's accept loop runs
        sock.setblocking(False)
        self._bound_port = sock.getsockname()[1]
        config = config_cls()
        config.bind = [f"fd://{sock.detach()}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("cursorpipe.testing.emulator.server")
        config.graceful_timeout = 1.0
        config.keep_alive_timeout = 30.0
        self._shutdown = asyncio.Event()
        app = make_app(self._state)
        self._task = asyncio.create_task(
            serve(app, config, shutdown_trigger=self._shutdown.wait, mode="asgi")
        )
        await asyncio.sleep(0)
        if self._task.done():
            self._task.result()  # surface a start-up failure

    async def stop(self) -> None:
        """End live turns, stop serving and release the port."""
        if self._task is None or self._shutdown is None:
            return
        self._state.close_all()
        self._shutdown.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=5.0)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        finally:
            self._task = None
            self._shutdown = None

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def start_in_thread(
        cls,
        behaviour: Behaviour | None = None,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: Mapping[str, str] | None = None,
    ) -> Iterator[Emulator]:
        """Run an emulator on its own event loop in a daemon thread (for sync code and notebooks)."""
        emu = cls(behaviour, api_key=api_key, host=host, port=port, accounts=accounts)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        errors: list[BaseException] = []
        stop_event: list[asyncio.Event] = []

        async def main() -> None:
            try:
                await emu.start()
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            stop = asyncio.Event()
            stop_event.append(stop)
            ready.set()
            await stop.wait()
            await emu.stop()

        thread = threading.Thread(
            target=loop.run_until_complete, args=(main(),), daemon=True, name="emulator"
        )
        thread.start()
        ready.wait(30)
        try:
            if errors:
                raise errors[0]
            if not stop_event:
                raise RuntimeError("the emulator did not start within 30 s")
            yield emu
        finally:
            if stop_event:
                loop.call_soon_threadsafe(stop_event[0].set)
            thread.join(15)
            if not thread.is_alive():
                loop.close()
