"""Record (and replay support for) the connect transport's HTTP cassettes.

    .venv/bin/python scripts/record_cassettes.py         # re-record tests/connect/cassettes/*.yaml
                                                         # against a fresh emulator
    .venv/bin/python scripts/record_cassettes.py --live  # also record tests/connect/cassettes/live/
                                                         # against real Cursor (needs CURSOR_API_KEY;
                                                         # review the files before committing them)

Why not vcrpy's own recorder: vcrpy's httpx stub reads the whole response body before handing it
to the caller (vcrpy#989, integrations.md §2 "gotchas"). RunSSE only finishes after the client has
answered the server's KV and exec requests over BidiAppend, so recording through vcrpy deadlocks.
We record with a tee transport instead and write the cassette in vcrpy's format; CI replays it with
vcrpy (``record_mode="none"``) through :func:`replay_vcr`.

Cassette format (serializer ``connect``): vcrpy's ``{version, interactions: [{request, response}]}``
where every body is stored losslessly as base64 next to a readable ``decoded`` view (Connect
envelopes split into frames, protobuf shown in text format, JSON parsed). Authorization, cookies,
the blob encryption key and exchanged tokens are scrubbed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe._codecs.connect import EnvelopeDecoder
from cursorpipe._proto.agent.v1 import agent_pb2 as pb
from cursorpipe._proto.aiserver.v1 import aiserver_pb2 as ai
from cursorpipe._proto.aiserver.v1 import server_config_pb2 as sc
from cursorpipe._redact import redact
from cursorpipe.transports.connect import ConnectTransport
from google.protobuf import text_format
from google.protobuf.message import Message

ROOT = Path(__file__).resolve().parent.parent
CASSETTES = ROOT / "tests" / "connect" / "cassettes"
SCRUBBED = "[SCRUBBED]"
SCRUBBED_TOKEN = "scrubbed-access-token"  # noqa: S105 - a placeholder, not a secret
_SECRET_HEADERS = {"authorization", "cookie", "set-cookie", "x-blob-encryption-key"}
_TOKEN_KEYS = ("accessToken", "refreshToken", "access_token", "refresh_token")


# ----------------------------------------------------------------------------------------------
# decoded views
# ----------------------------------------------------------------------------------------------
def _text(msg: Message) -> str:
    return text_format.MessageToString(msg, as_one_line=True, print_unknown_fields=True)


def _frames(raw: bytes, message: type[Message]) -> list[Any]:
    out: list[Any] = []
    decoder = EnvelopeDecoder()
    try:
        for frame in decoder.feed(raw):
            if frame.end_stream is not None:
                out.append({"end_stream": json.loads(frame.payload or b"{}")})
                continue
            msg = message()
            msg.ParseFromString(frame.payload)
            label = "frame (gzip)" if frame.compressed else "frame"
            out.append({label: _text(msg)})
        if decoder.pending:
            out.append({"truncated_bytes": decoder.pending})
    except Exception as exc:  # a decoded view must never break recording or loading
        out.append({"undecodable": type(exc).__name__})
    return out


def decoded_view(path: str, raw: bytes, *, request: bool) -> list[Any]:
    """A human-readable view of one body (never used for replay)."""
    if not raw:
        return []
    try:
        if path.endswith("/BidiAppend"):
            if not request:
                return [_text(ai.BidiAppendResponse.FromString(raw))]
            append = ai.BidiAppendRequest.FromString(raw)
            inner = pb.AgentClientMessage.FromString(bytes.fromhex(append.data) or append.data_binary)
            return [
                {
                    "seqno": append.append_seqno,
                    "request_id": append.request_id.request_id,
                    "message": _text(inner),
                }
            ]
        if path.endswith("/RunSSE"):
            return _frames(raw, ai.BidiRequestId if request else pb.AgentServerMessage)
        if path.endswith("/Run"):
            return _frames(raw, pb.AgentClientMessage if request else pb.AgentServerMessage)
        if path.endswith("/GetServerConfig") and not request:
            return [_text(sc.GetServerConfigResponse.FromString(raw))]
        if path.endswith("/GetUsableModels"):
            kind = pb.GetUsableModelsRequest if request else pb.GetUsableModelsResponse
            return [_text(kind.FromString(raw))]
        return [json.loads(raw)]
    except Exception:  # binary we do not know: the base64 field is the record
        return [{"bytes": len(raw)}]


# ----------------------------------------------------------------------------------------------
# the vcrpy serializer (registered as "connect")
# ----------------------------------------------------------------------------------------------
def _as_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, dict):  # vcrpy response body {"string": ...}
        body = body.get("string", b"")
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def serialize(cassette_dict: dict[str, Any]) -> str:
    """vcrpy serializer: bodies as base64 plus a decoded view."""
    out = {"version": cassette_dict.get("version", 1), "interactions": []}
    for item in cassette_dict["interactions"]:
        req, resp = dict(item["request"]), dict(item["response"])
        path = urlsplit(req["uri"]).path
        raw_req, raw_resp = _as_bytes(req.get("body")), _as_bytes(resp.get("body"))
        req["body"] = {
            "base64": base64.b64encode(raw_req).decode(),
            "decoded": decoded_view(path, raw_req, request=True),
        }
        resp["body"] = {
            "base64": base64.b64encode(raw_resp).decode(),
            "decoded": decoded_view(path, raw_resp, request=False),
        }
        out["interactions"].append({"request": req, "response": resp})
    return yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=120)


def deserialize(cassette_string: str) -> dict[str, Any]:
    """vcrpy deserializer: the lossless base64 bodies back to bytes (the decoded view is ignored)."""
    data = yaml.safe_load(cassette_string)
    for item in data["interactions"]:
        item["request"]["body"] = base64.b64decode(item["request"]["body"]["base64"])
        item["response"]["body"] = {"string": base64.b64decode(item["response"]["body"]["base64"])}
    return data


class _Serializer:
    serialize = staticmethod(serialize)
    deserialize = staticmethod(deserialize)


def replay_vcr() -> Any:
    """A vcrpy ``VCR`` that replays our cassettes and never records (CI mode)."""
    import vcr

    my_vcr = vcr.VCR(
        cassette_library_dir=str(CASSETTES),
        record_mode="none",
        match_on=("method", "scheme", "host", "port", "path"),
        decode_compressed_response=False,
    )
    my_vcr.register_serializer("connect", _Serializer)
    my_vcr.serializer = "connect"
    return my_vcr


def cassette_base_url(name: str) -> str:
    """The backend URL a cassette was recorded against (replay must use the same host:port)."""
    data = yaml.safe_load((CASSETTES / name).read_text(encoding="utf-8"))
    parts = urlsplit(data["interactions"][0]["request"]["uri"])
    return f"{parts.scheme}://{parts.netloc}"


# ----------------------------------------------------------------------------------------------
# recording
# ----------------------------------------------------------------------------------------------
def _scrub_headers(headers: httpx.Headers) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers.multi_items():
        out.setdefault(name.lower(), []).append(
            SCRUBBED if name.lower() in _SECRET_HEADERS else redact(value)
        )
    return out


def _scrub_body(raw: bytes) -> bytes:
    if not raw.startswith(b"{"):
        return raw
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(doc, dict) and any(k in doc for k in _TOKEN_KEYS):
        for key in _TOKEN_KEYS:
            if key in doc:
                doc[key] = SCRUBBED_TOKEN
        return json.dumps(doc).encode()
    return raw


class _Tee(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, done: Callable[[bytes], None]) -> None:
        self._inner = inner
        self._done = done
        self._buf = bytearray()
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._buf += chunk
            yield chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._done(bytes(self._buf))
        await self._inner.aclose()


class RecordingTransport(httpx.AsyncBaseTransport):
    """Forwards to a real transport and records every exchange (streamed bodies included)."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self.interactions: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        response = await self._inner.handle_async_request(request)
        entry_request = {
            "method": request.method,
            "uri": str(request.url),
            "body": body,
            "headers": _scrub_headers(request.headers),
        }

        def done(raw: bytes) -> None:
            self.interactions.append(
                {
                    "request": entry_request,
                    "response": {
                        "status": {"code": response.status_code, "message": response.reason_phrase},
                        "headers": _scrub_headers(response.headers),
                        "body": {"string": _scrub_body(raw)},
                    },
                }
            )

        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Tee(response.stream, done),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()

    def write(self, path: Path) -> None:
        """Write the recorded interactions as a cassette."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(serialize({"version": 1, "interactions": self.interactions}), encoding="utf-8")


Scenario = Callable[[CursorClient, Any], Awaitable[None]]


async def _chat_session(client: CursorClient, emu: Any) -> None:
    async with client.session("composer-2") as session:
        await session.prompt("hello")
        await session.prompt("and again")


async def _stateless_history(client: CursorClient, emu: Any) -> None:
    await client.chat(
        "composer-2",
        [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
    )


async def _models(client: CursorClient, emu: Any) -> None:
    await client.list_models()


async def _rate_limit(client: CursorClient, emu: Any) -> None:
    from cursorpipe.errors import RateLimitError
    from cursorpipe.testing.emulator import Fault

    emu.inject(Fault.RATE_LIMIT)
    try:
        await client.generate("composer-2", "rate limited?")
    except RateLimitError:
        return
    raise RuntimeError("the emulator did not rate-limit")


SCENARIOS: dict[str, Scenario] = {
    "chat_session.yaml": _chat_session,
    "stateless_history.yaml": _stateless_history,
    "list_models.yaml": _models,
    "rate_limit.yaml": _rate_limit,
}


def replay_config(backend_url: str, api_key: str) -> CursorPipeConfig:
    """The configuration recordings and replays share: RunSSE + BidiAppend over httpx (the path
    vcrpy can see), no client retries so fault cassettes hold exactly one attempt."""
    return CursorPipeConfig(
        strategy="connect", backend_url=backend_url, api_key=api_key, use_http2="never", max_retries=0
    )


def replay_transport(
    backend_url: str, api_key: str, http: httpx.AsyncClient | None = None
) -> ConnectTransport:
    """The transport recordings and replays share (no heartbeat inside a short turn, so the
    number of appends is deterministic)."""
    return ConnectTransport(
        replay_config(backend_url, api_key), http=http, heartbeat_s=3600.0, workspace="/workspace"
    )


async def _record_one(name: str, scenario: Scenario, url: str, api_key: str, emu: Any) -> None:
    recorder = RecordingTransport()
    http = httpx.AsyncClient(transport=recorder, timeout=httpx.Timeout(30.0, read=None))
    client = CursorClient(replay_config(url, api_key), transport=replay_transport(url, api_key, http))
    try:
        await scenario(client, emu)
    finally:
        await client.close()
        await http.aclose()
    recorder.write(CASSETTES / name)
    print(f"recorded {name}: {len(recorder.interactions)} interactions")


async def record_emulator() -> None:
    """Re-record every cassette against a fresh emulator."""
    from cursorpipe.testing.emulator import Emulator

    for name, scenario in SCENARIOS.items():
        async with Emulator() as emu:
            await _record_one(name, scenario, emu.url, emu.api_key, emu)


async def record_live() -> None:
    """Record the chat and model scenarios against real Cursor (CURSOR_API_KEY)."""
    key = os.environ.get("CURSOR_API_KEY", "")
    if not key:
        raise SystemExit("--live needs CURSOR_API_KEY")
    url = os.environ.get("CURSOR_BACKEND_URL", "https://api2.cursor.sh")
    for name in ("chat_session.yaml", "list_models.yaml"):
        await _record_one(f"live/{name}", SCENARIOS[name], url, key, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--live", action="store_true", help="also record against real Cursor (CURSOR_API_KEY)"
    )
    args = parser.parse_args(argv)
    asyncio.run(record_emulator())
    if args.live:
        asyncio.run(record_live())
    return 0


if __name__ == "__main__":
    sys.exit(main())
