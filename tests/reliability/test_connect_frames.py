"""Malformed and truncated Connect frames, end to end (issue 12): the emulator writes a bad frame
mid-stream after some text, over both wires (h2 ``Run`` and RunSSE over HTTP/1.1). The real client
raises a typed error with its cause chained, the server answers in OpenAI's shape, nothing the
caller already saw is repeated, and the next request on the same client/server succeeds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from cursorpipe import CursorClient, CursorPipeConfig, CursorPipeError, ProtocolError, StreamDroppedError
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Behaviour, Emulator, Fault, expected_reply
from google.protobuf.message import DecodeError

# What each fault must become at the client (connect.md §3.1: a frame cut short is a dropped
# stream; a frame that arrives whole but is not valid Connect/protobuf is a protocol violation),
# and the underlying error it must chain (None: cursorpipe's own codec is the first to object).
FRAME_FAULTS: list[tuple[Fault, type[CursorPipeError], type[BaseException] | None]] = [
    (Fault.TRUNCATED_FRAME, StreamDroppedError, ProtocolError),
    (Fault.GARBAGE_FRAME, ProtocolError, DecodeError),
    (Fault.BAD_FLAG_FRAME, ProtocolError, None),
    (Fault.BAD_END_STREAM, ProtocolError, ValueError),
]
IDS = [f[0].value for f in FRAME_FAULTS]
WIRES = ["always", "never"]  # h2 Run / RunSSE + BidiAppend over HTTP/1.1


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    # Eight chunks: the bad frame comes after four text deltas the caller has already seen.
    with Emulator.start_in_thread(Behaviour(chunks=8)) as emulator:
        yield emulator


def _config(emu: Emulator, wire: str) -> CursorPipeConfig:
    return CursorPipeConfig(
        strategy="connect", backend_url=emu.url, api_key=emu.api_key, use_http2=wire, max_retries=1
    )


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(("fault", "error", "cause"), FRAME_FAULTS, ids=IDS)
async def test_bad_frame_is_a_typed_error_then_the_client_recovers(
    emu: Emulator, wire: str, fault: Fault, error: type[CursorPipeError], cause: type[BaseException] | None
) -> None:
    prompt = f"frames {fault.value} {wire}"
    async with CursorClient(_config(emu, wire)) as client:
        emu.inject(fault)
        seen: list[str] = []

        async def consume() -> None:
            async for piece in client.stream("auto", prompt):
                seen.append(piece)

        with pytest.raises(error) as info:
            await consume()
        assert emu.runs[-1].fault is fault  # the fault really fired (not some other failure)
        assert emu.pending_faults == []
        # Some text came first, and no retry re-sent it: what the caller saw is a strict prefix.
        text = "".join(seen)
        assert text and expected_reply(prompt).startswith(text) and text != expected_reply(prompt)
        assert info.value.transport == "connect"
        if cause is None:
            assert info.value.__cause__ is None
        else:
            assert isinstance(info.value.__cause__, cause), repr(info.value.__cause__)
        assert emu.api_key not in str(info.value)
        assert client.active_requests == 0
        assert await client.generate("auto", "next one") == expected_reply("next one")


@pytest.fixture
async def served(emu: Emulator, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    config = _config(emu, request.param)
    async with CursorClient(config) as client:
        app = create_app(config, client=client)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost", timeout=30
            ) as http,
        ):
            yield http


def _sse(text: str) -> list[object]:
    out: list[object] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def _body(content: str, stream: bool) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": content}], "stream": stream}


@pytest.mark.parametrize("served", WIRES, indirect=True)
@pytest.mark.parametrize(("fault", "error", "cause"), FRAME_FAULTS, ids=IDS)
async def test_server_answers_bad_frames_in_openai_shape(
    emu: Emulator,
    served: httpx.AsyncClient,
    fault: Fault,
    error: type[CursorPipeError],
    cause: type[BaseException] | None,
) -> None:
    http = served
    # Non-streaming: a 502 with OpenAI's error object, never a 500 or a cut connection.
    emu.inject(fault)
    r = await http.post("/v1/chat/completions", json=_body("x", stream=False))
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == error.default_code
    assert emu.api_key not in r.text
    assert emu.runs[-1].fault is fault

    # Streaming: the text so far once, then one error event, then [DONE].
    prompt = f"stream {fault.value}"
    emu.inject(fault)
    r = await http.post("/v1/chat/completions", json=_body(prompt, stream=True))
    assert r.status_code == 200
    events = _sse(r.text)
    assert events[-1] == "[DONE]"
    last = events[-2]
    assert isinstance(last, dict) and set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["code"] == error.default_code
    content = "".join(
        str(e["choices"][0]["delta"].get("content") or "")
        for e in events[:-2]
        if isinstance(e, dict) and e.get("choices")
    )
    assert content and expected_reply(prompt).startswith(content) and content != expected_reply(prompt)
    assert emu.api_key not in r.text
    assert emu.pending_faults == []

    # And the same server is fine afterwards.
    r = await http.post("/v1/chat/completions", json=_body("after", stream=False))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == expected_reply("after")
