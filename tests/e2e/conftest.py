"""The three services as OS processes, and a plain Kafka client to talk to them."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.messaging import ensure_topics
from shared.settings import Settings

SERVICES = ("scheduler", "ticker", "acker")


@dataclass
class Received:
    value: Any
    raw: bytes
    headers: dict[str, str]
    key: bytes | None
    at: float  # wall-clock seconds when the test received it


@dataclass
class Bus:
    """Publishes to Chime's topics and records everything Chime publishes."""

    settings: Settings
    producer: AIOKafkaProducer
    received: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, topic: str, value: bytes | dict, key: bytes | None = None) -> None:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        await self.producer.send_and_wait(topic, raw, key=key)

    async def wait_for(
        self, topic: str, match: Callable[[Received], bool], count: int = 1, timeout: float = 30.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.received[topic] if match(r)]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{len(found)}/{count} matching messages on {topic} within {timeout} s"
                )
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass


async def _collect(consumer: AIOKafkaConsumer, bus: Bus) -> None:
    async for record in consumer:
        try:
            value = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            value = None
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
        bus.received[record.topic].append(
            Received(value, record.value, headers, record.key, time.time())
        )
        bus.changed.set()


class Services:
    """Chime services as OS processes; tests may run replicas, kill and restart any of them.

    A replica is named `<service>` or `<service>-<n>` (`ticker-2`). Each process's stderr goes
    to a file (`logs[label]`), its health URL to `urls[label]`.
    """

    def __init__(self, settings: Settings, **env: str) -> None:
        self.env = {**os.environ, **settings.to_env(), "CHIME_HTTP_PORT": "0", **env}
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.urls: dict[str, str] = {}
        self.logs: dict[str, Path] = {}
        self._logdir = Path(tempfile.mkdtemp(prefix="chime-e2e-logs-"))
        self._drains: list[asyncio.Task[None]] = []

    async def start(self, label: str) -> None:
        service = label.split("-")[0]
        log = self.logs.setdefault(label, self._logdir / f"{label}.log")
        with log.open("ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.cli.main",
                "run",
                service,
                env={**self.env, "CHIME_TICKER_ID": label},
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        self.procs[label] = proc
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode().strip()
            if line.startswith(f"chime {service}: http://"):
                self.urls[label] = line.split(": ", 1)[1]
            if line == f"chime {service}: ready":
                self._drains.append(asyncio.create_task(_drain(proc)))
                return
        raise AssertionError(f"{label} exited before it was ready (code {await proc.wait()})")

    async def kill(self, label: str) -> None:
        proc = self.procs[label]
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def stop_all(self) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = {n: await asyncio.wait_for(p.wait(), 60) for n, p in self.procs.items()}
        for task in self._drains:
            task.cancel()
        return codes


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    await ensure_topics(settings)
    from shared.persistence.migrate import migrate

    await migrate(settings.database_url)  # a no-op on the test database: proves idempotence
    running = Services(settings)
    await asyncio.wait_for(asyncio.gather(*(running.start(n) for n in SERVICES)), 90)
    yield running
    codes = await running.stop_all()
    assert codes == dict.fromkeys(SERVICES, 0), f"services did not stop cleanly: {codes}"


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    async for _ in proc.stdout:
        pass


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    topics = settings.topics
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    consumer = AIOKafkaConsumer(
        topics.command_results,
        topics.actions_due,
        topics.actions_events,
        topics.dlq,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await ensure_topics(settings)
    await producer.start()
    await consumer.start()
    the_bus = Bus(settings, producer)
    collector = asyncio.create_task(_collect(consumer, the_bus))
    yield the_bus
    collector.cancel()
    await consumer.stop()
    await producer.stop()
