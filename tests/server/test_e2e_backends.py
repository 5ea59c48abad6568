"""End to end through real transports: the connect strategy against the Cursor API emulator, the
subprocess and acp strategies against the fake agent, driven with the openai SDK over a socket."""

from __future__ import annotations

import httpx
import openai
import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.server import create_app
from cursorpipe.testing.emulator import Emulator, Fault, expected_reply
from cursorpipe.testing.fake_agent import executable
from cursorpipe.testing.fake_agent.catalog import expected_reply as fake_agent_reply

pytestmark = pytest.mark.slow


def sdk(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=url + "/v1", api_key="unused", max_retries=0, http_client=httpx.AsyncClient(timeout=60)
    )


async def test_connect_strategy_against_the_emulator(over_socket_app):
    async with Emulator() as emu:
        config = CursorPipeConfig(
            strategy="connect", backend_url=emu.url, api_key=emu.api_key, pool_size=1, max_retries=0
        )
        url = await over_socket_app(create_app(config, emulated=True))
        async with sdk(url) as client:
            models = await client.models.list()
            assert set(emu.models) <= {m.id for m in models.data}
            assert {m.owned_by for m in models.data} == {"cursorpipe-emulator"}

            done = await client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hello emulator"}]
            )
            assert done.choices[0].message.content == expected_reply("hello emulator")
            assert done.choices[0].message.model_extra.get("reasoning_content")
            assert done.usage is not None and done.usage.completion_tokens > 0

            stream = await client.chat.completions.create(
                model="auto",
                messages=[{"role": "user", "content": "stream it"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            text, usage = "", None
            async for chunk in stream:
                usage = chunk.usage or usage
                text += "".join(c.delta.content or "" for c in chunk.choices)
            assert text == expected_reply("stream it")
            assert usage is not None and usage.prompt_tokens > 0

            for i, prompt in enumerate(("first turn", "second turn")):
                r = await client.chat.completions.create(
                    model="auto",
                    messages=[{"role": "user", "content": prompt}],
                    extra_headers={"X-Cursor-Session-ID": "emu-conv"},
                )
                assert r.choices[0].message.content == expected_reply(
                    prompt, earlier=2 * i, first="first turn" if i else None, turns=i
                )

            emu.inject(Fault.USAGE_LIMIT)
            with pytest.raises(openai.RateLimitError) as limited:
                await client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": "x"}]
                )
            assert limited.value.response.headers["x-should-retry"] == "false"

            resp = await client.responses.create(model="auto", input="via responses")
            assert resp.output_text == expected_reply("via responses")

        async with httpx.AsyncClient(base_url=url) as http:
            health = (await http.get("/health")).json()
            assert health["emulated"] is True and health["transport"] == "connect"


@pytest.mark.parametrize("strategy", ["subprocess", "acp"])
async def test_cli_strategies_against_the_fake_agent(over_socket_app, strategy):
    config = CursorPipeConfig(strategy=strategy, agent_bin=executable(), pool_size=1, max_retries=0)
    client = CursorClient(config)
    try:
        url = await over_socket_app(create_app(client=client))
        async with sdk(url) as sdk_client:
            done = await sdk_client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hello fake agent"}]
            )
            assert done.choices[0].message.content == fake_agent_reply("hello fake agent")
            stream = await sdk_client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "streamed"}], stream=True
            )
            text = ""
            async for chunk in stream:
                text += "".join(c.delta.content or "" for c in chunk.choices)
            assert text == fake_agent_reply("streamed")
    finally:
        await client.close()
