"""The server against its own OpenAPI schema (schemathesis): no generated request, valid or
not, gets a 5xx."""

from __future__ import annotations

import schemathesis
from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
from cursorpipe.server import create_app
from hypothesis import HealthCheck, settings

_client = CursorClient(CursorPipeConfig(pool_size=0, max_concurrency=64), transport=MockTransport())
app = create_app(client=_client)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_causes_a_server_error(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body  # OpenAI's error shape on every path
        assert {"message", "type", "code"} <= set(body["error"])
