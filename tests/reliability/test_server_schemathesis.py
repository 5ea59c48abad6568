"""The server against its own OpenAPI schema (schemathesis): no generated request, valid or
not, gets a 5xx. The schema declares the real request models as bodies (issue 12: before, no POST
route declared one and the fuzzer never sent a body), and the test proves bodies were sent."""

from __future__ import annotations

import json

import schemathesis
from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
from cursorpipe.server import create_app
from hypothesis import HealthCheck, settings

# schemathesis addresses the ASGI app as "testserver": allowed like a deployment's own name.
_config = CursorPipeConfig(pool_size=0, max_concurrency=64, allowed_hosts="testserver")
_client = CursorClient(_config, transport=MockTransport())
app = create_app(client=_client)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
SENT: dict[str, list[object]] = {}


def test_every_post_route_declares_its_request_body() -> None:
    spec = app.openapi()
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/sessions", "/v1/messages"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["type"] == "object" and body["properties"], path
    chat = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert chat["schema"]["properties"]["messages"]["items"]["required"] == ["role"]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_generated_request_causes_a_server_error(case: schemathesis.Case) -> None:
    response = case.call()
    if case.method == "POST" and case.body is not None:
        SENT.setdefault(case.path, []).append(case.body)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
    if response.status_code >= 400 and case.path.startswith("/v1/messages"):
        body = response.json()
        assert set(body) == {"type", "error"} and body["type"] == "error", body  # Anthropic's shape
        assert set(body["error"]) == {"type", "message"}
    elif response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body  # OpenAI's error shape on every other path
        assert {"message", "type", "code"} <= set(body["error"])


def test_the_fuzzer_sent_bodies_to_every_post_route() -> None:
    """Runs after the parametrized test (file order): it must have sent real JSON objects."""
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/sessions", "/v1/messages"):
        bodies = [b for b in SENT.get(path, []) if isinstance(b, dict)]
        assert bodies, (path, sorted(SENT))
        json.dumps(bodies[0])
