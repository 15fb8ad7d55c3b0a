"""The three services as OS processes (`tests.processes.Services`), and a plain Kafka client to
talk to them."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from shared.embedded import EmbeddedPostgres, free_port
from shared.messaging import ensure_topics
from shared.offsets import OffsetGaps, settle
from shared.persistence.migrate import migrate
from shared.settings import Settings
from tests.processes import Services

SERVICES = ("scheduler", "ticker", "acker")
FAILED = pytest.StashKey[bool]()
TAIL_LINES = 40


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failing test's report ends with the tail of every service log it wrote (the one way
    to tell, afterwards, what a service was doing); a passing test's logs are removed."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item.stash[FAILED] = True
        for running in Services.created:
            for label, path in running.logs.items():
                report.sections.append((f"{label} log, last lines ({path})", _tail(path)))
    if report.when == "teardown":
        if not item.stash.get(FAILED, False):
            for running in Services.created:
                shutil.rmtree(running.logdir, ignore_errors=True)
        Services.created.clear()


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
    except OSError as exc:
        return f"(unreadable: {exc})"
    # a JSON line with a traceback is long: its start says what, its end which exception
    return "\n".join(
        line if len(line) <= 1200 else f"{line[:400]} … {line[-800:]}" for line in lines
    )


@dataclass
class Received:
    value: Any
    raw: bytes
    headers: dict[str, str]
    key: bytes | None
    at: float  # wall-clock seconds when the test received it
    partition: int = -1
    offset: int = -1

    @classmethod
    def of(cls, record: ConsumerRecord, at: float) -> Received:
        try:
            value = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            value = None  # a dead letter keeps the bytes it was given
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
        return cls(value, record.value, headers, record.key, at, record.partition, record.offset)


@dataclass
class Bus:
    """Publishes to Chime's topics and records everything Chime publishes."""

    settings: Settings
    producer: AIOKafkaProducer
    received: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Why the consumer stopped receiving, if it did: nothing received after it is waited for.
    failed: BaseException | None = None
    # Jumps in a partition's offsets, read again from the offset expected: (topic, partition,
    # the one expected, the one received). Chime's topics are neither compacted nor
    # transactional, so each was a batch a fetch stepped over (shared/offsets.py).
    gaps: list[tuple[str, int, int, int]] = field(default_factory=list)

    async def send(
        self,
        topic: str,
        value: bytes | dict,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        await self.producer.send_and_wait(topic, raw, key=key, headers=headers)

    async def wait_for(
        self, topic: str, match: Callable[[Received], bool], count: int = 1, timeout: float = 30.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.received[topic] if match(r)]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.failed is not None:
                stopped = f"; the consumer stopped: {self.failed!r}" if self.failed else ""
                raise AssertionError(
                    f"{len(found)}/{count} matching messages on {topic} within {timeout} s"
                    + stopped
                )
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass


async def _collect(consumer: AIOKafkaConsumer, bus: Bus) -> None:
    """Records what the consumer reads, each topic from its start; a partition whose offsets
    jump is read again from the one expected, as Chime's consumers do (shared/offsets.py)."""
    gaps = OffsetGaps(start=0)
    try:
        while True:
            records, jumps = gaps.admit_fetched(await consumer.getmany(timeout_ms=500), consumer)
            bus.gaps += jumps
            await settle(jumps)
            at = time.time()
            for record in records:
                bus.received[record.topic].append(Received.of(record, at))
            if records:
                bus.changed.set()
    except Exception as exc:
        bus.failed = exc
        bus.changed.set()
        raise


async def read_all(settings: Settings, topic: str, within: float = 60.0) -> list[Received]:
    """Every record of `topic` up to its current end, read by a fresh consumer (for at most
    `within` seconds); a partition whose offsets jump is read again, as the bus does."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(consumer.assignment()))
        out: list[Received] = []
        deadline, gaps = time.monotonic() + within, OffsetGaps(start=0)
        while time.monotonic() < deadline and [
            tp for tp, end in ends.items() if await consumer.position(tp) < end
        ]:
            records, jumps = gaps.admit_fetched(await consumer.getmany(timeout_ms=500), consumer)
            out += [Received.of(r, 0.0) for r in records]
            await settle(jumps)
        return out
    finally:
        await consumer.stop()


@pytest.fixture
async def services(settings: Settings, database_url: str) -> AsyncIterator[Services]:
    await ensure_topics(settings)
    from shared.persistence.migrate import migrate

    await migrate(database_url)  # as the owner, a no-op on the test database: idempotent
    # Runs of a few messages (commands and acks here are 0.3-2 KB): every batch that holds
    # more is applied in several transactions, the path a batch of large commands takes. The
    # ticker never polls on its own (max idle 10 min instead of 5 s): every fire here comes
    # from a NOTIFY or the next due instant it computed, so a wake-up lost shows as a test
    # that times out rather than as an event 5 s late.
    running = Services(
        settings, CHIME_CONSUMER_RUN_BYTES="4096", CHIME_TICKER_MAX_IDLE_SECONDS="600"
    )
    await asyncio.wait_for(asyncio.gather(*(running.start(n) for n in SERVICES)), 90)
    yield running
    codes = await running.stop_all()
    assert codes == dict.fromkeys(SERVICES, 0), f"services did not stop cleanly: {codes}"


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


@asynccontextmanager
async def own_postgres(
    settings: Settings, folder: Path
) -> AsyncIterator[tuple[EmbeddedPostgres, Settings]]:
    """A migrated PostgreSQL server of the test's own (to stop and start under the services),
    and the test's settings pointed at it; removed at the end."""
    pg = EmbeddedPostgres(folder, free_port(), durable=False)
    await asyncio.to_thread(pg.start)
    try:
        own = settings.model_copy(update={"database_url": pg.url("chime")})
        await migrate(own.database_url)
        yield pg, own
    finally:
        await asyncio.to_thread(pg.remove)
