"""Faults: replicas racing, services SIGKILLed at random, PostgreSQL stopped mid-run.

Real PostgreSQL, a real Kafka-protocol broker, the services as OS processes. Slow: select with
`-m slow`; CI runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from services.scheduler.commands import apply_command
from shared.contracts import format_instant
from shared.persistence.database import connect
from shared.settings import Settings, Topics
from tests.e2e.conftest import Bus, own_postgres, read_all
from tests.integration.helpers import until
from tests.processes import Services

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def command(kind: str, data: dict, tenant: str = "acct-faults") -> dict:
    return {
        "type": kind,
        "data": data,
        "meta": {
            "commandId": str(uuid.uuid4()),
            "correlationId": str(uuid.uuid4()),
            "tenant": tenant,
        },
    }


async def schedule_burst(
    url: str, schedules: int, per_schedule: int, times: list[datetime]
) -> None:
    """`schedules` x `per_schedule` explicit one-shot actions, at `times` (cycled)."""
    conn = await connect(url)
    try:
        now = datetime.now(UTC)
        for s in range(schedules):
            actions = [
                {"type": "burst", "at": format_instant(times[(s * per_schedule + a) % len(times)])}
                for a in range(per_schedule)
            ]
            body = command(
                "schedule.create",
                {"name": f"burst-{s}", "actions": actions, "action": {"type": "burst"}},
            )
            async with conn.transaction():
                result = await apply_command(conn, body, now)
            assert result["type"] == "schedule.created", result
    finally:
        await conn.close()


def daily_creates(prefix: str, count: int) -> list[dict]:
    """`count` creates of daily schedules named `<prefix>-<i>`."""
    return [
        command(
            "schedule.create",
            {
                "name": f"{prefix}-{i}",
                "action": {"type": "x"},
                "trigger": {"kind": "daily", "hours": 3},
            },
        )
        for i in range(count)
    ]


async def send_one_by_one(bus: Bus, topic: str, bodies: list[dict], pause: float) -> None:
    """Commands keep arriving while the faults happen."""
    for body in bodies:
        await bus.send(topic, body)
        await asyncio.sleep(pause)


class Worker:
    """The team's worker: acknowledges every attempt once (SUCCEEDED), keyed by schedule id.

    An ack the broker did not take is sent again, as a worker's would be; `failed` keeps why
    (a worker that stopped acknowledging would leave occurrences in flight and nothing else
    would say so)."""

    def __init__(self, bus: Bus, topics: Topics, stop: asyncio.Event) -> None:
        self.bus, self.topics = bus, topics
        self.failed: list[str] = []
        self.task = asyncio.create_task(self._run(stop))

    async def _run(self, stop: asyncio.Event) -> None:
        acked: set[str] = set()
        unsent: list[tuple[bytes, bytes]] = []
        seen = 0
        while not stop.is_set():
            batch = self.bus.received[self.topics.actions_due][seen:]
            seen += len(batch)
            for record in batch:
                event_id, data = record.value["meta"]["eventId"], record.value["data"]
                if event_id in acked:
                    continue
                acked.add(event_id)
                ack = {
                    "type": "action.ack",
                    "meta": {"tenant": "acct-faults"},
                    "data": {
                        "actionId": data["actionId"],
                        "attempt": data["attempt"],
                        "state": "SUCCEEDED",
                    },
                }
                unsent.append((orjson.dumps(ack), data["scheduleId"].encode()))
            results = await asyncio.gather(*map(self._send, unsent), return_exceptions=True)
            self.failed += [repr(r) for r in results if isinstance(r, Exception)]
            unsent = [u for u, r in zip(unsent, results, strict=True) if isinstance(r, Exception)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.bus.changed.wait(), 0.5)
            self.bus.changed.clear()

    async def _send(self, value_key: tuple[bytes, bytes]) -> None:
        value, key = value_key
        await (await self.bus.producer.send(self.topics.actions_acks, value, key=key))

    def __str__(self) -> str:
        if self.task.done() and not self.task.cancelled() and self.task.exception():
            state = f"ended by {self.task.exception()!r}"
        else:
            state = "running" if not self.task.done() else "stopped"
        first = f" (first: {self.failed[0]})" if self.failed else ""
        consumer = f"stopped by {self.bus.failed!r}" if self.bus.failed else "receiving"
        return (
            f"the worker: {state}, {len(self.failed)} ack sends failed and retried{first}; "
            f"the test's consumer: {consumer}"
        )


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def test_three_tickers_on_ten_thousand_simultaneous_occurrences(
    settings: Settings, bus: Bus
) -> None:
    running = Services(settings)
    await asyncio.wait_for(asyncio.gather(*(running.start(f"ticker-{i}") for i in (1, 2, 3))), 90)
    try:
        due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
        await schedule_burst(settings.database_url, 100, 100, [due])
        received = await bus.wait_for(
            settings.topics.actions_due, lambda r: True, count=10_000, timeout=120
        )
        db = await connect(settings.database_url)
        try:
            await until(lambda: _all_in(db, "DISPATCHED", 10_000), 30)
        finally:
            await db.close()
        with contextlib.suppress(AssertionError):  # give a duplicate every chance to show up
            await bus.wait_for(settings.topics.actions_due, lambda r: True, count=10_001, timeout=3)
        counts = Counter(
            r.value["data"]["actionId"] for r in bus.received[settings.topics.actions_due]
        )
        assert len(counts) == 10_000
        assert max(counts.values()) == 1, "an occurrence fired twice"
        assert min(r.at - due.timestamp() for r in received) >= 0, "fired early"
    finally:
        codes = await running.stop_all()
    assert set(codes.values()) == {0}


async def _all_in(db: asyncpg.Connection, state: str, count: int) -> bool:
    """Whether the burst's `count` occurrences (`schedule_burst`) are all in `state`. Only
    theirs: the daily schedules the tests also create fire at 03:00 UTC, and a run at that
    hour would otherwise count their occurrences too (and never see the burst's total)."""
    found = await db.fetchval(
        "SELECT count(*) FROM actions WHERE type = 'burst' AND state = $1", state
    )
    return found == count


async def test_chaos_sigkill_never_loses_or_forks_an_occurrence(
    settings: Settings, bus: Bus
) -> None:
    total, schedules = 20_000, 200
    labels = ["scheduler", "ticker-1", "ticker-2", "acker-1", "acker-2"]
    running = Services(settings, CHIME_TICKER_LEASE_SECONDS="5")
    await asyncio.wait_for(asyncio.gather(*(running.start(label) for label in labels)), 90)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kills: list[str] = []
    start = datetime.now(UTC) + timedelta(seconds=6)
    times = [start + timedelta(milliseconds=i) for i in range(0, 15_000, 3)]  # 15 s of due times
    await schedule_burst(settings.database_url, schedules, total // schedules, times)
    topics = settings.topics
    stop = asyncio.Event()

    commands = daily_creates("during-chaos", 300)
    calm = asyncio.Event()  # set: no more kills (a restart in progress is finished first)

    async def chaos() -> None:
        while not calm.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(calm.wait(), rng.uniform(2.0, 4.0))
                return
            victim = rng.choice(labels) if kills else "scheduler"  # first: while commands flow
            kills.append(victim)
            await running.kill(victim)
            await asyncio.wait_for(running.start(victim), 60)

    db = await connect(settings.database_url)
    worker = Worker(bus, topics, stop)
    tasks = [
        worker.task,
        asyncio.create_task(chaos()),
        asyncio.create_task(send_one_by_one(bus, topics.commands, commands, 0.05)),
    ]
    try:
        chaos_until = time.monotonic() + 30
        await until(lambda: _done_or(db, total, chaos_until), 300)
        calm.set()  # let the survivors finish
        await asyncio.wait_for(tasks[1], 90)
        ids = await settled(
            bus, topics, db, total, commands, tasks[2], worker, f"seed {seed}, kills {kills}"
        )
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await db.close()
        codes = await running.stop_all()
    context = f"seed {seed}, kills {kills}"
    fired_once_each(bus, topics, ids, context)
    assert kills and kills[0] == "scheduler", "the chaos loop killed nothing"
    assert set(codes.values()) == {0}, codes


async def settled(
    bus: Bus,
    topics: Topics,
    db: asyncpg.Connection,
    total: int,
    commands: list[dict],
    sending: asyncio.Task[None],
    worker: Worker,
    context: str,
) -> set[str]:
    """Once the burst's `total` occurrences have all SUCCEEDED and every command was sent:
    each command answered and applied once; the burst's ids, each announced SUCCEEDED."""
    try:
        await until(lambda: _all_in(db, "SUCCEEDED", total), 240)
    except AssertionError as exc:
        report = await stuck(bus, topics, db)
        raise AssertionError(f"{exc}; {worker}; {report} ({context})") from None
    await asyncio.wait_for(sending, 60)
    await answered_and_applied_once(bus, topics, db, commands)
    return await burst_ids_once_succeeded(bus, topics, db, total)


async def answered_and_applied_once(
    bus: Bus, topics: Topics, db: asyncpg.Connection, commands: list[dict]
) -> None:
    """Every command (a create each, by name) answered `schedule.created`, and applied once."""
    correlations = {c["meta"]["correlationId"] for c in commands}
    answered = await bus.wait_for(
        topics.command_results,
        timeout=120,
        count=len(commands),
        match=lambda r: r.value["meta"]["correlationId"] in correlations,
    )
    assert {r.value["meta"]["correlationId"] for r in answered} == correlations
    assert all(r.value["type"] == "schedule.created" for r in answered)
    names = [c["data"]["name"] for c in commands]
    made = await db.fetchval("SELECT count(*) FROM schedules WHERE name = ANY($1)", names)
    assert made == len(commands), "a command was lost or applied twice"


async def burst_ids_once_succeeded(
    bus: Bus, topics: Topics, db: asyncpg.Connection, total: int
) -> set[str]:
    """The burst's occurrences (`schedule_burst`), once each has announced SUCCEEDED."""
    ids = {str(r["id"]) for r in await db.fetch("SELECT id FROM actions WHERE type = 'burst'")}
    assert len(ids) == total
    await bus.wait_for(
        topics.actions_events,
        lambda r: (
            r.value["data"].get("state") == "SUCCEEDED"
            and r.value["type"] == "action.state-changed"
        ),
        count=total,
        timeout=120,
    )
    return ids


async def stuck(bus: Bus, topics: Topics, db: asyncpg.Connection) -> str:
    """What keeps the burst from settling: its occurrences by state, and the first few that
    have not succeeded, each with its row, its history, its action.due eventIds as received
    and the events Chime announced about it (ignored acks with their reason)."""
    states = dict(
        await db.fetch("SELECT state, count(*) FROM actions WHERE type = 'burst' GROUP BY 1")
    )
    rows = await db.fetch(
        "SELECT id, state, attempt, fired_at, ack_deadline, version"
        " FROM actions WHERE type = 'burst' AND state <> 'SUCCEEDED' ORDER BY fire_at LIMIT 5"
    )
    lines = [f"burst by state {states}"]
    for row in rows:
        action = str(row["id"])
        history = await db.fetch(
            "SELECT attempt, state, at FROM action_history WHERE action_id = $1 ORDER BY at",
            row["id"],
        )
        due = [
            (r.value["meta"]["eventId"], r.at)
            for r in bus.received[topics.actions_due]
            if r.value["data"]["actionId"] == action
        ]
        said = [
            (r.value["type"], r.value["data"].get("state"), r.value["data"].get("reason"))
            for r in bus.received[topics.actions_events]
            if r.value["data"].get("actionId") == action
        ]
        lines.append(
            f"{dict(row)}; history {[tuple(h) for h in history]}; due {due}; events {said}"
        )
    if rows:  # did the broker lose their action.due, or did the test's consumer miss it?
        wanted = {str(row["id"]).encode() for row in rows}
        found = [
            f"{r.partition}@{r.offset}"
            for r in await read_all(bus.settings, topics.actions_due)
            if any(w in r.raw for w in wanted)
        ]
        lines.append(f"read again from the topic's start: {found or 'none of them'}")
    lines.append(f"jumps in offsets the test's consumer read again: {bus.gaps or 'none'}")
    return "\n".join(lines)


def fired_once_each(bus: Bus, topics: Topics, ids: set[str], context: str) -> None:
    """Each occurrence fired under one eventId (republished, if at all, under the same one),
    its first attempt's; and the events announce SUCCEEDED for exactly the stored ones."""
    by_action: dict[str, set[str]] = defaultdict(set)
    for record in bus.received[topics.actions_due]:
        by_action[record.value["data"]["actionId"]].add(record.value["meta"]["eventId"])
    assert set(by_action) == ids, f"occurrences lost: {len(ids - set(by_action))} ({context})"
    assert all(len(events) == 1 for events in by_action.values()), (
        f"a duplicate with a new eventId ({context})"
    )
    assert all(events == {f"{a}:1"} for a, events in by_action.items()), context
    succeeded = {
        r.value["data"]["actionId"]
        for r in bus.received[topics.actions_events]
        if r.value["type"] == "action.state-changed" and r.value["data"]["state"] == "SUCCEEDED"
    }
    assert succeeded == ids, f"database and events disagree ({context})"


async def test_postgres_restarted_again_and_again_under_load(
    settings: Settings, bus: Bus, tmp_path: Path
) -> None:
    """PostgreSQL fast-stopped (connections cut) and started six times, down 0.2–2 s each
    time, while 5,000 occurrences fall due over 20 s, their acks come back and 200 commands
    arrive: every occurrence fires under one eventId and succeeds, every command is answered
    and applied once, and every service is still running at the end (exit 0 on SIGTERM; none
    gave up or stopped itself)."""
    total, schedules = 5_000, 50
    async with own_postgres(settings, tmp_path / "pg") as (pg, own):
        running = Services(own)
        await asyncio.wait_for(
            asyncio.gather(*(running.start(n) for n in ("scheduler", "ticker", "acker"))), 90
        )
        seed = random.randrange(1 << 30)
        rng = random.Random(seed)
        downs: list[float] = []
        start = datetime.now(UTC) + timedelta(seconds=6)
        times = [start + timedelta(milliseconds=i) for i in range(0, 20_000, 4)]
        await schedule_burst(own.database_url, schedules, total // schedules, times)
        topics = own.topics
        commands = daily_creates("during-restarts", 200)

        async def restarts() -> None:
            for _ in range(6):
                await asyncio.sleep(rng.uniform(1.5, 3.5))
                await asyncio.to_thread(pg.stop)
                downs.append(round(rng.uniform(0.2, 2.0), 2))
                await asyncio.sleep(downs[-1])
                await asyncio.to_thread(pg.start)

        stop = asyncio.Event()
        worker = Worker(bus, topics, stop)
        tasks = [
            worker.task,
            asyncio.create_task(send_one_by_one(bus, topics.commands, commands, 0.1)),
            asyncio.create_task(restarts()),
        ]
        db: asyncpg.Connection | None = None
        try:
            await asyncio.wait_for(tasks[2], 120)
            db = await connect(own.database_url)
            ids = await settled(
                bus, topics, db, total, commands, tasks[1], worker, f"seed {seed}, down {downs} s"
            )
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            if db is not None:
                await db.close()
            codes = await running.stop_all()
        fired_once_each(bus, topics, ids, f"seed {seed}, down {downs} s")
        assert len(downs) == 6
        assert set(codes.values()) == {0}, codes


async def _done_or(db: asyncpg.Connection, total: int, deadline: float) -> bool:
    return time.monotonic() > deadline or await _all_in(db, "SUCCEEDED", total)


async def test_postgres_stopped_for_ten_seconds(
    settings: Settings, bus: Bus, tmp_path: Path
) -> None:
    async with own_postgres(settings, tmp_path / "pg") as (pg, own):
        running = Services(own)
        topics = own.topics
        await asyncio.wait_for(
            asyncio.gather(*(running.start(n) for n in ("scheduler", "ticker", "acker"))), 90
        )
        try:
            pulse = command(
                "schedule.create",
                {
                    "name": "pulse",
                    "trigger": {"kind": "interval", "every": "PT2S"},
                    "action": {"type": "pulse"},
                },
            )
            await bus.send(topics.commands, pulse)
            [created] = await bus.wait_for(
                topics.command_results,
                lambda r: r.value["meta"]["correlationId"] == pulse["meta"]["correlationId"],
            )
            pulse_id = created.value["data"]["id"]
            first = await bus.wait_for(
                topics.actions_due,
                lambda r: r.value["data"]["scheduleId"] == pulse_id,
                count=2,
                timeout=15,
            )
            during_at = datetime.now(UTC) + timedelta(seconds=5)
            once = command(
                "schedule.create",
                {
                    "name": "due-during-outage",
                    "action": {"type": "once"},
                    "trigger": {"kind": "once", "at": format_instant(during_at)},
                },
            )
            await bus.send(topics.commands, once)
            await bus.wait_for(
                topics.command_results,
                lambda r: r.value["meta"]["correlationId"] == once["meta"]["correlationId"],
            )

            stopped_at = time.time()
            await asyncio.to_thread(pg.stop)
            # while the database is down: a command and an ack arrive
            late = command(
                "schedule.create",
                {
                    "name": "sent-during-outage",
                    "trigger": {"kind": "daily", "hours": 3},
                    "action": {"type": "x"},
                },
            )
            await bus.send(topics.commands, late)
            acked = first[0].value["data"]
            await bus.send(
                topics.actions_acks,
                {
                    "type": "action.ack",
                    "meta": {"tenant": "acct-faults"},
                    "data": {"actionId": acked["actionId"], "attempt": 1, "state": "SUCCEEDED"},
                },
                acked["scheduleId"].encode(),
            )

            async def not_ready() -> bool:
                return not ready(running.urls["scheduler"]) and not ready(running.urls["ticker"])

            await until(not_ready, 9, every=0.2)
            await asyncio.sleep(max(0.0, 10 - (time.time() - stopped_at)))  # the outage lasts 10 s
            await asyncio.to_thread(pg.start)
            restarted_at = time.time()

            async def all_ready() -> bool:
                return all(ready(url) for url in running.urls.values())

            await until(all_ready, 60)
            [result] = await bus.wait_for(
                topics.command_results,
                timeout=60,
                match=lambda r: r.value["meta"]["correlationId"] == late["meta"]["correlationId"],
            )
            assert result.value["type"] == "schedule.created"
            [fired] = await bus.wait_for(
                topics.actions_due,
                timeout=60,
                match=lambda r: r.value["data"]["name"] == "due-during-outage",
            )
            assert fired.at >= restarted_at - 0.5
            await bus.wait_for(
                topics.actions_events,
                timeout=60,
                match=lambda r: (
                    r.value["data"]["actionId"] == acked["actionId"]
                    and r.value["data"].get("state") == "SUCCEEDED"
                ),
            )
            # FIRE_ONCE: of the pulses due while the database was down, exactly one fires (late)
            await bus.wait_for(
                topics.actions_due,
                timeout=30,
                count=1,
                match=lambda r: (
                    r.value["data"]["scheduleId"] == pulse_id and r.at > restarted_at + 3
                ),
            )
            outage = [
                r
                for r in bus.received[topics.actions_due]
                if r.value["data"]["scheduleId"] == pulse_id
                and stopped_at + 0.5 < _ts(r.value["data"]["dueAt"]) < restarted_at
            ]
            assert len(outage) == 1, [r.value["data"]["dueAt"] for r in outage]
        finally:
            codes = await running.stop_all()
        assert set(codes.values()) == {0}, codes
        for label in ("scheduler", "ticker"):  # one line when failing, one when healed: no flood
            text = running.logs[label].read_text()
            assert 1 <= text.count("retrying with backoff") <= 3, text[-2000:]
            assert text.count("recovered") >= 1


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_idle_services_say_when_postgres_is_unreachable(
    settings: Settings, tmp_path: Path
) -> None:
    """With nothing to do, no work of theirs meets an outage: each service's own probe says
    not ready while PostgreSQL is down, and ready once it is back (the ticker sleeps for its
    max idle, so its firing loop does not ask the database meanwhile)."""
    async with own_postgres(settings, tmp_path / "pg") as (pg, own):
        running = Services(own, CHIME_TICKER_MAX_IDLE_SECONDS="600")
        names = ("scheduler", "ticker", "acker")
        await asyncio.wait_for(asyncio.gather(*(running.start(n) for n in names)), 90)
        try:

            async def readiness() -> dict[str, bool]:
                urls = running.urls
                return {n: await asyncio.to_thread(ready, urls[n]) for n in names}

            async def all_ready() -> bool:
                return all((await readiness()).values())

            async def none_ready() -> bool:
                return not any((await readiness()).values())

            await until(all_ready, 30, every=0.2)
            await asyncio.to_thread(pg.stop)
            await until(none_ready, 30, every=0.2)
            await asyncio.to_thread(pg.start)
            await until(all_ready, 60, every=0.2)
        finally:
            codes = await running.stop_all()
        assert codes == dict.fromkeys(names, 0), codes
