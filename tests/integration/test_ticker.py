"""The ticker on real PostgreSQL under a settable clock: it fires what preview promised."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from services.acker.acks import apply_ack, apply_acks
from services.cli.preview import preview_times
from services.ticker import engine
from services.ticker.engine import ROUNDS_IN_FLIGHT, Ticker
from shared import specs
from shared.clock import SettableClock
from shared.contracts import ActionAck, ActionDead, ActionDue, ActionEvent, format_instant
from shared.messaging import Outgoing
from shared.persistence.database import connect, create_pool
from shared.persistence.queries import load_queries
from shared.settings import Settings
from tests.integration.helpers import (
    add_actions,
    add_schedule,
    command,
    plan_of,
    run,
    schedule,
    until,
)

START = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
TOPICS = Settings().topics
Q = load_queries()


class Collector:
    """The ticker's publish port, recording instead of sending (the broker is tested e2e)."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.topics: list[str] = []

    async def __call__(self, messages: Sequence[Outgoing]) -> None:
        for m in messages:
            event = orjson.loads(m.value)
            contract = {"action.due": ActionDue, "action.dead": ActionDead}.get(
                event["type"], ActionEvent
            )
            contract.model_validate(event)  # every event honours its contract
            self.events.append(event)
            self.topics.append(m.topic)

    @property
    def fired(self) -> list[dict]:
        """First attempts published on action.due (retries are counted apart)."""
        return [e for e in self.events if e["type"] == "action.due" and e["data"]["attempt"] == 1]

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


def make_ticker(pool: asyncpg.Pool, clock: SettableClock, sink: Collector, **overrides) -> Ticker:
    settings = Settings(topic_prefix="chime.", **overrides)
    return Ticker(pool, sink, settings, clock)


async def once_due_now(db: asyncpg.Connection) -> SettableClock:
    """A schedule firing once at START + 1 s, and a clock standing at that instant."""
    clock = SettableClock(START)
    once = schedule(trigger={"kind": "once", "at": "2026-10-24T12:00:01Z"})
    await run(db, command("schedule.create", once), clock.now())
    clock.set(START + timedelta(seconds=1))
    return clock


async def claim_and_fail(pool: asyncpg.Pool, clock: SettableClock) -> None:
    """A ticker claims what is due and fails while publishing it (its round is rolled back)."""

    async def crash(messages: Sequence[Outgoing]) -> None:
        raise ConnectionError("the round failed while publishing")

    failed = make_ticker(pool, clock, Collector())
    failed.publish = crash
    with pytest.raises(ConnectionError):
        await failed.tick()


async def edit_stored_spec(
    db: asyncpg.Connection, path: list[str], value: Any, name: str | None = None
) -> None:
    """Set `path` of stored definitions (of schedule `name`, or all) behind the scheduler's
    back: as by hand, or as an older version of Chime stored it."""
    await db.execute(
        "UPDATE schedules SET spec = jsonb_set(spec::jsonb, $1::text[], $2::jsonb)::json "
        "WHERE $3::text IS NULL OR name = $3",
        path,
        value,  # the pool's jsonb codec encodes it
        name,
    )


async def drive(ticker: Ticker, clock: SettableClock, until: datetime) -> None:
    """Jump the clock from due time to due time, ticking at each: exact, no sleeps."""
    while True:
        await ticker.tick()
        nxt = await ticker.next_wake()
        if nxt is None or nxt > until:
            return
        clock.set(max(nxt, clock.now()))


@pytest.mark.parametrize(
    ("trigger", "zone", "days"),
    [
        ({"kind": "daily", "hours": 1, "minutes": 30}, "Europe/London", 14),
        ({"kind": "cron", "expression": "30 * * * *"}, "Europe/London", 3),
        ({"kind": "cron", "expression": "*/20 1-2 * * *"}, "America/New_York", 14),
        ({"kind": "interval", "every": "PT45M"}, "Europe/London", 2),
        ({"kind": "cron", "expression": "0 30 1 L-1,L * ?"}, "Europe/London", 160),
        ({"kind": "cron", "expression": "15 */30 * * * ?"}, "Australia/Lord_Howe", 2),
        (
            {
                "kind": "calendar",
                "type": "WEEKLY",
                "days": {"type": "LIST", "values": ["1", "2"]},
                "hours": {"type": "LIST", "values": ["1"], "interval": 6},
            },
            "CST",
            21,
        ),
    ],
)
async def test_fires_exactly_what_preview_promised(db, pool, trigger, zone, days) -> None:
    clock = SettableClock(START)
    created = await run(
        db, command("schedule.create", schedule(trigger=trigger, timezone=zone)), clock.now()
    )
    assert created["type"] == "schedule.created", created
    sink = Collector()
    ticker = make_ticker(pool, clock, sink)
    until = START + timedelta(days=days)  # spans the London and New York fall-backs
    await drive(ticker, clock, until)
    fired = [e["data"]["dueAt"] for e in sink.fired]
    promised = preview_times(orjson.dumps(trigger).decode(), zone, START, len(fired) + 1)
    assert len(fired) >= 10
    assert fired == [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in promised[: len(fired)]]
    for event in sink.fired:  # never early
        assert event["data"]["firedAt"] >= event["data"]["dueAt"]
        assert event["meta"]["eventId"] == f"{event['data']['actionId']}:1"
        assert (
            event["data"]["idempotencyKey"]
            == f"{event['data']['scheduleId']}/{event['data']['dueAt']}"
        )


async def test_max_occurrences_ends_series_and_completes(db, pool) -> None:
    clock = SettableClock(START)
    data = schedule(trigger={"kind": "interval", "every": "PT1M"}, maxOccurrences=3)
    created = (await run(db, command("schedule.create", data), clock.now()))["data"]
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, START + timedelta(hours=1))
    assert len(sink.fired) == 3
    assert (
        await db.fetchval("SELECT state FROM schedules WHERE id = $1", uuid.UUID(created["id"]))
        == "COMPLETED"
    )


async def test_a_schedule_completes_when_nothing_is_left_to_fire_and_only_then(db, pool) -> None:
    """A series that ended is not the end while an explicit action is still to fire; and
    another schedule's occurrences, still to fire, do not hold this one's completion back."""
    clock = SettableClock(START)
    ending = schedule(
        "ending",
        trigger={"kind": "once", "at": "2026-10-24T12:01:00Z"},
        actions=[{"type": "STOP", "at": "2026-10-24T12:05:00Z"}],
    )
    created = (await run(db, command("schedule.create", ending), clock.now()))["data"]
    daily = schedule("neighbour", trigger={"kind": "daily", "hours": 3})
    neighbour = await run(db, command("schedule.create", daily), clock.now())
    assert neighbour["type"] == "schedule.created"
    sink = Collector()
    ticker = make_ticker(pool, clock, sink)

    async def state() -> str:
        sid = uuid.UUID(created["id"])
        return await db.fetchval("SELECT state FROM schedules WHERE id = $1", sid)

    clock.set(START + timedelta(minutes=1))
    assert await ticker.tick() == 1  # the series' one occurrence: the series has ended
    assert await state() == "ACTIVE"  # STOP is still to fire
    clock.set(START + timedelta(minutes=5))
    assert await ticker.tick() == 1
    assert [e["data"]["type"] for e in sink.fired] == ["billing-run", "STOP"]
    assert await state() == "COMPLETED"  # though the neighbour has occurrences to fire


async def test_the_backlog_gauge_counts_what_is_due_and_free_to_fire(db, pool) -> None:
    """chime_due_backlog: pending occurrences due by now, not those held behind a running one
    nor those due later; an occurrence due at this very instant counts."""
    sid = await add_schedule(db, START)
    await add_actions(
        db,
        [
            {"schedule": sid, "fire_at": START - timedelta(minutes=2)},
            {"schedule": sid, "fire_at": START},
            {"schedule": sid, "fire_at": START - timedelta(minutes=1), "held": True},
            {"schedule": sid, "fire_at": START - timedelta(minutes=3), "held": True},
            {"schedule": sid, "fire_at": START - timedelta(minutes=3), "held": True},
            {"schedule": sid, "fire_at": START - timedelta(minutes=5), "state": "RUNNING"},
            {"schedule": sid, "fire_at": START + timedelta(seconds=1)},
        ],
        START,
    )
    ticker = make_ticker(pool, SettableClock(START), Collector())
    await ticker.refresh_backlog()
    assert ticker.metrics.registry.get_sample_value("chime_due_backlog") == 2


async def test_explicit_actions_fire_at_their_instants(db, pool) -> None:
    clock = SettableClock(datetime(2026, 3, 15, 7, 0, tzinfo=UTC))
    data = schedule(
        "peak",
        startsAt="2026-03-15T08:00:00Z",
        endsAt="2026-03-15T20:00:00Z",
        actions=[
            {"type": "START", "at": "2026-03-15T08:00:00Z", "payload": {"replicas": 5}},
            {"type": "STOP", "at": "2026-03-15T20:00:00Z"},
        ],
    )
    await run(db, command("schedule.create", data), clock.now())
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, datetime(2026, 3, 16, tzinfo=UTC))
    assert [(e["data"]["type"], e["data"]["dueAt"]) for e in sink.fired] == [
        ("START", "2026-03-15T08:00:00Z"),
        ("STOP", "2026-03-15T20:00:00Z"),
    ]
    assert sink.fired[0]["data"]["payload"] == {"replicas": 5}
    assert sink.fired[1]["data"]["payload"] == {"k": 1}  # the schedule's action payload


async def test_a_round_larger_than_the_definition_cache_fires_each_schedule_as_defined(
    db, pool, monkeypatch
) -> None:
    """The definitions cache is small (each entry lengthens every full garbage collection); a
    round holds the definitions of its own rows, so it never depends on what the cache kept."""
    monkeypatch.setattr(specs, "CACHE_LIMIT", 2)
    monkeypatch.setattr(specs, "_CACHE", type(specs._CACHE)())
    clock = SettableClock(START)
    for i in range(6):
        data = schedule(
            f"s{i}",
            trigger={"kind": "interval", "every": "PT1M"},
            labels={"n": str(i)},
            action={"type": f"t{i}", "payload": {"i": i}},
            maxOccurrences=3,
        )
        await run(db, command("schedule.create", data), clock.now())
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, START + timedelta(hours=1))
    fired = sorted((e["data"]["labels"]["n"], e["data"]["type"]) for e in sink.fired)
    assert fired == sorted((str(i), f"t{i}") for i in range(6) for _ in range(3))
    assert all(e["data"]["payload"] == {"i": int(e["data"]["labels"]["n"])} for e in sink.fired)
    assert len(specs._CACHE) == 2


async def test_schedules_of_one_shape_fire_each_as_its_own(db, pool, monkeypatch) -> None:
    """Schedules that differ only in their names share one parsed definition (shared.specs):
    each still fires under its own name and namespace, with its own labels and reference where
    those differ, and an interval's successors count from its own creation. A schedule of a
    shape the ticker parsed already (created later) is compiled from its claim's row alone
    (migration 0015), and fires as its own too."""
    monkeypatch.setattr(specs, "_CACHE", type(specs._CACHE)())
    monkeypatch.setattr(specs, "_SHAPES", type(specs._SHAPES)())
    clock = SettableClock(START)
    for i in range(4):
        once = schedule(
            f"once-{i}",
            namespace=f"team-{i % 2}",
            description=f"the {i}th",
            actions=[{"type": "remind", "at": "2026-10-24T12:00:05Z"}],
            labels={"team": "billing"} if i < 3 else {"team": "ops"},
            externalRef="order-7" if i < 2 else None,
        )
        await run(db, command("schedule.create", once), clock.now())
    for i, after in enumerate((0, 20)):
        clock.set(START + timedelta(seconds=after))
        every = schedule(f"every-{i}", trigger={"kind": "interval", "every": "PT1M"})
        await run(db, command("schedule.create", every | {"maxOccurrences": 3}), clock.now())
    names = {
        r["id"]: (r["namespace"], r["name"])
        for r in await db.fetch("SELECT id, namespace, name FROM schedules")
    }
    clock.set(START)
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, START + timedelta(minutes=5))
    fired: dict[tuple[str, str], list[dict]] = {}
    for event in sink.fired:
        data = event["data"]
        assert names[uuid.UUID(data["scheduleId"])] == (data["namespace"], data["name"])
        fired.setdefault((data["namespace"], data["name"]), []).append(data)
    once = [fired[(f"team-{i % 2}", f"once-{i}")] for i in range(4)]
    assert [[(e["labels"], e["externalRef"]) for e in events] for events in once] == [
        [({"team": "billing"}, "order-7")],
        [({"team": "billing"}, "order-7")],
        [({"team": "billing"}, None)],
        [({"team": "ops"}, None)],
    ]
    assert [[e["dueAt"][11:] for e in fired[("default", f"every-{i}")]] for i in range(2)] == [
        ["12:01:00Z", "12:02:00Z", "12:03:00Z"],
        ["12:01:20Z", "12:02:20Z", "12:03:20Z"],
    ]
    assert len(specs._SHAPES) == 4  # once (three: labels, reference), every

    late = schedule(
        "once-late",
        namespace="team-9",
        actions=[{"type": "remind", "at": "2026-10-24T12:06:00Z"}],
        labels={"team": "ops"},
    )
    late_id = (await run(db, command("schedule.create", late), clock.now()))["data"]["id"]
    original, read = specs._parsed, []
    monkeypatch.setattr(specs, "_parsed", lambda *a: read.append(a) or original(*a))
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, START + timedelta(minutes=7))
    [event] = sink.fired
    assert (event["data"]["scheduleId"], event["data"]["namespace"]) == (late_id, "team-9")
    assert (event["data"]["name"], event["data"]["labels"]) == ("once-late", {"team": "ops"})
    # its shape's definition, parsed already, is not read (the expired attempts of the others
    # are: their schedules completed, a version the ticker has not compiled)
    assert "once-late" not in [spec["name"] for spec, _ in read]


async def test_a_round_claims_ahead_and_fires_each_occurrence_at_its_instant(db, pool) -> None:
    """The claim takes what falls due within the lookahead, so its round trip is done by the
    due instant; each occurrence is then published at its own instant, never before it, and
    stored with its own firing time and the ack deadline that follows from it."""
    clock = SettableClock(START - timedelta(minutes=1))
    offsets_ms = [10, 30, 45, 80]
    data = schedule(
        "soon",
        actions=[
            {"type": "RUN", "at": format_instant(START + timedelta(milliseconds=ms))}
            for ms in offsets_ms
        ],
        policy={"ackTimeout": "PT1M30S"},
    )
    await run(db, command("schedule.create", data), clock.now())
    clock.set(START)
    sink = Collector()
    assert await make_ticker(pool, clock, sink, ticker_lookahead_ms=0).fire_due() == 0

    calls: list[tuple[datetime, list[str]]] = []

    async def recording(messages: Sequence[Outgoing]) -> None:
        calls.append((clock.now(), [orjson.loads(m.value)["data"]["dueAt"] for m in messages]))
        await sink(messages)

    ticker = make_ticker(pool, clock, sink, ticker_lookahead_ms=50)
    ticker.publish = recording
    assert await ticker.fire_due() == 3  # 80 ms is beyond the lookahead: the next round's
    assert [due for _, dues in calls for due in dues] == [
        format_instant(START + timedelta(milliseconds=ms)) for ms in offsets_ms[:3]
    ]
    for published_at, dues in calls:
        assert all(datetime.fromisoformat(due) <= published_at for due in dues)
    for event in sink.fired:
        assert event["data"]["firedAt"] == event["data"]["dueAt"]
    rows = await db.fetch(
        """SELECT a.fire_at, a.fired_at, a.ack_deadline, h.at FROM actions a
           JOIN action_history h ON h.action_id = a.id AND h.state = 'DISPATCHED'
           ORDER BY a.fire_at"""
    )
    assert [(r["fired_at"], r["at"]) for r in rows] == [(r["fire_at"], r["fire_at"]) for r in rows]
    assert len(rows) == 3
    assert [r["ack_deadline"] for r in rows] == [r["fire_at"] + timedelta(seconds=90) for r in rows]
    announced = sorted(e["data"]["ackDeadline"] for e in sink.fired)
    assert announced == [format_instant(r["ack_deadline"]) for r in rows]


async def test_a_retry_claimed_ahead_fires_at_its_own_instant_not_its_due_time(db, pool) -> None:
    """An attempt waiting for its backoff has a fire_at after its due_at (the claim returns
    fire_at only where the two differ): claimed ahead, it is released at fire_at, after an
    occurrence that falls due between the two, and its lateness is counted from fire_at."""
    clock = SettableClock(START - timedelta(minutes=1))
    data = schedule(
        "mixed",
        actions=[
            {"type": "RETRY", "at": format_instant(START + timedelta(milliseconds=10))},
            {"type": "FIRST", "at": format_instant(START + timedelta(milliseconds=30))},
        ],
    )
    await run(db, command("schedule.create", data), clock.now())
    await db.execute(
        "UPDATE actions SET attempt = 2, fire_at = $1 WHERE type = 'RETRY'",
        START + timedelta(milliseconds=40),
    )
    clock.set(START)
    calls: list[tuple[datetime, list[str]]] = []
    sink = Collector()

    async def recording(messages: Sequence[Outgoing]) -> None:
        calls.append((clock.now(), [orjson.loads(m.value)["data"]["type"] for m in messages]))
        await sink(messages)

    ticker = make_ticker(pool, clock, sink, ticker_lookahead_ms=50)
    ticker.publish = recording
    assert await ticker.fire_due() == 2
    assert calls == [
        (START + timedelta(milliseconds=30), ["FIRST"]),
        (START + timedelta(milliseconds=40), ["RETRY"]),
    ]
    [first, retry] = sink.of_type("action.due")
    assert (first["data"]["attempt"], retry["data"]["attempt"]) == (1, 2)
    assert retry["data"]["dueAt"] == format_instant(START + timedelta(milliseconds=10))
    assert retry["data"]["firedAt"] == format_instant(START + timedelta(milliseconds=40))
    assert ticker.metrics.firing_lateness.sum == 0.0  # each published at its own fire_at


async def test_an_ack_timeout_of_weeks_sets_its_deadline_weeks_ahead(db, pool) -> None:
    """25 days and more are more milliseconds than an int4 holds: the mark once sent them as
    one, and the round failed, and was claimed and failed again, holding up every fire."""
    clock = SettableClock(START)
    once = schedule(trigger={"kind": "once", "at": "2026-10-24T12:00:01Z"})
    await run(db, command("schedule.create", once | {"policy": {"ackTimeout": "P3650D"}}), START)
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, START + timedelta(minutes=1))
    [fired] = sink.fired
    row = await db.fetchrow("SELECT fired_at, ack_deadline FROM actions")
    assert row["ack_deadline"] == row["fired_at"] + timedelta(days=3650)
    assert fired["data"]["ackDeadline"] == format_instant(row["ack_deadline"])


async def test_a_definition_stored_before_a_limit_was_added_still_fires(db, pool) -> None:
    """Policy durations are at most ten years since 2026-12-07; a definition stored before,
    with a longer one, is read back as it was checked then, not refused (which would fail
    every round that claims its occurrences)."""
    clock = SettableClock(START)
    once = schedule(trigger={"kind": "once", "at": "2026-10-24T12:00:01Z"})
    await run(db, command("schedule.create", once), START)
    await edit_stored_spec(db, ["policy", "catchupWindow"], "P36500D")
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, START + timedelta(minutes=1))
    assert len(sink.fired) == 1
    refused = await run(
        db,
        command(
            "schedule.create",
            schedule("later", policy={"catchupWindow": "P36500D"})
            | {"trigger": {"kind": "daily", "hours": 1}},
        ),
        START,
    )
    assert refused["errors"][0]["field"] == "data.policy.catchupWindow"


async def test_a_definition_that_cannot_be_read_skips_its_occurrence_and_not_the_round(
    db, pool
) -> None:
    """A stored definition the ticker cannot read (edited by hand, or by a bug) failed every
    round that claimed its occurrence, and the rounds were claimed and failed again: nothing
    due after it fired. Its occurrence is now SKIPPED, saying why; the others fire."""
    clock = SettableClock(START)
    at = {"kind": "once", "at": "2026-10-24T12:00:01Z"}
    for name in ("broken", "sound"):
        await run(db, command("schedule.create", schedule(name, trigger=at)), START)
    await edit_stored_spec(db, ["trigger", "kind"], "nonsense", name="broken")
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, START + timedelta(minutes=1))
    assert [e["data"]["name"] for e in sink.fired] == ["sound"]
    [skipped] = [e for e in sink.events if e["data"].get("state") == "SKIPPED"]
    assert skipped["data"]["reason"].startswith(
        "the schedule's definition cannot be read (ValidationError: "
    )
    states = "SELECT s.name, a.state FROM actions a JOIN schedules s ON s.id = a.schedule_id"
    assert sorted(tuple(r) for r in await db.fetch(states)) == [
        ("broken", "SKIPPED"),
        ("sound", "DISPATCHED"),
    ]


async def test_an_action_due_larger_than_a_message_skips_its_occurrence(db, pool) -> None:
    """A payload stored before payloads were held to 256 KiB (explicit actions' were not) made
    an action.due a broker at Kafka's default refuses: the round failed, was claimed again and
    failed again, nothing in it fired. That occurrence is SKIPPED, saying why; the others fire."""
    clock = SettableClock(START)
    at = {"kind": "once", "at": "2026-10-24T12:00:01Z"}
    for name in ("large", "sound"):
        await run(db, command("schedule.create", schedule(name, trigger=at)), START)
    await db.execute(
        "UPDATE actions SET payload = $1 FROM schedules s"
        " WHERE s.id = actions.schedule_id AND s.name = 'large'",
        {"blob": "x" * 1_000_000},
    )
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, START + timedelta(minutes=1))
    assert [e["data"]["name"] for e in sink.fired] == ["sound"]
    (large, state, reason), sound = await occurrences_of(db)
    assert (large, state, sound) == ("large", "SKIPPED", ("sound", "DISPATCHED", None))
    assert re.fullmatch(
        r"its action.due would be 1000\d{3} bytes, more than the 1000000 a message may carry "
        r"\(a payload stored before payloads were held to 256 KiB\): replace the schedule "
        r"with a smaller payload",
        reason,
    )
    [skipped] = [e for e in sink.events if e["data"].get("state") == "SKIPPED"]
    assert skipped["data"]["reason"] == reason


async def occurrences_of(db: asyncpg.Connection) -> list[tuple[str, str, str | None]]:
    """Each stored occurrence as (schedule name, state, reason of its last history row), by
    name and due instant."""
    return [
        tuple(r)
        for r in await db.fetch(
            "SELECT s.name, a.state, (SELECT h.message FROM action_history h"
            " WHERE h.action_id = a.id ORDER BY h.at DESC, h.id DESC LIMIT 1)"
            " FROM actions a JOIN schedules s ON s.id = a.schedule_id ORDER BY s.name, a.due_at"
        )
    ]


async def test_a_fault_deciding_one_occurrence_skips_it_and_not_the_round(
    db, pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault of the ticker's own on one occurrence (here building its event) failed the
    round, and the round was claimed and failed again for ever: nothing due after it fired.
    That occurrence is now SKIPPED, saying so, its series goes on, and the round fires."""
    build = Ticker._due_event

    def faulty(self: Ticker, row: Any, *args: Any) -> Outgoing:
        if row["name"] == "faulty":
            raise RuntimeError("a fault")
        return build(self, row, *args)

    monkeypatch.setattr(Ticker, "_due_event", faulty)
    clock = SettableClock(START)
    every = {"kind": "interval", "every": "PT1M"}
    for name in ("faulty", "sound"):
        await run(db, command("schedule.create", schedule(name, trigger=every)), START)
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, START + timedelta(seconds=90))
    assert [e["data"]["name"] for e in sink.fired] == ["sound"]
    [skipped] = [e for e in sink.events if e["data"].get("state") == "SKIPPED"]
    reason = "the ticker failed on this occurrence (RuntimeError: a fault in Chime, logged)"
    assert skipped["data"]["reason"] == reason
    assert await occurrences_of(db) == [
        ("faulty", "SKIPPED", reason),
        ("faulty", "PENDING", None),
        ("sound", "DISPATCHED", None),
        ("sound", "PENDING", None),
    ]


async def test_a_fault_on_one_occurrences_successor_skips_it_and_ends_only_its_series(
    db, pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault of the schedule math on one occurrence's successor (a bug in Chime) failed every
    round that claimed it. That occurrence is now SKIPPED, saying its series stops there (no
    successor to store), and the rest of the round fires and goes on."""
    from shared.schedule.triggers import Series

    next_after = Series.next_after

    def faulty(self: Series, after: datetime, fired: int = 0) -> datetime | None:
        if self.source.every == timedelta(minutes=2):
            raise RuntimeError("a fault")
        return next_after(self, after, fired)

    clock = SettableClock(START)
    for name, every in (("faulty", "PT2M"), ("sound", "PT1M")):
        trigger = {"kind": "interval", "every": every}
        await run(db, command("schedule.create", schedule(name, trigger=trigger)), START)
    monkeypatch.setattr(Series, "next_after", faulty)  # created sound: the ticker's call fails
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, START + timedelta(seconds=150))
    assert [e["data"]["name"] for e in sink.fired] == ["sound", "sound"]
    reason = (
        "the ticker failed on this occurrence (RuntimeError: a fault in Chime, logged): "
        "its series stops here"
    )
    assert await occurrences_of(db) == [
        ("faulty", "SKIPPED", reason),
        ("sound", "DISPATCHED", None),
        ("sound", "DISPATCHED", None),
        ("sound", "PENDING", None),
    ]


@pytest.mark.parametrize("ends", ["expiry", "ack"])
async def test_an_attempt_whose_definition_became_unreadable_fails_for_good_saying_why(
    db, pool, ends: str
) -> None:
    """Fired, then its definition cannot be read (no retry policy to follow): the attempt that
    times out, or is acked FAILED, ends FAILED for good with the reason, instead of failing
    the ticker's expiry, or the acker's batch, every time."""
    clock = await once_due_now(db)
    sink = Collector()
    ticker = make_ticker(pool, clock, sink)
    await drive(ticker, clock, clock.now() + timedelta(seconds=1))
    [published] = sink.fired
    await edit_stored_spec(db, ["trigger", "kind"], "nonsense")
    specs._CACHE.clear()  # as after a restart: the definition is read again
    if ends == "expiry":
        clock.set(clock.now() + timedelta(minutes=6))  # past the 5-minute ack deadline
        assert await ticker.expire_overdue() == 1
        dead = [e for e in sink.events if e["type"] == "action.dead"]
    else:
        events = await apply_in(db, "bulk", ack_of(published, "FAILED"), clock.now())
        dead = [e for e in events if e["type"] == "action.dead"]
    [dead_event] = dead
    assert (
        "the schedule's definition cannot be read (ValidationError: "
        in (dead_event["data"]["reason"])
    )
    assert await db.fetchval("SELECT state FROM actions") == "FAILED"


@pytest.mark.parametrize("twice", [False, True], ids=["once", "ending-it-fails-too"])
async def test_an_overdue_attempt_the_ticker_fails_on_fails_for_good_and_not_the_expiry(
    db, pool, monkeypatch: pytest.MonkeyPatch, twice: bool
) -> None:
    """A fault of the ticker's own ending one overdue attempt (here computing its backoff)
    failed the whole expiry, every second, for ever: no deadline behind it expired. That
    attempt is now FAILED for good, saying so, and the others are ended as their policy says.
    When ending it so fails too (here building its action.dead), it is FAILED all the same,
    without events, its history saying why; either way the occurrence held behind it
    (BUFFER_ONE) is released."""
    from shared.persistence import attempts

    delay, dead_letter = attempts.retry_delay, attempts.dead_letter_event

    def faulty(policy: Any, *args: Any) -> timedelta:
        if policy.retry.initial_backoff == "PT7S":
            raise RuntimeError("a fault")
        return delay(policy, *args)

    def faulty_dead_letter(row: Any, *args: Any) -> Any:
        if row["name"] == "faulty":
            raise KeyError("another fault")
        return dead_letter(row, *args)

    monkeypatch.setattr(attempts, "retry_delay", faulty)
    if twice:
        monkeypatch.setattr(attempts, "dead_letter_event", faulty_dead_letter)
    clock = SettableClock(START)
    at = {"kind": "once", "at": "2026-10-24T12:00:01Z"}
    held = [{"type": "held", "at": "2026-10-24T12:00:02Z"}]  # behind the faulty one's
    for name, backoff in (("faulty", "PT7S"), ("sound", "PT8S")):
        policy = {"retry": {"maxAttempts": 2, "initialBackoff": backoff}, "overlap": "BUFFER_ONE"}
        actions = held if name == "faulty" else []
        data = schedule(name, trigger=at, policy=policy, actions=actions)
        await run(db, command("schedule.create", data), START)
    sink = Collector()
    ticker = make_ticker(pool, clock, sink)
    await drive(ticker, clock, START + timedelta(seconds=2))
    assert len(sink.fired) == 2
    assert await db.fetchval("SELECT held FROM actions WHERE type = 'held'") is True
    clock.set(clock.now() + timedelta(minutes=6))  # past the 5-minute ack deadline
    assert await ticker.expire_overdue() == 2
    failed_on = "the ticker failed on this occurrence (RuntimeError: a fault in Chime, logged)"
    if twice:
        assert sink.of_type("action.dead") == []
        [(_, _, last), _held] = [o for o in await occurrences_of(db) if o[0] == "faulty"]
        assert last == (
            f"attempt 1 timed out: {failed_on}; ending it so failed as well (KeyError), so it "
            "is FAILED without its events"
        )
    else:
        [dead] = sink.of_type("action.dead")
        reason = f"attempt 1 timed out: {failed_on}, so it is not retried"
        assert (dead["data"]["name"], dead["data"]["reason"]) == ("faulty", reason)
    states = (
        "SELECT s.name, a.state, a.attempt FROM actions a JOIN schedules s ON s.id = a.schedule_id"
        " WHERE a.type <> 'held'"
    )
    assert sorted(tuple(r) for r in await db.fetch(states)) == [
        ("faulty", "FAILED", 1),
        ("sound", "PENDING", 2),
    ]
    # the one held behind the faulty occurrence is released with its end, either way
    released = await db.fetchrow("SELECT state, held FROM actions WHERE type = 'held'")
    assert (released["state"], released["held"]) == ("PENDING", False)


async def test_a_round_records_how_long_the_broker_took_to_acknowledge_it(db, pool) -> None:
    clock = await once_due_now(db)
    sink = Collector()

    async def slow_broker(messages: Sequence[Outgoing]) -> None:
        clock.advance(timedelta(milliseconds=300))  # the acknowledgement comes 0.3 s later
        await sink(messages)

    ticker = make_ticker(pool, clock, sink)
    ticker.publish = slow_broker
    assert await ticker.fire_due() == 1
    sample = ticker.metrics.registry.get_sample_value
    name = "chime_broker_ack_wait_seconds"
    assert sample(f"{name}_count") == 1
    assert sample(f"{name}_sum") == 0.3
    assert (sample(f"{name}_bucket", {"le": "0.25"}), sample(f"{name}_bucket", {"le": "0.5"})) == (
        0,
        1,
    )
    # the wait is the broker's, after the release: the event still went out at its instant
    [due] = sink.of_type("action.due")
    assert due["data"]["firedAt"] == due["data"]["dueAt"]


async def test_late_ticker_fires_once_then_resumes_on_schedule(db, pool) -> None:
    clock = SettableClock(START)
    await run(
        db,
        command(
            "schedule.create", schedule(trigger={"kind": "cron", "expression": "*/10 * * * *"})
        ),
        clock.now(),
    )
    clock.set(START + timedelta(minutes=35))  # the ticker was down for three due times
    sink = Collector()
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()
    assert [e["data"]["dueAt"] for e in sink.events] == ["2026-10-24T12:10:00Z"]
    assert await ticker.next_wake() == START + timedelta(minutes=40)
    sample = ticker.metrics.registry.get_sample_value
    name = "chime_firing_lateness_seconds"
    assert sample(f"{name}_count") == 1
    assert sample(f"{name}_sum") == 25 * 60  # fired at 12:35 for 12:10
    assert sample(f"{name}_bucket", {"le": "60.0"}) == 0


async def test_two_tickers_never_fire_one_occurrence_twice(db, pool) -> None:
    clock = SettableClock(START)
    for i in range(300):
        await run(
            db,
            command(
                "schedule.create",
                schedule(f"s{i}", trigger={"kind": "once", "at": "2026-10-24T12:00:01Z"}),
            ),
            clock.now(),
        )
    clock.set(START + timedelta(seconds=1))
    sink = Collector()
    first, second = (
        make_ticker(pool, clock, sink, ticker_batch_size=50),
        make_ticker(pool, clock, sink, ticker_batch_size=50),
    )
    import asyncio

    while sum(await asyncio.gather(first.tick(), second.tick())):
        pass
    ids = [e["data"]["actionId"] for e in sink.events]
    assert len(ids) == 300 and len(set(ids)) == 300


async def test_a_failed_round_is_rolled_back_and_fired_again_with_the_same_event_id(
    db, pool
) -> None:
    clock = await once_due_now(db)
    await claim_and_fail(pool, clock)
    assert await db.fetchval("SELECT count(*) FROM action_history") == 0  # nothing marked
    sink = Collector()
    assert await make_ticker(pool, clock, sink).tick() == 1  # at once: no lease to wait for
    assert [e["meta"]["eventId"] for e in sink.events] == [f"{sink.fired[0]['data']['actionId']}:1"]
    assert await db.fetchval("SELECT state FROM actions") == "DISPATCHED"
    assert pool.get_size() - pool.get_idle_size() == 0  # every round's connection went back


async def publish_and_roll_back(pool: asyncpg.Pool, clock: SettableClock) -> Collector:
    """A ticker publishes what is due and its round fails before the mark (as when PostgreSQL
    cuts its session between the broker's ack and the commit): the events are out, the round
    rolled back. Returns what was published."""
    sink = Collector()

    async def published_then_cut(messages: Sequence[Outgoing]) -> None:
        await sink(messages)
        raise ConnectionError("the session was cut after the broker acknowledged the round")

    ticker = make_ticker(pool, clock, Collector())
    ticker.publish = published_then_cut
    with pytest.raises(ConnectionError):
        await ticker.tick()
    return sink


def ack_of(event: dict, state: str) -> ActionAck:
    """A worker's ack of a published action.due."""
    data = {"actionId": event["data"]["actionId"], "attempt": event["data"]["attempt"]}
    meta = {"tenant": event["meta"]["tenant"]}
    return ActionAck.model_validate(
        {"type": "action.ack", "meta": meta, "data": data | {"state": state}}
    )


async def apply_in(db: asyncpg.Connection, path: str, ack: ActionAck, now: datetime) -> list[dict]:
    """Apply an ack one by one (`apply_ack`) or as a batch of one (`apply_acks`); its events."""
    async with db.transaction():
        if path == "one":
            events = await apply_ack(db, ack, now, TOPICS, lambda: 0.0)
        else:
            [events] = await apply_acks(db, [ack], now, TOPICS, lambda: 0.0)
    return [orjson.loads(e.value) for e in events]


@pytest.mark.parametrize(
    ("path", "state"), [("one", "SUCCEEDED"), ("bulk", "SUCCEEDED"), ("bulk", "RUNNING")]
)
async def test_an_ack_of_a_round_rolled_back_after_publishing_records_its_fire(
    db, pool, path: str, state: str
) -> None:
    """The ack proves the round published its occurrence: the acker records the fire the round
    could not (DISPATCHED, the series' successor stored) and applies the ack, so the occurrence
    is not fired again under a new attempt, and its series goes on and completes."""
    clock = SettableClock(START)
    data = schedule(trigger={"kind": "interval", "every": "PT1M"}, maxOccurrences=2)
    created = (await run(db, command("schedule.create", data), clock.now()))["data"]
    first_due = await db.fetchval("SELECT min(due_at) FROM actions")
    clock.set(first_due)
    [published] = (await publish_and_roll_back(pool, clock)).fired
    assert await db.fetchval("SELECT count(*) FROM actions") == 1  # the successor rolled back
    clock.advance(timedelta(seconds=2))  # the ack comes back
    events = await apply_in(db, path, ack_of(published, state), clock.now())
    changed = [e for e in events if e["type"] == "action.state-changed"]
    assert [(e["data"]["previousState"], e["data"]["state"]) for e in changed] == [
        ("DISPATCHED", state)
    ]
    action_id = uuid.UUID(published["data"]["actionId"])
    history = await db.fetch(
        "SELECT state, at, message FROM action_history WHERE action_id = $1 ORDER BY id", action_id
    )
    assert [h["state"] for h in history] == ["DISPATCHED", state]
    assert history[0]["at"] == clock.now() and "rolled back" in history[0]["message"]
    rows = await db.fetch("SELECT seq, state, due_at FROM actions ORDER BY seq")
    assert [(r["seq"], r["state"]) for r in rows] == [(1, state), (2, "PENDING")]
    assert rows[1]["due_at"] == first_due + timedelta(minutes=1)  # after the occurrence's instant
    sink = Collector()
    await drive(make_ticker(pool, clock, sink), clock, START + timedelta(hours=1))
    assert [e["data"]["dueAt"] for e in sink.fired] == [format_instant(rows[1]["due_at"])]
    schedule_state = "SELECT state FROM schedules WHERE id = $1"
    assert await db.fetchval(schedule_state, uuid.UUID(created["id"])) == "COMPLETED"


async def test_an_ack_of_a_rolled_back_once_schedule_completes_it_and_a_failure_retries(
    db, pool
) -> None:
    """The last occurrence's fire recorded by its ack completes the schedule, as the round's
    mark would have; a FAILED ack then retries it as ever (a new attempt, fired by the ticker)."""
    clock = await once_due_now(db)
    [published] = (await publish_and_roll_back(pool, clock)).fired
    events = await apply_in(db, "bulk", ack_of(published, "FAILED"), clock.now())
    assert [e["data"]["state"] for e in events] == ["FAILED"]
    assert await db.fetchval("SELECT state FROM schedules") == "COMPLETED"
    row = await db.fetchrow("SELECT state, attempt, fire_at FROM actions")
    assert (row["state"], row["attempt"]) == ("PENDING", 2)
    states = "SELECT state FROM action_history ORDER BY id"
    assert [r["state"] for r in await db.fetch(states)] == ["DISPATCHED", "FAILED"]
    sink = Collector()
    clock.set(row["fire_at"])
    assert await make_ticker(pool, clock, sink).tick() == 1
    assert [e["data"]["attempt"] for e in sink.of_type("action.due")] == [2]


@pytest.mark.parametrize("path", ["one", "bulk"])
async def test_an_ack_of_an_occurrence_not_yet_due_changes_nothing(db, pool, path: str) -> None:
    """A PENDING occurrence acknowledged before its instant was never published (a round
    releases nothing early): NOT_DISPATCHED, and it fires at its instant."""
    clock = SettableClock(START)
    once = schedule(trigger={"kind": "once", "at": "2026-10-24T12:00:01Z"})
    await run(db, command("schedule.create", once), clock.now())
    action_id = await db.fetchval("SELECT id FROM actions")
    early = {"meta": {"tenant": "acct-1"}, "data": {"actionId": str(action_id), "attempt": 1}}
    events = await apply_in(db, path, ack_of(early, "SUCCEEDED"), clock.now())
    assert [e["data"]["reason"].split(":")[0] for e in events] == ["NOT_DISPATCHED"]
    assert await db.fetchval("SELECT state FROM actions") == "PENDING"
    assert await db.fetchval("SELECT count(*) FROM action_history") == 0
    clock.set(START + timedelta(seconds=1))
    assert await make_ticker(pool, clock, Collector()).tick() == 1


async def test_a_round_is_held_by_its_session_and_freed_when_the_session_ends(db, pool) -> None:
    """A ticker that dies takes its session with it: while the round's transaction lives, other
    tickers pass over its rows; once the session ends (killed here, as by the ticker's death),
    the round is rolled back and another ticker fires it at once, with the same eventId."""
    clock = await once_due_now(db)
    dying = make_ticker(pool, clock, Collector())
    claimed = await dying._claim()
    assert claimed is not None and claimed.conn is not None
    sink = Collector()
    survivor = make_ticker(pool, clock, sink)
    assert await survivor.tick() == 0  # held by the claim's transaction
    assert await db.fetchval("SELECT pg_terminate_backend($1)", claimed.conn.get_server_pid())
    assert await survivor.tick() == 1
    assert sink.fired[0]["meta"]["eventId"].endswith(":1")
    await dying._give_up(claimed)  # the dead session's connection goes back to the pool


async def test_a_round_retried_after_its_session_ended_is_given_up(db, pool) -> None:
    """The broker fails a round, which is kept (its transaction open) to be published again;
    meanwhile its session ends. The retry finds the transaction gone: the round is given up,
    its connection goes back, and the next claim fires the occurrence."""
    clock = await once_due_now(db)
    failures = [ConnectionError("the broker is away")]

    async def flaky(messages: Sequence[Outgoing]) -> None:
        if failures:
            raise failures.pop()

    ticker = make_ticker(pool, clock, Collector())
    ticker.publish = flaky
    claimed = await ticker._claim()
    assert claimed is not None and claimed.conn is not None
    with pytest.raises(ConnectionError):
        await ticker._dispatch(claimed)
    assert claimed.conn is not None  # kept for the retry
    await db.fetchval("SELECT pg_terminate_backend($1)", claimed.conn.get_server_pid())
    # the session was ended: as the server said so, or as the client finds its socket
    with pytest.raises(
        (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    ):
        await ticker._dispatch(claimed)
    assert claimed.conn is None  # given up
    await ticker._dispatch(claimed)  # tried again: nothing left to do
    sink = Collector()
    assert await make_ticker(pool, clock, sink).tick() == 1
    assert len(sink.fired) == 1
    assert pool.get_size() - pool.get_idle_size() == 0


async def test_a_ticker_that_stops_answering_loses_its_round_after_the_lease(
    db, database_url
) -> None:
    """A ticker alive but stuck (its round never goes on) holds its rows no longer than its
    lease: PostgreSQL ends the idle transaction's session (idle_in_transaction_session_timeout,
    set by the claim), and another ticker fires them. Waits on PostgreSQL's own timer, polled
    for at most 10 s."""
    clock = await once_due_now(db)
    pool = await create_pool(database_url, 4)
    try:
        stuck = make_ticker(pool, clock, Collector(), ticker_lease_seconds=0.2)
        claimed = await stuck._claim()
        assert claimed is not None and claimed.conn is not None
        pid = claimed.conn.get_server_pid()
        sink = Collector()
        survivor = make_ticker(pool, clock, sink)
        assert await survivor.tick() == 0
        for _ in range(200):
            if await survivor.tick():
                break
            await asyncio.sleep(0.05)
        assert len(sink.fired) == 1
        assert not await db.fetchval(  # its session was ended
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
        )
        await stuck._give_up(claimed)
    finally:
        await pool.close()


async def test_a_round_waiting_for_a_slow_broker_keeps_its_claim(db, database_url) -> None:
    """The broker takes longer than the lease to take a round: the ticker keeps the claim's
    transaction alive meanwhile (a statement every third of the lease), so the round is not
    lost to the session's idle limit and is marked once the broker has it."""
    clock = await once_due_now(db)
    pool = await create_pool(database_url, 4)
    try:
        sink = Collector()

        async def slow(messages: Sequence[Outgoing]) -> None:
            await asyncio.sleep(0.6)  # three leases of 0.2 s
            await sink(messages)

        ticker = make_ticker(pool, clock, Collector(), ticker_lease_seconds=0.2)
        ticker.publish = slow
        assert await ticker.tick() == 1
    finally:
        await pool.close()
    assert len(sink.fired) == 1
    assert await db.fetchval("SELECT state FROM actions") == "DISPATCHED"


async def test_ack_flow_updates_state_and_history(db, pool) -> None:
    clock = await once_due_now(db)
    sink = Collector()
    await make_ticker(pool, clock, sink).tick()
    action_id = sink.events[0]["data"]["actionId"]

    def ack(state: str, attempt: int = 1, tenant: str = "acct-1") -> ActionAck:
        return ActionAck.model_validate(
            {
                "type": "action.ack",
                "meta": {"tenant": tenant},
                "data": {"actionId": action_id, "attempt": attempt, "state": state},
            }
        )

    async def apply(a: ActionAck) -> dict:
        async with db.transaction():
            events = await apply_ack(db, a, clock.now(), TOPICS, lambda: 0.0)
        return orjson.loads(events[-1].value)

    running = await apply(ack("RUNNING"))
    assert (running["type"], running["data"]["state"], running["data"]["previousState"]) == (
        "action.state-changed",
        "RUNNING",
        "DISPATCHED",
    )
    deadline = await db.fetchval(
        "SELECT ack_deadline FROM actions WHERE id = $1", uuid.UUID(action_id)
    )
    assert deadline == clock.now() + timedelta(minutes=5)
    assert (await apply(ack("SUCCEEDED")))["data"]["state"] == "SUCCEEDED"
    async with db.transaction():
        again = [
            orjson.loads(e.value)
            for e in await apply_ack(db, ack("SUCCEEDED"), clock.now(), TOPICS, lambda: 0.0)
        ]
    # a duplicate re-announces the state it caused (same eventId), and is reported
    assert [e["type"] for e in again] == ["action.state-changed", "action.ack-ignored"]
    assert again[0]["meta"]["eventId"] == f"{action_id}:1:SUCCEEDED"
    assert again[1]["data"]["reason"].startswith("DUPLICATE")
    foreign = await apply(ack("FAILED", tenant="acct-2"))
    assert foreign["data"]["reason"].startswith("UNKNOWN_ACTION")
    history = [
        r["state"]
        for r in await db.fetch(
            "SELECT state FROM action_history WHERE action_id = $1 ORDER BY id",
            uuid.UUID(action_id),
        )
    ]
    assert history == ["DISPATCHED", "RUNNING", "SUCCEEDED"]


async def fired_through(
    pool: asyncpg.Pool, clock: SettableClock, failures: list[Exception]
) -> tuple[Collector, list[bool], list[list[bytes]]]:
    """A ticker whose publishing raises `failures` first, one a try, run with its clock a
    second further each step until something fired (at most 200 steps: a failing round backs
    off, then is published again): what it fired, the readiness it reported, and what each try
    published."""
    sink, health, tried = Collector(), [], []

    async def failing(messages: Sequence[Outgoing]) -> None:
        tried.append([m.value for m in messages])
        if failures:
            raise failures.pop(0)
        await sink(messages)

    ticker = make_ticker(pool, clock, sink)
    ticker.publish = failing
    stop, wake = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(ticker.run(stop, wake, health.append))
    try:
        for _ in range(200):
            if sink.fired:
                break
            clock.advance(timedelta(seconds=1))
            wake.set()
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
    return sink, health, tried


async def test_run_loop_survives_broker_outage_and_a_failing_round(db, pool) -> None:
    from aiokafka.errors import KafkaConnectionError

    clock = SettableClock(START)
    await run(
        db,
        command(
            "schedule.create", schedule(trigger={"kind": "once", "at": "2026-10-24T12:00:00Z"})
        ),
        clock.now(),
    )
    failures = [KafkaConnectionError(), KafkaConnectionError(), RuntimeError("a bug in one round")]
    sink, health, _ = await fired_through(pool, clock, failures)
    # Retried in its transaction while the broker fails, given up (rolled back) on the bug and
    # claimed again: published at least once, and then under the same action id.
    assert {e["data"]["dueAt"] for e in sink.fired} == {"2026-10-24T12:00:00Z"}
    assert len({e["data"]["actionId"] for e in sink.fired}) == 1
    # Not ready while the broker was away, ready after (rounds dispatching side by side each
    # report their own failure and recovery).
    assert health[0] is False
    assert health[-1] is True


async def test_a_round_the_broker_refuses_waits_in_its_transaction(db, pool) -> None:
    """A broker refusing a round (a message over its limit, a topic the ticker may not write to)
    gave the round up: rolled back, claimed again a moment later, decided again and refused
    again, in a loop. It now waits for an operator as it waits out an outage: published again as
    it was decided (the same bodies, `firedAt` too), not ready meanwhile, ready once it goes."""
    from aiokafka.errors import MessageSizeTooLargeError, TopicAuthorizationFailedError

    clock = await once_due_now(db)
    refusals: list[Exception] = [MessageSizeTooLargeError(), TopicAuthorizationFailedError()]
    sink, health, tried = await fired_through(pool, clock, refusals)
    assert len(tried) == 3 and tried[0] == tried[1] == tried[2]  # decided once
    assert len(sink.fired) == 1
    assert (health[0], health[-1]) == (False, True)


async def test_rounds_waiting_for_the_broker_hold_back_the_next_claims(db, database_url) -> None:
    """At most ROUNDS_IN_FLIGHT rounds wait for the broker's acknowledgement; the next round is
    claimed and waits for the oldest, and what falls due after it is not claimed at all:
    backpressure, not rounds piling up. Once the broker answers, everything fires once."""
    clock = SettableClock(START)
    at = [f"2026-10-24T12:00:0{i}Z" for i in range(10)]
    data = schedule("burst", actions=[{"type": "t", "at": instant} for instant in at])
    await run(db, command("schedule.create", data), clock.now())
    clock.set(START + timedelta(seconds=10))
    released: list[Outgoing] = []
    sink, gate = Collector(), asyncio.Event()

    async def unanswering_broker(messages: Sequence[Outgoing]) -> None:
        released.extend(messages)
        await gate.wait()
        await sink(messages)

    async def free_pending() -> int:  # pending rows no round holds
        return await db.fetchval(
            "SELECT count(*) FROM (SELECT id FROM actions WHERE state = 'PENDING'"
            " FOR KEY SHARE SKIP LOCKED) AS free"
        )

    pool = await create_pool(database_url, 10)  # room for more rounds than the cap allows
    batch = 2
    ticker = make_ticker(pool, clock, sink, ticker_batch_size=batch)
    ticker.publish = unanswering_broker
    stop, wake = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(ticker.run(stop, wake))
    try:
        held = batch * (ROUNDS_IN_FLIGHT + 1)  # the rounds waiting, the one claimed after them

        async def capped() -> bool:
            return len(released) == batch * ROUNDS_IN_FLIGHT and await free_pending() == 10 - held

        await until(capped, 10, every=0.02)
        for _ in range(10):  # the loop, woken again and again, claims no more
            wake.set()
            await asyncio.sleep(0.02)
            assert await capped()
        gate.set()

        async def all_fired() -> bool:
            return len(sink.fired) == 10

        await until(all_fired, 10, every=0.02)
    finally:
        gate.set()
        stop.set()
        await asyncio.wait_for(loop, 10)
        await pool.close()
    assert sorted(e["data"]["dueAt"] for e in sink.fired) == at
    assert len({e["meta"]["eventId"] for e in sink.fired}) == 10
    assert await db.fetchval("SELECT count(*) FROM actions WHERE state = 'DISPATCHED'") == 10


@pytest.mark.parametrize("failure", ["raises", "naive"])
async def test_run_loop_survives_a_failing_wait_for_work(db, pool, failure: str) -> None:
    """An error that is not an outage where the idle loop asks when to wake up (asyncpg raised
    InternalClientError there when PostgreSQL stopped, before it counted as transient) used to
    end the loop: the ticker stayed up, ready, and fired nothing again. So did an answer the
    sleep could not be computed from: PostgreSQL's `infinity`, which asyncpg reads as a
    datetime without a zone (an occurrence due then could be stored before 70d9a15)."""
    clock = SettableClock(START)
    sink = Collector()
    ticker = make_ticker(pool, clock, sink)
    failures = [RuntimeError("not an outage")]
    asked = ticker.next_wake

    async def failing_once() -> datetime | None:
        if failures:
            if failure == "naive":
                failures.pop()
                return datetime.max
            raise failures.pop()
        return await asked()

    ticker.next_wake = failing_once
    stop, wake = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(ticker.run(stop, wake))
    try:
        for _ in range(100):  # the loop finds nothing due and asks when to wake: it fails
            if not failures:
                break
            await asyncio.sleep(0.02)
        assert not failures
        once = schedule(trigger={"kind": "once", "at": "2026-10-24T12:00:01Z"})
        await run(db, command("schedule.create", once), clock.now())
        clock.set(START + timedelta(seconds=1))
        for _ in range(200):  # bounded: the loop waits 1 s after the failure, then claims
            if sink.fired or loop.done():
                break
            wake.set()
            await asyncio.sleep(0.02)
        assert not loop.done()
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
    assert [e["data"]["dueAt"] for e in sink.fired] == ["2026-10-24T12:00:01Z"]


async def test_a_round_of_one_schedules_actions_does_not_scan_the_table(db, database_url) -> None:
    """A round claims 1,000 explicit actions of one schedule. Its "did the schedule end?" check
    must probe that schedule's rows, even when the planner has no column statistics for actions
    yet (a new table, the first minute): the ticker once named the schedule once per claimed
    row, and from that array's length the planner chose to read the whole table."""
    first = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    clock = SettableClock(first - timedelta(hours=1))
    for s in range(2):
        at = format_instant(first + timedelta(minutes=s))
        actions = [{"type": "run", "at": at, "id": f"a{i}"} for i in range(1000)]
        data = schedule(f"batch-{s}", actions=actions)
        await run(db, command("schedule.create", data), clock.now())
    # 200,000 finished occurrences of another schedule: the history a table accumulates
    old = schedule("old", actions=[{"type": "run", "at": "2027-01-01T00:00:00Z"}])
    old_id = (await run(db, command("schedule.create", old), clock.now()))["data"]["id"]
    await db.execute(HISTORY, uuid.UUID(old_id), clock.now())
    await db.execute("ALTER TABLE actions SET (autovacuum_enabled = false)")
    await db.execute("ANALYZE schedules")
    await db.execute("VACUUM actions")  # row count known, column statistics still missing
    clock.set(first)
    sink = await tick_reading_actions_by_index_only(db, database_url, clock)
    assert len(sink.fired) == 1000


async def test_completing_schedules_probes_them_when_statistics_miss_the_pending_rows(
    db, database_url
) -> None:
    """Statistics taken when nothing was pending (a table of history) underestimate the pending
    rows later on: the "anything left to fire?" check of a round's schedules must still probe
    those schedules, not read the table (0.6-1.1 s at 300,000 rows, in the steady-load
    benchmark, after an autovacuum)."""
    first = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    clock = SettableClock(first - timedelta(hours=1))
    old = schedule("old", actions=[{"type": "run", "at": "2027-01-01T00:00:00Z"}])
    old_id = (await run(db, command("schedule.create", old), clock.now()))["data"]["id"]
    await db.execute(HISTORY, uuid.UUID(old_id), clock.now())
    await db.execute("ALTER TABLE actions SET (autovacuum_enabled = false)")
    await db.execute("ANALYZE actions")  # ~nothing pending, as far as the planner will know
    for s in range(40):
        at = format_instant(first + timedelta(seconds=s))
        actions = [{"type": "run", "at": at, "id": f"a{i}"} for i in range(1000)]
        await run(db, command("schedule.create", schedule(f"b{s}", actions=actions)), clock.now())
    clock.set(first + timedelta(seconds=2))
    sink = await tick_reading_actions_by_index_only(db, database_url, clock)
    assert len(sink.fired) == 1000


async def tick_reading_actions_by_index_only(
    db: asyncpg.Connection, database_url: str, clock: SettableClock
) -> Collector:
    """One ticker round (1,000 occurrences at most); asserts that it read actions through
    indexes only. Returns what it published."""
    before = await db.fetchrow(SCANS)
    pool = await create_pool(database_url, 2)
    try:
        sink = Collector()
        await make_ticker(pool, clock, sink, ticker_batch_size=1000).tick()
    finally:
        await pool.close()  # its sessions' statistics are written as they end
    for _ in range(100):  # until the ticker's index reads are counted: its scans are then too
        after = await db.fetchrow(SCANS)
        if after["idx_scan"] > before["idx_scan"]:
            break
        await asyncio.sleep(0.05)
    assert after["idx_scan"] > before["idx_scan"]
    assert after["seq_scan"] == before["seq_scan"]
    return sink


HISTORY = """
INSERT INTO actions (id, schedule_id, tenant, origin, type, due_at, fire_at, state, fired_at,
                     created_at, updated_at)
SELECT gen_random_uuid(), $1, 'acct-1', 'EXPLICIT', 'run', t, t, 'SUCCEEDED', t, $2, $2
FROM generate_series(1, 200000) AS i, LATERAL (SELECT $2::timestamptz - i * interval '1 s') AS x(t)
"""

SCANS = """SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = 'actions'"""


async def test_a_claim_locks_its_rows_and_writes_no_new_version_of_them(db) -> None:
    """The claim is the lock its transaction holds: it must not update its rows (a new version
    of each, and later a second one when the round is marked, was what a lease cost)."""
    first = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    clock = SettableClock(first - timedelta(hours=1))
    at = format_instant(first)
    actions = [{"type": "run", "at": at, "id": f"a{i}"} for i in range(1000)]
    await run(db, command("schedule.create", schedule("batch", actions=actions)), clock.now())
    where = {r["id"]: r["ctid"] for r in await db.fetch("SELECT id, ctid FROM actions")}
    async with db.transaction():
        await db.execute(Q.claim_plan, "30000")
        claimed = await db.fetch(Q.claim_due, first, 1000)
        updated = await db.fetchval("SELECT pg_stat_get_xact_tuples_updated('actions'::regclass)")
        now_at = {r["id"]: r["ctid"] for r in await db.fetch("SELECT id, ctid FROM actions")}
        idle_limit = await db.fetchval("SHOW idle_in_transaction_session_timeout")
    assert len(claimed) == 1000
    assert updated == 0
    assert now_at == where
    assert idle_limit == "30s"


async def test_a_claim_locks_what_may_fire_and_returns_the_schedule_of_each_row(
    db, database_url
) -> None:
    """The claim's statement locks the due rows and returns each with the columns of its own
    schedule, as read while locking: rows of two schedules interleaved, one of them paused (only
    its manual trigger fires), and one held by another round (passed over); the rows it claimed
    are held from other claims until its transaction ends."""
    first = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    a, b = uuid.uuid4(), uuid.uuid4()
    await db.executemany(
        "INSERT INTO schedules (id, tenant, namespace, name, state, version, spec,"
        " ack_timeout_ms, created_at, updated_at) VALUES ($1, 't', $2, $3, $4, $5, '{}', $6,"
        " $7, $7)",
        [
            (a, "billing", "nightly", "ACTIVE", 3, 60_000, first),
            (b, "reports", "weekly", "PAUSED", 7, 900_000, first),
        ],
    )
    rows = {"a1": (a, "EXPLICIT"), "b1": (b, "EXPLICIT"), "a2": (a, "EXPLICIT")}
    rows |= {"b2": (b, "MANUAL"), "a3": (a, "EXPLICIT"), "a4": (a, "EXPLICIT")}
    ids = {name: uuid.uuid4() for name in rows}
    await db.executemany(
        "INSERT INTO actions (id, schedule_id, tenant, origin, type, due_at, fire_at, state,"
        " created_at, updated_at) VALUES ($1, $2, 't', $3, $4, $5, $5, 'PENDING', $5, $5)",
        [
            (ids[n], sid, origin, n, first - timedelta(seconds=i))
            for i, (n, (sid, origin)) in enumerate(rows.items())
        ],
    )
    other = await connect(database_url)
    try:
        async with other.transaction():  # another round holds a2
            await other.execute("SELECT 1 FROM actions WHERE id = $1 FOR UPDATE", ids["a2"])
            async with db.transaction():
                claimed = await db.fetch(Q.claim_due, first, 1000)
                held = await other.fetch(Q.claim_due, first, 1000)
                assert [r["type"] for r in held] == ["a2"]  # its own; the rest is held
        assert len(await other.fetch(Q.claim_due, first, 1000)) == 5  # free again
    finally:
        await other.close()
    assert sorted(r["type"] for r in claimed) == ["a1", "a3", "a4", "b2"]
    own = {a: ("billing", "nightly", 3, 60_000), b: ("reports", "weekly", 7, 900_000)}
    for r in claimed:
        assert r["id"] == ids[r["type"]]
        assert (r["namespace"], r["name"], r["schedule_version"], r["ack_timeout_ms"]) == own[
            r["schedule_id"]
        ], r["type"]


async def test_a_retaken_claim_stores_its_successor_once(db, pool) -> None:
    """The claim stores a series occurrence's successor in its transaction; a round that failed
    is rolled back with it, and the claim that takes the occurrence again stores it once."""
    clock = SettableClock(START)
    every = schedule("every", trigger={"kind": "interval", "every": "PT1M"})
    await run(db, command("schedule.create", every), clock.now())
    first = await db.fetchval("SELECT min(fire_at) FROM actions")
    clock.set(first)
    await claim_and_fail(pool, clock)
    assert await db.fetchval("SELECT count(*) FROM actions") == 1  # the successor rolled back
    sink = Collector()
    assert await make_ticker(pool, clock, sink).tick() == 1  # the retaken claim
    positions = await db.fetch("SELECT seq, count(*) AS n FROM actions GROUP BY seq ORDER BY seq")
    assert [(r["seq"], r["n"]) for r in positions] == [(1, 1), (2, 1)]
    assert [e["data"]["dueAt"] for e in sink.fired] == [format_instant(first)]


async def test_a_mark_looks_its_rows_up_by_key_when_statistics_predate_the_claims(db) -> None:
    """Statistics taken before a burst say that nearly nothing is pending. The marks of a round
    must still find their rows by key: planned from such statistics, with the claimer as a
    filter on actions (before claims were locks), the planner expected one row, read the table
    and compared each marked row with every id of the batch (4,000 x 1,000 comparisons, ~1 s per
    mark of 1,000 at 100,000 stored, in the fire-throughput benchmark). Marks run in the claim's
    transaction, under its planner settings."""
    first = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    await store_due_at_once(db, [await add_schedule(db, first)], first)
    await db.execute("ALTER TABLE actions SET (autovacuum_enabled = false)")
    await db.execute("ANALYZE actions")
    claiming = db.transaction()
    await claiming.start()
    try:
        await db.execute(Q.claim_plan, "30000")
        batch = [r["id"] for r in await db.fetch(Q.claim_due, first, 1000)]
        n = len(batch)
        statements = {
            "mark_dispatched": (
                Q.mark_dispatched,
                batch,
                [1] * n,
                [first],
                [30_000] * n,
                [False] * n,
            ),
            "mark_skipped": (Q.mark_skipped, batch, [first] * n, ["condition is false"] * n),
        }
        for name, (statement, *args) in statements.items():
            marking = db.transaction()  # a savepoint: the next statement marks the same rows
            await marking.start()
            try:
                plan = await plan_of(db, statement, *args)
                changed = await db.fetchval("SELECT count(*) FROM actions WHERE state <> 'PENDING'")
            finally:
                await marking.rollback()
            compared = sum(node.get("Rows Removed by Join Filter", 0) for node in _nodes(plan))
            assert changed == 1000, name
            assert compared < 1000, f"{name} compared {compared} pairs of rows: it scans actions"
    finally:
        await claiming.rollback()


def _nodes(plan: dict) -> list[dict]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


@pytest.mark.parametrize(
    ("schedules", "analyzed"),
    [(100, False), (1, True), (100, True)],
    ids=["statistics-before-the-burst", "one-schedule", "many-schedules"],
)
async def test_a_claim_reads_its_round_and_no_more(db, schedules: int, analyzed: bool) -> None:
    """100,000 occurrences due at once; a round of 1,000 must read 1,000 due rows in order,
    their schedules and their rows by key, whatever the statistics say. Planned from them
    alone, it read all 100,000 due rows, hashed and sorted them (statistics from before the
    burst, or most rows of one schedule), or scanned the whole table to update its 1,000
    (statistics up to date, many schedules): 27-72 ms a round instead of 7."""
    first = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    await db.execute("ALTER TABLE actions SET (autovacuum_enabled = false)")
    await db.execute("ALTER TABLE schedules SET (autovacuum_enabled = false)")
    await db.execute("ANALYZE")  # nothing stored yet, as far as the planner will know
    await store_due_at_once(db, [await add_schedule(db, first) for _ in range(schedules)], first)
    if analyzed:
        await db.execute("ANALYZE")
    claiming = db.transaction()
    await claiming.start()
    try:
        await db.execute(Q.claim_plan, "30000")
        plan = await plan_of(db, Q.claim_due, first, 1000)
    finally:
        await claiming.rollback()
    read = {
        f"{node['Node Type']} {node.get('Relation Name', '')}": node["Actual Rows"]
        * node["Actual Loops"]
        for node in _nodes(plan)
    }
    assert plan["Actual Rows"] == 1000
    assert max(read.values()) <= 1000, f"the claim read more than its round: {read}"


async def store_due_at_once(
    db: asyncpg.Connection, schedules: list[uuid.UUID], at: datetime, count: int = 100_000
) -> None:
    """`count` explicit occurrences of tenant `t` due at `at`, spread over `schedules`."""
    await db.execute(
        "INSERT INTO actions (id, schedule_id, tenant, origin, type, due_at, fire_at, state,"
        " created_at, updated_at)"
        " SELECT gen_random_uuid(), ($1::uuid[])[1 + i % cardinality($1::uuid[])], 't',"
        " 'EXPLICIT', 'run', $2, $2, 'PENDING', $2, $2 FROM generate_series(1, $3) AS i",
        schedules,
        at,
        count,
    )


async def test_the_deadline_sweep_reads_only_what_is_overdue(db, database_url) -> None:
    """50,000 attempts in flight, ten of them past their ack deadline, on a table autovacuum
    has not analysed yet (new, or the first minute of a burst), the statement prepared while
    nothing was in flight. The sweep, once a second in the firing loop between claims, must
    walk the index of in-flight attempts by deadline, stop at the first one not yet due, and
    look the overdue ones' schedules up by key. Seen once in a benchmark run (auto_explain):
    a cached plan that read all 160,000 rows in flight through their index by schedule and
    sorted them, 40-74 ms every second for 20 s until autovacuum analysed the table. Not
    reproduced here; the sweep now runs under the claim's planner settings (no sorts, hash
    joins or sequential scans), which rule that plan out, and this test holds what it reads."""
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    await db.execute("ALTER TABLE actions SET (autovacuum_enabled = false)")
    await db.execute("ALTER TABLE schedules SET (autovacuum_enabled = false)")
    later = [{"type": "run", "at": "2027-01-01T00:00:00Z"}]
    schedules = [
        uuid.UUID(
            (await run(db, command("schedule.create", schedule(f"s{i}", actions=later)), now))[
                "data"
            ]["id"]
        )
        for i in range(300)
    ]
    await store_due_at_once(db, schedules, now, 50_000)
    one = await create_pool(database_url, 1)  # the sweep's backend, whose reads are counted
    ticker = make_ticker(one, SettableClock(now), Collector())
    for _ in range(6):  # nothing in flight yet: PostgreSQL caches a generic plan by now
        assert await ticker.expire_overdue() == 0
    await db.execute(
        "UPDATE actions SET state = 'DISPATCHED', ack_deadline = $1::timestamptz"
        " + CASE WHEN n <= 10 THEN -interval '1 minute' ELSE interval '5 minutes' END"
        " FROM (SELECT id, row_number() OVER () AS n FROM actions WHERE due_at = $1) d"
        " WHERE actions.id = d.id",
        now,
    )
    try:
        before = await _reads(db)
        expired = await ticker.expire_overdue()
        async with one.acquire() as conn:
            await conn.execute("SELECT pg_stat_force_next_flush()")  # the sweep's counts
        after = await _reads(db)
    finally:
        await one.close()
    read = {name: after[name] - before[name] for name in after}
    assert expired == 10
    assert read["schedules sequential scans"] == 0, read
    assert read["actions rows by the index by schedule"] == 0, read
    assert read["actions rows by index"] <= 100, read  # the ten, and the rows they changed


async def _reads(db: asyncpg.Connection) -> dict[str, int]:
    tables = {
        r["relname"]: r
        for r in await db.fetch(
            "SELECT relname, seq_scan, coalesce(idx_tup_fetch, 0) AS fetched"
            " FROM pg_stat_user_tables WHERE relname IN ('actions', 'schedules')"
        )
    }
    by_schedule = await db.fetchval(
        "SELECT idx_tup_read FROM pg_stat_user_indexes"
        " WHERE indexrelname = 'actions_in_flight_by_schedule'"
    )
    return {
        "schedules sequential scans": tables["schedules"]["seq_scan"],
        "actions sequential scans": tables["actions"]["seq_scan"],
        "actions rows by index": tables["actions"]["fetched"],
        "actions rows by the index by schedule": by_schedule,
    }


async def test_the_listen_loop_wakes_the_ticker_again_once_it_reconnects(
    settings: Settings, database_url: str
) -> None:
    """A NOTIFY sent while the LISTEN connection is down is lost: whenever the loop (re)connects
    it wakes the ticker anyway, to look for what it may have missed; and NOTIFYs wake it again."""
    from services.ticker.app import _listen

    wake, stop = asyncio.Event(), asyncio.Event()
    loop = asyncio.create_task(_listen(settings, wake, stop))
    admin = await asyncpg.connect(database_url)
    try:
        await asyncio.wait_for(wake.wait(), 10)  # listening
        wake.clear()
        await admin.execute("SELECT pg_notify('chime_due', '')")
        await asyncio.wait_for(wake.wait(), 10)
        wake.clear()
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE 'LISTEN%chime_due%'"
        )
        assert ended == 1  # the loop's connection, cut
        await asyncio.wait_for(wake.wait(), 15)  # reconnected, no NOTIFY sent: woken to look
        wake.clear()
        await admin.execute("SELECT pg_notify('chime_due', '')")
        await asyncio.wait_for(wake.wait(), 10)  # and listening again
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
        await admin.close()


async def test_a_round_slow_to_decide_keeps_its_claim(db, database_url, monkeypatch) -> None:
    """Deciding a round runs between its claim and its mark, where the session is idle in its
    transaction; a condition takes pyjexl milliseconds to seconds to parse (once a process), so
    a round of many distinct ones could take longer than the lease: PostgreSQL ended the
    session, the round was rolled back and claimed again, for ever. The release is now cut at a
    third of the lease and the claim kept alive. Here each condition takes 0.15 s, four of them
    three leases of 0.2 s."""
    clock = SettableClock(START)
    for i in range(4):
        once = schedule(
            f"slow-{i}", trigger={"kind": "once", "at": "2026-10-24T12:00:01Z"}, condition="true"
        )
        await run(db, command("schedule.create", once), clock.now())
    clock.set(START + timedelta(seconds=1))
    evaluate = engine.evaluate_condition

    def slow(*args: Any) -> bool:
        time.sleep(0.15)
        return evaluate(*args)

    monkeypatch.setattr(engine, "evaluate_condition", slow)
    pool = await create_pool(database_url, 4)
    try:
        sink = Collector()
        ticker = make_ticker(pool, clock, sink, ticker_lease_seconds=0.2)
        assert await ticker.tick() == 4
    finally:
        await pool.close()
    assert len(sink.fired) == 4
    assert await db.fetchval("SELECT count(*) FROM actions WHERE state = 'DISPATCHED'") == 4
