"""The team gateway as deployed: three `cursorpipe-server` processes on loopback in passthrough
mode, sharing one real Redis, in front of the strict emulator serving two accounts.

Sessions started on one replica continue on the others with their memory intact (the emulator's
model says what it saw), concurrent turns on one session are serialised, killing a replica
mid-turn loses no committed turn, callers never see each other's sessions, every run reached the
emulator with its caller's own credentials, Redis going away costs only session requests, and no
API key appears in logs, Redis keys or metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from cursorpipe.server._gateway._keys import key_hash, key_label
from cursorpipe.testing.emulator import Behaviour, Emulator, expected_reply

from ._redis_server import RedisServer, free_port

pytestmark = pytest.mark.slow

ALICE, BOB = "crsr_alice_gateway_key_0001", "crsr_bob_gateway_key_0002"
ACCOUNTS = {ALICE: "alice", BOB: "bob"}
LOCK_TTL_S = 1.5


@dataclass
class Replica:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Cluster:
    emu: Emulator
    redis: RedisServer
    prefix: str
    replicas: list[Replica]
    env: dict[str, str]
    tmp: Path

    def start(self, i: int) -> Replica:
        port = free_port()
        log = self.tmp / f"replica{i}-{uuid.uuid4().hex[:6]}.log"
        exe = Path(sys.executable).parent / "cursorpipe-server"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(exe), "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.tmp,
            )
        replica = Replica(f"http://127.0.0.1:{port}", proc, log)
        _wait_ready(replica)
        return replica

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.tmp.glob("replica*.log"))


def _wait_ready(replica: Replica, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.proc.poll() is not None:
            raise AssertionError(f"replica exited early: {replica.log.read_text(errors='replace')}")
        try:
            if httpx.get(replica.url + "/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"replica not ready: {replica.log.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = Path(tmp_path_factory.mktemp("gateway"))
    server = RedisServer(tmp / "redis")
    server.start()
    prefix = f"gw{uuid.uuid4().hex[:8]}:"
    with Emulator.start_in_thread(Behaviour(), accounts=ACCOUNTS) as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CURSOR_", "CURSORPIPE_"))}
        env.update(
            CURSOR_BACKEND_URL=emu.url,
            CURSORPIPE_STRATEGY="connect",
            CURSORPIPE_AUTH_MODE="passthrough",
            CURSORPIPE_STATE_URL=server.url,
            CURSORPIPE_STATE_PREFIX=prefix,
            CURSORPIPE_SESSION_LOCK_TTL_S=str(LOCK_TTL_S),
            CURSORPIPE_SESSION_LOCK_WAIT_S="30",
            CURSORPIPE_POOL_SIZE="0",
            CURSORPIPE_MAX_RETRIES="0",
            CURSORPIPE_LOG_LEVEL="info",
            HOME=str(tmp),  # no stored Cursor CLI login from the developer's machine
        )
        c = Cluster(emu, server, prefix, [], env, tmp)
        try:
            with ThreadPoolExecutor(3) as pool:
                c.replicas = list(pool.map(c.start, range(3)))
            yield c
        finally:
            for r in c.replicas:
                if r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGTERM)
            for r in c.replicas:
                try:
                    r.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                    r.proc.wait()
            server.stop()


def chat(replica: Replica, key: str, text: str, session: str | None = None, **kw: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    if session:
        headers["x-cursor-session-id"] = session
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], **kw}
    return httpx.post(replica.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)


def content(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


def run_accounts(emu: Emulator, since: int = 0) -> list[str | None]:
    return [emu.account_of(run.headers["authorization"].split(" ", 1)[1]) for run in emu.runs[since:]]


def test_session_continues_on_every_replica_with_memory(cluster: Cluster) -> None:
    a, b, c = cluster.replicas
    sid = "conv-" + uuid.uuid4().hex[:8]
    since = len(cluster.emu.runs)
    assert content(chat(a, ALICE, "one", sid)) == expected_reply("one")
    assert content(chat(b, ALICE, "two", sid)) == expected_reply("two", earlier=2, first="one", turns=1)
    assert content(chat(c, ALICE, "three", sid)) == expected_reply("three", earlier=4, first="one", turns=2)
    view = httpx.get(f"{a.url}/v1/sessions/{sid}", headers={"authorization": f"Bearer {ALICE}"}).json()
    assert view["turns"] == 3 and view["id"] == sid
    assert run_accounts(cluster.emu, since) == ["alice"] * 3


def test_callers_never_see_each_others_sessions(cluster: Cluster) -> None:
    a, b, _ = cluster.replicas
    sid = "private-" + uuid.uuid4().hex[:8]
    since = len(cluster.emu.runs)
    assert content(chat(a, ALICE, "my secret", sid)) == expected_reply("my secret")
    bob = {"authorization": f"Bearer {BOB}"}
    assert httpx.get(f"{b.url}/v1/sessions/{sid}", headers=bob).status_code == 403
    assert httpx.delete(f"{b.url}/v1/sessions/{sid}", headers=bob).status_code == 403
    refused = chat(b, BOB, "let me in", sid)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "session_forbidden"
    listed = httpx.get(f"{b.url}/v1/sessions", headers=bob).json()["data"]
    assert sid not in {s["id"] for s in listed}
    mine = httpx.get(f"{b.url}/v1/sessions", headers={"authorization": f"Bearer {ALICE}"}).json()["data"]
    assert sid in {s["id"] for s in mine}
    # Bob's own requests run on Bob's account, Alice's on Alice's.
    assert content(chat(b, BOB, "hello")) == expected_reply("hello")
    assert run_accounts(cluster.emu, since) == ["alice", "bob"]
    # No key at all: 401.
    anon = httpx.post(f"{a.url}/v1/chat/completions", json={"model": "auto", "messages": []}, timeout=10)
    assert anon.status_code == 401


def test_concurrent_turns_on_one_session_are_serialised(cluster: Cluster) -> None:
    sid = "busy-" + uuid.uuid4().hex[:8]
    since = len(cluster.emu.runs)
    texts = [f"msg{i}" for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda it: chat(cluster.replicas[it[0] % 3], ALICE, it[1], sid), enumerate(texts))
        )
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
    # One after the other: each turn saw all the turns before it (0, 2, 4, ... earlier messages).
    seen = sorted(len(run.history) for run in cluster.emu.runs[since:])
    assert seen == [0, 2, 4, 6, 8, 10]


def test_killing_a_replica_mid_turn_loses_no_committed_turn(cluster: Cluster) -> None:
    a, b, _ = cluster.replicas
    sid = "crash-" + uuid.uuid4().hex[:8]
    assert content(chat(a, ALICE, "first", sid)) == expected_reply("first")
    cluster.emu.behaviour.token_delay_s = 0.3
    try:
        headers = {"authorization": f"Bearer {ALICE}", "x-cursor-session-id": sid}
        body = {"model": "auto", "messages": [{"role": "user", "content": "doomed"}], "stream": True}
        with httpx.stream(
            "POST", a.url + "/v1/chat/completions", json=body, headers=headers, timeout=30
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    a.proc.send_signal(signal.SIGKILL)  # mid-turn, holding the session's lease
                    break
        a.proc.wait(timeout=10)
    finally:
        cluster.emu.behaviour.token_delay_s = 0.0
    started = time.monotonic()
    answer = content(chat(b, ALICE, "second", sid))
    assert answer == expected_reply("second", earlier=2, first="first", turns=1)
    assert time.monotonic() - started < LOCK_TTL_S + 10
    cluster.replicas[0] = cluster.start(0)
    assert content(chat(cluster.replicas[0], ALICE, "third", sid)) == expected_reply(
        "third", earlier=4, first="first", turns=2
    )


def test_keys_never_in_logs_redis_or_metrics(cluster: Cluster) -> None:
    a = cluster.replicas[1]
    assert content(chat(a, BOB, "metrics please")) == expected_reply("metrics please")
    metrics = httpx.get(a.url + "/metrics", headers={"authorization": f"Bearer {BOB}"}).text
    assert f'key="{key_label(key_hash(BOB))}"' in metrics
    r = redis.Redis(host="127.0.0.1", port=cluster.redis.port)
    try:
        keys = [k.decode() for k in r.keys(cluster.prefix + "*")]
        assert keys
        values = b"".join(v for k in keys if r.type(k) == b"string" and (v := r.get(k)) is not None)
    finally:
        r.close()
    logs = cluster.logs()
    for secret in (ALICE, BOB):
        assert secret not in metrics
        assert all(secret not in k for k in keys)
        assert secret.encode() not in values
        assert secret not in logs


def test_redis_down_stateless_still_served_sessions_503(cluster: Cluster) -> None:
    a, b, _ = cluster.replicas
    sid = "outage-" + uuid.uuid4().hex[:8]
    assert content(chat(a, ALICE, "before", sid)) == expected_reply("before")
    cluster.redis.stop()
    try:
        assert content(chat(b, ALICE, "stateless")) == expected_reply("stateless")
        refused = chat(b, ALICE, "during", sid)
        assert refused.status_code == 503, refused.text
        assert refused.headers.get("retry-after")
        assert refused.json()["error"]["code"] == "state_unavailable"
    finally:
        cluster.redis.start()
    # Redis restarted empty (no persistence in the test): the session is gone, cleanly a new one.
    fresh = chat(a, ALICE, "after", sid)
    assert content(fresh) == expected_reply("after")
    assert json.loads(httpx.get(a.url + "/health").text)["status"] in ("ok", "degraded")
