"""/v1/chat/completions in-process: OpenAI's shapes, streaming format, limits, n, parts, policy."""

from __future__ import annotations

import asyncio

from cursorpipe import MockTransport, TextDelta, ThinkingDelta, TurnEnd, Usage, UsageEvent

USER = [{"role": "user", "content": "hello there"}]


async def test_non_stream_shape_usage_and_reasoning(served) -> None:
    s = await served(MockTransport(thinking="let me think"))
    r = await s.http.post("/v1/chat/completions", json={"model": "auto", "messages": USER})
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "auto"
    [choice] = body["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": "echo: hello there",
        "refusal": None,
        "reasoning_content": "let me think",
    }
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] > 0
    assert r.headers["x-request-id"].startswith("req_")
    assert r.headers["x-cursorpipe-transport"] == "mock"
    assert "x-cursorpipe-ignored-params" not in r.headers


async def test_stream_is_exactly_openai_shaped(served, parse_sse) -> None:
    s = await served(MockTransport(thinking="hmm"))
    body = {"model": "auto", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    r = await s.http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert len({c["created"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    # usage is null on every chunk but the last, which has no choices
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    deltas = [c["choices"][0] for c in chunks[1:-1]]
    reasoning = "".join(d["delta"].get("reasoning_content", "") for d in deltas)
    content = "".join(d["delta"].get("content", "") or "" for d in deltas)
    assert reasoning == "hmm"
    assert content == "echo: hello there"
    assert deltas[-1]["finish_reason"] == "stop" and deltas[-1]["delta"] == {}
    assert all(d["finish_reason"] is None for d in deltas[:-1])


async def test_stream_without_include_usage_has_no_usage_key(served, parse_sse) -> None:
    s = await served()
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "stream": True})
    chunks = parse_sse(r.text)[:-1]
    assert chunks and all("usage" not in c for c in chunks)


async def test_list_content_with_image_parts_reaches_the_transport(served) -> None:
    s = await served()
    png = "data:image/png;base64,iVBORw0KGgo="
    messages = [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is "},
                {"type": "text", "text": "this?"},
                {"type": "image_url", "image_url": {"url": png}},
            ],
        },
    ]
    r = await s.http.post("/v1/chat/completions", json={"model": "auto", "messages": messages})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "echo: what is this?"
    req = s.mock.requests[0]
    assert req.system == "be brief"
    assert req.messages[-1].images[0].data == b"\x89PNG\r\n\x1a\n"


async def test_max_tokens_cuts_output_with_finish_reason_length(served, parse_sse) -> None:
    s = await served()
    long = "word " * 200
    s.mock.queue(long, long)
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 5})
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"]) <= 20 and choice["message"]["content"].startswith("word")
    r = await s.http.post(
        "/v1/chat/completions", json={"messages": USER, "max_completion_tokens": 3, "stream": True}
    )
    chunks = parse_sse(r.text)[:-1]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert 0 < len(text) <= 12
    assert s.mock.cancelled == 2  # the upstream runs were cancelled once the limit was hit


async def test_stop_sequences_are_enforced(served, parse_sse) -> None:
    s = await served()
    s.mock.queue("alpha beta STOP gamma", "one two three four")
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "stop": "STOP"})
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "alpha beta "
    assert choice["finish_reason"] == "stop"
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "stop": ["three"], "stream": True})
    text = "".join(
        c["choices"][0]["delta"].get("content", "") for c in parse_sse(r.text)[:-1] if c["choices"]
    )
    assert text == "one two "


async def test_n_runs_in_parallel(served, parse_sse) -> None:
    calls = iter(["first answer", "second answer", "third", "fourth"])
    s = await served(MockTransport(script=lambda req, sess: next(calls), delay_s=0.01))
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "n": 2})
    body = r.json()
    assert sorted(c["message"]["content"] for c in body["choices"]) == ["first answer", "second answer"]
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert len(s.mock.requests) == 2
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "n": 2, "stream": True})
    chunks = parse_sse(r.text)[:-1]
    by_index: dict[int, str] = {0: "", 1: ""}
    roles = set()
    for c in chunks:
        ch = c["choices"][0]
        by_index[ch["index"]] += ch["delta"].get("content", "")
        if ch["delta"].get("role"):
            roles.add(ch["index"])
    assert sorted(by_index.values()) == ["fourth", "third"]
    assert roles == {0, 1}
    assert sum(1 for c in chunks if c["choices"][0]["finish_reason"] == "stop") == 2


async def test_unknown_fields_listed_in_header_by_default(served) -> None:
    s = await served()
    body = {
        "messages": USER,
        "frobnicate": 1,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "auto",
        "response_format": {"type": "text"},
        "user": "u1",
        "seed": 3,
        "temperature": 0.2,
    }
    r = await s.http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    ignored = r.headers["x-cursorpipe-ignored-params"].split(", ")
    # tools/tool_choice/response_format are honoured (issue 7); Cursor has no sampling knobs, so
    # seed and temperature are listed (issue 15)
    assert ignored == ["frobnicate", "seed", "temperature"]
    assert s.mock.requests[0].temperature == 0.2
    assert [t.name for t in s.mock.requests[0].tools] == ["f"]


async def test_strict_mode_rejects_unknown_field_naming_it(served) -> None:
    s = await served(strict_params=True)
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "logit_bias": {}})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "logit_bias" and err["code"] == "unsupported_parameter"
    assert "logit_bias" in err["message"]
    for name, value in (("temperature", 0.5), ("top_p", 0.9), ("seed", 1)):
        r = await s.http.post("/v1/chat/completions", json={"messages": USER, name: value})
        assert r.status_code == 400, name
        assert r.json()["error"]["param"] == name and r.json()["error"]["code"] == "unsupported_parameter"
        r = await s.http.post("/v1/responses", json={"input": "hi", name: value})
        assert r.status_code == 400, name
        assert r.json()["error"]["param"] == name
    assert not s.mock.requests  # nothing refused reached the transport
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "user": "u", "temperature": None})
    assert r.status_code == 200
    assert s.mock.requests  # the accepted request ran


async def test_sampling_parameters_are_validated_and_listed_as_ignored(served) -> None:
    s = await served()
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "top_p": 3})
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_p"
    r = await s.http.post("/v1/responses", json={"input": "hi", "temperature": 0.3, "top_p": 0.5})
    assert r.status_code == 200
    assert r.headers["x-cursorpipe-ignored-params"] == "temperature, top_p"


async def test_mid_stream_error_sends_error_event_then_done(served, parse_sse) -> None:
    from cursorpipe import NetworkError

    s = await served()
    s.mock.queue([TextDelta("partial "), NetworkError("Connection to Cursor was reset.")])
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "stream": True})
    assert r.status_code == 200
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "network_error"
    assert "reset" in events[-2]["error"]["message"]
    assert any(
        c.get("choices") and c["choices"][0]["delta"].get("content") == "partial " for c in events[:-2]
    )


async def test_keepalive_comments_while_model_is_silent(served) -> None:
    mock = MockTransport(first_delay_s=0.4)
    s = await served(mock, keepalive_s=0.05)
    r = await s.http.post("/v1/chat/completions", json={"messages": USER, "stream": True})
    assert r.status_code == 200
    assert ": keep-alive" in r.text
    assert r.text.rstrip().endswith("data: [DONE]")


async def test_real_usage_and_finish_reason_from_transport(served) -> None:
    s = await served()
    usage = Usage(input_tokens=11, output_tokens=7, cache_read_tokens=3, reasoning_tokens=2)
    s.mock.queue([ThinkingDelta("t"), TextDelta("ok"), UsageEvent(usage), TurnEnd("content_filter", usage)])
    r = await s.http.post("/v1/chat/completions", json={"messages": USER})
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert body["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 7,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    assert r.headers["x-cursorpipe-usage-estimated"] == "false"


async def test_per_request_timeout_header(served) -> None:
    s = await served(MockTransport(first_delay_s=2.0), max_retries=0)
    r = await s.http.post(
        "/v1/chat/completions", json={"messages": USER}, headers={"X-CursorPipe-Timeout": "0.2"}
    )
    assert r.status_code == 504
    assert r.headers["x-should-retry"] == "false"
    r = await s.http.post(
        "/v1/chat/completions", json={"messages": USER}, headers={"X-CursorPipe-Timeout": "soon"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-cursorpipe-timeout"


async def test_concurrency_limit_answers_429_with_retry_after(served) -> None:
    s = await served(MockTransport(first_delay_s=0.5), max_concurrency=1, queue_timeout_s=0.05)
    slow = asyncio.create_task(s.http.post("/v1/chat/completions", json={"messages": USER}))
    await asyncio.sleep(0.1)
    r = await s.http.post("/v1/chat/completions", json={"messages": USER})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "server_busy"
    assert (await slow).status_code == 200
    r = await s.http.post("/v1/chat/completions", json={"messages": USER})
    assert r.status_code == 200  # the slot was given back
