"""The Anthropic paths answer every refusal in Anthropic's shape, the guard's own included, and
carry Anthropic's ``request-id`` header; other paths keep OpenAI's shape (issue 14)."""

from __future__ import annotations

from typing import Any

BODY: dict[str, Any] = {"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


def anthropic_error(r: Any, status: int, kind: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"type", "error"} and body["type"] == "error" and body["error"]["type"] == kind
    assert r.headers["request-id"] == r.headers["x-request-id"]
    return str(body["error"]["message"])


async def test_guard_refusals_in_anthropic_shape(served) -> None:
    s = await served(bearer_token="a-long-enough-token-1234")
    r = await s.http.post("/v1/messages", json=BODY)
    assert "x-api-key" in anthropic_error(r, 401, "authentication_error")
    r = await s.http.post("/v1/messages", json=BODY, headers={"x-api-key": "a-long-enough-token-1234"})
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "echo: hi"
    auth = {"authorization": "Bearer a-long-enough-token-1234"}
    r = await s.http.post("/v1/messages", content=b"{}", headers={**auth, "content-type": "text/plain"})
    anthropic_error(r, 415, "invalid_request_error")
    r = await s.http.get("/v1/messages", headers=auth)
    anthropic_error(r, 405, "invalid_request_error")
    r = await s.http.post("/v1/messages/count_tokens", json={"model": "auto"}, headers=auth)
    assert "messages" in anthropic_error(r, 400, "invalid_request_error")
    # The OpenAI routes keep OpenAI's shape and get no Anthropic header.
    r = await s.http.post("/v1/chat/completions", json={"messages": []}, headers=auth)
    assert r.status_code == 400 and set(r.json()) == {"error"} and "request-id" not in r.headers


async def test_draining_server_answers_overloaded(served) -> None:
    s = await served()
    s.app.state.cursorpipe.begin_drain()
    r = await s.http.post("/v1/messages", json=BODY)
    anthropic_error(r, 503, "overloaded_error")
    assert r.headers["x-should-retry"] == "true" and int(r.headers["retry-after"]) >= 1


async def test_models_shape_follows_anthropic_version(served) -> None:
    s = await served()
    plain = (await s.http.get("/v1/models")).json()
    assert plain["object"] == "list" and plain["data"][0]["object"] == "model"
    versioned = {"anthropic-version": "2023-06-01"}
    listing = (await s.http.get("/v1/models", headers=versioned)).json()
    assert listing["has_more"] is False and listing["data"][0]["type"] == "model"
    assert listing["first_id"] == plain["data"][0]["id"]
    one = await s.http.get("/v1/models/auto", headers=versioned)
    assert one.json()["id"] == "auto" and one.json()["type"] == "model"
    missing = await s.http.get("/v1/models/nope", headers=versioned)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert set((await s.http.get("/v1/models/nope")).json()) == {"error"}  # OpenAI's without the header
