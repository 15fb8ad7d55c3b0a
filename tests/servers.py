"""Real servers for the test session, in the order users expect (see TESTING.md):
1. CHIME_DATABASE_URL / CHIME_KAFKA_BOOTSTRAP_SERVERS set -> those servers;
2. a Docker engine answers -> testcontainers (PostgreSQL, Apache Kafka);
3. otherwise -> embedded PostgreSQL and Tansu, started here on free ports.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.embedded import EmbeddedPostgres, Tansu, free_port

__all__ = ["docker_available", "kafka_server", "postgres_server"]


def docker_available() -> bool:
    """Connect to the engine's socket; the CLI alone proves nothing."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return False
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"OK" in sock.recv(1024)
    except OSError:
        return False


class PostgresHandle:
    """A server URL (admin database), plus stop/start when this session owns the server."""

    def __init__(
        self,
        url: str,
        stop: Callable[[], None] | None = None,
        start: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.stop = stop
        self.start = start

    def database_url(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def postgres_server() -> Iterator[PostgresHandle]:
    if url := os.environ.get("CHIME_DATABASE_URL"):
        yield PostgresHandle(url)
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17", driver=None) as pg:
            yield PostgresHandle(pg.get_connection_url())
        return
    folder = Path(tempfile.mkdtemp(prefix="chime-test-pg-"))
    # tied: a test run or benchmark killed outright (a timeout's SIGTERM) takes it along
    server = EmbeddedPostgres(folder, free_port(), durable=False, tied=True)
    server.start()
    try:
        yield PostgresHandle(server.url("postgres"), server.stop, server.start)
    finally:
        server.remove()


@contextmanager
def kafka_server() -> Iterator[tuple[str, bool]]:
    """(bootstrap servers, is_tansu)."""
    if servers := os.environ.get("CHIME_KAFKA_BOOTSTRAP_SERVERS"):
        yield servers, False
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server(), False
        return
    broker = Tansu(free_port(), tied=True)
    broker.start()
    try:
        yield broker.bootstrap_servers, True
    finally:
        broker.stop()
