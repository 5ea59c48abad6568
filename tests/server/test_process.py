"""The server as a real process: SIGTERM drains in-flight streams, and `cursorpipe-server --emulator`
serves the whole surface offline, clearly labelled."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from cursorpipe.testing.emulator import expected_reply

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.communicate()}")
        try:
            r = httpx.get(url + "/health/ready", timeout=1)
            if r.status_code == 200:
                return dict(httpx.get(url + "/health", timeout=1).json())
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("server did not become ready")


def test_sigterm_drains_in_flight_stream_then_exits(tmp_path: Path) -> None:
    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
        from cursorpipe.server import create_app
        from cursorpipe.server.cli import serve
        config = CursorPipeConfig(port=int(sys.argv[1]), log_level="warning")
        client = CursorClient(config, transport=MockTransport(delay_s=0.05))
        serve(create_app(client=client), config, drain_timeout_s=10)
        print("exited cleanly", flush=True)
    """)
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    try:
        wait_ready(url, proc)
        words = " ".join(f"w{i}" for i in range(40))
        body = {"messages": [{"role": "user", "content": words}], "stream": True}
        events: list[str] = []
        with (
            httpx.Client(base_url=url, timeout=30) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 3:
                        proc.send_signal(signal.SIGTERM)  # mid-stream
        assert events[-1] == "[DONE]"
        text = "".join(
            c["choices"][0]["delta"].get("content", "")
            for c in map(json.loads, events[:-1])
            if c.get("choices")
        )
        assert text == "echo: " + words  # the in-flight stream finished completely
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert b"exited cleanly" in out
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/health", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_emulator_mode_process_is_labelled_and_serves_openai(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).parent / "cursorpipe-server"
    proc = subprocess.Popen(
        [str(exe), "--emulator", "--port", str(port), "--pool-size", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
        cwd=tmp_path,
    )
    try:
        health = wait_ready(url, proc)
        assert health["emulated"] is True and health["backend"] == "emulator"
        models = httpx.get(url + "/v1/models").json()["data"]
        assert models and {m["owned_by"] for m in models} == {"cursorpipe-emulator"}
        r = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "offline?"}]},
            timeout=30,
        )
        assert r.json()["choices"][0]["message"]["content"] == expected_reply("offline?")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert b"EMULATED" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_sigterm_readiness_503_before_close_and_drain_timeout_ends_streams(tmp_path: Path) -> None:
    """Issue 12 item 8: after SIGTERM readiness answers 503 while the listener is still open, and a
    stream still open at the drain timeout ends with an error event and [DONE], not a cut."""
    import threading

    script = tmp_path / "serve.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        from cursorpipe import CursorClient, CursorPipeConfig, MockTransport
        from cursorpipe.server import create_app
        from cursorpipe.server.cli import serve
        config = CursorPipeConfig(port=int(sys.argv[1]), log_level="warning")
        client = CursorClient(config, transport=MockTransport(delay_s=60))  # silent for a minute
        serve(create_app(client=client, keepalive_s=0.2), config, drain_timeout_s=2)
        print("exited cleanly", flush=True)
    """)
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    events: list[str] = []
    opened = threading.Event()

    def read_stream() -> None:
        body = {"messages": [{"role": "user", "content": "one two three"}], "stream": True}
        with (
            httpx.Client(base_url=url, timeout=30) as http,
            http.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    opened.set()

    try:
        wait_ready(url, proc)
        reader = threading.Thread(target=read_stream)
        reader.start()
        assert opened.wait(20)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        ready = httpx.get(url + "/health/ready", timeout=2)  # the listener is still open
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        reader.join(30)
        assert not reader.is_alive()
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "shutting_down"
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert b"exited cleanly" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
