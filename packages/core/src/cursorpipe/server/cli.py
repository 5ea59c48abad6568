"""``cursorpipe-server``: run the OpenAI-compatible server.

Settings come from ``CURSORPIPE_*`` environment variables and ``.env``; flags override them.
Secrets are never taken on the command line (argv is visible to every local user): the bearer
token comes from ``CURSORPIPE_BEARER_TOKEN`` or the variable named by ``--bearer-token-env``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import ipaddress
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

import uvicorn

from .._constants import SERVER_DRAIN_TIMEOUT_S, SERVER_KEEPALIVE_S
from ..config import CursorPipeConfig, Strategy
from ..errors import ConfigurationError
from ._http import ThrottleFilter, auto_max_connections, hardened_protocol

__all__ = ["build_parser", "check_bind", "config_from_args", "main", "serve", "uvicorn_config"]

log = logging.getLogger("cursorpipe.server")

#: After SIGTERM, readiness is 503 this long before the listener closes.
READY_GRACE_S = 1.0
#: Largest request head (request line and headers) accepted.
H11_MAX_HEAD_BYTES = 32 * 1024

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def build_parser(prog: str = "cursorpipe-server") -> argparse.ArgumentParser:
    """The argument parser (shared with ``cursorpipe serve``)."""
    p = argparse.ArgumentParser(
        prog=prog,
        # no prefix matching: "--bearer-token SECRET" must not silently become --bearer-token-env
        allow_abbrev=False,
        description="OpenAI-compatible API over the models of your Cursor subscription. "
        "Every flag defaults to its CURSORPIPE_* environment variable (or .env).",
        epilog="Secrets never go on the command line: set CURSOR_API_KEY and CURSORPIPE_BEARER_TOKEN in the "
        "environment or .env. Binding a non-loopback address requires a bearer token unless "
        "--allow-insecure-bind (CURSORPIPE_ALLOW_INSECURE_BIND=1) is given.",
    )
    add = p.add_argument
    add("--host", help="bind address (CURSORPIPE_HOST, default 127.0.0.1)")
    add("--port", type=int, help="port (CURSORPIPE_PORT, default 8080)")
    add(
        "--strategy",
        choices=[s.value for s in Strategy],
        help="transport (CURSORPIPE_STRATEGY, default auto)",
    )
    add("--pool-size", type=int, help="sessions pre-warmed at start (CURSORPIPE_POOL_SIZE, default 5)")
    add("--default-model", help="model used when a request names none (CURSORPIPE_DEFAULT_MODEL)")
    add("--agent-bin", help="Cursor CLI executable for acp/subprocess (CURSORPIPE_AGENT_BIN)")
    add("--backend-url", help="Cursor API base for the connect transport (CURSORPIPE_BACKEND_URL)")
    add("--workspace", help="working directory given to the agent (CURSORPIPE_WORKSPACE)")
    add(
        "--bearer-token-env",
        metavar="VAR",
        help="read the bearer token clients must send from environment variable VAR "
        "(default: CURSORPIPE_BEARER_TOKEN)",
    )
    add(
        "--allow-insecure-bind",
        action="store_true",
        default=None,
        help="allow a non-loopback bind without a bearer token (CURSORPIPE_ALLOW_INSECURE_BIND)",
    )
    add(
        "--strict-params",
        action="store_true",
        default=None,
        help="reject request fields cursorpipe cannot honour with 400 (CURSORPIPE_STRICT_PARAMS); "
        "default: accept them and list them in the x-cursorpipe-ignored-params header",
    )
    add(
        "--max-concurrency", type=int, help="requests served at once (CURSORPIPE_MAX_CONCURRENCY, default 32)"
    )
    add(
        "--queue-timeout",
        type=float,
        metavar="SECONDS",
        help="wait for a free slot before answering 429 (CURSORPIPE_QUEUE_TIMEOUT_S, default 5)",
    )
    add(
        "--request-timeout",
        type=float,
        metavar="SECONDS",
        help="deadline per request (CURSORPIPE_REQUEST_TIMEOUT_S)",
    )
    add(
        "--session-idle",
        type=float,
        metavar="SECONDS",
        help="idle expiry of sessions (CURSORPIPE_SESSION_IDLE_S)",
    )
    add(
        "--cors-origins",
        metavar="LIST",
        help="comma-separated CORS origins (CURSORPIPE_CORS_ORIGINS; off by default)",
    )
    add("--log-level", choices=_LOG_LEVELS, help="log level (CURSORPIPE_LOG_LEVEL, default info)")
    add(
        "--drain-timeout",
        type=float,
        default=SERVER_DRAIN_TIMEOUT_S,
        metavar="SECONDS",
        help=f"on SIGTERM, let in-flight requests finish this long (default {SERVER_DRAIN_TIMEOUT_S:g})",
    )
    add(
        "--keepalive",
        type=float,
        default=SERVER_KEEPALIVE_S,
        metavar="SECONDS",
        help=f"SSE keep-alive comment interval while the model is silent (default {SERVER_KEEPALIVE_S:g})",
    )
    add(
        "--emulator",
        action="store_true",
        help="offline mode: serve from the built-in Cursor API emulator (fake answers, no account needed)",
    )
    return p


_FLAG_FIELDS = {
    "host": "host",
    "port": "port",
    "strategy": "strategy",
    "pool_size": "pool_size",
    "default_model": "default_model",
    "agent_bin": "agent_bin",
    "backend_url": "backend_url",
    "workspace": "workspace",
    "allow_insecure_bind": "allow_insecure_bind",
    "strict_params": "strict_params",
    "max_concurrency": "max_concurrency",
    "queue_timeout": "queue_timeout_s",
    "request_timeout": "request_timeout_s",
    "session_idle": "session_idle_s",
    "cors_origins": "cors_origins",
    "log_level": "log_level",
}


def config_from_args(args: argparse.Namespace, **forced: Any) -> CursorPipeConfig:
    """Environment/.env settings overridden by the flags that were given (and ``forced``)."""
    overrides: dict[str, Any] = {
        field: getattr(args, flag) for flag, field in _FLAG_FIELDS.items() if getattr(args, flag) is not None
    }
    if args.bearer_token_env:
        token = os.environ.get(args.bearer_token_env, "")
        if not token:
            raise ConfigurationError(
                f"--bearer-token-env {args.bearer_token_env}: that environment variable is not set or empty."
            )
        overrides["bearer_token"] = token
        # The variable would otherwise be inherited by every child (the agent of acp/subprocess):
        # the token is the server's alone (issue 12 item 8).
        os.environ.pop(args.bearer_token_env, None)
    overrides.update(forced)
    return CursorPipeConfig(**overrides)


def _is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name could resolve anywhere: treat it as exposed


#: Shortest bearer token accepted on a non-loopback bind (a short one is guessable over the network).
MIN_TOKEN_CHARS = 16


def check_bind(config: CursorPipeConfig) -> str | None:
    """Why this bind is refused, or ``None``. Unlike the original cursorpipe (0.0.0.0, no auth),
    a non-loopback address needs a bearer token of at least ``MIN_TOKEN_CHARS`` characters or an
    explicit opt-out."""
    token = config.bearer_token.get_secret_value()
    if _is_loopback(config.host) or config.allow_insecure_bind:
        return None
    if token and len(token) < MIN_TOKEN_CHARS:
        return (
            f"Refusing to listen on {config.host!r} with a bearer token of {len(token)} characters: "
            f"use at least {MIN_TOKEN_CHARS} random characters (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`)."
        )
    if token:
        return None
    return (
        f"Refusing to listen on {config.host!r} without authentication: anyone who can reach this "
        "address could use your Cursor account.\n"
        "  Fix: set CURSORPIPE_BEARER_TOKEN=<a long random secret> (clients then send "
        "'Authorization: Bearer <it>'),\n"
        "  or bind 127.0.0.1 (the default), or, if the network is trusted, pass --allow-insecure-bind "
        "(or set CURSORPIPE_ALLOW_INSECURE_BIND=1)."
    )


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, flipping the app to "draining" (readiness 503, new requests 503) the
    moment SIGTERM/SIGINT arrives; uvicorn then waits for in-flight requests up to the drain
    timeout before the lifespan closes the client."""

    def __init__(self, config: uvicorn.Config, app: Any, *, drain_timeout_s: float = 0.0) -> None:
        super().__init__(config)
        self._app = app
        self._drain_timeout_s = drain_timeout_s

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                # uvicorn re-raises the captured signal after shutting down; a completed SIGTERM
                # drain is a clean exit (status 0) for supervisors, not death by signal.
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured[:] = [s for s in captured if s != signal.SIGTERM]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = getattr(getattr(self._app, "state", None), "cursorpipe", None)
        if state is None or state.phase == "draining" or self.should_exit:
            super().handle_exit(sig, frame)  # a second signal: uvicorn's own (forced) exit
            return
        state.begin_drain()
        log.info("received %s: draining in-flight requests", signal.Signals(sig).name)
        loop = state.loop
        if loop is not None and self._drain_timeout_s > 0:
            # Streams still open when the drain time is up end with an error event and [DONE]
            # (not a cut connection), just before uvicorn would cancel them.
            loop.call_soon_threadsafe(
                loop.call_later, max(0.0, self._drain_timeout_s - 0.25), state.end_streams
            )
        # Readiness is 503 from now on, but the listener stays open for READY_GRACE_S so load
        # balancers see the 503 and stop routing here before connections are refused.
        timer = threading.Timer(READY_GRACE_S, super().handle_exit, args=(sig, frame))
        timer.daemon = True
        timer.start()


def serve(app: Any, config: CursorPipeConfig, *, drain_timeout_s: float = SERVER_DRAIN_TIMEOUT_S) -> None:
    """Run ``app`` with uvicorn until SIGTERM/SIGINT, then drain gracefully."""
    # Everything built so far (modules, the app, the client) lives as long as the process: moved
    # out of the collector's sight, the cyclic collections that requests trigger no longer walk
    # it again and again (a measurable share of CPU per request with many open streams, issue
    # 16). Startup's own garbage is collected first so that none of it is kept forever.
    gc.collect()
    gc.freeze()
    _DrainingServer(
        uvicorn_config(app, config, drain_timeout_s=drain_timeout_s), app, drain_timeout_s=drain_timeout_s
    ).run()


def uvicorn_config(
    app: Any, config: CursorPipeConfig, *, drain_timeout_s: float = SERVER_DRAIN_TIMEOUT_S
) -> uvicorn.Config:
    """uvicorn's settings for ``app`` with the connection limits of issue 12 item 5: idle
    keep-alive and request-head deadlines, a header size cap, a connection cap below the
    open-file limit, and throttled logging of floods (accept errors, bad requests)."""
    max_connections = config.max_connections or auto_max_connections()
    throttle = ThrottleFilter()
    for name in ("asyncio", "uvicorn.error", "cursorpipe.server.http"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ThrottleFilter) for f in logger.filters):
            logger.addFilter(throttle)
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level.lower(),
        lifespan="on",
        # uvicorn waits this long for in-flight requests; streams are ended gracefully just before
        timeout_graceful_shutdown=math.ceil(drain_timeout_s + READY_GRACE_S),
        server_header=False,
        http=hardened_protocol(
            header_timeout_s=config.header_timeout_s,
            max_connections=max_connections,
            max_head_bytes=H11_MAX_HEAD_BYTES,
        ),
        timeout_keep_alive=max(1, math.ceil(config.keepalive_timeout_s)),
        h11_max_incomplete_event_size=H11_MAX_HEAD_BYTES,
        # No WebSocket route exists: upgrade requests are answered as plain HTTP requests (a 404
        # in OpenAI's shape) instead of a handshake refused in plain text.
        ws="none",
        # a backstop: the protocol refuses connections over the cap before uvicorn counts them
        limit_concurrency=max_connections + 1,
    )


def _setup_logging(level: str) -> None:
    numeric = logging.DEBUG if level.lower() in ("debug", "trace") else getattr(logging, level.upper(), 20)
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # httpx/httpcore log every upstream request at INFO: one line per Cursor call drowns the
    # server's own lines at the default level (issue 15). They stay visible at DEBUG.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING)


@contextlib.contextmanager
def _emulator() -> Iterator[Any]:
    try:  # imported by name: the emulator is an optional part of the installation
        emulator = importlib.import_module("cursorpipe.testing.emulator")
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "--emulator needs cursorpipe.testing.emulator, which is missing from this installation "
            f"({exc.name}); it comes with the cursorpipe-testing distribution: pip install "
            '"cursorpipe-testing @ git+https://github.com/cursorpipe/cursorpipe#subdirectory=packages/testing"'
        ) from exc
    with emulator.Emulator.start_in_thread() as emu:
        yield emu


def main(argv: Sequence[str] | None = None, *, prog: str = "cursorpipe-server") -> int:
    """Entry point of ``cursorpipe-server`` (and ``cursorpipe serve``)."""
    args = build_parser(prog).parse_args(argv)
    from .app import create_app

    try:
        config = config_from_args(args)
    except ConfigurationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    _setup_logging(config.log_level)
    problem = check_bind(config)
    if problem:
        print(f"{prog}: {problem}", file=sys.stderr)  # noqa: T201
        return 2
    auth = "bearer token" if config.bearer_token.get_secret_value() else "none (loopback only)"
    try:
        if args.emulator:
            with _emulator() as emu:
                config = config_from_args(
                    args, strategy="connect", backend_url=emu.url, api_key=emu.api_key, auth_token=""
                )
                log.warning(
                    "EMULATED: serving from the built-in Cursor API emulator at %s; answers are fake", emu.url
                )
                log.info("cursorpipe-server on http://%s:%d (auth: %s)", config.host, config.port, auth)
                serve(
                    create_app(config, emulated=True, keepalive_s=args.keepalive),
                    config,
                    drain_timeout_s=args.drain_timeout,
                )
            return 0
        log.info(
            "cursorpipe-server on http://%s:%d (strategy %s, auth: %s)",
            config.host,
            config.port,
            config.strategy.value,
            auth,
        )
        serve(create_app(config, keepalive_s=args.keepalive), config, drain_timeout_s=args.drain_timeout)
    except ConfigurationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
