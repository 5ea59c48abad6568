"""Sessions (X-Cursor-Session-ID, /v1/sessions, idle expiry) and the Responses API in-process."""

from __future__ import annotations

import asyncio

from cursorpipe import MockTransport

USER = [{"role": "user", "content": "hello"}]
H = "X-Cursor-Session-ID"


async def test_session_crud_and_turns_send_only_the_new_message(served, parse_sse):
    s = await served()
    r = await s.http.post("/v1/sessions", json={"model": "auto"})
    assert r.status_code == 201
    info = r.json()
    sid = info["id"]
    assert info["object"] == "session" and info["model"] == "auto" and info["turns"] == 0
    history = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hi Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    r = await s.http.post(
        "/v1/chat/completions", json={"model": "auto", "messages": history}, headers={H: sid}
    )
    assert r.status_code == 200
    assert r.headers[H.lower()] == sid and r.headers["x-cursor-session-created"] == "false"
    req = s.mock.requests[-1]
    assert [m.text for m in req.messages] == ["What is my name?"]  # Cursor keeps the history
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "stream": True}, headers={H: sid})
    chunks = parse_sse(r.text)[:-1]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "echo: hello"
    got = (await s.http.get(f"/v1/sessions/{sid}")).json()
    assert got["turns"] == 2 and got["busy"] is False
    mock_session = s.mock.sessions[0]
    assert [m.text for m in mock_session.history if m.role == "user"] == ["What is my name?", "hello"]
    listed = (await s.http.get("/v1/sessions")).json()
    assert [e["id"] for e in listed["data"]] == [sid]
    r = await s.http.delete(f"/v1/sessions/{sid}")
    assert r.json() == {"id": sid, "object": "session.deleted", "deleted": True}
    assert mock_session.closed
    assert (await s.http.get(f"/v1/sessions/{sid}")).status_code == 404
    assert (await s.http.delete(f"/v1/sessions/{sid}")).json()["error"]["code"] == "session_not_found"


async def test_header_creates_session_on_first_use_and_validates(served):
    s = await served()
    r = await s.http.post(
        "/v1/chat/completions", json={"model": "mock-fast", "messages": USER}, headers={H: "conv-42"}
    )
    assert r.status_code == 200 and r.headers["x-cursor-session-created"] == "true"
    assert (await s.http.get("/v1/sessions/conv-42")).json()["model"] == "mock-fast"
    r = await s.http.post(
        "/v1/chat/completions", json={"model": "auto", "messages": USER}, headers={H: "conv-42"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "session_model_mismatch"
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "n": 2}, headers={H: "conv-42"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    r = await s.http.post("/v1/chat/completions", json={"messages": USER}, headers={H: "bad id!"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_session_id"
    r = await s.http.post("/v1/sessions", json={"id": "conv-42"})
    assert r.status_code == 409


async def test_idle_sessions_expire(served):
    s = await served(session_idle_s=0.2)
    sid = (await s.http.post("/v1/sessions", json={})).json()["id"]
    assert (await s.http.get(f"/v1/sessions/{sid}")).status_code == 200
    for _ in range(100):
        await asyncio.sleep(0.05)
        if (await s.http.get(f"/v1/sessions/{sid}")).status_code == 404:
            break
    assert (await s.http.get(f"/v1/sessions/{sid}")).status_code == 404
    assert s.mock.sessions[0].closed


async def test_responses_non_stream(served):
    s = await served()
    r = await s.http.post(
        "/v1/responses", json={"model": "auto", "input": "hi there", "instructions": "brief"}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "response" and body["status"] == "completed" and body["id"].startswith("resp_")
    [msg] = body["output"]
    assert msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["content"][0] == {"type": "output_text", "text": "echo: hi there", "annotations": []}
    assert body["usage"]["total_tokens"] == body["usage"]["input_tokens"] + body["usage"]["output_tokens"]
    assert s.mock.requests[0].system == "brief"


async def test_responses_input_items_and_max_output_tokens(served):
    s = await served()
    s.mock.queue("word " * 100)
    items = [{"role": "user", "content": [{"type": "input_text", "text": "long please"}]}]
    r = await s.http.post("/v1/responses", json={"input": items, "max_output_tokens": 4})
    body = r.json()
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert len(body["output"][0]["content"][0]["text"]) <= 16


async def test_responses_stream_events(served, parse_sse):
    s = await served(MockTransport(delay_s=0.001))
    r = await s.http.post("/v1/responses", json={"input": "stream me", "stream": True})
    events = parse_sse(r.text)
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "echo: stream me"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == text
    assert "event: response.completed" in r.text
