"""The official ``anthropic`` SDK against cursorpipe-server's Messages API, over a socket, with the
connect transport talking to the Cursor API emulator (issue 14). The emulator's reply states what
its model saw, so memory, system prompts, images and tools are proven, not assumed."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import anthropic
import pytest
from cursorpipe.testing.emulator import (
    DEFAULT_THINKING,
    Behaviour,
    Fault,
    expected_reply,
    expected_tool_reply,
)

pytestmark = pytest.mark.slow

WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PNG = b"\x89PNG\r\n\x1a\n fake image"


async def drain(manager: Any) -> None:
    async with manager as stream:
        async for _ in stream:
            pass


def text_of(message: Any) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


async def test_create_memory_system_and_thinking(live) -> None:
    server = await live()
    async with server.client() as client:
        first = await client.messages.create(
            model="auto", max_tokens=256, system="Be brief.", messages=[{"role": "user", "content": "one"}]
        )
        assert first.id.startswith("msg_") and first.type == "message" and first.role == "assistant"
        assert text_of(first) == expected_reply("one", system="Be brief.")
        thinking = [b for b in first.content if b.type == "thinking"]
        assert [b.thinking for b in thinking] == [DEFAULT_THINKING] and thinking[0].signature
        assert first.stop_reason == "end_turn" and first.stop_sequence is None
        assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
        assert first.usage.cache_read_input_tokens is not None

        # Stateless: the whole conversation goes back, thinking block included (dropped on the way).
        history: list[Any] = [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}],
            },
        ]
        second = await client.messages.create(
            model="auto",
            max_tokens=256,
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            messages=history,
        )
        assert text_of(second) == expected_reply("two", earlier=2, first="one", system="Be brief.")


async def test_stream_helpers_and_raw_events(live) -> None:
    server = await live()
    async with server.client() as client:
        async with client.messages.stream(
            model="auto", max_tokens=256, messages=[{"role": "user", "content": "stream it"}]
        ) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        assert "".join(pieces) == expected_reply("stream it") and len(pieces) > 1
        assert text_of(final) == expected_reply("stream it")
        assert final.content[0].type == "thinking" and final.content[0].thinking == DEFAULT_THINKING
        assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0

        raw = await client.messages.create(
            model="auto", max_tokens=256, stream=True, messages=[{"role": "user", "content": "raw"}]
        )
        kinds = [event.type async for event in raw]
        assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
        assert "ping" not in kinds  # the SDK skips pings


async def test_sync_client_create_stream_and_count_tokens(live) -> None:
    server = await live()

    def run() -> tuple[Any, str, int, int]:
        with server.sync_client() as client:
            done = client.messages.create(
                model="auto", max_tokens=100, messages=[{"role": "user", "content": "sync"}]
            )
            with client.messages.stream(
                model="auto", max_tokens=100, messages=[{"role": "user", "content": "sync stream"}]
            ) as stream:
                streamed = "".join(stream.text_stream)
            small = client.messages.count_tokens(model="auto", messages=[{"role": "user", "content": "hi"}])
            big = client.messages.count_tokens(
                model="auto",
                system="long " * 200,
                tools=[WEATHER],
                messages=[{"role": "user", "content": "hi"}],
            )
            return done, streamed, small.input_tokens, big.input_tokens

    done, streamed, small, big = await asyncio.to_thread(run)
    assert text_of(done) == expected_reply("sync")
    assert streamed == expected_reply("sync stream")
    assert 0 < small < big


async def test_tool_use_round_trip_streaming_and_not(live) -> None:
    server = await live()
    user = "What's the weather? use get_weather"
    async with server.client() as client:
        first = await client.messages.create(
            model="auto", max_tokens=256, tools=[WEATHER], messages=[{"role": "user", "content": user}]
        )
        assert first.stop_reason == "tool_use"
        (call,) = [b for b in first.content if b.type == "tool_use"]
        assert call.name == "get_weather" and isinstance(call.input, dict) and call.id
        result = f"sunny in {call.input.get('city', 'nowhere')}"
        messages: list[Any] = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": result}]},
        ]
        second = await client.messages.create(
            model="auto", max_tokens=256, tools=[WEATHER], messages=messages
        )
        assert second.stop_reason == "end_turn"
        assert text_of(second) == expected_tool_reply("get_weather", result)
        assert server.emu.runs[-1].tools_offered == ["get_weather"]

        async with client.messages.stream(
            model="auto", max_tokens=256, tools=[WEATHER], messages=[{"role": "user", "content": user}]
        ) as stream:
            json_pieces = [e.partial_json async for e in stream if e.type == "input_json"]
            final = await stream.get_final_message()
        (streamed,) = [b for b in final.content if b.type == "tool_use"]
        assert final.stop_reason == "tool_use" and streamed.name == "get_weather"
        assert json.loads("".join(json_pieces)) == streamed.input


async def test_tool_choice_none_and_disabled_parallel_calls(live) -> None:
    server = await live()
    time_tool = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
    async with server.client() as client:
        both = await client.messages.create(
            model="auto",
            max_tokens=256,
            tools=[WEATHER, time_tool],
            messages=[{"role": "user", "content": "check get_weather and get_time"}],
        )
        assert [b.name for b in both.content if b.type == "tool_use"] == ["get_weather", "get_time"]
        one = await client.messages.create(
            model="auto",
            max_tokens=256,
            tools=[WEATHER, time_tool],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
            messages=[{"role": "user", "content": "check get_weather and get_time"}],
        )
        assert [b.name for b in one.content if b.type == "tool_use"] == ["get_weather"]
        none = await client.messages.create(
            model="auto",
            max_tokens=256,
            tools=[WEATHER],
            tool_choice={"type": "none"},
            messages=[{"role": "user", "content": "What's the weather? use get_weather"}],
        )
        assert none.stop_reason == "end_turn" and not [b for b in none.content if b.type == "tool_use"]


async def test_image_reaches_the_model_inline(live) -> None:
    server = await live()
    image = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}
    async with server.client() as client:
        done = await client.messages.create(
            model="auto",
            max_tokens=64,
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image", "source": image}, {"type": "text", "text": "see?"}],
                }
            ],
        )
        assert text_of(done) == expected_reply("see?")
        user_message = server.emu.runs[-1].run_request.action.user_message_action.user_message
        (sent,) = user_message.selected_context.selected_images
        assert sent.data == PNG and sent.mime_type == "image/png"
        # A remote URL is refused by the connect transport (it sends images inline): a clear 400.
        with pytest.raises(anthropic.BadRequestError) as refused:
            await client.messages.create(
                model="auto",
                max_tokens=64,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                        ],
                    }
                ],
            )
        assert refused.value.body["error"]["type"] == "invalid_request_error"


async def test_thinking_disabled_and_budget_reach_the_model_parameters(live) -> None:
    server = await live(Behaviour())
    async with server.client() as client:
        await client.messages.create(
            model="claude-4.5-sonnet",
            max_tokens=2048,
            thinking={"type": "disabled"},
            messages=[{"role": "user", "content": "no thinking"}],
        )
        off = server.emu.runs[-1].run_request.requested_model
        await client.messages.create(
            model="claude-4.5-sonnet",
            max_tokens=20000,
            thinking={"type": "enabled", "budget_tokens": 16384},
            messages=[{"role": "user", "content": "think hard"}],
        )
        on = server.emu.runs[-1].run_request.requested_model
    assert {p.id: p.value for p in off.parameters}.get("thinking") == "false"
    assert {p.id: p.value for p in on.parameters}.get("thinking") == "true"


async def test_stop_sequences_and_max_tokens(live) -> None:
    server = await live()
    async with server.client() as client:
        reply = expected_reply("cut me")
        stop = reply[10:14]
        done = await client.messages.create(
            model="auto",
            max_tokens=256,
            stop_sequences=[stop],
            messages=[{"role": "user", "content": "cut me"}],
        )
        assert text_of(done) == reply[: reply.index(stop)]
        assert (done.stop_reason, done.stop_sequence) == ("stop_sequence", stop)
        async with client.messages.stream(
            model="auto",
            max_tokens=256,
            stop_sequences=[stop],
            messages=[{"role": "user", "content": "cut me"}],
        ) as stream:
            final = await stream.get_final_message()
        assert text_of(final) == reply[: reply.index(stop)] and final.stop_sequence == stop
        short = await client.messages.create(
            model="auto", max_tokens=2, messages=[{"role": "user", "content": "a long answer please"}]
        )
        assert short.stop_reason == "max_tokens" and len(text_of(short)) <= 8


async def test_session_header_keeps_the_conversation(live) -> None:
    server = await live()
    async with server.client() as client:
        for i, prompt in enumerate(("first turn", "second turn")):
            done = await client.messages.create(
                model="auto",
                max_tokens=256,
                messages=[{"role": "user", "content": prompt}],
                extra_headers={"X-Cursor-Session-ID": "anthropic-conv"},
            )
            assert text_of(done) == expected_reply(
                prompt, earlier=2 * i, first="first turn" if i else None, turns=i
            )
        raw = await client.messages.with_raw_response.create(
            model="auto",
            max_tokens=256,
            messages=[{"role": "user", "content": "third turn"}],
            extra_headers={"X-Cursor-Session-ID": "anthropic-conv"},
        )
        assert raw.headers["x-cursor-session-id"] == "anthropic-conv"
        assert raw.headers["x-cursor-session-created"] == "false"


async def test_session_turns_carry_the_system_prompt(live) -> None:
    """A session turn sends the request's system prompt with the turn (the model says it saw it)."""
    server = await live()
    async with server.client() as client:
        done = await client.messages.create(
            model="auto",
            max_tokens=256,
            system="Answer as a pirate.",
            messages=[{"role": "user", "content": "ahoy"}],
            extra_headers={"X-Cursor-Session-ID": "anthropic-system"},
        )
        assert 'system: "Answer as a pirate."' in text_of(done)
        assert text_of(done).startswith(expected_reply("ahoy").split(" [", 1)[0])


async def test_models_in_anthropic_shape(live) -> None:
    server = await live()
    async with server.client() as client:
        page = await client.models.list()
        ids = [m.id for m in page.data]
        assert set(server.emu.models) <= set(ids)
        assert all(m.type == "model" and m.display_name and m.created_at for m in page.data)
        one = await client.models.retrieve(ids[0])
        assert one.id == ids[0]
        with pytest.raises(anthropic.NotFoundError) as missing:
            await client.models.retrieve("no-such-model")
        assert missing.value.body["error"]["type"] == "not_found_error"


async def test_every_error_class(live) -> None:
    server = await live(bearer_token="s3cret-token", max_body_bytes=4096)
    kw: dict[str, Any] = {"model": "auto", "max_tokens": 64, "messages": [{"role": "user", "content": "x"}]}
    async with server.client(api_key="s3cret-token") as client:
        with pytest.raises(anthropic.BadRequestError) as bad:
            await client.messages.create(**{**kw, "max_tokens": 0})
        assert bad.value.body["error"] == {
            "type": "invalid_request_error",
            "message": bad.value.body["error"]["message"],
        }
        assert "max_tokens" in bad.value.body["error"]["message"] and bad.value.request_id

        with pytest.raises(anthropic.BadRequestError) as server_tool:
            await client.messages.create(**kw, tools=[{"type": "web_search_20250305", "name": "web_search"}])
        assert "web_search_20250305" in server_tool.value.message

        with pytest.raises(anthropic.NotFoundError) as unknown:
            await client.messages.create(**{**kw, "model": "no-such-model"})
        assert unknown.value.body["error"]["type"] == "not_found_error"

        server.emu.inject(Fault.RATE_LIMIT, retry_after=7)
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(**kw)
        assert limited.value.response.headers["retry-after"] == "7"
        assert limited.value.body["error"]["type"] == "rate_limit_error"

        server.emu.inject(Fault.UNAVAILABLE)
        with pytest.raises(anthropic.InternalServerError) as upstream:
            await client.messages.create(**kw)
        assert upstream.value.body["error"]["type"] == "api_error"

        with pytest.raises(anthropic.APIStatusError) as too_big:
            await client.messages.create(**{**kw, "messages": [{"role": "user", "content": "x" * 5000}]})
        assert too_big.value.status_code == 413 and too_big.value.body["error"]["type"] == "request_too_large"

        server.emu.inject(Fault.TRUNCATED_FRAME)
        with pytest.raises(anthropic.APIStatusError) as mid:
            await drain(client.messages.stream(**kw))
        # An error event inside a 200 stream (text was already sent), as Anthropic sends them.
        assert mid.value.status_code == 200
        assert mid.value.body["type"] == "error" and mid.value.body["error"]["type"] == "api_error"

    async with server.client(api_key="wrong") as client:
        with pytest.raises(anthropic.AuthenticationError) as denied:
            await client.messages.create(**kw)
        assert denied.value.body["error"]["type"] == "authentication_error"
    async with server.client(api_key=None, auth_token="s3cret-token") as bearer:
        assert text_of(await bearer.messages.create(**kw)) == expected_reply("x")

    open_server = await live()
    async with open_server.client(default_headers={"Host": "attacker.example"}) as client:
        with pytest.raises(anthropic.PermissionDeniedError) as forbidden:
            await client.messages.create(**kw)
        assert forbidden.value.body["error"]["type"] == "permission_error"


async def test_structured_output_is_validated_without_streaming(live) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    kw: dict[str, Any] = {
        "model": "auto",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Where is it sunny?"}],
        "extra_body": {"output_config": {"format": {"type": "json_schema", "schema": schema}}},
    }
    server = await live()
    async with server.client() as client:
        done = await client.messages.create(**kw)
        assert isinstance(json.loads(text_of(done))["city"], str)
    stubborn = await live(Behaviour(reply="I will not answer in JSON."))
    async with stubborn.client() as client:
        with pytest.raises(anthropic.UnprocessableEntityError) as invalid:
            await client.messages.create(**kw)
        assert invalid.value.body["error"]["type"] == "invalid_request_error"
        assert invalid.value.response.headers["x-should-retry"] == "false"
