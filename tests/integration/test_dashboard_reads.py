"""The dashboard's three reads: what they show equals their definition over every stored row,
and what they read stays small however much is stored (each refresh read everything before
migration 0008: seconds per refresh with millions stored, on the ticker's pool)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.dashboard.api import DUE_LOOKAHEAD, HISTORY_LOOKBACK
from shared.persistence.database import connect
from shared.persistence.queries import load_queries
from tests.integration.helpers import (
    add_actions,
    add_schedule,
    pages_read,
    store_future_occurrences,
)

Q = load_queries()
NOW = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)

# The statements before migration 0008, reading every row: the definitions. Schedules with
# nothing to fire fill the list from the newest (by id), listed by name.
SCHEDULES = """
WITH every AS (
    SELECT s.id, s.name,
           (SELECT min(a.fire_at) FROM actions a
            WHERE a.schedule_id = s.id AND a.state = 'PENDING' AND NOT a.held
              AND (s.state <> 'PAUSED' OR a.origin = 'MANUAL')) AS next_fire
    FROM schedules s WHERE s.state <> 'DELETED'
)
SELECT * FROM every WHERE next_fire IS NOT NULL
UNION ALL
(SELECT * FROM every WHERE next_fire IS NULL ORDER BY id DESC LIMIT $1)
ORDER BY next_fire NULLS LAST, name LIMIT $1
"""
TIMELINE = """
SELECT date_trunc('minute', at) AS minute,
       count(*) FILTER (WHERE state = 'DISPATCHED') AS fired,
       count(*) FILTER (WHERE state IN ('SUCCEEDED', 'FAILED')) AS acknowledged
FROM action_history
WHERE at > $1::timestamptz - make_interval(mins => $2) AND at <= $1
GROUP BY 1 HAVING count(*) FILTER (WHERE state IN ('DISPATCHED', 'SUCCEEDED', 'FAILED')) > 0
ORDER BY 1
"""
HISTORY = "INSERT INTO action_history (action_id, attempt, state, at) VALUES ($1, 1, $2, $3)"


def minutes(n: float) -> datetime:
    return NOW + timedelta(minutes=n)


@pytest.mark.parametrize("seed", range(6))
async def test_schedules_firing_soonest_equal_their_definition(
    db: asyncpg.Connection, seed: int
) -> None:
    """Random schedules (some paused or deleted, some with nothing pending) and occurrences
    (free, held, finished; of the series, explicit or manual): the same list as reading every
    schedule, for a short and a long list."""
    rng = random.Random(seed)
    schedules = [
        await add_schedule(db, NOW, rng.choice(["ACTIVE", "ACTIVE", "PAUSED", "DELETED"]))
        for _ in range(rng.randint(1, 30))
    ]
    rows = []
    for _ in range(rng.randint(0, 120)):
        row = {"schedule": rng.choice(schedules), "fire_at": minutes(rng.uniform(-60, 600))}
        row["origin"] = rng.choice(["SERIES", "EXPLICIT", "MANUAL"])  # a paused one fires MANUAL
        kind = rng.choice(["free", "free", "held", "done"])
        if kind == "held":
            row["held"] = True
        elif kind == "done":
            row["state"] = rng.choice(["SUCCEEDED", "DISPATCHED", "CANCELLED"])
        rows.append(row)
    await add_actions(db, rows, NOW)
    for limit in (5, 100):
        listed = await db.fetch(Q.dashboard_schedules, limit, DUE_LOOKAHEAD)
        expected = await db.fetch(SCHEDULES, limit)
        assert [(r["id"], r["next_fire"]) for r in listed] == [
            (r["id"], r["next_fire"]) for r in expected
        ]


async def test_a_short_lookahead_still_lists_true_next_fires(db: asyncpg.Connection) -> None:
    """One schedule owns every early occurrence: the few that the lookahead finds are listed
    first, the newest others fill the list, each with its own true next fire."""
    busy = await add_schedule(db, NOW)
    others = [await add_schedule(db, NOW) for _ in range(8)]
    await add_actions(db, [{"schedule": busy, "fire_at": minutes(i)} for i in range(50)], NOW)
    later = [
        {"schedule": s, "fire_at": minutes(base + i)}
        for i, s in enumerate(others)
        for base in (100, 200)  # two each: the first is the next fire
    ]
    await add_actions(db, later, NOW)
    listed = await db.fetch(Q.dashboard_schedules, 5, 10)
    truth = {r["id"]: r["next_fire"] for r in await db.fetch(SCHEDULES, 100)}
    assert len(listed) == 5
    assert listed[0]["id"] == busy and listed[0]["next_fire"] == minutes(0)
    assert all(r["next_fire"] == truth[r["id"]] for r in listed)
    # The fill: the five newest others (by id, time-ordered for real rows), of which the four
    # firing first (others[i] first at minute 100 + i) follow the one the lookahead found.
    newest = sorted(others, reverse=True)[:5]
    assert [r["id"] for r in listed] == [busy, *sorted(newest, key=others.index)[:4]]


async def test_recent_actions_are_the_last_written(db: asyncpg.Connection) -> None:
    """History written in a random order: the occurrences come newest write first, each once,
    with their current state."""
    rng = random.Random(7)
    sid = await add_schedule(db, NOW)
    ids = await add_actions(db, [{"schedule": sid, "fire_at": minutes(i)} for i in range(40)], NOW)
    order = [rng.choice(ids) for _ in range(120)]
    for action_id in order:
        await db.execute(HISTORY, action_id, "DISPATCHED", NOW)
    await db.execute("UPDATE actions SET state = 'SUCCEEDED' WHERE id = $1", order[-1])
    last = await db.fetchval(Q.history_last_id)
    assert last == 120
    recent = await db.fetch(Q.dashboard_recent_actions, 10, last - HISTORY_LOOKBACK)
    newest_first = list(dict.fromkeys(reversed(order)))
    assert [r["id"] for r in recent] == newest_first[:10]
    assert recent[0]["state"] == "SUCCEEDED"
    older = await db.fetch(Q.dashboard_recent_actions, 10, last - 3)
    assert [r["id"] for r in older] == list(dict.fromkeys(reversed(order[-3:])))


async def test_the_timeline_counts_what_every_writer_wrote(
    db: asyncpg.Connection, service_database_url: str
) -> None:
    """History written by several connections as the services' role (several writers, one
    statement or many rows each): per minute, the same counts as counting the history."""
    rng = random.Random(3)
    writers = [await connect(service_database_url) for _ in range(4)]
    try:
        for _ in range(60):
            conn = rng.choice(writers)
            rows = [
                (
                    uuid.uuid4(),
                    rng.choice(["DISPATCHED", "SUCCEEDED", "FAILED", "RUNNING", "SKIPPED"]),
                    minutes(rng.uniform(-90, 0)),
                )
                for _ in range(rng.randint(1, 30))
            ]
            if rng.random() < 0.5:
                await conn.executemany(HISTORY, rows)
            else:
                await conn.execute(
                    "INSERT INTO action_history (action_id, attempt, state, at)"
                    " SELECT a, 1, s, t FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])"
                    " AS h(a, s, t)",
                    *map(list, zip(*rows, strict=True)),
                )
    finally:
        for conn in writers:
            await conn.close()
    timeline = await db.fetch(Q.dashboard_timeline, NOW, 60)
    expected = await db.fetch(TIMELINE, NOW, 60)
    assert len(timeline) >= 50
    # Minutes whole in the window: the one cut at its start is left out by the counters.
    assert [tuple(r) for r in timeline] == [
        tuple(r) for r in expected if r["minute"] > minutes(-60)
    ]


async def test_the_timeline_is_a_ring_of_one_day(db: asyncpg.Connection) -> None:
    """A minute a day later takes its slot over; a count more than a day late is dropped."""
    sid = uuid.uuid4()
    await db.execute(HISTORY, sid, "DISPATCHED", minutes(0))
    await db.execute(HISTORY, sid, "DISPATCHED", minutes(0))
    await db.execute(HISTORY, sid, "FAILED", minutes(0))
    day_later = NOW + timedelta(days=1)
    await db.execute(HISTORY, sid, "SUCCEEDED", day_later)
    await db.execute(HISTORY, sid, "DISPATCHED", minutes(0))  # late: its slot is taken
    assert await db.fetchval("SELECT count(*) FROM activity_minutes") == 1
    assert [tuple(r)[1:] for r in await db.fetch(Q.dashboard_timeline, day_later, 60)] == [(0, 1)]
    assert await db.fetch(Q.dashboard_timeline, NOW, 60) == []


async def test_each_read_stays_small_with_many_rows_stored(db: asyncpg.Connection) -> None:
    """100,000 schedules of five future occurrences each, 100,000 history rows: each read takes
    about what it shows. Before migration 0008 they read every schedule and its occurrences,
    every finished occurrence and the whole last hour of history."""
    await store_future_occurrences(db, NOW, 100_000, 5, "EXPLICIT")
    await db.execute(
        "INSERT INTO action_history (action_id, attempt, state, at)"
        " SELECT a.id, 1, 'DISPATCHED', $1::timestamptz - random() * interval '58 minutes'"
        " FROM (SELECT id FROM actions LIMIT 20000) a, generate_series(1, 5) AS n",
        NOW,
    )
    for table in ("schedules", "actions", "action_history"):
        await db.execute(f"VACUUM ANALYZE {table}")
    last = await db.fetchval(Q.history_last_id)
    # The schedules of the occurrences looked ahead: PostgreSQL reads them one by one (about four
    # pages each) or, when that costs less, the whole table (here 3,125 pages: 100,000 rows at
    # fillfactor 50, migration 0014). What it read before 0008 was every schedule and every
    # occurrence: over 20,000 pages.
    budgets = {
        "schedules": (Q.dashboard_schedules, (100, DUE_LOOKAHEAD), 5_000),
        "recent": (Q.dashboard_recent_actions, (50, last - HISTORY_LOOKBACK), 1_000),
        "timeline": (Q.dashboard_timeline, (NOW, 60), 100),
    }
    for name, (statement, args, budget) in budgets.items():
        pages = await pages_read(db, statement, *args)
        assert pages < budget, f"the dashboard's {name} read {pages} pages"
    assert len(await db.fetch(Q.dashboard_schedules, 100, DUE_LOOKAHEAD)) == 100
    assert len(await db.fetch(Q.dashboard_recent_actions, 50, last - HISTORY_LOOKBACK)) == 50
    assert sum(r["fired"] for r in await db.fetch(Q.dashboard_timeline, NOW, 60)) == 100_000
