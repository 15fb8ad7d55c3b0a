"""Overlap policies against generated workers: each `action.due` acknowledged after a while as
SUCCEEDED or FAILED (some RUNNING first), or never (its deadline passes), the acks applied one
by one or in bulk, two tickers (replicas, sometimes ticking at once) driven under a settable
clock, commands on the way. Under SKIP
and BUFFER_ONE, at every instant at most one occurrence of the schedule (manual triggers aside)
has not ended, at most one is held, and only behind one that has not ended; nothing due is left
behind by a tick; each fired attempt follows the previous one's end."""

from __future__ import annotations

import asyncio
import heapq
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from services.acker.acks import apply_ack, apply_acks
from shared.clock import SettableClock
from shared.contracts import ActionAck, format_instant
from tests.integration.helpers import command, generated, run, schedule
from tests.integration.test_ticker import TOPICS, Collector, make_ticker

START = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
SPAN = timedelta(minutes=40)  # simulated time driven per example

# Occurrences not ended (a manual trigger fires whatever else runs: counted apart), held, and
# left behind: stored before now ($1), due before it, free to fire, and not fired by the tick
# that just ran (one its expiry released at now, or a late successor it stored, FIRE_ALL's
# catch-up, is fired by the next).
NOT_ENDED = """
SELECT count(*) FILTER (WHERE a.origin <> 'MANUAL'
                          AND (a.state IN ('DISPATCHED', 'RUNNING')
                               OR (a.state = 'PENDING' AND a.attempt > 1))) AS not_ended,
       count(*) FILTER (WHERE a.state IN ('DISPATCHED', 'RUNNING')
                          OR (a.state = 'PENDING' AND a.attempt > 1)) AS not_ended_at_all,
       count(*) FILTER (WHERE a.held AND a.state = 'PENDING') AS held,
       count(*) FILTER (WHERE a.state = 'PENDING' AND NOT a.held AND a.fire_at < $1
                          AND a.created_at < $1
                          AND (s.state <> 'PAUSED' OR a.origin = 'MANUAL')) AS left_behind
FROM actions a JOIN schedules s ON s.id = a.schedule_id
"""


def _definition(rng: random.Random) -> dict[str, Any]:
    retry = {
        "maxAttempts": rng.randint(1, 3),
        "initialBackoff": rng.choice(["PT20S", "PT1M", "PT3M"]),
        "multiplier": rng.choice([1.0, 2.0]),
        "maxBackoff": "PT10M",
    }
    policy = {
        "overlap": rng.choice(["SKIP", "BUFFER_ONE"]),
        "ackTimeout": rng.choice(["PT1M", "PT2M", "PT5M"]),
        "retry": retry,
        "misfire": rng.choice(["FIRE_ONCE", "FIRE_ALL", "SKIP"]),
    }
    explicit = [
        {"type": f"x{i}", "at": format_instant(START + timedelta(seconds=rng.randint(30, 1500)))}
        for i in range(rng.randint(0, 2))
    ]
    trigger = {"kind": "interval", "every": rng.choice(["PT1M", "PT2M", "PT3M"])}
    return schedule("worked", trigger=trigger, actions=explicit, policy=policy)


def _answers(rng: random.Random, due: datetime) -> list[tuple[datetime, str]]:
    """What a worker sends about one attempt, and when: nothing (its deadline passes), or a
    final state, some after a RUNNING."""
    shape = rng.choice(["silent", "succeeded", "failed", "running", "running"])
    if shape == "silent":
        return []
    first = due + timedelta(seconds=rng.randint(1, 200))
    if shape != "running":
        return [(first, shape.upper())]
    end = first + timedelta(seconds=rng.randint(1, 400))
    return [(first, "RUNNING"), (end, rng.choice(["SUCCEEDED", "FAILED"]))]


def _ack(action_id: str, attempt: int, state: str) -> ActionAck:
    return ActionAck.model_validate(
        {
            "type": "action.ack",
            "meta": {"tenant": "acct-1"},
            "data": {"actionId": action_id, "attempt": attempt, "state": state},
        }
    )


def _commands(rng: random.Random, data: dict[str, Any]) -> list[tuple[datetime, tuple]]:
    """Commands on the way: a pause and its resume, manual triggers, updates of the overlap
    policy (between the two that guard), of the retries or of the trigger."""
    out: list[tuple[datetime, tuple]] = []
    ref = {"name": "worked"}
    if rng.random() < 0.4:
        paused = START + timedelta(seconds=rng.randint(60, 1800))
        resumed = paused + timedelta(seconds=rng.randint(30, 600))
        resume = {**ref, "resumeFrom": rng.choice(["NOW", "PAUSED_AT"])}
        out += [(paused, ("schedule.pause", ref)), (resumed, ("schedule.resume", resume))]
    for _ in range(rng.randint(0, 2)):
        at = START + timedelta(seconds=rng.randint(60, 2000))
        out.append((at, ("schedule.trigger", ref)))
    for _ in range(rng.randint(0, 2)):
        changes = rng.choice(
            [
                {"policy": {"overlap": rng.choice(["SKIP", "BUFFER_ONE"])}},
                {"policy": {"retry": {"maxAttempts": rng.randint(1, 3)}}},
                {"trigger": {"kind": "interval", "every": rng.choice(["PT1M", "PT2M"])}},
            ]
        )
        at = START + timedelta(seconds=rng.randint(60, 2000))
        out.append((at, ("schedule.update", {**ref, "changes": changes})))
    return out


async def _apply(
    db: asyncpg.Connection, acks: list[ActionAck], now: datetime, rng: random.Random
) -> None:
    async with db.transaction():
        if rng.random() < 0.5:
            await apply_acks(db, acks, now, TOPICS, rng.random)
        else:
            for a in acks:
                await apply_ack(db, a, now, TOPICS, rng.random)


@generated(40)
@given(st.integers(0, 2**32))
async def test_generated_workers_never_see_two_occurrences_at_once(
    db: asyncpg.Connection, pool: asyncpg.Pool, seed: int
) -> None:
    await db.execute("TRUNCATE schedules, actions, action_history, processed_commands")
    rng = random.Random(seed)
    data = _definition(rng)
    created = await run(db, command("schedule.create", data), START)
    assert created["type"] == "schedule.created", created
    clock, sink = SettableClock(START), Collector()
    ticker = make_ticker(pool, clock, sink)
    replica = make_ticker(pool, clock, sink)  # a second ticker, sometimes ticking at once
    # (at, order, what): an ack (action, attempt, state) or a command (type, data)
    coming: list[tuple[datetime, float, tuple[Any, ...]]] = []
    for at, what in _commands(rng, data):
        heapq.heappush(coming, (at, rng.random(), what))
    seen = 0
    ended: dict[tuple[str, int], datetime] = {}  # (action, attempt) -> when it ended
    while clock.now() < START + SPAN:
        wake = await ticker.next_wake()
        nxt = min([t for t in (wake, coming[0][0] if coming else None) if t is not None])
        if rng.random() < 0.05:  # the ticker was down meanwhile
            nxt += timedelta(minutes=rng.randint(1, 6))
        clock.set(max(nxt, clock.now()))
        due_acks = []
        while coming and coming[0][0] <= clock.now():
            _, _, what = heapq.heappop(coming)
            if what[0] == "ack":
                due_acks.append(_ack(*what[1:]))
                continue
            if due_acks:  # those before it first
                await _apply(db, due_acks, clock.now(), rng)
                due_acks = []
            result = await run(db, command(what[0], what[1]), clock.now())
            assert result["type"] != "command.rejected", (what, result)
        if due_acks:
            await _apply(db, due_acks, clock.now(), rng)
        together = rng.random() < 0.3
        if together:  # both replicas claim, decide and expire at the same time
            await asyncio.gather(ticker.tick(), replica.tick())
        else:
            await rng.choice([ticker, replica]).tick()
        for event in sink.events[seen:]:
            d = event["data"]
            if event["type"] == "action.due":
                for at, state in _answers(rng, clock.now()):
                    what = ("ack", d["actionId"], d["attempt"], state)
                    heapq.heappush(coming, (at, rng.random(), what))
        seen = len(sink.events)
        counts = await db.fetchrow(NOT_ENDED, clock.now())
        state = (data["policy"], clock.now())
        assert counts["not_ended"] <= 1, state
        assert counts["held"] <= 1, state
        assert counts["held"] == 0 or counts["not_ended_at_all"] >= 1, state
        assert together or counts["left_behind"] == 0, state  # one may leave it to the other
    # each attempt after the first fired after the one before it ended (FAILED or TIMED_OUT)
    history = await db.fetch("SELECT action_id, attempt, state, at FROM action_history")
    for h in history:
        if h["state"] in ("FAILED", "TIMED_OUT"):
            ended.setdefault((str(h["action_id"]), h["attempt"]), h["at"])
    for event in sink.of_type("action.due"):
        d = event["data"]
        if d["attempt"] > 1:
            before = ended[(d["actionId"], d["attempt"] - 1)]
            assert format_instant(before) <= d["firedAt"], (d, before)
