"""A small HTTP server per service: /health/live, /health/ready, /metrics, and any extra
read-only routes a service mounts (the ticker mounts the dashboard)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared.messaging import is_transient
from shared.metrics import Metrics

__all__ = ["HealthServer"]

log = logging.getLogger("chime.health")
JSON = "application/json"
HEAD_LINES = 100  # a request's head, request line and headers, is at most this many lines


class HealthServer:
    """Serves liveness, readiness (a callable) and metrics on host:port (0 = any port)."""

    def __init__(
        self,
        host: str,
        port: int,
        ready: Callable[[], bool],
        metrics: Metrics,
        head_timeout: float = 5.0,
    ) -> None:
        self.host, self.port = host, port
        self.head_timeout = head_timeout  # seconds to send a request's whole head in
        self.routes: dict[str, Callable[[], Awaitable[tuple[str, bytes, str]]]] = {}
        self._ready = ready
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request, answered and closed. A head that is too long (a line past the reader's
        64 KiB, more than HEAD_LINES lines) is answered 400; one not sent within the head
        timeout is closed; a route that fails is answered 503 (a dependency out of reach) or
        500, and logged."""
        try:
            try:
                async with asyncio.timeout(self.head_timeout):
                    request = await self._read_head(reader)
            except ValueError:  # asyncio's StreamReader: a line past its limit
                request = None
            if request is None:
                status, body, kind = "400 Bad Request", b'{"status":"bad request"}', JSON
            else:
                parts = request.decode("latin-1").split()
                status, body, kind = await self._answer(parts[1] if len(parts) > 1 else "/")
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
            if request is None:
                await self._discard_rest(reader, writer)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _discard_rest(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """After answering a head too long: read what the client still sends, until it stops
        sending or the head timeout passes, so that closing with its bytes unread does not
        reset the connection before the client reads the answer."""
        writer.write_eof()
        async with asyncio.timeout(self.head_timeout):
            while await reader.read(65_536):
                pass

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
        """The request line, once the head's end is read; None when the head is too long."""
        request = await reader.readline()
        for _ in range(HEAD_LINES):
            if await reader.readline() in (b"\r\n", b"\n", b""):
                return request
        return None

    async def _answer(self, path: str) -> tuple[str, bytes, str]:
        try:
            return await self._route(path)
        except Exception as exc:
            log.exception("answering %s failed", path[:200])
            if is_transient(exc):
                return "503 Service Unavailable", b'{"status":"unavailable"}', JSON
            return "500 Internal Server Error", b'{"status":"internal error"}', JSON

    async def _route(self, path: str) -> tuple[str, bytes, str]:
        if path == "/health/live":
            return "200 OK", b'{"status":"live"}', JSON
        if path == "/health/ready":
            if self._ready():
                return "200 OK", b'{"status":"ready"}', JSON
            return "503 Service Unavailable", b'{"status":"not ready"}', JSON
        if path in self.routes:
            return await self.routes[path]()
        if path == "/metrics":
            return "200 OK", await self._metrics.render(), "text/plain; version=0.0.4"
        return "404 Not Found", b'{"status":"not found"}', JSON
