"""A small HTTP server per service: /health/live, /health/ready, /metrics, and any extra
read-only routes a service mounts (the ticker mounts the dashboard)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared.metrics import Metrics

__all__ = ["HealthServer"]

log = logging.getLogger("chime.health")


class HealthServer:
    """Serves liveness, readiness (a callable) and metrics on host:port (0 = any port)."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool], metrics: Metrics) -> None:
        self.host, self.port = host, port
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
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) > 1 else "/"
            status, body, kind = await self._route(path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _route(self, path: str) -> tuple[str, bytes, str]:
        if path == "/health/live":
            return "200 OK", b'{"status":"live"}', "application/json"
        if path == "/health/ready":
            if self._ready():
                return "200 OK", b'{"status":"ready"}', "application/json"
            return "503 Service Unavailable", b'{"status":"not ready"}', "application/json"
        if path in self.routes:
            return await self.routes[path]()
        if path == "/metrics":
            return "200 OK", await self._metrics.render(), "text/plain; version=0.0.4"
        return "404 Not Found", b'{"status":"not found"}', "application/json"
