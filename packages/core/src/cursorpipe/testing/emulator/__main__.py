"""``python -m cursorpipe.testing.emulator --host 127.0.0.1 --port 8765``: run the emulator standalone."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from ._behaviour import Behaviour
from ._server import DEFAULT_API_KEY, Emulator


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; prints the base URL and API key on one line each."""
    parser = argparse.ArgumentParser(prog="python -m cursorpipe.testing.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port (printed)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the API key to accept")
    parser.add_argument("--http2", action="store_true", help="advertise HTTP/2 in GetServerConfig")
    parser.add_argument("--gzip", action="store_true", help="gzip-compress response frames")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between text deltas")
    parser.add_argument("--token-lifetime", type=float, default=3600.0, help="access token lifetime (s)")
    parser.add_argument(
        "--permissive",
        action="store_true",
        help="relax every live-service rule (history in conversation_history, custom system prompt, "
        "any client version, tools without the MCP header ...): the emulator before issue 11",
    )
    args = parser.parse_args(argv)
    settings = {
        "advertise_http2": args.http2,
        "gzip_frames": args.gzip,
        "token_delay_s": args.token_delay,
        "token_lifetime_s": args.token_lifetime,
    }
    behaviour = Behaviour.permissive(**settings) if args.permissive else Behaviour(**settings)

    async def run() -> None:
        async with Emulator(behaviour, api_key=args.api_key, host=args.host, port=args.port) as emu:
            print(f"emulator listening on {emu.url}", flush=True)
            print(f"api key: {emu.api_key}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
