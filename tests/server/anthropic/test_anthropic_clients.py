"""Claude-native clients other than the SDK against the Messages route (issue 14): LangChain's
``ChatAnthropic(base_url=...)`` and LiteLLM's ``anthropic/`` route, over a socket, against the
Cursor API emulator."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
from cursorpipe.testing.emulator import expected_reply, expected_tool_reply
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

pytestmark = pytest.mark.slow


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"sunny and 21C in {city}"


class Weather(BaseModel):
    """The weather in a city."""

    city: str = Field(description="the city")


def chat(url: str, **kw: object) -> ChatAnthropic:
    return ChatAnthropic(model="auto", base_url=url, api_key="unused", max_retries=0, max_tokens=512, **kw)  # type: ignore[arg-type, call-arg]


async def test_chat_anthropic_invoke_stream_and_memory(live) -> None:
    server = await live()
    llm = chat(server.url)
    done = await llm.ainvoke([SystemMessage("Be brief."), HumanMessage("one")])
    assert done.text == expected_reply("one", system="Be brief.")
    assert done.usage_metadata is not None and done.usage_metadata["output_tokens"] > 0
    assert done.response_metadata["stop_reason"] == "end_turn"

    again = await llm.ainvoke([HumanMessage("one"), done, HumanMessage("two")])
    assert again.text == expected_reply("two", earlier=2, first="one")

    chunks = [c async for c in llm.astream("stream it")]
    assert len(chunks) > 2
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.text == expected_reply("stream it")

    sync = await asyncio.to_thread(llm.invoke, "sync")
    assert sync.text == expected_reply("sync")


async def test_chat_anthropic_bind_tools_loop(live) -> None:
    server = await live()
    llm = chat(server.url).bind_tools([get_weather])
    question = HumanMessage("What's the weather? use get_weather")
    first = await llm.ainvoke([question])
    assert isinstance(first, AIMessage) and first.tool_calls
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    result = get_weather.invoke(call["args"])
    second = await llm.ainvoke([question, first, ToolMessage(result, tool_call_id=call["id"])])
    assert not second.tool_calls
    assert second.text == expected_tool_reply("get_weather", result)

    streamed = None
    async for chunk in llm.astream([question]):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and [c["name"] for c in streamed.tool_calls] == ["get_weather"]


async def test_chat_anthropic_with_structured_output(live) -> None:
    server = await live()
    structured = chat(server.url).with_structured_output(Weather)
    got = await structured.ainvoke("What is the weather in Oslo?")
    assert isinstance(got, Weather) and got.city
    run = server.emu.runs[-1]
    assert run.tools_offered == ["Weather"] and [c.name for c in run.tool_calls] == ["Weather"]
    # Anthropic's structured outputs (output_config.format): the core asks for the JSON.
    native = chat(server.url).with_structured_output(Weather, method="json_schema")
    got = await native.ainvoke("What is the weather in Oslo?")
    assert isinstance(got, Weather) and got.city
    assert server.emu.runs[-1].tools_offered == []


async def test_litellm_anthropic_route(live, monkeypatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    server = await live()
    done = await litellm.acompletion(
        model="anthropic/auto",
        api_base=server.url,
        api_key="unused",
        max_tokens=256,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "via litellm"}],
    )
    assert done.choices[0].message.content == expected_reply("via litellm", system="Be brief.")
    assert done.usage.completion_tokens > 0
    stream = await litellm.acompletion(
        model="anthropic/auto",
        api_base=server.url,
        api_key="unused",
        max_tokens=256,
        stream=True,
        messages=[{"role": "user", "content": "litellm stream"}],
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == expected_reply("litellm stream")
    async with httpx.AsyncClient(base_url=server.url) as http:
        metrics = (await http.get("/metrics")).text
    served = [line for line in metrics.splitlines() if 'path="/v1/messages"' in line and "_total" in line]
    assert served and all('status="200"' in line for line in served)  # LiteLLM spoke the Messages API
