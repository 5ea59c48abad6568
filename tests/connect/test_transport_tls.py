"""The https paths (the default for Cursor's real hosts): full-duplex Run over TLS with ALPN h2,
RunSSE + BidiAppend multiplexed on HTTP/2 by httpx, and the fallback to HTTP/1.1 when the server
does not offer h2. A small TLS-terminating proxy (self-signed certificate made with the openssl
CLI, trusted through SSL_CERT_FILE) sits in front of the emulator's plain port, which speaks both
HTTP/1.1 and h2c."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.testing.emulator import Emulator, expected_reply
from cursorpipe.transports.connect import ConnectTransport


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "these tests need the openssl command-line tool to make a test certificate"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def tls_proxy(target_port: int, cert: Path, key: Path, alpn: list[str]) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(alpn)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        for task in (
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def trust(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    return certificate


@pytest.mark.parametrize(
    ("alpn", "mode", "channel", "http_version"),
    [
        (["h2", "http/1.1"], "auto", "run", "2"),  # https default: full-duplex Run over TLS
        (["h2", "http/1.1"], "never", "runsse", "2"),  # RunSSE + appends multiplexed on HTTP/2
        (["http/1.1"], "auto", "runsse", "1.1"),  # no h2 offered: fall back to HTTP/1.1
    ],
)
async def test_https_paths(
    trust: tuple[Path, Path], alpn: list[str], mode: str, channel: str, http_version: str
) -> None:
    cert, key = trust
    async with Emulator() as emu, tls_proxy(emu.port, cert, key, alpn) as port:
        config = CursorPipeConfig(
            strategy="connect", backend_url=f"https://localhost:{port}", api_key=emu.api_key, use_http2=mode
        )
        transport = ConnectTransport(config)
        async with CursorClient(config, transport=transport) as client, client.session("composer-2") as s:
            first = await s.prompt("over tls")
            second = await s.prompt("again")
        assert first.text == expected_reply("over tls")
        assert second.text == expected_reply("again", earlier=2, first="over tls", turns=1)
        assert transport.last_channel == channel
        runs = [r for r in emu.requests if r.path.endswith(("/Run", "/RunSSE", "/BidiAppend"))]
        assert runs and {r.http_version for r in runs} == {http_version}
