"""What every service process shares: logging, the health server, readiness, run()."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from faststream import AckPolicy, FastStream

from shared.clock import Clock, SystemClock
from shared.health import HealthServer
from shared.memory import HeapTrimmer
from shared.messaging import (
    Outgoing,
    Publisher,
    build_broker,
    ensure_topics,
    kafka_client_options,
    publishing_may_heal,
    retry_forever,
)
from shared.metrics import Metrics
from shared.offsets import Jump, OffsetGaps, settle
from shared.persistence.database import create_pool
from shared.persistence.migrate import check_schema
from shared.settings import Settings

__all__ = [
    "LOG_FIELDS",
    "QUIETED_LOGGERS",
    "BatchHandler",
    "Consumes",
    "JsonFormatter",
    "Publishes",
    "ServiceApp",
    "ServiceRuntime",
    "configure_logging",
    "consumer_app",
    "declare_publishers",
    "keep_running",
    "raw_records",
    "run_service",
    "service_app",
    "together",
    "tolerant_headers",
]


_T = TypeVar("_T")

LOG_FIELDS = (
    "service",
    "scheduleId",
    "actionId",
    "correlationId",
    "commandId",
    "tenant",
    "code",
    "field",
    "reason",
    "topic",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the LOG_FIELDS given as `extra=` become keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in LOG_FIELDS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


# Loggers kept at WARNING whatever the level: FastStream's (chime.kafka) logs every message at
# INFO, aiokafka its group joins and rebalances.
QUIETED_LOGGERS = ("aiokafka", "chime.kafka")


def configure_logging(level: str = "INFO") -> None:
    """One JSON object per line on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIETED_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


async def raw_records(msg: Any) -> Any:
    """FastStream decoder that hands subscribers the raw ConsumerRecords: each service decodes
    (and dead-letters) bytes itself, so one bad message never fails a whole batch."""
    raw = msg.raw_message
    return list(raw) if isinstance(raw, tuple) else [raw]


async def tolerant_headers(records: Any, parse: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream parser that survives header values which are not UTF-8.

    FastStream decodes every header value as UTF-8 to build its message; one bad header would
    fail the whole batch again and again. Such values are handed on with U+FFFD instead.
    """
    try:
        return await parse(records)
    except UnicodeDecodeError:
        batch = records if isinstance(records, tuple) else (records,)
        cleaned = tuple(
            dataclasses.replace(
                r, headers=[(k, v.decode("utf-8", "replace").encode()) for k, v in r.headers]
            )
            for r in batch
        )
        return await parse(cleaned if isinstance(records, tuple) else cleaned[0])


class ServiceRuntime:
    """Health endpoint and readiness of one service process."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.metrics = Metrics()
        self.started = False
        self.dependencies_ok = True  # the work in hand reaches its dependencies
        # Set when the service is asked to stop: work retrying a failing dependency gives up
        # (uncommitted, it is redelivered) instead of holding the shutdown.
        self.stopping = asyncio.Event()
        self.reachable = {"postgresql": True, "kafka": True}  # what the probe last saw
        self.http = HealthServer(settings.http_host, settings.http_port, self.ready, self.metrics)
        # a consumer marks its batches; trimmed by `trim_heap`
        self.heap = HeapTrimmer(observe=self.metrics.heap_trim.observe)
        self._probe: asyncio.Task[None] | None = None
        self._probe_every = 0.0
        self._trimming: asyncio.Task[None] | None = None
        self._unwatch_gc: Callable[[], None] | None = None

    def ready(self) -> bool:
        return self.started and self.dependencies_ok and all(self.reachable.values())

    def set_dependencies_ok(self, ok: bool) -> None:
        self.dependencies_ok = ok

    def watch(self, pool: asyncpg.Pool, every: float = 5.0) -> None:
        """Probe PostgreSQL and Kafka in the background, so that an idle service's readiness
        tells the truth too. Logs once per change. A Kafka request unanswered for half of
        `every` fails the check: the client gives up by itself and closes the connection it
        opened (cancelled from outside halfway through its metadata request, aiokafka's
        bootstrap would leave that connection open). Any check still running after twice
        `every` fails too."""
        log = logging.getLogger(f"chime.{self.name}")
        self._probe_every = every

        async def kafka() -> None:
            options = kafka_client_options(self.settings)
            client = AIOKafkaClient(**options, request_timeout_ms=int(every * 500))
            try:
                await client.bootstrap()
            finally:
                await client.close()

        async def postgresql() -> None:
            await pool.fetchval("SELECT 1")

        checks = {"postgresql": postgresql, "kafka": kafka}

        async def loop() -> None:
            while not self.stopping.is_set():
                for name, check in checks.items():
                    try:
                        await asyncio.wait_for(check(), 2 * every)
                        ok = True
                    except Exception:
                        ok = False
                    if ok != self.reachable[name]:
                        log.log(
                            logging.INFO if ok else logging.ERROR,
                            "%s is %s",
                            name,
                            "reachable again" if ok else "unreachable",
                        )
                    self.reachable[name] = ok
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), every)

        self._probe = asyncio.create_task(loop())

    def trim_heap(self) -> None:
        """Hand freed heap back to the OS every few seconds after work (`shared.memory`)."""
        self._trimming = asyncio.create_task(self.heap.run())

    async def stop(self) -> None:
        self.stopping.set()
        if self._probe is not None:  # ends after the check in hand, which closes its client
            await asyncio.wait({self._probe}, timeout=self._probe_every)
        for task in (self._probe, self._trimming):
            if task is not None:
                task.cancel()
        if self._unwatch_gc is not None:
            self._unwatch_gc()
            self._unwatch_gc = None
        await self.http.stop()

    async def start_http(self) -> None:
        port = await self.http.start()
        # Parsed by `chime dev`; also tells an operator where to look.
        print(f"chime {self.name}: http://{self.settings.http_host}:{port}", flush=True)

    async def mark_started(self) -> None:
        self.started = True
        if self._unwatch_gc is None:
            self._unwatch_gc = self.metrics.watch_gc()
        logging.getLogger(f"chime.{self.name}").info("%s is consuming", self.name)
        print(f"chime {self.name}: ready", flush=True)


class BatchHandler(Protocol):
    async def handle(self, records: list[Any]) -> list[Outgoing]: ...


@dataclass(frozen=True)
class Consumes:
    """What a consumer service reads (documented in its AsyncAPI as `message`)."""

    topic: str
    message: type
    description: str


def consumer_app(
    name: str,
    settings: Settings,
    consumes: Consumes,
    make_handler: Callable[[asyncpg.Pool, Settings, Clock, ServiceRuntime], BatchHandler],
    clock: Clock | None = None,
    publishes: Sequence[Publishes] = (),
) -> FastStream:
    """A FastStream app with one batch subscriber, in the consumer group `<prefix><name>`.

    The handler applies a run of the batch (`runs_by_size`) and returns what to publish: in
    one transaction, or in several at once (the scheduler's tenants, the acker's parts). The
    batch is committed (NACK_ON_ERROR) only after every run was applied and the broker
    acknowledged every message; if one raises, the whole batch is rewound, and what was
    already applied is applied again as replays (commands and acks are idempotent). A
    partition whose offsets jump is read again from the offset expected (`OffsetGaps`: the
    embedded broker can step a fetch over a batch).
    """
    clock = clock or SystemClock()
    runtime = ServiceRuntime(name, settings)
    # apply_types=False: handlers get raw records (bad bytes are dead-lettered, not dropped by a
    # decoding failure); the annotations below still describe the payload in AsyncAPI.
    broker = build_broker(settings, name, apply_types=False)
    holder: dict[str, BatchHandler] = {}
    declare_publishers(broker, publishes)
    publisher = Publisher(settings, broker)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await retry_forever("creating topics", lambda: ensure_topics(settings))
        pool = await retry_forever(
            "connecting to PostgreSQL",
            lambda: create_pool(settings.database_url, settings.database_pool_size),
        )
        await retry_forever("checking the database's schema", lambda: check_schema(pool))
        holder["handler"] = make_handler(pool, settings, clock, runtime)
        await publisher.start()
        await runtime.start_http()
        runtime.watch(pool)
        runtime.trim_heap()
        try:
            yield
        finally:
            await runtime.stop()
            await publisher.stop()
            await pool.close()

    gaps = OffsetGaps(read_again=settings.kafka_read_again_ms / 1000)
    log = logging.getLogger(f"chime.{name}")

    async def on_batch(records: list[Any]) -> None:
        consumer = subscriber.consumer
        assert consumer is not None  # it is consuming
        await _from_committed(consumer, gaps, records)
        records, jumps = admit_reporting(gaps, records, consumer, log, runtime.metrics)
        try:
            for run in runs_by_size(records, settings.consumer_run_bytes):
                with collector_paused():
                    out = await holder["handler"].handle(run)
                    await retry_forever(
                        "publishing to Kafka",
                        lambda out=out: publisher.send(out),
                        runtime.set_dependencies_ok,
                        stop=runtime.stopping,
                        may_heal=publishing_may_heal,
                    )
        except BaseException:
            gaps.rewound(jumps)  # the batch is delivered again (NACK_ON_ERROR)
            raise
        runtime.heap.worked()
        await settle(jumps)  # a jump seen again: the next fetch a little later

    on_batch.__annotations__["records"] = list[consumes.message]  # documents the payload
    subscriber = broker.subscriber(
        consumes.topic,
        group_id=settings.consumer_group(name),
        batch=True,
        max_records=settings.consumer_batch_size,
        batch_timeout_ms=settings.consumer_batch_timeout_ms,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        listener=_ForgetOnRebalance(gaps),
        decoder=raw_records,
        parser=tolerant_headers,
        title=f"{consumes.topic}:{name}",
        description=consumes.description,
    )
    subscriber(on_batch)

    async def refresh_lag() -> None:
        """Records past each assigned partition's position, up to its end: the end offset as
        the broker gives it now, or the high watermark of the last fetch where that is
        further. The broker's figure, because while the service holds a batch it cannot
        apply, its fetcher (records buffered) fetches no more, so the last fetch's figure
        stops where the stall began, which is when the lag matters; the last fetch's where it
        is further, because Tansu 0.6 answers with the first offset of a partition's newest
        batch plus one (Kafka: the last plus one). A broker that does not answer within 2 s
        leaves the last fetch's figure."""
        consumer = subscriber.consumer
        if consumer is None:
            return
        partitions = list(consumer.assignment())
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(partitions), 2) if partitions else {}
        except (TimeoutError, KafkaError):
            ends = {}
        lag = 0
        for partition in partitions:
            known = [
                e for e in (ends.get(partition), consumer.highwater(partition)) if e is not None
            ]
            if known:
                lag += max(0, max(known) - await consumer.position(partition))
        runtime.metrics.consumer_lag.labels(consumes.topic).set(lag)

    runtime.metrics.on_scrape(refresh_lag)

    async def stop_retrying() -> None:  # before the broker stops and waits for the batch
        runtime.stopping.set()

    return service_app(
        broker, lifespan, after_startup=[runtime.mark_started], on_shutdown=[stop_retrying]
    )


def admit_reporting(
    gaps: OffsetGaps, records: list[Any], consumer: Any, log: logging.Logger, metrics: Metrics
) -> tuple[list[Any], list[Jump]]:
    """`gaps.admit`, with what it did logged and counted: each jump read again (a warning the
    first time, debug while it is seen again) and each jump taken after reading again for
    `read_again` (a warning: on the embedded broker, records this consumer never received)."""
    kept, jumps = gaps.admit(records, consumer)
    taken = "taken (nothing there to read, or a batch the broker never delivered)"
    reports = [(jump, logging.WARNING, taken, metrics.offsets_jumps_taken) for jump in gaps.taken]
    again = metrics.offsets_read_again  # read again from the offset expected (shared/offsets.py)
    for jump in jumps:
        level = logging.WARNING if jump.seen == 1 else logging.DEBUG
        reports.append((jump, level, "reading it again", again))
    for jump, level, outcome, counter in reports:
        log.log(
            level,
            "partition %d gave offset %d where %d was next, %d times in a row: %s",
            jump.partition,
            jump.received,
            jump.expected,
            jump.seen,
            outcome,
            extra={"topic": jump.topic},
        )
        counter.labels(jump.topic).inc()
    return kept, jumps


async def _from_committed(consumer: AIOKafkaConsumer, gaps: OffsetGaps, records: list[Any]) -> None:
    """A partition read for the first time since it was assigned began at its committed offset:
    a jump in that first fetch is one too. Where the broker does not answer, or the group never
    committed (the partition began where `auto_offset_reset` put it), it is followed from its
    first record."""
    for topic, partition in gaps.unknown(records):
        try:
            committed = await consumer.committed(TopicPartition(topic, partition))
        except KafkaError:
            continue
        if committed is not None:
            gaps.expect((topic, partition), committed)


class _ForgetOnRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """What `OffsetGaps` knows of a partition revoked or assigned is forgotten."""

    def __init__(self, gaps: OffsetGaps) -> None:
        self.gaps = gaps

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.gaps.forget((tp.topic, tp.partition) for tp in revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.gaps.forget((tp.topic, tp.partition) for tp in assigned)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a consumer applies a run and publishes its results;
    the collector runs as usual between runs.

    A run of 2,000 commands keeps some 200,000 objects alive until it is answered (decoded
    JSON, models, rows, results), and each young or middle collection meanwhile walked them
    again: 9.5 % of the scheduler's samples (py-spy) were the collector's. They hold no cycles:
    reference counting frees them when the run ends, so a collection after it walks few
    objects. What a run leaves in cycles waits for that collection, bounded by the run's size;
    a run retrying a dependency that is down collects it at each retry (`retry_forever`).
    Over 100,000 creates: 8,122 collections (1.0-1.3 s) before, 254 (0.07-0.08 s) after;
    throughput in alternating runs in bench/README.md ("2026-12-02"). Leaves the collector as
    it found it (paused already: stays paused)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def together(work: Sequence[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Runs `work` at once and returns the results in its order. The first that fails cancels
    the others and its error is raised as itself, not in an ExceptionGroup: as running them
    one after another would raise it, so a caller's "is this transient, retry" still sees it.
    What the others had done (committed) stays done."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(each) for each in work]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def runs_by_size(records: list[Any], limit: int) -> list[list[Any]]:
    """Consecutive runs of `records` whose values add up to at most `limit` bytes; a record
    larger than that is a run of its own. Commands of 1,000 explicit actions (52 KB each)
    applied a batch at a time took the scheduler to 564-660 MiB; in runs of 2 MiB, 196-203 MiB
    (bench/README.md)."""
    runs: list[list[Any]] = []
    size = limit + 1
    for record in records:
        length = len(record.value or b"")
        if size + length > limit:
            runs.append([])
            size = 0
        runs[-1].append(record)
        size += length
    return runs


@dataclass(frozen=True)
class Publishes:
    """A topic a service publishes to, with its message contract (None: raw bytes)."""

    topic: str
    message: type | None
    description: str


def declare_publishers(broker: Any, publishes: Sequence[Publishes]) -> None:
    """Declare what a service publishes, so that its AsyncAPI documents it."""
    for item in publishes:
        broker.publisher(
            item.topic, schema=item.message or bytes, title=item.topic, description=item.description
        )


class ServiceApp(FastStream):
    """A FastStream app whose stop signal also interrupts its startup.

    FastStream only sets a flag on SIGTERM, which it reads once the lifespan has started; a
    service still waiting for an unreachable database or broker would never see it. Until the
    app has started, a stop request cancels the run instead (`run_service` exits 0).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._runner: asyncio.Task[Any] | None = None
        self._starting = True
        self.failed: str | None = None  # why the service stops on its own (exit status 1)
        self.after_startup(self._started)

    async def _started(self) -> None:
        self._starting = False

    async def run(self, *args: Any, **kwargs: Any) -> None:
        self._runner = asyncio.current_task()
        await super().run(*args, **kwargs)

    def exit(self) -> None:
        super().exit()
        if self._starting and self._runner is not None:
            self._runner.cancel()

    def fail(self, reason: str) -> None:
        """Stop as on SIGTERM (gracefully), then exit with status 1: for a part of the service
        that cannot go on, so that its supervisor (a restart policy, `chime dev`) sees it."""
        if self.failed is None:
            self.failed = reason
        self.exit()


def keep_running(app: ServiceApp, task: asyncio.Task[Any], what: str, stop: asyncio.Event) -> None:
    """`task` is a loop meant to run as long as the service (it ends when `stop` is set). If it
    ends before (an exception got out of it), the service must not stay up, ready and idle:
    log why, and stop it with exit status 1 (`ServiceApp.fail`)."""

    def ended(done: asyncio.Task[Any]) -> None:
        if stop.is_set():
            return
        error = None if done.cancelled() else done.exception()
        logging.getLogger("chime.app").critical(
            "%s ended while the service runs; stopping it (exit status 1)",
            what,
            exc_info=error,
        )
        app.fail(f"{what} ended")

    task.add_done_callback(ended)


def service_app(broker: Any, lifespan: Any, **hooks: Any) -> ServiceApp:
    """A FastStream app that logs through Chime's JSON logging."""
    return ServiceApp(broker, lifespan=lifespan, logger=logging.getLogger("chime.app"), **hooks)


# Full collections only after this many collections of the middle generation (Python's
# default: 10). A batch of 2,000 commands keeps some 200,000 objects alive while it is applied;
# at the default, the scheduler walked all of them in a full collection 38 times while
# applying 60,000 creates (1.36 s of 15.8 s of CPU). At 100: 5 times (0.17 s), 13 % less CPU
# per command (bench/README.md, profile notes). A consumer collects none of them while it
# applies a run (`collector_paused`).
FULL_COLLECTION_EVERY = 100
# A young collection after this many more objects allocated than freed (Python's default: 700).
# A ticker's round keeps its rows, events and messages (some 4.5 tracked objects a fire) until it
# is marked, tens of milliseconds; at 700 each young collection found most of them alive and
# moved them on, and the middle collections walked them again: 0.15-0.22 s of pauses per
# 100,000 fires (`chime_gc_pause_seconds`), ~9 % of the ticker's CPU. At 10,000 most are freed
# before a collection comes: 0.04 s (bench/README.md, profile notes).
YOUNG_COLLECTION_AFTER = 10_000


async def _freeze_startup_heap() -> None:
    """Keep what the started service has built (modules, classes, schemas, pools, the app: some
    70,000 objects that live as long as the process) out of every later collection. A full
    collection walks every object it tracks with the event loop stopped; these would be walked
    each time for nothing (bench/README.md, profile notes, "many schedules"). Garbage made
    while starting is collected first, so none of it is kept. Young and full collections are
    then made rarer (`YOUNG_COLLECTION_AFTER`, `FULL_COLLECTION_EVERY`)."""
    gc.collect()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, middle, FULL_COLLECTION_EVERY)


def run_service(app: FastStream) -> int:
    """Run a service until SIGTERM or SIGINT, then exit 0, also while it starts; 1 when it
    stopped on its own (`ServiceApp.fail`).

    The caller installs an exiting signal handler before importing the service (see
    `chime run`); the app replaces it with FastStream's once it runs.
    """

    app.after_startup(_freeze_startup_heap)

    async def main() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await app.run()

    asyncio.run(main())
    return 1 if isinstance(app, ServiceApp) and app.failed else 0
