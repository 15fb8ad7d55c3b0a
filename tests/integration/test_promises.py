"""What a schedule's view promises (`nextFireTimes`, `scheduledFor`) is what the ticker fires:
generated definitions, created and then driven through their fires under a settable clock.

The view is computed from the compiled definition at create and from the stored rows at every
`schedule.get` (the pending occurrences and the series' position); the ticker decides each next
occurrence from the stored definition when one fires. The three must agree at every step."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.acker.acks import apply_acks
from shared.clock import SettableClock
from shared.contracts import ActionAck, format_instant
from tests.integration.helpers import command, generated, run, schedule
from tests.integration.test_ticker import TOPICS, Collector, make_ticker

ZONES = [
    "Europe/London",
    "Europe/Dublin",  # DST written as negative in the IANA database
    "America/New_York",
    "America/St_Johns",
    "America/Santiago",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Pacific/Chatham",
    "Asia/Kathmandu",
    "UTC",
]
DST = ["AUTO", "ONCE_EARLIER", "ONCE_LATER", "REAL_TIME"]
FIRES = 12  # occurrences driven per schedule at most
HORIZON = timedelta(days=800)  # and no further than this from the creation


def _selector(rng: random.Random, values: list[str], low: int, high: int) -> dict[str, Any]:
    if rng.random() < 0.5:
        return {"type": "LIST", "values": rng.sample(values, rng.randint(1, min(3, len(values))))}
    a, b = sorted(rng.sample(range(low, high + 1), 2))
    selector: dict[str, Any] = {"type": "RANGE", "values": [str(a), str(b)]}
    if rng.random() < 0.5:
        selector["interval"] = rng.randint(1, 5)
    return selector


def _trigger(rng: random.Random, created: datetime) -> dict[str, Any] | None:
    kind = rng.choice(["daily", "unix", "quartz", "interval", "calendar", "once", None])
    hours = [str(h) for h in (0, 1, 2, 3, 12, 23)]
    if kind == "daily":
        return {"kind": "daily", "hours": rng.randint(0, 23), "minutes": rng.choice([0, 30, 59])}
    if kind == "unix":
        fields = [
            rng.choice(["0", "30", "*/20", "15,45", "59"]),
            rng.choice(["*", "1", "2", "1-3", "*/6", "0,12", "2,3"]),
            rng.choice(["*", "*", "1", "15", "31", "29"]),
            rng.choice(["*", "*", "3", "10,11", "2"]),
            rng.choice(["*", "*", "1-5", "0", "6"]),
        ]
        return {"kind": "cron", "expression": " ".join(fields)}
    if kind == "quartz":
        at = f"{rng.choice(['0', '30'])} {rng.choice(['0', '30', '*/15'])} {rng.choice(hours)}"
        if rng.random() < 0.5:
            days = rng.choice(["L", "L-1", "L-3", "15W", "1W", "LW", "1,15"])
            return {"kind": "cron", "expression": f"{at} {days} * ?"}
        days = rng.choice(["MON", "6#2", "5L", "2-6", "1#5", "SAT,SUN"])
        return {"kind": "cron", "expression": f"{at} ? * {days}"}
    if kind == "interval":
        trigger: dict[str, Any] = {
            "kind": "interval",
            "every": rng.choice(["PT45M", "PT1H", "PT7M", "P1D", "PT90M", "PT25H"]),
        }
        if rng.random() < 0.3:
            trigger["anchor"] = format_instant(created + timedelta(minutes=rng.randint(-600, 600)))
        return trigger
    if kind == "calendar":
        cadence = rng.choice(["DAILY", "WEEKLY", "MONTHLY", "ANNUALLY", "CALENDAR"])
        trigger = {
            "kind": "calendar",
            "type": cadence,
            "hours": _selector(rng, hours, 0, 23),
        }
        if rng.random() < 0.5:
            trigger["minutes"] = _selector(rng, ["0", "15", "30", "59"], 0, 59)
        if cadence == "WEEKLY":
            trigger["days"] = _selector(rng, [str(d) for d in range(1, 8)], 1, 7)
        elif cadence == "MONTHLY":
            days = rng.sample(["1", "15", "31", "L", "L-1"], 2)
            trigger["days"] = {"type": "LIST", "values": days}
        elif cadence == "ANNUALLY":
            trigger["months"] = _selector(rng, ["2", "3", "10", "11", "12"], 1, 12)
            trigger["days"] = {"type": "LIST", "values": rng.sample(["1", "29", "L", "L-1"], 2)}
        elif cadence == "CALENDAR":
            days = {(created + timedelta(days=rng.randint(0, 400))).date() for _ in range(3)}
            trigger["days"] = {"type": "LIST", "values": sorted(d.isoformat() for d in days)}
        return trigger
    if kind == "once":
        return {"kind": "once", "at": format_instant(created + timedelta(hours=rng.randint(1, 99)))}
    return None


def _definition(rng: random.Random, created: datetime, zone: str) -> dict[str, Any]:
    trigger = _trigger(rng, created)
    policy = {"dst": rng.choice(DST), "misfire": rng.choice(["FIRE_ONCE", "FIRE_ALL", "SKIP"])}
    if rng.random() < 0.3:
        policy["catchupWindow"] = rng.choice(["PT1H", "PT6H", "P3D"])
    data = schedule("promised", timezone=zone, policy=policy)
    if trigger is not None:
        data["trigger"] = trigger
    starts = created
    if rng.random() < 0.3:
        starts = created + timedelta(hours=rng.randint(-5, 200))
        data["startsAt"] = format_instant(starts)
    ends = max(starts, created) + timedelta(days=7)
    if rng.random() < 0.3:
        ends = max(starts, created) + timedelta(hours=rng.randint(1, 2000))
        data["endsAt"] = format_instant(ends)
    if rng.random() < 0.3:
        data["maxOccurrences"] = rng.randint(1, 8)
    span = int((ends - max(starts, created)).total_seconds() // 60)
    data["actions"] = [  # inside the window (else refused)
        {"type": f"x{i}", "at": format_instant(max(starts, created) + timedelta(minutes=m))}
        for i, m in enumerate(
            rng.randint(1, span) for _ in range(rng.randint(1 if trigger is None else 0, 2))
        )
    ]
    return data


def _created(rng: random.Random) -> datetime:
    """An instant in 2026-2028, usually in a month where some zone changes its clocks."""
    month = rng.choice([3, 4, 9, 10, 11]) if rng.random() < 0.7 else rng.randint(1, 12)
    day = rng.randint(20, 31) if month in (3, 10) else rng.randint(1, 28)
    day = min(day, 30 if month in (4, 9, 11) else 31)
    start = datetime(rng.randint(2026, 2028), month, day, tzinfo=UTC)
    return start + timedelta(minutes=rng.randint(0, 24 * 60 - 1), seconds=rng.choice([0, 17]))


async def _view(db: asyncpg.Connection, now: datetime) -> dict[str, Any]:
    got = await run(db, command("schedule.get", {"name": "promised"}), now)
    assert got["type"] == "schedule.fetched", got
    return got["data"]


async def test_a_series_that_ran_out_while_late_promises_nothing_more(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """Every minute of one hour, and a STOP days later: the ticker was down past that hour,
    so its late first occurrence fires as the catch-up and has no successor (the trigger's
    next time is a year on, past endsAt). The schedule waits for its STOP; its view promised
    the rest of that hour (past, never to fire) until the STOP fired."""
    created = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    data = schedule(
        "promised",
        trigger={"kind": "cron", "expression": "* 12 24 10 *"},
        endsAt="2026-10-30T00:00:00Z",
        actions=[{"type": "STOP", "at": "2026-10-29T00:00:00Z"}],
    )
    result = await run(db, command("schedule.create", data), created)
    assert result["data"]["nextFireTimes"][:2] == ["2026-10-24T12:01:00Z", "2026-10-24T12:02:00Z"]
    clock = SettableClock(datetime(2026, 10, 25, 14, 0, tzinfo=UTC))
    sink = Collector()
    await make_ticker(pool, clock, sink).tick()
    assert [e["data"]["dueAt"] for e in sink.fired] == ["2026-10-24T12:01:00Z"]  # the catch-up
    view = await _view(db, clock.now())
    assert view["state"] == "ACTIVE"
    assert view["nextFireTimes"] == ["2026-10-29T00:00:00Z"]  # the STOP only
    assert view["scheduledFor"] == "2026-10-29T00:00:00Z"


@pytest.mark.parametrize("state", ["PAUSED", "COMPLETED"])
async def test_a_manual_trigger_is_promised_whatever_the_schedules_state(
    db: asyncpg.Connection, pool: asyncpg.Pool, state: str
) -> None:
    """`schedule.trigger` fires while the schedule is paused, and after it completed: its
    result and `schedule.get` promise that occurrence (they promised nothing)."""
    created = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    once = schedule("promised", trigger={"kind": "once", "at": "2026-10-24T12:01:00Z"})
    await run(db, command("schedule.create", once), created)
    clock = SettableClock(created + timedelta(minutes=1))
    sink = Collector()
    ticker = make_ticker(pool, clock, sink)
    if state == "COMPLETED":
        assert await ticker.tick() == 1  # its one occurrence
    else:
        await run(db, command("schedule.pause", {"name": "promised"}), clock.now())
    clock.set(created + timedelta(minutes=5))
    triggered = await run(db, command("schedule.trigger", {"name": "promised"}), clock.now())
    now = "2026-10-24T12:05:00Z"
    assert (triggered["data"]["state"], triggered["data"]["nextFireTimes"]) == (state, [now])
    assert (await _view(db, clock.now()))["scheduledFor"] == now
    await ticker.tick()
    assert [e["data"]["dueAt"] for e in sink.fired][-1] == now
    after = await _view(db, clock.now())
    assert (after["state"], after["nextFireTimes"], after["scheduledFor"]) == (state, [], None)


async def test_a_completed_schedule_promises_the_retry_it_still_owes(
    db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    """A schedule completes when its last occurrence fires; if that one fails, its retry still
    fires, and the view says when."""
    created = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    retry = {"maxAttempts": 2, "initialBackoff": "PT1M"}
    once = schedule(
        "promised",
        trigger={"kind": "once", "at": "2026-10-24T12:01:00Z"},
        policy={"retry": retry},
    )
    await run(db, command("schedule.create", once), created)
    clock = SettableClock(created + timedelta(minutes=1))
    sink = Collector()
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()
    ack = {"actionId": sink.fired[0]["data"]["actionId"], "attempt": 1, "state": "FAILED"}
    failed = ActionAck.model_validate(
        {"type": "action.ack", "meta": {"tenant": "acct-1"}, "data": ack}
    )
    async with db.transaction():
        await apply_acks(db, [failed], clock.now(), TOPICS, lambda: 0.0)
    view = await _view(db, clock.now())
    assert (view["state"], view["nextFireTimes"]) == ("COMPLETED", ["2026-10-24T12:02:00Z"])
    clock.set(created + timedelta(minutes=2))
    await ticker.tick()
    assert [e["data"]["attempt"] for e in sink.of_type("action.due")] == [1, 2]


async def _change(
    db: asyncpg.Connection, rng: random.Random, clock: SettableClock, manual: set[str]
) -> dict[str, Any] | None:
    """A command on the schedule: an update of its window, count or trigger, a pause (or
    `enabled: false`) for a while and a resume (or `enabled: true`), a replace with another
    definition, or a manual trigger. Its result; None when what it promises may be missed (a
    resume that catches up late)."""
    now = clock.now()
    kind = rng.choice(["update", "update", "pause", "trigger", "replace", "enabled"])
    if kind == "replace":  # a new definition under the same name
        data = _definition(rng, now, rng.choice(ZONES))
        return await run(db, command("schedule.replace", data), now)
    if kind == "enabled":  # off for a while, then on again (an update each)
        off = {"name": "promised", "changes": {"enabled": False}}
        disabled = await run(db, command("schedule.update", off), now)
        if disabled["type"] != "schedule.updated":
            return disabled
        clock.set(now + timedelta(minutes=rng.choice([1, 30, 300, 3000])))
        on = {"name": "promised", "changes": {"enabled": True}}
        return await run(db, command("schedule.update", on), clock.now())
    if kind == "trigger":
        manual.add(format_instant(now))
        return await run(db, command("schedule.trigger", {"name": "promised"}), now)
    if kind == "pause":
        paused = await run(db, command("schedule.pause", {"name": "promised"}), now)
        if paused["type"] != "schedule.paused":
            return paused
        clock.set(now + timedelta(minutes=rng.choice([1, 30, 300, 3000])))
        resume_from = rng.choice(["NOW", "PAUSED_AT"])
        data = {"name": "promised", "resumeFrom": resume_from}
        resumed = await run(db, command("schedule.resume", data), clock.now())
        return resumed if resume_from == "NOW" else None
    changes = rng.choice(
        [
            {"maxOccurrences": rng.randint(1, 10)},
            {"maxOccurrences": None},
            {"endsAt": format_instant(now + timedelta(hours=rng.randint(1, 500)))},
            {"endsAt": None},
            {"trigger": _trigger(rng, now)},
            {"policy": {"dst": rng.choice(DST)}},
        ]
    )
    return await run(db, command("schedule.update", {"name": "promised", "changes": changes}), now)


@generated(100)
@given(st.integers(0, 2**32))
async def test_generated_schedules_fire_what_their_views_promise(
    db: asyncpg.Connection, pool: asyncpg.Pool, seed: int
) -> None:
    """A schedule of a generated definition (any trigger kind, zones with odd DST, windows,
    maxOccurrences, explicit actions) fires, acknowledged at once, exactly the times its create
    result promised, and before each fire `schedule.get` promises the ones that follow; also
    after updates, pauses and resumes and manual triggers on the way (each answered with a view
    that promises what follows), and after the ticker was down."""
    await db.execute("TRUNCATE schedules, actions, action_history, processed_commands")
    rng = random.Random(seed)
    created = _created(rng)
    data = _definition(rng, created, rng.choice(ZONES))
    clock = SettableClock(created)
    result = await run(db, command("schedule.create", data), created)
    if result["type"] != "schedule.created":  # a window or a date that never comes: refused
        assert [e["code"] for e in result["errors"]] == ["VALIDATION"], result
        return
    promises = [(0, result["data"])]  # (fires before it, the view)
    sink = Collector()
    ticker = make_ticker(pool, clock, sink)
    manual: set[str] = set()  # due instants of manual triggers (out of the series' order)
    while len(sink.fired) < FIRES:
        if rng.random() < 0.15:  # a command on the way
            changed = await _change(db, rng, clock, manual)
            if changed is None:  # its result promised nothing checkable
                promises = []
            elif changed["type"] not in ("command.rejected", "schedule.paused"):
                promises = [(len(sink.fired), changed["data"])]
        nxt = await ticker.next_wake()
        if nxt is None or nxt > created + HORIZON:
            break
        if rng.random() < 0.15:  # the ticker was down: it finds this one (and more) late
            clock.set(max(nxt, clock.now()) + timedelta(minutes=rng.choice([2, 50, 700, 3000])))
            promises = []  # what they promised was missed; what follows is promised anew
        else:
            clock.set(max(nxt, clock.now()))
        before = len(sink.fired)
        await ticker.tick()
        acks = [
            ActionAck.model_validate(
                {
                    "type": "action.ack",
                    "meta": {"tenant": "acct-1"},
                    "data": {"actionId": e["data"]["actionId"], "attempt": 1, "state": "SUCCEEDED"},
                }
            )
            for e in sink.fired[before:]
        ]
        async with db.transaction():
            await apply_acks(db, acks, clock.now(), TOPICS, lambda: 0.0)
        promises.append((len(sink.fired), await _view(db, clock.now())))
    fired = [e["data"]["dueAt"] for e in sink.fired]
    for kind in {e["data"]["type"] for e in sink.fired}:  # each series and action in order
        theirs = [
            e["data"]["dueAt"]
            for e in sink.fired
            if e["data"]["type"] == kind and e["data"]["dueAt"] not in manual
        ]
        assert theirs == sorted(theirs), (data, kind)
    assert all(e["data"]["firedAt"] >= e["data"]["dueAt"] for e in sink.fired), data
    ended = (await _view(db, clock.now()))["state"] == "COMPLETED"
    for count, view in promises:
        upcoming = sorted(set(fired[count:]))  # instants: two occurrences may share one
        if not ended and len(upcoming) < 5:
            continue  # what follows was not driven
        assert view["nextFireTimes"] == upcoming[:5], (data, count, fired)
        assert view["scheduledFor"] == (upcoming[0] if upcoming else None), (data, count)
