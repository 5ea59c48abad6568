"""Property test: whatever JSON arrives, the server answers 200 or a 4xx in OpenAI's shape, never 500."""

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
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_text", "video", 3])},
    optional={"text": json_values, "image_url": json_values},
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "wizard", 1])},
    optional={
        "content": st.text(max_size=10) | st.lists(part, max_size=3) | json_values,
        "name": json_values,
        "tool_calls": json_values,
    },
)
chat_body = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["auto", "", "mock-fast"]) | json_values,
        "messages": st.lists(message, max_size=3) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": json_values}) | json_values,
        "temperature": json_values,
        "max_tokens": st.integers(-5, 50) | json_values,
        "stop": st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=3) | json_values,
        "n": st.integers(-1, 10) | json_values,
        "seed": json_values,
        "extra": json_values,
    },
)
responses_body = st.fixed_dictionaries(
    {},
    optional={
        "input": st.text(max_size=10) | st.lists(message, max_size=2) | json_values,
        "instructions": json_values,
        "max_output_tokens": json_values,
        "stream": st.booleans(),
    },
)


def test_arbitrary_json_bodies_never_cause_a_500() -> None:
    client = CursorClient(CursorPipeConfig(max_retries=0), transport=MockTransport())
    app = create_app(client=client)
    seen: set[int] = set()
    with TestClient(app, base_url="http://localhost") as http:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        # Guaranteed valid and invalid bodies, so the final check never depends on what hypothesis drew.
        @example(
            path="/v1/chat/completions",
            body={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        )
        @example(path="/v1/chat/completions", body={"messages": "not a list"})
        @given(
            path=st.sampled_from(["/v1/chat/completions", "/v1/responses"]),
            body=chat_body | responses_body | json_values,
        )
        def check(path: str, body: object) -> None:
            r = http.post(
                path, content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"}
            )
            seen.add(r.status_code)
            assert r.status_code in (200, 400), (r.status_code, r.text)
            if r.status_code == 400:
                err = r.json()["error"]
                assert set(err) == {"message", "type", "param", "code"} and err["message"]

        check()
    assert 400 in seen and 200 in seen
