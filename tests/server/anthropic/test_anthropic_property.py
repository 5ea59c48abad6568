"""Property test: whatever JSON reaches the Anthropic routes, the answer is 200 or a 4xx in
Anthropic's error shape, never a 500 (issue 14)."""

from __future__ import annotations

import json

from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
from cursorpipe.server import create_app
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
source = st.fixed_dictionaries(
    {"type": st.sampled_from(["base64", "url", "file", 1])},
    optional={
        "media_type": st.sampled_from(["image/png", "text/plain"]) | json_values,
        "data": st.sampled_from(["iVBORw0KGgo=", "%%%"]) | json_values,
        "url": st.sampled_from(["https://x.test/a.png", "ftp://x"]) | json_values,
    },
)
block = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "document", 7])},
    optional={
        "text": json_values,
        "source": source | json_values,
        "id": json_values,
        "name": st.sampled_from(["get_weather", "bad name"]) | json_values,
        "input": json_values,
        "tool_use_id": json_values,
        "content": st.text(max_size=5) | st.lists(json_values, max_size=2) | json_values,
        "is_error": json_values,
        "cache_control": json_values,
    },
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", 1])},
    optional={"content": st.text(max_size=10) | st.lists(block, max_size=3) | json_values},
)
tool = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["get_weather", "", "x" * 70]) | json_values,
        "type": st.sampled_from(["custom", "web_search_20250305"]) | json_values,
        "input_schema": st.just({"type": "object", "properties": {}}) | json_values,
        "description": json_values,
    },
)
messages_body = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["auto", "", "mock-fast"]) | json_values,
        "max_tokens": st.integers(-5, 50) | json_values,
        "messages": st.lists(message, max_size=3) | json_values,
        "system": st.text(max_size=5) | st.lists(block, max_size=2) | json_values,
        "stream": st.booleans() | json_values,
        "stop_sequences": st.lists(st.text(max_size=3), max_size=2) | json_values,
        "temperature": json_values,
        "top_k": json_values,
        "tools": st.lists(tool, max_size=2) | json_values,
        "tool_choice": st.fixed_dictionaries(
            {"type": st.sampled_from(["auto", "any", "tool", "none", "x"])},
            optional={"name": json_values, "disable_parallel_tool_use": json_values},
        )
        | json_values,
        "thinking": st.fixed_dictionaries(
            {"type": st.sampled_from(["enabled", "disabled", "adaptive", 0])},
            optional={"budget_tokens": st.integers(0, 5000) | json_values},
        )
        | json_values,
        "metadata": json_values,
        "output_config": json_values,
    },
)


def test_arbitrary_bodies_never_cause_a_500_and_errors_are_anthropic_shaped() -> None:
    client = CursorClient(CursorPipeConfig(max_retries=0), transport=MockTransport())
    app = create_app(client=client)
    seen: set[int] = set()
    with TestClient(app, base_url="http://localhost") as http:

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @example(
            path="/v1/messages",
            body={"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
        )
        @example(path="/v1/messages", body={"model": "auto", "messages": "not a list"})
        @given(
            path=st.sampled_from(["/v1/messages", "/v1/messages/count_tokens"]),
            body=messages_body | json_values,
        )
        def check(path: str, body: object) -> None:
            r = http.post(
                path, content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"}
            )
            seen.add(r.status_code)
            assert r.status_code in (200, 400), (r.status_code, r.text)
            if r.status_code == 400:
                payload = r.json()
                assert set(payload) == {"type", "error"} and payload["type"] == "error"
                assert set(payload["error"]) == {"type", "message"} and payload["error"]["message"]
                assert payload["error"]["type"] == "invalid_request_error"
                assert r.headers["request-id"] == r.headers["x-request-id"]

        check()
    assert 400 in seen and 200 in seen
