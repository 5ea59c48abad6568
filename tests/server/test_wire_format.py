"""The shared turn loop drives any wire format through the ``Renderer`` interface (``_wire.py``):
a small named-event format (the shape of Anthropic's: ``event:`` lines, ``ping`` keep-alives, an
``error`` event mid-stream, its own error body) plugs in as one route, with no loop of its own."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cursorpipe import MockTransport, NetworkError
from cursorpipe._fold import TurnAccumulator
from cursorpipe.server._errors import APIError
from cursorpipe.server._json import dumps
from cursorpipe.server._requests import TurnSpec
from cursorpipe.server._sse import frame
from cursorpipe.server._state import get_state
from cursorpipe.server._turn import serve_turn
from cursorpipe.server._wire import WireFormat
from cursorpipe.types import ChatMessage, Event, TextDelta, Usage
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from .conftest import build, in_process


class ToyRenderer:
    keepalive = b"event: ping\ndata: {}\n\n"

    def __init__(self, body: dict[str, Any]) -> None:
        if not isinstance(body.get("q"), str):
            raise APIError(400, "q must be a string.", param="q")
        self.spec = TurnSpec(
            model="auto", messages=[ChatMessage.of("user", body["q"])], stream=bool(body.get("stream"))
        )

    def open(self, model: str) -> bytes:
        return frame(dumps({"model": model}), b"start")

    def event(self, index: int, event: Event, run: TurnAccumulator) -> bytes:
        if isinstance(event, TextDelta) and not event.notice:
            return frame(dumps({"text": event.text, "so_far": run.text}), b"delta")
        return b""

    def run_end(self, index: int, run: TurnAccumulator) -> bytes:
        return frame(dumps({"index": index, "stop": run.stop_reason}), b"run_end")

    def close(self, runs: Sequence[TurnAccumulator], usage: Usage) -> bytes:
        return frame(dumps({"text": runs[0].text, "output_tokens": usage.output_tokens}), b"stop")

    def fail(self, err: APIError) -> bytes:
        return frame(dumps({"type": "error", "error": {"type": err.type, "message": err.message}}), b"error")

    def body(
        self, runs: Sequence[TurnAccumulator], usage: Usage, model: str
    ) -> tuple[dict[str, Any], dict[str, str]]:
        return {"text": runs[0].text, "model": model, "output_tokens": usage.output_tokens}, {"x-toy": "1"}


TOY = WireFormat(
    "toy",
    False,
    lambda body, strict: ToyRenderer(body),
    errors=lambda err: {"type": "error", "error": {"type": err.type, "message": err.message}},
)


async def _toy(request: Request) -> Response:
    return await serve_turn(request, get_state(request), TOY)


def _events(text: str) -> list[tuple[str, Any]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def _app(**kw: Any) -> tuple[MockTransport, FastAPI]:
    app, mock, _ = build(**kw)
    app.router.add_api_route("/toy", _toy, methods=["POST"])
    return mock, app


async def test_a_third_format_streams_through_the_shared_loop() -> None:
    _, app = _app()
    async with in_process(app) as http:
        r = await http.post("/toy", json={"q": "hello there", "stream": True})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.text)
        kinds = [k for k, _ in events]
        assert kinds[0] == "start" and kinds[-2:] == ["run_end", "stop"], kinds
        assert set(kinds[1:-2]) == {"delta"}
        text = "".join(d["text"] for k, d in events if k == "delta")
        assert text == "echo: hello there" == events[-1][1]["text"]
        assert events[-3][1]["so_far"] == text  # the renderer reads the loop's fold
        assert events[-2][1]["stop"] == "stop" and events[-1][1]["output_tokens"] > 0


async def test_a_third_format_answers_whole_bodies_and_its_own_errors() -> None:
    _, app = _app()
    async with in_process(app) as http:
        r = await http.post("/toy", json={"q": "hi"})
        assert r.status_code == 200 and r.json()["text"] == "echo: hi"
        assert r.headers["x-toy"] == "1" and r.headers["x-cursorpipe-transport"] == "mock"
        bad = await http.post("/toy", json={"q": 3})
        assert bad.status_code == 400
        assert bad.json() == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "q must be a string."},
        }


async def test_a_third_format_gets_its_keepalives_and_mid_stream_errors() -> None:
    mock, app = _app(keepalive_s=0.05)
    mock.first_delay_s = 0.4
    async with in_process(app) as http:
        r = await http.post("/toy", json={"q": "slow", "stream": True})
        assert r.status_code == 200
        assert r.text.count("event: ping\n") >= 2 and _events(r.text)[-1][0] == "stop"
    mock, app = _app()
    mock.queue([TextDelta("partial "), NetworkError("Connection to Cursor was reset.")])
    async with in_process(app) as http:
        r = await http.post("/toy", json={"q": "x", "stream": True})
        events = _events(r.text)
        assert [k for k, _ in events] == ["start", "delta", "error"]
        assert events[-1][1]["error"]["message"] == "Connection to Cursor was reset."
