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

import httpx
import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.errors import NetworkError
from cursorpipe.testing.emulator import Behaviour, Emulator, expected_reply
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
    ("alpn", "mode", "channel", "http_version", "http2_disabled"),
    [
        (["h2", "http/1.1"], "auto", "run", "2", False),  # https default: full-duplex Run over TLS
        (["h2", "http/1.1"], "never", "runsse", "2", False),  # RunSSE + appends multiplexed on HTTP/2
        # no h2 offered, and the server config disables HTTP/2: the HTTP/1.1 pair (row 21)
        (["http/1.1"], "auto", "runsse", "1.1", True),
    ],
)
async def test_https_paths(
    trust: tuple[Path, Path],
    alpn: list[str],
    mode: str,
    channel: str,
    http_version: str,
    http2_disabled: bool,
) -> None:
    cert, key = trust
    behaviour = Behaviour(http2_disabled=http2_disabled)
    async with Emulator(behaviour) as emu, tls_proxy(emu.port, cert, key, alpn) as port:
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


async def test_https_without_h2_does_not_fall_back_to_http1(trust: tuple[Path, Path]) -> None:
    """live-dialect.md row 21: Cursor's agent path serves Run only over HTTP/2. Against an https
    backend whose ALPN offers no h2 (and whose server config does not disable HTTP/2) the client
    says so at once instead of trying RunSSE over HTTP/1.1 (which the live service answers 464)."""
    cert, key = trust
    async with Emulator() as emu, tls_proxy(emu.port, cert, key, ["http/1.1"]) as port:
        config = CursorPipeConfig(
            strategy="connect", backend_url=f"https://localhost:{port}", api_key=emu.api_key, max_retries=3
        )
        async with CursorClient(config) as client:
            with pytest.raises(NetworkError, match="did not negotiate HTTP/2") as info:
                await client.generate("composer-2", "over tls")
        assert info.value.code == "no_http2" and not info.value.retryable
        assert not [r for r in emu.requests if r.path.endswith(("/Run", "/RunSSE", "/BidiAppend"))]


async def test_http1_refused_with_464_is_a_clear_error() -> None:
    """The emulator refuses HTTP/1.1 on the Run path with a bare 464 when told to (row 21); the
    client names the cause instead of calling the backend unreachable."""
    async with Emulator(Behaviour(refuse_http1_run=True)) as emu:
        config = CursorPipeConfig(
            strategy="connect", backend_url=emu.url, api_key=emu.api_key, use_http2="never", max_retries=2
        )
        async with CursorClient(config) as client:
            with pytest.raises(NetworkError, match="HTTP 464") as info:
                await client.generate("composer-2", "hi")
        assert info.value.code == "http1_refused"
        assert [r.status for r in emu.requests if r.path.endswith("/RunSSE")] == [464]
        # The same emulator still serves the full-duplex Run over h2c.
        config = CursorPipeConfig(
            strategy="connect", backend_url=emu.url, api_key=emu.api_key, use_http2="always", max_retries=0
        )
        async with CursorClient(config) as client:
            assert await client.generate("composer-2", "hi") == expected_reply("hi")


async def test_plain_http_backends_skip_the_trust_store_and_fail_closed(trust: tuple[Path, Path]) -> None:
    """Issue 16: with the backend and REST URLs both on plain http the transport's own httpx client
    does not load a trust store (start-up time and memory), and what it gets instead trusts nothing:
    TLS through it fails even to a server that SSL_CERT_FILE trusts."""
    cert, key = trust
    async with Emulator() as emu, tls_proxy(emu.port, cert, key, ["http/1.1"]) as port:
        plain = CursorPipeConfig(strategy="connect", backend_url=emu.url, api_key=emu.api_key)
        https = CursorPipeConfig(
            strategy="connect", backend_url=f"https://localhost:{port}", api_key=emu.api_key
        )
        transports = ConnectTransport(plain), ConnectTransport(https)
        try:
            contexts = [t._http._transport._pool._ssl_context for t in transports]  # type: ignore[attr-defined]
            assert [c.cert_store_stats()["x509_ca"] > 0 for c in contexts] == [False, True]
            assert contexts[0].verify_mode == ssl.CERT_REQUIRED and contexts[0].check_hostname
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await transports[0]._http.get(f"https://localhost:{port}/v1/models")
            response = await transports[1]._http.get(f"https://localhost:{port}/v1/models")
            assert response.status_code in (200, 401)
            async with CursorClient(plain, transport=transports[0]) as client:
                assert await client.generate("composer-2", "plain") == expected_reply("plain")
        finally:
            for t in transports:
                await t.aclose()
