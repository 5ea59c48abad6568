"""Issue 7 on the server: function tools, tool_choice, parallel_tool_calls, tool results in the
request and response_format on /v1/chat/completions, driven with the official ``openai`` SDK (and
LangChain's ChatOpenAI) over a real socket, against the Cursor API emulator (native tools through
Cursor's MCP channel) and MockTransport (emulated tools)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from cursorpipe import CursorPipeConfig, MockTransport
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Emulator, expected_tool_reply, expected_tools_reply

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def get_weather(**kwargs: Any) -> str:
    """The Python function the tests run for the model (its result depends on the arguments)."""
    return f"sunny and 21C in {kwargs.get('city', 'nowhere')}"


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=url + "/v1", api_key="unused", max_retries=0, http_client=httpx.AsyncClient(timeout=60)
    )


def emulated_calls(*calls: tuple[str, dict[str, Any]]) -> str:
    """A MockTransport reply the core parses as emulated tool calls."""
    body = {"tool_calls": [{"name": n, "arguments": a} for n, a in calls]}
    return f"<tool_calls>{json.dumps(body)}</tool_calls>"


async def accumulate(stream: Any) -> tuple[str, dict[int, dict[str, Any]], str | None]:
    """Accumulate a streamed completion the way the OpenAI docs do: tool-call fragments by index."""
    text, calls, finish = "", {}, None
    async for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta
            text += delta.content or ""
            for tc in delta.tool_calls or ():
                if tc.index not in calls:
                    assert tc.id and tc.function and tc.function.name, "first fragment carries id and name"
                    assert tc.type == "function"
                    calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
                else:
                    assert tc.id is None  # id/name only on the first fragment of an index
                calls[tc.index]["arguments"] += (tc.function and tc.function.arguments) or ""
            finish = choice.finish_reason or finish
    return text, calls, finish


def tool_messages(user: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation after running ``calls``: user, assistant tool_calls, one tool message each."""
    msgs: list[dict[str, Any]] = [
        {"role": "user", "content": user},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ],
        },
    ]
    for c in calls:
        assert c["name"] == "get_weather"
        result = get_weather(**json.loads(c["arguments"] or "{}"))
        msgs.append({"role": "tool", "tool_call_id": c["id"], "content": result})
    return msgs


@pytest.mark.slow
async def test_tool_round_trip_against_the_emulator(over_socket_app) -> None:
    user = "What's the weather? use get_weather"
    async with Emulator() as emu:
        config = CursorPipeConfig(
            strategy="connect", backend_url=emu.url, api_key=emu.api_key, pool_size=1, max_retries=0
        )
        url = await over_socket_app(create_app(config, emulated=True))
        async with sdk(url) as client:
            # non-streaming: the model calls the tool; we run it and send the result back
            first = await client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": user}], tools=[WEATHER_TOOL]
            )
            choice = first.choices[0]
            assert choice.finish_reason == "tool_calls"
            assert choice.message.tool_calls and choice.message.content is None
            call = choice.message.tool_calls[0]
            assert call.type == "function" and call.function.name == "get_weather" and call.id
            calls = [{"id": call.id, "name": call.function.name, "arguments": call.function.arguments}]
            msgs = tool_messages(user, calls)
            second = await client.chat.completions.create(model="auto", messages=msgs, tools=[WEATHER_TOOL])
            expected = expected_tool_reply("get_weather", msgs[-1]["content"])
            assert second.choices[0].finish_reason == "stop"
            assert second.choices[0].message.content == expected

            # streaming: the same flow, accumulating tool-call deltas by index
            stream = await client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": user}], tools=[WEATHER_TOOL], stream=True
            )
            _, streamed, finish = await accumulate(stream)
            assert finish == "tool_calls"
            assert list(streamed) == [0] and streamed[0]["name"] == "get_weather"
            json.loads(streamed[0]["arguments"])  # fragments add up to valid JSON
            msgs = tool_messages(user, [streamed[0]])
            stream = await client.chat.completions.create(
                model="auto", messages=msgs, tools=[WEATHER_TOOL], stream=True
            )
            text, more_calls, finish = await accumulate(stream)
            assert finish == "stop" and not more_calls
            assert text == expected_tool_reply("get_weather", msgs[-1]["content"])


async def test_emulated_tool_calls_through_mock_transport(socket_server) -> None:
    mock = MockTransport()
    s = await socket_server(mock)
    user = "weather in Oslo please"
    async with sdk(s.base_url) as client:
        mock.queue(emulated_calls(("get_weather", {"city": "Oslo"})))
        done = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": user}], tools=[WEATHER_TOOL, TIME_TOOL]
        )
        choice = done.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls or []
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
        assert [t.name for t in mock.requests[-1].tools] == ["get_weather", "get_time"]

        mock.queue(emulated_calls(("get_weather", {"city": "Bergen"})))
        stream = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": user}], tools=[WEATHER_TOOL], stream=True
        )
        _, calls, finish = await accumulate(stream)
        assert finish == "tool_calls" and json.loads(calls[0]["arguments"]) == {"city": "Bergen"}

        # the tool result goes back in the next request and reaches the core as a tool message
        msgs = tool_messages(user, [calls[0]])
        mock.queue("It is sunny in Bergen.")
        final = await client.chat.completions.create(model="auto", messages=msgs, tools=[WEATHER_TOOL])
        assert final.choices[0].message.content == "It is sunny in Bergen."
        assert final.choices[0].finish_reason == "stop"
        sent = mock.requests[-1]
        rendered = "\n".join(m.text for m in sent.messages)
        assert get_weather(city="Bergen") in rendered  # emulation renders the tool result as text


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("none", "none"),
        ("required", "required"),
        ("auto", "auto"),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
async def test_tool_choice_reaches_the_core(socket_server, choice, expected) -> None:
    mock = MockTransport()
    s = await socket_server(mock)
    async with sdk(s.base_url) as client:
        mock.queue(emulated_calls(("get_weather", {"city": "Oslo"})))
        r = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "hi"}],
            tools=[WEATHER_TOOL],
            tool_choice=choice,
            parallel_tool_calls=True,
        )
        assert "x-cursorpipe-ignored-params" not in r.headers
        assert mock.requests[-1].tool_choice == expected
        assert [t.name for t in mock.requests[-1].tools] == ["get_weather"]


async def test_parallel_tool_calls_false_keeps_the_first_call(socket_server) -> None:
    mock = MockTransport()
    s = await socket_server(mock)
    two = emulated_calls(("get_weather", {"city": "Oslo"}), ("get_time", {}))
    async with sdk(s.base_url) as client:
        mock.queue(two)
        r = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "both"}], tools=[WEATHER_TOOL, TIME_TOOL]
        )
        assert [c.function.name for c in r.parse().choices[0].message.tool_calls or []] == [
            "get_weather",
            "get_time",
        ]
        mock.queue(two)
        r = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "both"}],
            tools=[WEATHER_TOOL, TIME_TOOL],
            parallel_tool_calls=False,
        )
        assert [c.function.name for c in r.parse().choices[0].message.tool_calls or []] == ["get_weather"]
        assert r.headers["x-cursorpipe-dropped-tool-calls"] == "1"
        mock.queue(two)
        stream = await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "both"}],
            tools=[WEATHER_TOOL, TIME_TOOL],
            parallel_tool_calls=False,
            stream=True,
        )
        _, calls, finish = await accumulate(stream)
        assert finish == "tool_calls" and [c["name"] for c in calls.values()] == ["get_weather"]


async def test_invalid_tool_calls_are_reported_not_returned(socket_server, parse_sse) -> None:
    mock = MockTransport()
    s = await socket_server(mock)
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL]}
    mock.queue(emulated_calls(("no_such_tool", {"a": 1})))
    r = await s.http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    (bad,) = choice["message"]["cursorpipe_invalid_tool_calls"]
    assert bad["function"]["name"] == "no_such_tool" and bad["error"]
    assert r.headers["x-cursorpipe-invalid-tool-calls"] == "1"

    mock.queue(emulated_calls(("no_such_tool", {"a": 1})))
    r = await s.http.post("/v1/chat/completions", json={**body, "stream": True})
    chunks = [c for c in parse_sse(r.text) if c != "[DONE]"]
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks if c["choices"])
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "stop"
    assert last["cursorpipe_invalid_tool_calls"][0]["function"]["name"] == "no_such_tool"


SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
            "required": ["name", "population"],
        },
    },
}


async def test_response_format_json_schema_is_validated(socket_server) -> None:
    mock = MockTransport()
    s = await socket_server(mock)
    async with sdk(s.base_url) as client:
        # prose around the JSON: the core extracts and validates it; content is the JSON text
        mock.queue('Here you go: {"name": "Oslo", "population": 709000}')
        done = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Oslo facts"}], response_format=SCHEMA
        )
        assert json.loads(done.choices[0].message.content or "") == {"name": "Oslo", "population": 709000}
        assert "JSON Schema" in mock.requests[-1].messages[0].text  # the schema was asked for

        # invalid twice (answer + the one repair round) -> 422 structured_output_invalid, which the SDK
        # raises as UnprocessableEntityError (not an internal server error) and does not retry
        mock.queue('{"name": "Oslo"}')
        mock.queue("still not it")
        with pytest.raises(openai.UnprocessableEntityError) as info:
            await client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "Oslo facts"}], response_format=SCHEMA
            )
        assert info.value.status_code == 422
        assert info.value.response.json()["error"]["code"] == "structured_output_invalid"
        assert info.value.response.headers["x-should-retry"] == "false"

        # streaming: instructions only, the text passes through unvalidated
        mock.queue('{"ok": true}')
        stream = await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "json"}],
            response_format={"type": "json_object"},
            stream=True,
        )
        text, _, finish = await accumulate(stream)
        assert json.loads(text) == {"ok": True} and finish == "stop"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": "get_weather"}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [WEATHER_TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "other"}}},
            "tool_choice.function.name",
        ),
        ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format.json_schema.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}},
            "response_format.json_schema.schema",
        ),
    ],
)
async def test_bad_tool_shapes_are_400_naming_the_param(served, extra, param) -> None:
    s = await served()
    r = await s.http.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], **extra}
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]
    assert not s.mock.requests  # nothing ran


async def test_tools_with_a_session_header_are_400(served) -> None:
    s = await served()
    r = await s.http.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL]},
        headers={"X-Cursor-Session-ID": "s1"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"


async def test_langchain_chat_openai_bind_tools(socket_server) -> None:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def lookup_weather(city: str) -> str:
        """Current weather for a city."""
        return get_weather(city=city)

    mock = MockTransport()
    s = await socket_server(mock)
    llm = ChatOpenAI(model="auto", base_url=s.base_url + "/v1", api_key="unused", max_retries=0)
    bound = llm.bind_tools([lookup_weather])
    mock.queue(emulated_calls(("lookup_weather", {"city": "Oslo"})))
    msg = await bound.ainvoke("weather in Oslo?")
    assert [(c["name"], c["args"]) for c in msg.tool_calls] == [("lookup_weather", {"city": "Oslo"})]
    assert msg.tool_calls[0]["id"]
    assert mock.requests[-1].tools[0].name == "lookup_weather"

    mock.queue(emulated_calls(("lookup_weather", {"city": "Bergen"})))
    chunks = [c async for c in bound.astream("weather in Bergen?")]
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("lookup_weather", {"city": "Bergen"})]


RESPONSES_WEATHER: dict[str, Any] = {"type": "function", **WEATHER_TOOL["function"]}


async def test_responses_api_function_tools(socket_server) -> None:
    mock = MockTransport()
    s = await socket_server(mock)
    async with sdk(s.base_url) as client:
        mock.queue(emulated_calls(("get_weather", {"city": "Oslo"})))
        resp = await client.responses.create(
            model="auto",
            input="weather in Oslo?",
            tools=[RESPONSES_WEATHER],
            tool_choice={"type": "function", "name": "get_weather"},
        )
        (call,) = [o for o in resp.output if o.type == "function_call"]
        assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Oslo"} and call.call_id
        assert mock.requests[-1].tool_choice == {"type": "function", "function": {"name": "get_weather"}}
        assert resp.tools[0].name == "get_weather"  # type: ignore[union-attr]

        # the result goes back as function_call + function_call_output input items
        result = get_weather(**json.loads(call.arguments))
        mock.queue("Sunny in Oslo.")
        final = await client.responses.create(
            model="auto",
            input=[
                {"role": "user", "content": "weather in Oslo?"},
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                },
                {"type": "function_call_output", "call_id": call.call_id, "output": result},
            ],
            tools=[RESPONSES_WEATHER],
        )
        assert final.output_text == "Sunny in Oslo."
        assert result in "\n".join(m.text for m in mock.requests[-1].messages)

        # streaming: the call arrives as function_call output item events
        mock.queue(emulated_calls(("get_weather", {"city": "Bergen"})))
        stream = await client.responses.create(
            model="auto", input="weather in Bergen?", tools=[RESPONSES_WEATHER], stream=True
        )
        kinds, done_items, args = [], [], ""
        async for ev in stream:
            kinds.append(ev.type)
            if ev.type == "response.function_call_arguments.delta":
                args += ev.delta
            if ev.type == "response.output_item.done" and ev.item.type == "function_call":
                done_items.append(ev.item)
        assert json.loads(args) == {"city": "Bergen"}
        assert [i.name for i in done_items] == ["get_weather"]
        assert kinds[-1] == "response.completed"

        # bad shapes name the Responses API's own param
        with pytest.raises(openai.BadRequestError) as info:
            await client.responses.create(
                model="auto", input="x", tools=[{"type": "function", "name": "bad name!"}]
            )
        assert info.value.body["param"] == "tools[0].name"  # type: ignore[index]


def test_arbitrary_tool_fields_never_cause_a_500() -> None:
    """Whatever arrives in tools / tool_choice / response_format / parallel_tool_calls (chat) or
    tools / tool_choice / input items (responses): 200 or a 400 in OpenAI's shape (or the documented
    502 for an answer that fails response_format), never a 500."""
    from cursorpipe import CursorClient
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from starlette.testclient import TestClient

    scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=6)
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=8,
    )
    fn = st.fixed_dictionaries(
        {"name": st.sampled_from(["get_weather", "", "bad name", "f"]) | values},
        optional={
            "parameters": values | st.just({"type": "object"}),
            "description": values,
            "strict": values,
        },
    )
    tool = st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "web_search"]) | values}, optional={"function": fn | values}
    )
    flat_tool = st.fixed_dictionaries({"type": st.sampled_from(["function", "x"])}, optional={"name": values})
    choice = st.sampled_from(["auto", "none", "required", "any"]) | st.fixed_dictionaries(
        {"type": st.just("function")}, optional={"function": values, "name": values}
    )
    fmt = st.fixed_dictionaries(
        {"type": st.sampled_from(["text", "json_object", "json_schema", "yaml"])},
        optional={
            "json_schema": st.fixed_dictionaries({}, optional={"name": values, "schema": values}) | values
        },
    )
    item = st.fixed_dictionaries(
        {"type": st.sampled_from(["function_call", "function_call_output", "message"])},
        optional={"call_id": values, "name": values, "arguments": values, "output": values, "role": values},
    )
    chat = st.fixed_dictionaries(
        {"messages": st.just([{"role": "user", "content": "hi"}])},
        optional={
            "tools": st.lists(tool, max_size=2) | values,
            "tool_choice": choice | values,
            "response_format": fmt | values,
            "parallel_tool_calls": values,
        },
    )
    responses = st.fixed_dictionaries(
        {"input": st.lists(item, max_size=3) | st.just("hi")},
        optional={"tools": st.lists(flat_tool, max_size=2) | values, "tool_choice": choice | values},
    )
    client = CursorClient(CursorPipeConfig(max_retries=0), transport=MockTransport())
    seen: set[int] = set()
    with TestClient(create_app(client=client), base_url="http://localhost") as http:

        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            case=st.tuples(st.just("/v1/chat/completions"), chat)
            | st.tuples(st.just("/v1/responses"), responses)
        )
        def check(case: tuple[str, Any]) -> None:
            path, body = case
            r = http.post(path, json=body)
            seen.add(r.status_code)
            assert r.status_code in (200, 400, 422), (r.status_code, r.text)
            if r.status_code == 422:  # the mock's echo is no JSON: response_format validation failed
                assert r.json()["error"]["code"] == "structured_output_invalid"
            if r.status_code == 400:
                err = r.json()["error"]
                assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["param"]

        check()
    assert 400 in seen


@pytest.mark.slow
async def test_parallel_calls_stream_with_distinct_indices_against_the_emulator(over_socket_app) -> None:
    user = "check get_weather and get_time"
    async with Emulator() as emu:
        config = CursorPipeConfig(
            strategy="connect", backend_url=emu.url, api_key=emu.api_key, pool_size=1, max_retries=0
        )
        url = await over_socket_app(create_app(config, emulated=True))
        async with sdk(url) as client:
            stream = await client.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": user}],
                tools=[WEATHER_TOOL, TIME_TOOL],
                stream=True,
            )
            _, calls, finish = await accumulate(stream)
            assert finish == "tool_calls"
            assert sorted(calls) == [0, 1] and [calls[i]["name"] for i in (0, 1)] == [
                "get_weather",
                "get_time",
            ]
            assert calls[0]["id"] != calls[1]["id"]
            results = {"get_weather": get_weather(city="Oslo"), "get_time": "12:00"}
            msgs: list[dict[str, Any]] = [
                {"role": "user", "content": user},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["name"], "arguments": c["arguments"]},
                        }
                        for c in calls.values()
                    ],
                },
                *(
                    {"role": "tool", "tool_call_id": c["id"], "content": results[c["name"]]}
                    for c in calls.values()
                ),
            ]
            done = await client.chat.completions.create(
                model="auto", messages=msgs, tools=[WEATHER_TOOL, TIME_TOOL]
            )
            assert done.choices[0].message.content == expected_tools_reply(
                [(c["name"], results[c["name"]]) for c in calls.values()]
            )
