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


# ---- hostile raw bodies (issue 12 item 3): what json.dumps of a Python value never produces ----
_any_char = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters()
_hostile_text = st.text(alphabet=_any_char, max_size=12)  # lone surrogates included
_deep = st.integers(1, 3000).flatmap(
    lambda k: st.sampled_from(["[" * k + "]" * k, '{"a":' * k + "1" + "}" * k, "[" * k])
)
_huge = st.sampled_from(["1e400", "-1e400", "1" * 5000, "-0", "1E-400", "123456789012345678901234567890"])
_odd = st.sampled_from(["null", "true", "[]", "{}", '""', "0", '"\\u0000"', "NaN", "Infinity"])


def _raw_value() -> st.SearchStrategy[str]:
    return st.one_of(
        _hostile_text.map(lambda t: json.dumps(t, ensure_ascii=True)),  # \\udXXX escapes
        _deep,
        _huge,
        _odd,
    )


_raw_message = st.tuples(st.sampled_from(["user", "system", "assistant", "tool"]), _raw_value()).map(
    lambda rc: f'{{"role": "{rc[0]}", "content": {rc[1]}}}'
)
_raw_chat = st.tuples(st.lists(_raw_message, min_size=1, max_size=3), st.booleans(), _raw_value()).map(
    lambda t: f'{{"messages": [{", ".join(t[0])}], "stream": {str(t[1]).lower()}, "temperature": {t[2]}}}'
)
_raw_tools = _raw_value().map(
    lambda v: (
        '{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", '
        f'"function": {{"name": "f", "parameters": {{"type": "object", "properties": {{"a": {v}}}}}}}}}]}}'
    )
)
_raw_schema = _raw_value().map(
    lambda v: (
        '{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema", '
        f'"json_schema": {{"name": "s", "schema": {{"type": "object", "properties": {{"a": {v}}}}}}}}}}}'
    )
)
_raw_history = _raw_value().map(
    lambda v: (
        '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": null, '
        '"tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '
        f'{json.dumps(v)}}}}}]}}, {{"role": "tool", "tool_call_id": "c1", "content": {v}}}]}}'
    )
)
_raw_responses = st.tuples(_raw_value(), _raw_value(), st.booleans()).map(
    lambda t: f'{{"input": {t[0]}, "instructions": {t[1]}, "stream": {str(t[2]).lower()}}}'
)


def test_hostile_raw_bodies_never_cause_a_500() -> None:
    """Lone surrogates, nesting past the recursion limit, numbers past float and int limits and
    odd JSON types, in every field the red team used: 200 or a 4xx in OpenAI's shape."""
    client = CursorClient(CursorPipeConfig(max_retries=0), transport=MockTransport())
    app = create_app(client=client)
    seen: dict[int, int] = {}
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as http:

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @example(path="/v1/chat/completions", raw='{"messages": [{"role": "user", "content": "\\ud800"}]}')
        @example(path="/v1/responses", raw='{"input": "x", "instructions": "\\udfff"}')
        @given(
            path=st.sampled_from(["/v1/chat/completions", "/v1/responses", "/v1/sessions"]),
            raw=_raw_chat | _raw_tools | _raw_schema | _raw_history | _raw_responses,
        )
        def check(path: str, raw: str) -> None:
            r = http.post(path, content=raw.encode("utf-8"), headers={"content-type": "application/json"})
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
            # The mock's answer is not JSON, so an accepted response_format ends in the typed
            # "model output invalid" 502; any other 5xx is a server bug.
            if r.status_code == 502:
                assert r.json()["error"]["code"] == "structured_output_invalid", r.text
            else:
                assert r.status_code < 500, (r.status_code, raw[:300], r.text[:300])
            if r.status_code >= 400:
                err = r.json()["error"]
                assert set(err) == {"message", "type", "param", "code"} and err["message"]
            elif "text/event-stream" in r.headers.get("content-type", ""):
                assert r.text.rstrip().endswith("data: [DONE]") or "response." in r.text

        check()
    assert seen.get(400, 0) > 0 and sum(seen.values()) >= 300, seen
