"""The emulator's REST and unary Connect surface, its sync/thread and CLI entry points."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from cursorpipe._proto.agent.v1 import agent_pb2
from cursorpipe._proto.aiserver.v1 import server_config_pb2
from cursorpipe.testing.emulator import DEFAULT_API_KEY, Behaviour, Emulator, expected_reply
from cursorpipe.testing.emulator.raw import exchange_token, raw_turn_sse
from google.protobuf import json_format


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator() as e:
        yield e


async def _auth(client: httpx.AsyncClient, emu: Emulator) -> dict[str, str]:
    return {"authorization": f"Bearer {await exchange_token(client, emu.url, emu.api_key)}"}


async def test_rest_model_list_uses_the_raw_key(emu: Emulator) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"{emu.url}/v1/models", headers={"authorization": f"Bearer {emu.api_key}"})
        assert r.status_code == 200
        items = r.json()["items"]
        assert [i["id"] for i in items] == emu.models
        assert {"id", "displayName"} <= set(items[0])
        sonnet = next(i for i in items if i["id"] == "claude-4.5-sonnet")
        assert sonnet["parameters"][0]["values"][0] == {"value": "true", "displayName": "On"}
        assert any(v.get("isDefault") for v in sonnet["variants"])
        # the exchanged token is not accepted by the REST API, nor is another key
        token_headers = await _auth(client, emu)
        assert (await client.get(f"{emu.url}/v1/models", headers=token_headers)).status_code == 401
        assert (await client.get(f"{emu.url}/v1/models")).status_code == 401


@pytest.mark.parametrize("service", ["agent.v1.AgentService", "aiserver.v1.AiService"])
async def test_get_usable_models_proto_and_json(emu: Emulator, service: str) -> None:
    async with httpx.AsyncClient() as client:
        auth = await _auth(client, emu)
        url = f"{emu.url}/{service}/GetUsableModels"
        r = await client.post(url, content=b"", headers={**auth, "content-type": "application/proto"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/proto"
        resp = agent_pb2.GetUsableModelsResponse.FromString(r.content)
        # live-dialect.md row 14: each family, then its per-effort sibling slugs
        families = [m.model_id for m in resp.models if m.model_id in emu.models]
        assert families == emu.models
        siblings = [m.model_id for m in resp.models if m.model_id not in emu.models]
        assert siblings == ["gpt-5.2-low", "gpt-5.2-high"]
        assert resp.models[0].aliases == ["default"]
        r = await client.post(url, json={}, headers=auth)
        assert r.status_code == 200
        doc = r.json()
        assert doc["models"][1]["modelId"] == "composer-2" and doc["models"][1]["displayName"] == "Composer 2"
        parsed = json_format.ParseDict(doc, agent_pb2.GetUsableModelsResponse())
        assert parsed == resp


async def test_default_model_privacy_and_server_config(emu: Emulator) -> None:
    async with httpx.AsyncClient() as client:
        h = {**(await _auth(client, emu)), "content-type": "application/proto"}
        r = await client.post(
            f"{emu.url}/agent.v1.AgentService/GetDefaultModelForCli", content=b"", headers=h
        )
        assert agent_pb2.GetDefaultModelForCliResponse.FromString(r.content).model.model_id == "composer-2"
        r = await client.post(
            f"{emu.url}/aiserver.v1.DashboardService/GetUserPrivacyMode",
            content=bytes.fromhex("0801"),
            headers=h,
        )
        mode = server_config_pb2.GetUserPrivacyModeResponse.FromString(r.content).privacy_mode
        assert mode == server_config_pb2.PRIVACY_MODE_NO_STORAGE
        url = f"{emu.url}/aiserver.v1.ServerConfigService/GetServerConfig"
        r = await client.post(url, content=b"", headers=h)
        assert r.status_code == 200 and r.content == b""  # empty config: HTTP/1.1 stays the choice
        emu.behaviour.advertise_http2 = True
        r = await client.post(url, content=b"", headers=h)
        assert r.content == bytes.fromhex("3802")  # http2_config = FORCE_ALL_ENABLED


async def test_unknown_paths_are_unimplemented(emu: Emulator) -> None:
    async with httpx.AsyncClient() as client:
        for path in ("/aiserver.v1.AnalyticsService/BootstrapStatsig", "/agent.v1.AgentService/NameAgent"):
            r = await client.post(f"{emu.url}{path}", json={})
            assert r.status_code == 404 and r.json() == {"code": "unimplemented"}


async def test_bad_unary_requests(emu: Emulator) -> None:
    async with httpx.AsyncClient() as client:
        auth = await _auth(client, emu)
        url = f"{emu.url}/aiserver.v1.BidiService/BidiAppend"
        r = await client.post(url, content=b"\xff\xff", headers={**auth, "content-type": "application/proto"})
        assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
        r = await client.post(url, content=b"", headers={**auth, "content-type": "text/plain"})
        assert r.status_code == 415
        bad_hex = b"\x0a\x02zz\x12\x04\x0a\x02r1"
        r = await client.post(url, content=bad_hex, headers={**auth, "content-type": "application/proto"})
        assert r.status_code == 400 and "hex" in r.json()["message"]


async def test_requests_are_recorded(emu: Emulator) -> None:
    await raw_turn_sse(emu.url, emu.api_key, "rec")
    paths = emu.paths()
    assert paths[0] == "/auth/exchange_user_api_key"
    assert paths.index("/aiserver.v1.BidiService/BidiAppend") < paths.index("/agent.v1.AgentService/RunSSE")
    appends = [r for r in emu.requests if r.path.endswith("BidiAppend")]
    assert [r.seqno for r in appends] == list(range(len(appends)))
    assert appends[0].messages[-1].WhichOneof("message") == "run_request"  # type: ignore[attr-defined]
    assert emu.runs[0].headers["x-cursor-streaming"] == "true"
    emu.clear()
    assert emu.requests == [] and emu.runs == []


def test_start_in_thread_for_sync_code() -> None:
    import asyncio

    with Emulator.start_in_thread(Behaviour(reply="sync hello")) as emu:
        assert emu.url.startswith("http://127.0.0.1:")
        r = httpx.get(f"{emu.url}/v1/models", headers={"authorization": f"Bearer {emu.api_key}"})
        assert r.status_code == 200
        turn = asyncio.run(raw_turn_sse(emu.url, emu.api_key, "x"))
        assert turn.text == "sync hello"
        url = emu.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v1/models", timeout=2)


@pytest.mark.parametrize("permissive", [False, True], ids=["strict", "permissive"])
def test_module_cli_serves_until_terminated(permissive: bool) -> None:
    flags = ["--permissive"] if permissive else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "cursorpipe.testing.emulator", "--host", "127.0.0.1", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("emulator listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert proc.stdout.readline().strip() == f"api key: {DEFAULT_API_KEY}"
        r = httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {DEFAULT_API_KEY}"}, timeout=5)
        assert r.status_code == 200

        def custom(msg: agent_pb2.AgentClientMessage) -> None:
            msg.run_request.custom_system_prompt = "Be brief."

        turn = asyncio.run(raw_turn_sse(url, DEFAULT_API_KEY, "hi", mutate_first=custom))
        if permissive:  # the live-service rules are relaxed: the cli client's custom prompt is read
            assert turn.text == expected_reply("hi", system="Be brief.")
        else:
            assert turn.end is not None and turn.end.error is not None
            assert turn.end.error.code == "invalid_argument"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_expected_reply_format() -> None:
    assert expected_reply("hi") == "Emulated reply to: hi"
    assert (
        expected_reply("hi", earlier=2, first="one")
        == 'Emulated reply to: hi [earlier: 2 messages, first user message "one"]'
    )
    assert (
        expected_reply("two", earlier=2, first="one", turns=1)
        == 'Emulated reply to: two [earlier: 2 messages, first user message "one"; checkpoint turns: 1]'
    )
    assert expected_reply("hi", system="Be brief.") == 'Emulated reply to: hi [system: "Be brief."]'
    assert (
        expected_reply(
            "hi", system=["A", "B"], tools=["f", "g"], mode="agent", queries=[("web_search", "approved")]
        )
        == 'Emulated reply to: hi [system: "A" | "B"; tools: f, g; mode: agent; queries: web_search approved]'
    )
    long = "x" * 500
    assert expected_reply("hi", system=long) == 'Emulated reply to: hi [system: "' + "x" * 119 + '…"]'
    # chat modes are not named: the text does not depend on whether a client sends ASK or nothing
    assert (
        expected_reply("hi", mode="ask")
        == expected_reply("hi", mode="unspecified")
        == "Emulated reply to: hi"
    )


def test_missing_testing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from cursorpipe.errors import ConfigurationError
    from cursorpipe.testing.emulator import _server

    monkeypatch.setitem(sys.modules, "hypercorn.asyncio", None)
    with pytest.raises(ConfigurationError, match=r'pip install "cursorpipe-testing @ git\+https://'):
        _server._import_hypercorn()
