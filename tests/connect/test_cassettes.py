"""Replay of the recorded connect-transport cassettes (RunSSE + BidiAppend over httpx) with vcrpy in
record mode "none": no emulator and no network. Re-record with
``.venv/bin/python scripts/record_cassettes.py``."""

from __future__ import annotations

import base64
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from cursorpipe import CursorClient
from cursorpipe.errors import RateLimitError
from cursorpipe.testing.emulator import expected_reply

ROOT = Path(__file__).resolve().parents[2]
CASSETTES = ROOT / "tests" / "connect" / "cassettes"
KEY = "crsr_replay_dummy_key"


def _recorder() -> ModuleType:
    name = "cursorpipe_record_cassettes"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "record_cassettes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


rc = _recorder()


def replay_client(name: str) -> CursorClient:
    url = rc.cassette_base_url(name)
    return CursorClient(rc.replay_config(url, KEY), transport=rc.replay_transport(url, KEY))


async def test_replay_chat_session() -> None:
    with rc.replay_vcr().use_cassette("chat_session.yaml") as cassette:
        async with replay_client("chat_session.yaml") as client, client.session("composer-2") as session:
            first = await session.prompt("hello")
            second = await session.prompt("and again")
    assert first.text == expected_reply("hello")
    assert second.text == expected_reply("and again", earlier=2, first="hello", turns=1)
    assert not first.usage.estimated and first.usage.output_tokens > 0
    assert cassette.all_played


async def test_replay_stateless_history() -> None:
    with rc.replay_vcr().use_cassette("stateless_history.yaml") as cassette:
        async with replay_client("stateless_history.yaml") as client:
            answer = await client.chat(
                "composer-2",
                [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": "first question"},
                    {"role": "assistant", "content": "first answer"},
                    {"role": "user", "content": "second question"},
                ],
            )
    assert answer == expected_reply(
        "second question", earlier=2, first="first question", system="Answer briefly."
    )
    assert cassette.all_played


async def test_replay_models() -> None:
    with rc.replay_vcr().use_cassette("list_models.yaml"):
        async with replay_client("list_models.yaml") as client:
            models = await client.list_models()
    assert "composer-2" in [m.id for m in models]
    assert any("sonnet-4.5" in m.aliases for m in models)


async def test_replay_rate_limit() -> None:
    with rc.replay_vcr().use_cassette("rate_limit.yaml"):
        async with replay_client("rate_limit.yaml") as client:
            with pytest.raises(RateLimitError) as info:
                await client.generate("composer-2", "rate limited?")
    assert info.value.retryable and info.value.retry_after is not None


def _bodies(data: dict) -> list[bytes]:  # type: ignore[type-arg]
    out = []
    for item in data["interactions"]:
        out.append(base64.b64decode(item["request"]["body"]["base64"]))
        out.append(base64.b64decode(item["response"]["body"]["base64"]))
    return out


@pytest.mark.parametrize("path", sorted(CASSETTES.glob("*.yaml")), ids=lambda p: p.name)
def test_cassettes_are_scrubbed_and_readable(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    jwt = re.compile(rb"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{4,}\.")
    for item in data["interactions"]:
        for part in ("request", "response"):
            headers = item[part]["headers"]
            for name in ("authorization", "cookie", "set-cookie", "x-blob-encryption-key"):
                assert headers.get(name, ["[SCRUBBED]"]) == ["[SCRUBBED]"], name
            assert "decoded" in item[part]["body"]
    for body in _bodies(data):
        assert b"crsr_" not in body and not jwt.search(body)
    assert "crsr_" not in text and not jwt.search(text.encode())
    if "RunSSE" in text:
        assert "turn_ended" in text or "end_stream" in text  # the decoded view shows the frames


def test_serializer_round_trip_is_lossless() -> None:
    raw = bytes(range(256)) * 3
    cassette = {
        "version": 1,
        "interactions": [
            {
                "request": {
                    "method": "POST",
                    "uri": "http://h/aiserver.v1.BidiService/BidiAppend",
                    "body": raw,
                    "headers": {},
                },
                "response": {
                    "status": {"code": 200, "message": "OK"},
                    "headers": {},
                    "body": {"string": raw},
                },
            }
        ],
    }
    back = rc.deserialize(rc.serialize(cassette))
    assert back["interactions"][0]["request"]["body"] == raw
    assert back["interactions"][0]["response"]["body"]["string"] == raw
