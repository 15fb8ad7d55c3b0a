"""The services' small HTTP server on a real socket: what it answers to requests that are too
long, too slow, or whose route fails, and that it goes on answering after each."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.health import HEAD_LINES, HealthServer
from shared.metrics import Metrics


@pytest.fixture
async def server() -> AsyncIterator[HealthServer]:
    health = HealthServer("127.0.0.1", 0, lambda: True, Metrics(), head_timeout=0.2)
    await health.start()
    try:
        yield health
    finally:
        await health.stop()


async def ask(server: HealthServer, raw: bytes) -> bytes:
    """Send `raw` as a request's bytes; the status line of the answer (b"" if none)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(raw)
        writer.write_eof()  # all of it sent, as a client that waits for the answer
        await writer.drain()
        return (await reader.readline()).rstrip()
    finally:
        writer.close()


async def test_answers_health(server: HealthServer) -> None:
    assert await ask(server, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n") == b"HTTP/1.1 200 OK"


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",  # a line past the reader's 64 KiB
        b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * (HEAD_LINES + 1) + b"\r\n",
    ],
    ids=["long line", "many headers"],
)
async def test_a_head_too_long_is_a_bad_request(server: HealthServer, raw: bytes) -> None:
    assert await ask(server, raw) == b"HTTP/1.1 400 Bad Request"
    assert await ask(server, b"GET /health/ready HTTP/1.1\r\n\r\n") == b"HTTP/1.1 200 OK"


async def test_a_head_not_sent_in_time_is_closed(server: HealthServer) -> None:
    """Headers sent a line at a time, never ending: closed once the head timeout passes (it
    held the connection open for as long as each line came within 5 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /health/live HTTP/1.1\r\n")

        async def drip() -> None:
            while True:
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)

        dripping = asyncio.ensure_future(drip())
        try:
            try:
                answer = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:  # closed while a line was on its way: a reset
                answer = b""
            assert answer == b""  # closed, unanswered
        finally:
            dripping.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await dripping  # its write may have met the reset
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (ConnectionRefusedError("the database is down"), b"HTTP/1.1 503 Service Unavailable"),
        (asyncpg.exceptions.DataError("a bug"), b"HTTP/1.1 500 Internal Server Error"),
    ],
)
async def test_a_route_that_fails_is_answered_and_the_server_goes_on(
    server: HealthServer, fault: Exception, status: bytes
) -> None:
    async def failing() -> tuple[str, bytes, str]:
        raise fault

    server.routes["/dashboard/api"] = failing
    assert await ask(server, b"GET /dashboard/api HTTP/1.1\r\n\r\n") == status
    assert await ask(server, b"GET /health/live HTTP/1.1\r\n\r\n") == b"HTTP/1.1 200 OK"
