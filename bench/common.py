"""Shared by the benchmark scripts: servers (embedded, or named by CHIME_* variables), loading
occurrences through the command code path, running services, reading topics back."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.contracts import format_instant
from shared.messaging import ensure_topics
from shared.offsets import OffsetGaps, settle
from shared.persistence.migrate import migrate
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.servers import kafka_server, postgres_server  # noqa: E402


@asynccontextmanager
async def servers(name: str, template: str | None = None) -> AsyncIterator[Settings]:
    """A fresh database and topic prefix on the configured (or embedded) servers; the database
    is a copy of `template` when the server holds that database (see `keep_as_template`), and
    is dropped afterwards."""
    with postgres_server() as pg, kafka_server() as (bootstrap, is_tansu):
        database = f"bench_{name}_{uuid.uuid4().hex[:6]}"
        admin = await asyncpg.connect(pg.url)
        try:
            copy = template and await admin.fetchval(
                "SELECT true FROM pg_database WHERE datname = $1", template
            )
            # a file copy: the default (WAL_LOG) writes gigabytes of a kept backlog through WAL
            source = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if copy else ""
            await admin.execute(f'CREATE DATABASE "{database}"{source}')
        finally:
            await admin.close()
        url = pg.database_url(database)
        await migrate(url)
        short = (
            {"kafka_session_timeout_ms": 3000, "kafka_heartbeat_interval_ms": 1000}
            if is_tansu
            else {}
        )
        settings = Settings(
            database_url=url,
            kafka_bootstrap_servers=bootstrap,
            topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
            **short,
        )
        await ensure_topics(settings)
        try:
            yield settings
        finally:
            admin = await asyncpg.connect(pg.url)
            try:
                await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
            finally:
                await admin.close()


async def keep_as_template(settings: Settings, template: str) -> float:
    """Copy the run's database to `template` (nothing may be connected to it), for later runs
    on the same server to start from (`servers(..., template)`). Returns the seconds taken."""
    database = settings.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(settings.database_url.rsplit("/", 1)[0] + "/postgres")
    started = time.monotonic()
    try:
        copy = f'CREATE DATABASE "{template}" TEMPLATE "{database}" STRATEGY FILE_COPY'
        await admin.execute(copy)
    finally:
        await admin.close()
    return time.monotonic() - started


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def listening_pid(bootstrap: str) -> int | None:
    """The process started with `tcp://<bootstrap>` on its command line (the embedded broker),
    or None (a broker elsewhere)."""
    wanted = f"tcp://{bootstrap}".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if wanted in cmdline.read_bytes().split(b"\0"):
                return int(cmdline.parent.name)
    return None


TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_ticks() -> list[int]:
    """The machine's CPU time so far, in ticks, from /proc/stat's `cpu` line: user, nice,
    system, idle, iowait, irq, softirq, steal, ..."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def _vmstat() -> dict[str, int]:
    """/proc/vmstat's counters so far."""
    lines = Path("/proc/vmstat").read_text().splitlines()
    return {name: int(value) for name, value in (line.split() for line in lines)}


def machine_counters() -> dict[str, float]:
    """What the machine gives the processes, from /proc (Linux): CPU time stolen by the
    hypervisor and spent waiting for I/O (seconds), time some task stalled for CPU, I/O or memory
    (pressure stall information, µs; 0 without it), major faults and KiB read from block
    devices so far; memory available and in the page cache now (MiB)."""
    cpu = _cpu_ticks()
    counters = {"iowait_s": cpu[4] / TICKS_PER_S, "steal_s": cpu[7] / TICKS_PER_S}
    for kind in ("cpu", "io", "memory"):
        counters[f"stall_{kind}_us"] = 0
        with contextlib.suppress(OSError):
            some = Path(f"/proc/pressure/{kind}").read_text().split("\n", 1)[0]
            counters[f"stall_{kind}_us"] = int(some.rsplit("total=", 1)[1])
    vmstat = _vmstat()
    counters |= {"major_faults": vmstat["pgmajfault"], "read_kib": vmstat["pgpgin"]}
    lines = Path("/proc/meminfo").read_text().splitlines()
    meminfo = {name: int(rest.split()[0]) / 1024 for name, rest in (x.split(":", 1) for x in lines)}
    return counters | {"available_mib": meminfo["MemAvailable"], "cached_mib": meminfo["Cached"]}


def machine_window(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What happened between two `machine_counters`: the cumulative counters' differences
    (stalls in ms), the gauges as they were at the end."""
    window = {}
    for name, value in after.items():
        if name.endswith("_mib"):
            window[name] = round(value)
        elif name.endswith("_us"):
            window[name.removesuffix("_us") + "_ms"] = round((value - before[name]) / 1000)
        else:
            window[name] = round(value - before[name], 2)
    return window


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name (the first is field 3, the state)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_s(pid: int, reaped: bool = False) -> float:
    """CPU seconds (user and system) a process has used so far; with `reaped`, its ended
    children's too (a postmaster's backends that have exited). 0 once it is gone."""
    return process_usage(pid, reaped)[0]


def process_usage(pid: int, reaped: bool = False) -> tuple[float, int]:
    """CPU seconds (user and system) and page faults (minor and major) a process has had so
    far; with `reaped`, its ended children's too. (0, 0) once it is gone."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0, 0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    faults = int(fields[7]) + int(fields[9])  # minflt, majflt
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
        faults += int(fields[8]) + int(fields[10])  # cminflt, cmajflt
    return ticks / TICKS_PER_S, faults


async def by_window(
    read: Callable[[], Awaitable[Any]],
    part: Callable[[Any, Any, float], Any],
    start: float,
    window: float,
    out: list,
) -> None:
    """Until cancelled: `read()` at `start` (epoch seconds) and at the end of every `window`
    seconds after, and `part(before, after, seconds)` of each window appended to `out` as it
    ends; the window under way when cancelled too, over the time it ran."""
    await asyncio.sleep(max(0.0, start - time.time()))
    before, since = await read(), time.monotonic()
    try:
        while True:
            await asyncio.sleep(max(0.0, since + window - time.monotonic()))
            after, now = await read(), time.monotonic()
            out.append(part(before, after, now - since))
            before, since = after, now
    except asyncio.CancelledError:
        if (elapsed := time.monotonic() - since) > 0.1:
            out.append(part(before, await read(), elapsed))
        raise


async def cores_by_window(pid: int, start: float, window: float, out: list[float]) -> None:
    """Until cancelled: the cores a process used (CPU seconds per second) in each `window`
    seconds from `start` (epoch seconds), appended to `out` as each window ends; the window
    under way when cancelled is appended too, over the time it ran."""

    async def read() -> float:
        return process_cpu_s(pid)

    def cores(used: float, now_used: float, seconds: float) -> float:
        return round((now_used - used) / seconds, 2)

    await by_window(read, cores, start, window, out)


@asynccontextmanager
async def watching(watch: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """`watch` (a watcher that runs until cancelled) in a task for the length of the block;
    cancelled and awaited when the block is left, so what it fills is complete by then."""
    task = asyncio.create_task(watch)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def watching_cores(
    pid: int | None, start: float, window: float
) -> AsyncIterator[list[float] | None]:
    """`cores_by_window` of `pid` for the length of the block: the list it fills, complete
    (the last window's part too) once the block is left; None when there is no process to
    watch (a broker elsewhere)."""
    if pid is None:
        yield None
        return
    cores: list[float] = []
    async with watching(cores_by_window(pid, start, window, cores)):
        yield cores


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is `parent` now."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(_stat(int(entry.name))[1]) == parent:
                found.append(int(entry.name))
    return found


async def postmaster_pid(url: str) -> int | None:
    """The PostgreSQL server's main process, when it runs on this machine and is seen in its
    /proc (the embedded server; not one in a container or elsewhere); else None."""
    conn = await asyncpg.connect(url)
    try:  # while the backend is there
        return _postgres_parent(await conn.fetchval("SELECT pg_backend_pid()"))
    finally:
        await conn.close()


def _postgres_parent(backend: int) -> int | None:
    """The parent of this backend, when both are `postgres` processes in this /proc."""
    try:
        parent = int(_stat(backend)[1])
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in (backend, parent)}
    except OSError:
        return None
    return parent if names == {"postgres"} else None


class CpuMeter:
    """CPU time and page faults of each part of a run between two readings (from /proc: Linux),
    per operation.

    The parts: the whole machine (all cores' busy time), PostgreSQL (its main process, its
    live processes and the ended ones it has reaped), the embedded broker, each service
    process, and this process (the load generator and the plain consumer reading back). Part
    of the machine's time is none of theirs: the kernel's interrupt work and anything else
    running. Idle time costs nothing, so the figure per operation does not depend on how much
    of the window was spent waiting (a consumer group joining, the wait for a due instant).

    Page faults (minor and major; the machine's from /proc/vmstat) say how much memory each
    part touches afresh per operation: each one is kernel time (and, on a virtual machine
    that hands freed memory back to its host, the host's time too). A process counts from its
    reading at `start` (one started later, from its start), and an ended backend its whole life:
    in a run of a few hundred operations the parts need not sum to the machine's figure.
    """

    def __init__(
        self, services: dict[str, int], postmaster: int | None, broker: int | None
    ) -> None:
        self.services, self.postmaster, self.broker = services, postmaster, broker
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}
        self.faults_before: dict[str, int] = {}
        self.faults_after: dict[str, int] = {}

    @classmethod
    async def of(
        cls, settings: Settings, services: dict[str, asyncio.subprocess.Process]
    ) -> CpuMeter:
        return cls(
            {label: proc.pid for label, proc in services.items()},
            await postmaster_pid(settings.database_url),
            listening_pid(settings.kafka_bootstrap_servers),
        )

    def read(self) -> tuple[dict[str, float], dict[str, int]]:
        """CPU seconds used and page faults had so far, by part."""
        user, nice, system, _idle, _iowait, irq, softirq = _cpu_ticks()[:7]
        seconds = {"machine": (user + nice + system + irq + softirq) / TICKS_PER_S}
        faults = {"machine": _vmstat()["pgfault"]}
        usage: dict[str, tuple[float, int]] = {}
        if self.postmaster is not None:
            # The live backends first, then the main process with those it has reaped: one
            # that ends in between is counted in both (its whole life: more, never less).
            # Read the other way round, it was in neither, and the run's figure could fall
            # below its start (faults -1.47 an operation once, in a smoke run of 300).
            parts = [process_usage(pid) for pid in child_pids(self.postmaster)]
            parts.append(process_usage(self.postmaster, reaped=True))
            usage["postgres"] = (sum(p[0] for p in parts), sum(p[1] for p in parts))
        if self.broker is not None:
            usage["broker"] = process_usage(self.broker)
        usage |= {label: process_usage(pid) for label, pid in self.services.items()}
        usage["bench"] = process_usage(os.getpid())
        seconds |= {part: used[0] for part, used in usage.items()}
        times = os.times()  # finer than /proc's ticks for this process
        seconds["bench"] = times.user + times.system
        return seconds, faults | {part: used[1] for part, used in usage.items()}

    def start(self) -> None:
        self.before, self.faults_before = self.read()

    def stop(self) -> None:
        self.after, self.faults_after = self.read()

    def per_operation(self, operations: int, target_per_s: int) -> dict[str, Any]:
        """From `start` to `stop`: µs of CPU per operation by part ("other": what the named
        parts do not account for, not below zero since the counters tick every 10 ms), and how
        many cores of this machine's speed `target_per_s` operations a second would take at
        that cost; and page faults per operation by part."""
        if not self.before or not self.after or not operations:
            return {"us_per_op": None, "cores_for_target": None, "cores": os.cpu_count()}
        used = {part: self.after[part] - self.before.get(part, 0.0) for part in self.after}
        us = {part: round(s * 1e6 / operations, 1) for part, s in used.items()}
        parts = sum(s for part, s in used.items() if part != "machine")
        us["other"] = round(max(0.0, used["machine"] - parts) * 1e6 / operations, 1)
        figures: dict[str, Any] = {
            "us_per_op": us,
            "cores_for_target": round(used["machine"] / operations * target_per_s, 2),
            "cores": os.cpu_count(),
        }
        if self.faults_after:
            figures["faults_per_op"] = {
                part: round((n - self.faults_before.get(part, 0)) / operations, 2)
                for part, n in self.faults_after.items()
            }
        return figures


# What `receive` holds undecoded before it decodes (see there): a 60-second steady run holds
# ~150 MiB, a burst of 300,000 events ~180 MiB; a longer run decodes as it goes.
UNDECODED_LIMIT = 1024 * 1024 * 1024


async def receive(
    settings: Settings,
    topic: str,
    count: int,
    within: float,
    keep: Callable[[dict], Any] = lambda value: value,
    at_last: Callable[[], object] | None = None,
) -> list[tuple[float, Any]]:
    """(receive time, keep(value)) of the first `count` messages on `topic`, read from the
    start. `keep` picks what to hold of each (a long run cannot hold millions of dicts).
    `at_last` is called once the last has arrived (or the time ran out), before what is held
    is decoded: a `CpuMeter`'s window ends there, without the instrument's decoding.

    The values are decoded after the last one arrives, not as they arrive: the instrument
    shares the machine's cores with what it measures, and decoding a command's 1.3 KB result
    as it came cost 6-13 us of CPU against 3.4 us for the rest of reading it (bench/README.md,
    profile notes). Past UNDECODED_LIMIT bytes held, what is held is decoded on the way."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=10_000,
        fetch_max_bytes=64 * 1024 * 1024,
        fetch_max_wait_ms=5,  # a worker that wants events promptly asks often
    )
    await consumer.start()
    out: list[tuple[float, Any]] = []
    held: list[tuple[float, bytes]] = []
    held_bytes = 0

    def decode() -> None:
        nonlocal held_bytes
        out.extend((at, keep(orjson.loads(value))) for at, value in held)
        held.clear()
        held_bytes = 0

    deadline = time.monotonic() + within
    # Several producers at once (two tickers, two raw claimers) can make the embedded broker
    # step a fetch over a batch: read again from the offset expected, as a worker should
    # (shared/offsets.py; the topics are the run's own, so every partition begins at 0).
    gaps = OffsetGaps(start=0)
    # The instrument must not pause: with hundreds of thousands of events kept, the cyclic GC's
    # full collections would stall this loop and add their pauses to the measured lateness.
    gc.disable()
    try:
        while len(out) + len(held) < count and time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=200, max_records=10_000)
            records, jumps = gaps.admit_fetched(fetched, consumer)
            now = time.time()
            for r in records:
                held.append((now, r.value))
                held_bytes += len(r.value)
            await settle(jumps)
            if held_bytes > UNDECODED_LIMIT:
                decode()
        if at_last is not None:
            at_last()
        decode()
    finally:
        gc.enable()
        await consumer.stop()
    return out


def ingest_rates(received: list[tuple[float, Any]], ready: float) -> dict[str, int | None]:
    """Messages per second from the first received to the last, and from `ready` (the
    services started, consumer groups not yet joined) to the last."""
    times = [t for t, _ in received]
    span = max(times) - min(times) if len(times) > 1 else 0.0
    from_ready = max(times) - ready if times else 0.0
    return {
        "rate_per_s": round(len(times) / span) if span else None,
        "rate_from_ready_per_s": round(len(times) / from_ready) if from_ready else None,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures_ms(values: list[float]) -> dict[str, float]:
    """p50/p99/max of durations in seconds, in milliseconds."""
    return {
        "p50": round(percentile(values, 0.50) * 1000, 1),
        "p99": round(percentile(values, 0.99) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def p99_by_window(pairs: list[tuple[float, float]], start: float, window: int) -> list[float]:
    """p99 (ms) of (instant, seconds) pairs per window of `window` seconds from `start`."""
    by_window: dict[int, list[float]] = {}
    for at, value in pairs:
        by_window.setdefault(int((at - start) // window), []).append(value)
    return [round(percentile(v, 0.99) * 1000, 1) for _, v in sorted(by_window.items())]


def line(**figures: object) -> None:
    """One JSON line per scenario."""
    print(orjson.dumps(figures).decode(), flush=True)


async def load_through_commands(
    settings,
    total: int,
    due: datetime | Callable[[int], datetime],
    per_schedule: int = 1000,
    ack_timeout: str = "PT5M",
    overlap: str = "ALLOW",
) -> float:
    """Send `total` one-shot actions as schedule.create commands (`per_schedule` explicit
    actions each, `policy.overlap` as said), due at `due`, or at `due(i)` for the i-th; wait
    for every result. Nothing acknowledges them in a benchmark: after `ack_timeout` each
    attempt times out and is retried (policy.retry), so a run longer than that needs a longer
    one."""
    at = due if callable(due) else (lambda _: due)
    per_schedule = min(per_schedule, total)
    policy = {"ackTimeout": ack_timeout} | ({"overlap": overlap} if overlap != "ALLOW" else {})
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        max_request_size=64 * 1024 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    try:
        correlations = []
        for s in range(total // per_schedule):
            actions = [
                {"type": "bench", "at": format_instant(at(s * per_schedule + a))}
                for a in range(per_schedule)
            ]
            cid = str(uuid.uuid4())
            correlations.append(cid)
            body = {
                "type": "schedule.create",
                "data": {
                    "name": f"bench-{s}",
                    "actions": actions,
                    "action": {"type": "bench"},
                    "policy": policy,
                },
                "meta": {"commandId": cid, "correlationId": cid, "tenant": "bench"},
            }
            await producer.send(settings.topics.commands, orjson.dumps(body), key=cid.encode())
        await producer.flush()
    finally:
        await producer.stop()
    results = await receive(
        settings, settings.topics.command_results, len(correlations), 300 + total / 5_000
    )
    assert len(results) == len(correlations), "the load was not applied in time"
    assert all(v["type"] == "schedule.created" for _, v in results), "a load command was rejected"
    return time.monotonic() - started
