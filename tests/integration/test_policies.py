"""Delivery policies on real PostgreSQL under a settable clock and a fixed jitter draw:
ack deadlines, retry backoff, final failure with action.dead, misfire and overlap policies."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from services.acker.acks import apply_ack
from services.ticker.engine import Ticker
from shared.clock import SettableClock
from shared.contracts import ActionAck
from shared.settings import Settings
from tests.integration.helpers import command, run, schedule
from tests.integration.test_ticker import Collector, drive, make_ticker

START = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
TOPICS = Settings().topics
RETRY = {"maxAttempts": 3, "initialBackoff": "PT10S", "multiplier": 2.0, "maxBackoff": "PT10M"}


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


async def create(db: asyncpg.Connection, **fields) -> str:
    result = await run(db, command("schedule.create", schedule(**fields)), START)
    assert result["type"] == "schedule.created", result
    return result["data"]["id"]


async def ack(
    db: asyncpg.Connection, clock: SettableClock, action_id: str, attempt: int, state: str
) -> list[dict]:
    body = ActionAck.model_validate(
        {
            "type": "action.ack",
            "meta": {"tenant": "acct-1"},
            "data": {"actionId": action_id, "attempt": attempt, "state": state},
        }
    )
    async with db.transaction():
        events = await apply_ack(db, body, clock.now(), TOPICS, lambda: 0.0)
    return [orjson.loads(e.value) | {"topic": e.topic} for e in events]


@pytest.mark.parametrize(("rand", "first_backoff"), [(0.0, 10.0), (0.5, 9.0), (0.999, 8.002)])
async def test_deadline_expiry_retries_with_backoff_then_dead(
    db, pool, rand, first_backoff
) -> None:
    await create(
        db,
        trigger={"kind": "once", "at": iso(at(1))},
        policy={"ackTimeout": "PT1M", "retry": RETRY},
    )
    clock, sink = SettableClock(at(1)), Collector()
    ticker = make_ticker(pool, clock, sink)
    ticker.rand = lambda: rand
    await ticker.tick()
    [first] = sink.of_type("action.due")
    assert first["data"]["ackDeadline"] == iso(at(61))
    clock.set(at(61))  # the deadline
    await ticker.tick()
    [timed_out] = [
        e for e in sink.of_type("action.state-changed") if e["data"]["state"] == "TIMED_OUT"
    ]
    retry_at = at(61 + first_backoff)
    assert await ticker.next_wake() == retry_at  # attempt 2 fires exactly after the backoff
    assert timed_out["data"]["attempt"] == 1
    clock.set(retry_at)
    await ticker.tick()
    second = sink.of_type("action.due")[1]
    assert second["data"]["attempt"] == 2
    assert second["meta"]["eventId"] == f"{first['data']['actionId']}:2"
    assert second["data"]["idempotencyKey"] == first["data"]["idempotencyKey"]
    assert second["data"]["dueAt"] == first["data"]["dueAt"]
    # attempt 2 times out; the backoff doubles (20 s, minus the same jitter fraction)
    clock.set(retry_at + timedelta(minutes=1))
    await ticker.tick()
    third_at = clock.now() + timedelta(seconds=20 * (1 - 0.2 * rand))
    assert await ticker.next_wake() == third_at
    clock.set(third_at)
    await ticker.tick()
    assert [e["data"]["attempt"] for e in sink.of_type("action.due")] == [1, 2, 3]
    clock.set(third_at + timedelta(minutes=1))  # the last attempt times out: dead
    await ticker.tick()
    [dead] = sink.of_type("action.dead")
    assert sink.topics[sink.events.index(dead)] == TOPICS.dlq
    assert dead["data"]["attempts"] == 3
    assert [h["state"] for h in dead["data"]["history"]] == [
        "DISPATCHED",
        "TIMED_OUT",
        "DISPATCHED",
        "TIMED_OUT",
        "DISPATCHED",
        "TIMED_OUT",
        "FAILED",
    ]
    assert await db.fetchval("SELECT state FROM actions") == "FAILED"
    assert await ticker.next_wake() is None


async def test_running_renews_the_deadline_and_late_acks_are_stale(db, pool) -> None:
    await create(
        db,
        trigger={"kind": "once", "at": iso(at(1))},
        policy={"ackTimeout": "PT1M", "retry": RETRY},
    )
    clock, sink = SettableClock(at(1)), Collector()
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()
    action_id = sink.fired[0]["data"]["actionId"]
    clock.set(at(50))
    await ack(db, clock, action_id, 1, "RUNNING")  # deadline moves to 50 + 60
    clock.set(at(70))
    await ticker.tick()
    assert sink.of_type("action.state-changed") == []  # not timed out: RUNNING renewed it
    clock.set(at(110))
    await ticker.tick()  # now it times out
    [late] = await ack(db, clock, action_id, 1, "SUCCEEDED")
    assert late["type"] == "action.ack-ignored" and late["data"]["reason"].startswith("STALE")
    # a FAILED ack after the timeout is late too, not a copy of one that ended the attempt
    [late] = await ack(db, clock, action_id, 1, "FAILED")
    assert late["type"] == "action.ack-ignored" and late["data"]["reason"].startswith("STALE")


async def test_failed_ack_retries_then_dead_and_a_copy_announces_again(db, pool) -> None:
    """A FAILED ack retries, the last one sends action.dead. An acker that dies between
    committing a FAILED ack and publishing its events leaves the ack uncommitted on the
    broker: the copy redelivered announces them again, although the occurrence has moved on
    (to its next attempt, or to FAILED for good), and changes nothing."""
    await create(db, trigger={"kind": "once", "at": iso(at(1))}, policy={"retry": RETRY})
    clock, sink = SettableClock(at(1)), Collector()
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()
    action_id = sink.fired[0]["data"]["actionId"]
    [failed] = await ack(db, clock, action_id, 1, "FAILED")
    assert failed["data"]["state"] == "FAILED" and "attempt 2 at" in failed["data"]["reason"]
    history = await db.fetchval("SELECT count(*) FROM action_history")
    clock.set(at(5))
    again, ignored = await ack(db, clock, action_id, 1, "FAILED")
    assert again["meta"]["eventId"] == failed["meta"]["eventId"] == f"{action_id}:1:FAILED"
    assert (again["type"], again["data"]["state"], again["data"]["attempt"]) == (
        "action.state-changed",
        "FAILED",
        1,
    )
    assert again["data"]["reason"] == "FAILED; retried as attempt 2"
    assert ignored["type"] == "action.ack-ignored"
    assert ignored["data"]["reason"] == "DUPLICATE: attempt 1 already FAILED"
    # nothing changed: attempt 2 still fires at its instant, once
    assert await db.fetchval("SELECT count(*) FROM action_history") == history
    assert await ticker.next_wake() == at(11)
    for attempt, fires_at in ((2, at(11)), (3, at(31))):
        clock.set(fires_at)
        await ticker.tick()
        events = await ack(db, clock, action_id, attempt, "FAILED")
    assert [e["type"] for e in events] == ["action.state-changed", "action.dead"]
    state_changed, dead = events
    assert dead["topic"] == TOPICS.dlq
    clock.set(at(40))
    copy = await ack(db, clock, action_id, 3, "FAILED")
    assert [e["type"] for e in copy] == [
        "action.state-changed",
        "action.dead",
        "action.ack-ignored",
    ]
    assert copy[0]["meta"]["eventId"] == state_changed["meta"]["eventId"]
    assert copy[0]["data"]["reason"] == state_changed["data"]["reason"]
    assert copy[1]["topic"] == TOPICS.dlq
    assert copy[1]["meta"]["eventId"] == dead["meta"]["eventId"] == f"{action_id}:dead"
    assert copy[1]["data"] == dead["data"]  # the same history, attempts and reason
    # a copy of the first attempt's, after the last: still only that attempt's event
    assert [e["type"] for e in await ack(db, clock, action_id, 1, "FAILED")] == [
        "action.state-changed",
        "action.ack-ignored",
    ]
    assert await db.fetchval("SELECT state FROM actions") == "FAILED"


async def test_misfire_skip(db, pool) -> None:
    await create(
        db, trigger={"kind": "cron", "expression": "*/10 * * * *"}, policy={"misfire": "SKIP"}
    )
    clock, sink = SettableClock(at(35 * 60)), Collector()  # down from 12:00 to 12:35
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()
    assert sink.fired == []
    [skipped] = sink.of_type("action.state-changed")
    assert (
        skipped["data"]["state"] == "SKIPPED"
        and "policy.misfire is SKIP" in skipped["data"]["reason"]
    )
    assert await ticker.next_wake() == at(40 * 60)
    await drive(ticker, clock, at(40 * 60))
    assert [e["data"]["dueAt"] for e in sink.fired] == ["2026-05-04T12:40:00Z"]
    assert sink.fired[0]["data"]["misfired"] is False


@pytest.mark.parametrize(
    ("window", "fired", "skipped"),
    [
        ("PT1H", ["12:10", "12:20", "12:30", "12:40"], 0),
        ("PT15M", ["12:30", "12:40"], 1),  # 12:10 is older than the window; 12:20 never stored
    ],
)
async def test_misfire_fire_all_within_catchup_window(db, pool, window, fired, skipped) -> None:
    await create(
        db,
        trigger={"kind": "cron", "expression": "*/10 * * * *"},
        policy={"misfire": "FIRE_ALL", "catchupWindow": window, "ackTimeout": "PT1H"},
    )
    clock, sink = SettableClock(at(35 * 60)), Collector()
    await drive(make_ticker(pool, clock, sink), clock, at(40 * 60))
    assert [e["data"]["dueAt"][11:16] for e in sink.fired] == fired
    assert [e["data"]["misfired"] for e in sink.fired] == [True] * (len(fired) - 1) + [False]
    states = [e["data"]["state"] for e in sink.of_type("action.state-changed")]
    assert states == ["SKIPPED"] * skipped


async def test_fire_once_marks_late_occurrences_misfired(db, pool) -> None:
    await create(
        db,
        trigger={"kind": "cron", "expression": "*/10 * * * *"},
        policy={"misfireGrace": "PT1M", "ackTimeout": "PT1H"},
    )
    clock, sink = SettableClock(at(15 * 60)), Collector()  # 12:10 is 5 minutes late
    await drive(make_ticker(pool, clock, sink), clock, at(20 * 60))
    assert [(e["data"]["dueAt"][11:16], e["data"]["misfired"]) for e in sink.fired] == [
        ("12:10", True),
        ("12:20", False),
    ]


async def test_overlap_skip(db, pool) -> None:
    await create(
        db,
        trigger={"kind": "interval", "every": "PT1M", "anchor": iso(START)},
        policy={"overlap": "SKIP", "ackTimeout": "PT1H"},
    )
    clock, sink = SettableClock(at(60)), Collector()
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()  # 12:01 fires and is not acknowledged
    clock.set(at(120))
    await ticker.tick()  # 12:02: the previous one is in flight
    [skipped] = sink.of_type("action.state-changed")
    assert "policy.overlap SKIP" in skipped["data"]["reason"]
    await ack(db, clock, sink.fired[0]["data"]["actionId"], 1, "SUCCEEDED")
    clock.set(at(180))
    await ticker.tick()
    assert [e["data"]["dueAt"][11:16] for e in sink.fired] == ["12:01", "12:03"]


async def test_overlap_buffer_one(db, pool) -> None:
    await create(
        db,
        trigger={"kind": "interval", "every": "PT1M", "anchor": iso(START)},
        policy={"overlap": "BUFFER_ONE", "ackTimeout": "PT1H"},
    )
    clock, sink = SettableClock(at(60)), Collector()
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()  # 12:01 fires
    clock.set(at(120))
    await ticker.tick()  # 12:02 is held behind it
    # held, it waits for the ack, not for the clock: the ticker sleeps until 12:03
    assert await ticker.next_wake() == at(180)
    clock.set(at(180))
    await ticker.tick()  # 12:03: one is already buffered, so it is skipped
    assert [e["data"]["dueAt"][11:16] for e in sink.fired] == ["12:01"]
    [skipped] = sink.of_type("action.state-changed")
    assert "already buffered" in skipped["data"]["reason"]
    clock.set(at(200))
    await ack(db, clock, sink.fired[0]["data"]["actionId"], 1, "SUCCEEDED")
    await ticker.tick()  # the held 12:02 fires now
    assert [e["data"]["dueAt"][11:16] for e in sink.fired] == ["12:01", "12:02"]
    assert sink.fired[1]["data"]["firedAt"] == "2026-05-04T12:03:20Z"
    assert await db.fetchval("SELECT count(*) FROM actions WHERE held") == 0


async def first_one_failed(
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    overlap: str,
    backoff: str,
    actions: list[dict] | None = None,
) -> tuple[SettableClock, Collector, Ticker, str]:
    """Every minute from 12:01 under `overlap`, two attempts each: 12:01 fires and its first
    attempt FAILS at 12:01:10, retried `backoff` later. The clock, the events, the ticker and
    that occurrence's id."""
    await create(
        db,
        trigger={"kind": "interval", "every": "PT1M", "anchor": iso(START)},
        actions=actions or [],
        policy={
            "overlap": overlap,
            "ackTimeout": "PT1H",
            "retry": {**RETRY, "maxAttempts": 2, "initialBackoff": backoff},
        },
    )
    clock, sink = SettableClock(at(60)), Collector()
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()  # 12:01 fires
    first = sink.fired[0]["data"]["actionId"]
    clock.set(at(70))
    await ack(db, clock, first, 1, "FAILED")
    return clock, sink, ticker, first


@pytest.mark.parametrize("overlap", ["SKIP", "BUFFER_ONE"])
async def test_overlap_counts_an_occurrence_waiting_for_its_retry(db, pool, overlap) -> None:
    """An occurrence whose attempt failed has not ended while its retry waits: the next one is
    skipped or held as behind a running one. It fired, and the retry later fired beside it:
    two at once, and under BUFFER_ONE after one was held, a newer one fired before it."""
    clock, sink, ticker, first = await first_one_failed(db, pool, overlap, "PT5M")  # at 12:06:10
    for minute in (2, 3, 4, 5):
        clock.set(at(60 * minute))
        await ticker.tick()
        in_flight = await db.fetchval(
            "SELECT count(*) FROM actions WHERE state IN ('DISPATCHED', 'RUNNING')"
        )
        assert in_flight == 0, f"12:0{minute}"  # the one of 12:01 waits for its retry
    rows = await db.fetch(
        "SELECT to_char(due_at, 'HH24:MI') AS due, state, held FROM actions"
        " WHERE due_at < $1 ORDER BY due_at",
        at(360),
    )
    after = "held" if overlap == "BUFFER_ONE" else "SKIPPED"
    assert [(r["due"], "held" if r["held"] else r["state"]) for r in rows] == [
        ("12:01", "PENDING"),  # its retry
        ("12:02", after),
        ("12:03", "SKIPPED"),
        ("12:04", "SKIPPED"),
        ("12:05", "SKIPPED"),
    ]
    clock.set(at(370))
    await ticker.tick()  # the retry
    await ack(db, clock, first, 2, "SUCCEEDED")
    await ticker.tick()  # the held one fires now, before 12:07
    fired = [(e["data"]["dueAt"][11:16], e["data"]["attempt"]) for e in sink.of_type("action.due")]
    assert fired == [("12:01", 1), ("12:01", 2)] + ([("12:02", 1)] if after == "held" else [])


@pytest.mark.parametrize("resume_from", ["NOW", "PAUSED_AT"])
async def test_a_pause_keeps_an_occurrence_waiting_for_its_retry(db, pool, resume_from) -> None:
    """Pausing drops the series' next occurrence, never fired; one that fired and waits for its
    retry stays, waits out the pause (resumed from NOW too: it is not one that fell due) and
    ends as any other, releasing the one held behind it. It was deleted, history and all, and
    the held one stayed held for ever."""
    x = {"type": "x", "at": iso(at(90))}
    clock, sink, ticker, first = await first_one_failed(db, pool, "BUFFER_ONE", "PT1M", [x])
    # 12:01 is retried at 12:02:10
    clock.set(at(90))
    await ticker.tick()  # x is held behind it
    clock.set(at(100))
    paused = await run(db, command("schedule.pause", {"name": "nightly"}), clock.now())
    assert paused["type"] == "schedule.paused", paused
    states = "SELECT to_char(due_at, 'HH24:MI:SS') AS due, state, attempt, held FROM actions"
    rows = {tuple(r) for r in await db.fetch(states)}
    assert rows == {("12:01:00", "PENDING", 2, False), ("12:01:30", "PENDING", 1, True)}
    clock.set(at(200))
    await ticker.tick()  # paused: nothing fires
    resume = {"name": "nightly", "resumeFrom": resume_from}
    resumed = await run(db, command("schedule.resume", resume), clock.now())
    assert resumed["type"] == "schedule.resumed", resumed
    await ticker.tick()  # the retry, late
    await ack(db, clock, first, 2, "SUCCEEDED")
    await ticker.tick()  # x, released
    fired = [(e["data"]["type"], e["data"]["attempt"]) for e in sink.of_type("action.due")]
    assert fired[:3] == [("billing-run", 1), ("billing-run", 2), ("x", 1)]
    assert await db.fetchval("SELECT count(*) FROM actions WHERE held") == 0


@pytest.mark.parametrize("kind", ["schedule.update", "schedule.replace"])
async def test_a_redefinition_keeps_occurrences_waiting_for_their_retry(db, pool, kind) -> None:
    """An update or a replace redoes what was scheduled and never fired; an occurrence that
    fired and waits for its retry (of the series, or an explicit action) is left to finish, its
    retry fired as due. Both were deleted, history and all."""
    fields = {
        "trigger": {"kind": "interval", "every": "PT1M", "anchor": iso(START)},
        "actions": [{"type": "x", "at": iso(at(60))}],
        "policy": {"ackTimeout": "PT1H", "retry": {**RETRY, "initialBackoff": "PT1M"}},
    }
    await create(db, **fields)
    clock, sink = SettableClock(at(60)), Collector()
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()  # 12:01: the series and x
    clock.set(at(70))
    for event in sink.fired:
        await ack(db, clock, event["data"]["actionId"], 1, "FAILED")  # retried at 12:02:10
    redone = {**fields, "description": "redone", "trigger": {"kind": "daily", "hours": 18}}
    data = (
        {"name": "nightly", "changes": redone} if kind == "schedule.update" else schedule(**redone)
    )
    answer = await run(db, command(kind, data), clock.now())
    assert answer["type"] != "command.rejected", answer
    clock.set(at(130))
    await ticker.tick()
    retried = [(e["data"]["type"], e["data"]["attempt"]) for e in sink.of_type("action.due")[2:]]
    assert sorted(retried) == [("billing-run", 2), ("x", 2)]


@pytest.mark.parametrize("overlap", ["SKIP", "BUFFER_ONE"])
async def test_overlap_holds_across_ticker_replicas(db, pool, overlap) -> None:
    """Two tickers (replicas), each with a round of one occurrence of the schedule: the second
    claims its own while the first's round, which fired the other, is not committed yet. It
    must not decide on what it read then (nothing in flight): its round leaves the schedule's
    occurrence to a claim after the first round's, which sees the first one in flight. Both
    fired, at once."""
    actions = [{"type": "a", "at": iso(at(10))}, {"type": "b", "at": iso(at(11))}]
    await create(db, actions=actions, policy={"overlap": overlap, "ackTimeout": "PT1H"})
    clock, first_sink, second_sink = SettableClock(at(9.7)), Collector(), Collector()
    first = make_ticker(pool, clock, first_sink, ticker_lookahead_ms=500)
    second = make_ticker(pool, clock, second_sink, ticker_lookahead_ms=500)
    publishing, gate = asyncio.Event(), asyncio.Event()

    async def held_back(messages) -> None:
        await first_sink(messages)
        publishing.set()
        await gate.wait()  # its round stays open, "a" fired and not yet marked

    first.publish = held_back
    round_one = asyncio.create_task(first.fire_due())
    try:
        await asyncio.wait_for(publishing.wait(), 10)
        clock.set(at(10.7))  # "b" within the second ticker's lookahead
        await second.fire_due()
    finally:
        gate.set()
        assert await round_one == 1
    assert second.deferred == 1  # "b" left to a claim after the first round
    await second.fire_due()  # "b", claimed again now that the first round is marked
    assert [e["data"]["type"] for e in first_sink.fired + second_sink.fired] == ["a"]
    b = await db.fetchrow("SELECT state, held FROM actions WHERE type = 'b'")
    assert (b["state"], b["held"]) == (
        ("PENDING", True) if overlap == "BUFFER_ONE" else ("SKIPPED", False)
    )


async def fill_lock_table(conn: asyncpg.Connection) -> int:
    """Take session advisory locks until PostgreSQL's lock table has no room for one more (it
    holds max_locks_per_transaction x max_connections, and what shared memory spares):
    how many were taken, keys (7, 0) up."""
    taken, chunk = 0, 8192
    while chunk:
        try:
            taken += await conn.fetchval(
                "SELECT count(*) FROM generate_series($1::int4, $2::int4) AS g"
                " WHERE pg_try_advisory_lock(7, g)",
                taken,
                taken + chunk - 1,
            )
        except asyncpg.OutOfMemoryError:  # the locks it took are kept: session locks
            taken = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7"
                " AND pid = pg_backend_pid()"
            )
            chunk //= 2
    return taken


async def test_a_round_whose_overlap_locks_do_not_fit_leaves_them_to_a_later_round(
    db, pool
) -> None:
    """A round takes a lock on each guarded schedule it decides, and PostgreSQL's lock table
    is shared and bounded: with room for fewer than the round asks for, the statement failed,
    the round with it, and every round after it that claimed the same rows. Now the round's
    guarded schedules are left to a later one (their locks gone with a savepoint), the others
    fire, and once there is room again the guarded ones fire too."""
    for i in range(120):
        await create(
            db, name=f"g{i}", actions=[{"type": "g", "at": iso(at(10))}], policy={"overlap": "SKIP"}
        )
    await create(db, name="free", actions=[{"type": "f", "at": iso(at(10))}])
    clock, sink = SettableClock(at(10)), Collector()
    ticker = make_ticker(pool, clock, sink)
    async with pool.acquire() as filler:
        try:
            taken = await fill_lock_table(filler)
            await filler.execute(  # room for some, not for the round's 120
                "SELECT pg_advisory_unlock(7, g) FROM generate_series(0, 39) AS g"
            )
            assert await ticker.fire_due() == 1
        finally:
            await filler.execute("SELECT pg_advisory_unlock_all()")
    assert taken > 1000 and ticker.lock_table_full == 1 and ticker.deferred == 1
    assert [e["data"]["type"] for e in sink.fired] == ["f"]
    assert await ticker.fire_due() == 120
    assert sorted(e["data"]["type"] for e in sink.fired) == ["f"] + ["g"] * 120


async def test_an_end_between_the_claim_and_the_mark_leaves_nothing_held(db, pool) -> None:
    """BUFFER_ONE: a round claims "b" while "a" is in flight and decides to hold it; "a"'s
    SUCCEEDED ack commits before the round marks. That ack released nothing (nothing was held
    yet): the round must not hold "b" then, or nothing would ever release it. It did, and "b"
    never fired."""
    actions = [{"type": "a", "at": iso(at(10))}, {"type": "b", "at": iso(at(11))}]
    await create(db, actions=actions, policy={"overlap": "BUFFER_ONE", "ackTimeout": "PT1H"})
    clock, sink = SettableClock(at(10)), Collector()
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()  # "a" fires
    mark = ticker._mark

    async def acked_first(conn, claimed) -> None:
        await ack(db, clock, sink.fired[0]["data"]["actionId"], 1, "SUCCEEDED")  # committed
        await mark(conn, claimed)

    clock.set(at(11))
    ticker._mark = acked_first  # the ack comes between this round's claim and its mark
    await ticker.tick()  # "b" decided held, behind "a"
    ticker._mark = mark
    await ticker.tick()
    assert [e["data"]["type"] for e in sink.fired] == ["a", "b"]
    assert await db.fetchval("SELECT count(*) FROM actions WHERE held") == 0
