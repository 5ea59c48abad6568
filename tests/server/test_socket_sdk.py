"""Over a real socket (uvicorn on 127.0.0.1, random port): the official openai SDK and
langchain-openai's ChatOpenAI, and cancellation of the Cursor run when the client disconnects."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
from cursorpipe import AuthenticationError, MockTransport, NetworkError, RateLimitError, TextDelta


def sdk(url: str, **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=url + "/v1",
        api_key=kw.pop("api_key", "unused"),
        max_retries=kw.pop("max_retries", 0),
        http_client=httpx.AsyncClient(timeout=30),
        **kw,
    )


async def test_openai_sdk_chat_models_and_usage(socket_server):
    s = await socket_server(MockTransport(thinking="pondering"))
    client = sdk(s.base_url)
    async with client:
        done = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "ping"}]
        )
        assert done.choices[0].message.content == "echo: ping"
        assert done.choices[0].finish_reason == "stop"
        assert done.choices[0].message.model_extra["reasoning_content"] == "pondering"
        assert done.usage is not None and done.usage.total_tokens > 0

        stream = await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "pong"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        content, reasoning, finishes, usage = "", "", [], None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for ch in chunk.choices:
                content += ch.delta.content or ""
                reasoning += (ch.delta.model_extra or {}).get("reasoning_content") or ""
                if ch.finish_reason:
                    finishes.append(ch.finish_reason)
        assert content == "echo: pong" and reasoning == "pondering" and finishes == ["stop"]
        assert usage is not None and usage.completion_tokens > 0

        two = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], n=2
        )
        assert [c.index for c in two.choices] == [0, 1]

        s.mock.queue("one two STOP three", "a " * 100)
        stopped = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], stop=["STOP"]
        )
        assert stopped.choices[0].message.content == "one two "
        cut = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], max_tokens=2
        )
        assert cut.choices[0].finish_reason == "length"

        models = await client.models.list()
        assert [m.id for m in models.data] == ["auto", "mock-fast", "mock-thinking"]
        assert (await client.models.retrieve("mock-fast")).owned_by == "cursor"
        raw = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"mystery": 1},
        )
        assert raw.headers["x-cursorpipe-ignored-params"] == "mystery"


async def test_openai_sdk_errors(socket_server):
    s = await socket_server(MockTransport(strict_models=True), max_retries=0)
    async with sdk(s.base_url) as client:
        with pytest.raises(openai.NotFoundError) as nf:
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        assert nf.value.code == "model_not_found"
        s.mock.queue(AuthenticationError("No Cursor credentials."))
        with pytest.raises(openai.AuthenticationError) as auth:
            await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
        assert "CURSOR_API_KEY" in auth.value.message
        s.mock.queue(RateLimitError("Too many requests.", retry_after=2))
        with pytest.raises(openai.RateLimitError) as rl:
            await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}])
        assert rl.value.response.headers["retry-after"] == "2"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "x"}], temperature=9
            )
        assert bad.value.param == "temperature"
        s.mock.queue([TextDelta("partial"), NetworkError("Stream reset by Cursor.")])
        stream = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "x"}], stream=True
        )
        got: list[str] = []
        with pytest.raises(openai.APIError, match="Stream reset"):
            await _drain(stream, got)
        assert "".join(got) == "partial"


async def _drain(stream, got: list[str]) -> None:
    async with stream:
        async for chunk in stream:
            if chunk.choices:
                got.append(chunk.choices[0].delta.content or "")


async def test_openai_sdk_bearer_auth_and_sessions(socket_server):
    s = await socket_server(bearer_token="tok-123456789")
    async with sdk(s.base_url, api_key="wrong") as bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
    async with sdk(s.base_url, api_key="tok-123456789") as client:
        for text in ("first", "second"):
            await client.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": text}],
                extra_headers={"X-Cursor-Session-ID": "sdk-session"},
            )
    [session] = s.mock.sessions
    assert [m.text for m in session.history if m.role == "user"] == ["first", "second"]


async def test_openai_sdk_responses_api(socket_server):
    s = await socket_server()
    async with sdk(s.base_url) as client:
        resp = await client.responses.create(model="auto", input="hello responses", instructions="be kind")
        assert resp.output_text == "echo: hello responses"
        assert resp.usage is not None and resp.usage.output_tokens > 0
        stream = await client.responses.create(model="auto", input="streamed", stream=True)
        deltas, final = [], None
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                final = event.response
        assert "".join(deltas) == "echo: streamed"
        assert final is not None and final.output_text == "echo: streamed"


async def test_langchain_chat_openai_against_the_server(socket_server):
    from langchain_openai import ChatOpenAI

    s = await socket_server(MockTransport(thinking="hm"))
    http = httpx.AsyncClient(timeout=30)
    llm = ChatOpenAI(
        model="auto",
        base_url=s.base_url + "/v1",
        api_key="unused",
        max_retries=0,
        stream_usage=True,
        http_async_client=http,
    )
    try:
        await _langchain_checks(llm)
    finally:
        await http.aclose()


async def _langchain_checks(llm) -> None:
    msg = await llm.ainvoke("hello langchain")
    assert msg.content == "echo: hello langchain"
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] > 0
    assert msg.response_metadata["finish_reason"] == "stop"
    chunks = [c async for c in llm.astream("streaming langchain")]
    full = chunks[0]
    for c in chunks[1:]:
        full = full + c
    assert full.content == "echo: streaming langchain"
    assert full.usage_metadata is not None and full.usage_metadata["total_tokens"] > 0
    stopped = await llm.ainvoke("alpha beta gamma", stop=["beta"])
    assert stopped.content == "echo: alpha "


async def _wait_for(predicate, timeout: float) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if predicate():
            return time.perf_counter() - start
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_disconnect_mid_stream_cancels_the_run_within_a_second(socket_server):
    mock = MockTransport(delay_s=0.05)
    s = await socket_server(mock)
    mock.queue("tok " * 1000)
    async with httpx.AsyncClient(base_url=s.base_url, timeout=30) as http:
        body = {"messages": [{"role": "user", "content": "x"}], "stream": True}
        async with http.stream("POST", "/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if '"content":"tok' in line:
                    break
        # leaving the block closed the connection mid-stream
    assert mock.running == 1 or mock.cancelled == 1
    assert await _wait_for(lambda: mock.cancelled == 1, 1.0) < 1.0
    assert mock.completed == 0
    assert s.app.state.cursorpipe.gate.in_use == 0


async def test_disconnect_while_model_is_silent_cancels_non_stream_and_stream(socket_server):
    mock = MockTransport(first_delay_s=30)
    s = await socket_server(mock, keepalive_s=60)
    async with httpx.AsyncClient(base_url=s.base_url, timeout=30) as http:
        for stream in (False, True):
            task = asyncio.create_task(
                http.post(
                    "/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "x"}], "stream": stream},
                )
            )
            await _wait_for(lambda n=stream: mock.running == 1, 2.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await _wait_for(lambda n=stream: mock.cancelled == 1 + int(n), 1.0) < 1.0
    assert mock.running == 0
