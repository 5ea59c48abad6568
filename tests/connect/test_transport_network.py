"""Network failures below Connect: a connection refused, and the TCP connection of a running turn
cut after part of the answer (RunSSE over HTTP/1.1 and Run over h2c). A small TCP proxy in front of
the emulator does the cutting."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from cursorpipe import CursorClient, CursorPipeConfig
from cursorpipe.errors import NetworkError, StreamDroppedError
from cursorpipe.testing.emulator import Behaviour, Emulator, expected_reply
from cursorpipe.transports.connect import ConnectTransport


@contextlib.asynccontextmanager
async def cutting_proxy(
    target_port: int, marker: bytes, cut_after: int
) -> AsyncIterator[tuple[int, list[int]]]:
    """Forward to ``target_port``. The first time ``marker`` shows up in a request, that
    connection is cut ``cut_after`` response bytes later. Yields (port, cuts)."""
    cuts: list[int] = []
    doomed: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        writers.extend((writer, up_writer))
        armed = asyncio.Event()

        async def upstream() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    if marker in data and not doomed:
                        doomed.append(writer)
                        armed.set()
                    up_writer.write(data)
                    await up_writer.drain()

        async def downstream() -> None:
            sent = 0
            with contextlib.suppress(ConnectionError, OSError):
                while data := await up_reader.read(65536):
                    if armed.is_set():
                        if sent + len(data) >= cut_after:
                            writer.write(data[: max(0, cut_after - sent)])
                            cuts.append(cut_after)
                            break
                        sent += len(data)
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()
            up_writer.transport.abort()

        for coro in (upstream(), downstream()):
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], cuts
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in writers:
            w.transport.abort()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("mode", "marker"), [("never", b"POST /agent.v1.AgentService/RunSSE"), ("always", b"PRI * HTTP/2.0")]
)
async def test_connection_cut_mid_answer(mode: str, marker: bytes) -> None:
    # Slow text so the cut lands after the first deltas (no checkpoint yet: no resume possible).
    async with (
        Emulator(Behaviour(token_delay_s=0.05, chunks=12)) as emu,
        cutting_proxy(emu.port, marker, cut_after=700) as (port, cuts),
    ):
        config = CursorPipeConfig(
            strategy="connect",
            backend_url=f"http://127.0.0.1:{port}",
            api_key=emu.api_key,
            use_http2=mode,
            max_retries=0,
        )
        transport = ConnectTransport(config)
        seen: list[str] = []

        async def consume(client: CursorClient) -> None:
            async for chunk in client.stream("composer-2", "cut me"):
                seen.append(chunk)

        async with CursorClient(config, transport=transport) as client:
            with pytest.raises(StreamDroppedError) as info:
                await consume(client)
            assert cuts and info.value.retryable
            assert expected_reply("cut me").startswith("".join(seen))
            # The transport recovers: a new connection serves the next turn.
            assert await client.generate("composer-2", "next") == expected_reply("next")


async def test_cut_before_output_is_retried_by_the_client() -> None:
    async with (
        Emulator(Behaviour(first_token_delay_s=0.2)) as emu,
        cutting_proxy(emu.port, b"PRI * HTTP/2.0", cut_after=100) as (port, cuts),
    ):
        config = CursorPipeConfig(
            strategy="connect",
            backend_url=f"http://127.0.0.1:{port}",
            api_key=emu.api_key,
            use_http2="always",
            max_retries=1,
        )
        async with CursorClient(config) as client:
            assert await client.generate("composer-2", "retry me") == expected_reply("retry me")
        assert cuts


async def test_connection_refused_is_a_network_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = CursorPipeConfig(
        strategy="connect",
        backend_url=f"http://127.0.0.1:{port}",
        api_key="crsr_no_server_here",
        max_retries=0,
    )
    async with CursorClient(config) as client:
        with pytest.raises(NetworkError) as info:
            await client.generate("composer-2", "hello?")
    assert info.value.retryable and "crsr_no_server_here" not in str(info.value)
