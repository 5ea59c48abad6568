"""Errors in OpenAI's shape on every path, bearer auth, request ids, health, models, metrics, CORS,
and the no-credentials start (issue 2)."""

from __future__ import annotations

import pytest
from cursorpipe import (
    AgentCrashError,
    AgentNotFoundError,
    AgentTimeoutError,
    AuthenticationError,
    CursorClient,
    CursorPipeConfig,
    MockTransport,
    ModelInfo,
    NetworkError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    UsageLimitError,
)
from cursorpipe.server import create_app

USER = [{"role": "user", "content": "hi"}]


def assert_openai_error(body: dict, *, code: str | None = None) -> dict:
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code
    return err


@pytest.mark.parametrize(
    ("exc", "status", "should_retry", "retry_after"),
    [
        (AuthenticationError("Cursor rejected the API key."), 401, "false", None),
        (PermissionDeniedError("Your plan does not include this model."), 403, "false", None),
        (RateLimitError("Slow down.", retry_after=7), 429, "true", "7"),
        (UsageLimitError("Monthly usage limit reached."), 429, "false", None),
        (AgentTimeoutError("Took too long."), 504, "false", None),
        (NetworkError("Connection refused."), 502, "true", None),
        (AgentCrashError("agent exited with 3", exit_code=3), 502, "true", None),
        (ProtocolError("Malformed frame."), 502, "false", None),
        (AgentNotFoundError("`agent` was not found on PATH."), 503, "false", None),
    ],
)
async def test_cursorpipe_errors_map_to_status_and_retry_headers(
    served, exc, status, should_retry, retry_after
):
    s = await served(max_retries=0)
    for stream in (False, True):
        s.mock.queue(exc)
        r = await s.http.post("/v1/chat/completions", json={"messages": USER, "stream": stream})
        assert r.status_code == status, (stream, r.text)
        err = assert_openai_error(r.json(), code=exc.code)
        if not isinstance(exc, AgentTimeoutError):  # the client words its own deadline message
            assert exc.message.split()[0] in err["message"]
        assert r.headers["x-should-retry"] == should_retry
        assert r.headers.get("retry-after") == retry_after or (status == 429 and retry_after is None)
        assert r.headers["x-request-id"]


async def test_upstream_auth_error_says_how_to_log_in(served):
    s = await served(max_retries=0)
    s.mock.queue(AuthenticationError("Token expired."))
    r = await s.http.post("/v1/chat/completions", json={"messages": USER})
    err = assert_openai_error(r.json())
    assert err["type"] == "authentication_error"
    assert "CURSOR_API_KEY" in err["message"] and "agent login" in err["message"]


async def test_unknown_model_is_404(served):
    s = await served(MockTransport(strict_models=True))
    r = await s.http.post("/v1/chat/completions", json={"model": "gpt-nope", "messages": USER})
    assert r.status_code == 404
    err = assert_openai_error(r.json(), code="model_not_found")
    assert err["param"] == "model" and "gpt-nope" in err["message"]
    r = await s.http.get("/v1/models/gpt-nope")
    assert r.status_code == 404
    assert_openai_error(r.json(), code="model_not_found")


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("GET", "/nowhere", None, 404, None),
        ("GET", "/v1/chat/completions", None, 405, None),
        ("DELETE", "/v1/models", None, 405, None),
        ("POST", "/v1/chat/completions", b"{not json", 400, None),
        ("POST", "/v1/chat/completions", b"", 400, None),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400, None),
        ("POST", "/v1/chat/completions", b'{"messages": []}', 400, "messages"),
        ("POST", "/v1/chat/completions", b'{"model": "auto"}', 400, "messages"),
        ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": 5}]}', 400, "messages"),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "messages",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "n": 0}',
            400,
            "n",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            400,
            "stream",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}',
            400,
            "max_tokens",
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "stop": [1]}',
            400,
            "stop",
        ),
        ("POST", "/v1/chat/completions", b'{"messages": [{"role": "system", "content": "x"}]}', 400, None),
        ("POST", "/v1/chat/completions", b"\xff\xfe", 400, None),
        ("POST", "/v1/responses", b'{"input": 3}', 400, "input"),
        ("POST", "/v1/responses", b'{"input": [{"type": "web_search_call"}]}', 400, "input[0].type"),
        ("POST", "/v1/responses", b'{"input": [{"type": "function_call_output"}]}', 400, "input[0].call_id"),
        ("POST", "/v1/sessions", b'{"model": 3}', 400, "model"),
    ],
)
async def test_every_path_errors_in_openai_shape(served, method, path, body, status, param):
    s = await served()
    r = await s.http.request(method, path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = assert_openai_error(r.json())
    if param is not None:
        assert err["param"] == param
    if status == 405:
        assert r.headers["allow"]


async def test_bearer_auth_constant_time_health_exempt(served):
    s = await served(bearer_token="s3cret-token-value")
    r = await s.http.post("/v1/chat/completions", json={"messages": USER})
    assert r.status_code == 401
    err = assert_openai_error(r.json(), code="invalid_api_key")
    assert r.headers["www-authenticate"] == "Bearer"
    assert "s3cret" not in r.text
    # the hint says what to send, unmangled by the redactor (issue 15)
    assert "Authorization: Bearer <CURSORPIPE_BEARER_TOKEN>" in err["message"]
    r = await s.http.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = await s.http.get("/nowhere")
    assert r.status_code == 401  # unknown routes are guarded too (no probing without the token)
    for path in ("/health", "/health/live", "/health/ready"):
        assert (await s.http.get(path)).status_code == 200
    r = await s.http.options("/v1/chat/completions")
    assert r.status_code != 401
    ok = await s.http.post(
        "/v1/chat/completions",
        json={"messages": USER},
        headers={"Authorization": "Bearer s3cret-token-value"},
    )
    assert ok.status_code == 200
    assert err["type"] == "authentication_error"


async def test_request_id_echoed_or_generated(served):
    s = await served()
    r = await s.http.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await s.http.get("/nowhere", headers={"X-Request-ID": "bad id with spaces"})
    assert r.headers["x-request-id"].startswith("req_")


async def test_health_liveness_readiness_and_drain(make_app):
    import httpx

    app, _mock, client = make_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        r = await http.get("/health/ready")  # lifespan not run yet: still starting
        assert r.status_code == 503 and r.json()["status"] == "starting" and r.headers["retry-after"]
        async with app.router.lifespan_context(app):
            import asyncio

            await asyncio.sleep(0)
            assert (await http.get("/health/ready")).status_code == 200
            health = (await http.get("/health")).json()
            assert health["status"] == "ok" and health["transport"] == "mock" and health["emulated"] is False
            assert (await http.get("/health/live")).json() == {"status": "alive"}
            app.state.cursorpipe.begin_drain()
            assert (await http.get("/health/ready")).status_code == 503
            assert (await http.get("/health/live")).status_code == 200
            r = await http.post("/v1/chat/completions", json={"messages": USER})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert_openai_error(r.json(), code="shutting_down")
    await client.close()


async def test_models_list_retrieve_alias_and_emulator_label(served):
    s = await served()
    body = (await s.http.get("/v1/models")).json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == ["auto", "mock-fast", "mock-thinking"]
    assert all(
        m["object"] == "model" and m["owned_by"] == "cursor" and isinstance(m["created"], int)
        for m in body["data"]
    )
    one = (await s.http.get("/v1/models/default")).json()  # an alias of "auto"
    assert one["id"] == "auto"
    e = await served(MockTransport(models=[ModelInfo(id="composer-2")]), emulated=True)
    data = (await e.http.get("/v1/models")).json()["data"]
    assert data[0]["owned_by"] == "cursorpipe-emulator"
    assert (await e.http.get("/health")).json()["emulated"] is True


async def test_metrics_prometheus_text(served):
    s = await served()
    await s.http.post("/v1/chat/completions", json={"messages": USER})
    await s.http.post("/v1/chat/completions", json={"messages": USER, "stream": True})
    r = await s.http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        'cursorpipe_http_requests_total{method="POST",path="/v1/chat/completions",status="200"} 2.0' in text
    )
    assert "cursorpipe_time_to_first_token_seconds_count" in text
    assert "cursorpipe_tokens_total" in text


async def test_cors_is_opt_in(served):
    off = await served()
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    r = await off.http.options("/v1/chat/completions", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    on = await served(cors_origins="https://app.example")
    r = await on.http.options("/v1/chat/completions", headers=pre)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://app.example"


async def test_no_credentials_server_starts_and_chat_says_how_to_log_in():
    """Issue 2: a real connect-strategy client without any credentials."""
    import asyncio

    import httpx

    app = create_app(CursorPipeConfig(strategy="connect", pool_size=1, max_retries=0))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as http,
    ):
        for _ in range(100):  # warm-up fails (no credentials) without failing startup
            if app.state.cursorpipe.phase == "ready":
                break
            await asyncio.sleep(0.01)
        health = await http.get("/health")
        assert health.status_code == 200
        assert health.json()["credentials"] is False
        for stream in (False, True):
            r = await http.post(
                "/v1/chat/completions", json={"model": "auto", "messages": USER, "stream": stream}
            )
            assert r.status_code == 401, r.text
            err = assert_openai_error(r.json())
            assert "CURSOR_API_KEY" in err["message"]
            assert r.headers["x-should-retry"] == "false"


async def test_unexpected_exception_is_500_in_openai_shape(served):
    s = await served(max_retries=0)
    s.mock.queue(RuntimeError("boom: internal detail"))
    r = await s.http.post("/v1/chat/completions", json={"messages": USER})
    assert r.status_code == 500
    err = assert_openai_error(r.json(), code="internal_error")
    assert "boom" not in err["message"]


async def test_client_closed_outside_is_503(make_app):
    app, _mock, client = make_app()
    import httpx

    await client.close()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        r = await http.post("/v1/chat/completions", json={"messages": USER})
    assert r.status_code == 503
    assert_openai_error(r.json(), code="client_closed")
    assert isinstance(client, CursorClient)


async def test_startup_prewarms_pool_size(served):
    s = await served(pool_size=3)
    assert s.mock.started_with == [3]
    assert (await s.http.get("/health/ready")).status_code == 200


async def test_warmup_failure_does_not_block_startup(served):
    class FailingWarmup(MockTransport):
        async def start(self, *, pool_size: int = 0) -> None:
            raise AuthenticationError("No Cursor credentials found. Set CURSOR_API_KEY.")

    s = await served(FailingWarmup())
    health = (await s.http.get("/health")).json()
    assert health["phase"] == "ready" and "CURSOR_API_KEY" in health["warmup_error"]
    # every request would fail for lack of credentials: health says degraded, with the reason
    assert health["status"] == "degraded" and "CURSOR_API_KEY" in health["degraded"]["reason"]
    assert (await s.http.get("/health/ready")).status_code == 503
    assert (await s.http.post("/v1/chat/completions", json={"messages": USER})).status_code == 200
    # the request worked (credentials fixed meanwhile): health recovers at once
    assert (await s.http.get("/health")).json()["status"] == "ok"
    assert (await s.http.get("/health/ready")).status_code == 200


async def test_metrics_without_the_extra_is_501_naming_it(served, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    s = await served()
    r = await s.http.get("/metrics")
    assert r.status_code == 501
    err = assert_openai_error(r.json(), code="metrics_unavailable")
    assert "pip install 'cursorpipe[metrics]'" in err["message"]
    assert (await s.http.post("/v1/chat/completions", json={"messages": USER})).status_code == 200


def test_server_logging_keeps_httpx_request_lines_out_at_info() -> None:
    import logging

    from cursorpipe.server import cli as server_cli

    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("httpx").level)
    try:
        root.handlers.clear()
        server_cli._setup_logging("info")
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
        assert logging.getLogger("cursorpipe.server").isEnabledFor(logging.INFO)
        root.handlers.clear()
        server_cli._setup_logging("debug")
        assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        logging.getLogger("httpx").setLevel(saved[2])
        logging.getLogger("httpcore").setLevel(logging.NOTSET)
