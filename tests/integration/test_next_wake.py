"""The ticker's next wake-up time: what the documented formula says, read from indexes.

`next_wake` is asked whenever a round finds nothing due; it must not read every stored
occurrence (the soak found it scanning 8 million rows for 3 s per call)."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shared.persistence.database import connect
from shared.persistence.queries import load_queries
from tests.integration.helpers import (
    add_actions,
    add_schedule,
    pages_read,
    store_future_occurrences,
)

Q = load_queries()
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

# The definition, as one scan of every pending occurrence (the statement before the index
# was used): the reference the indexed statement must equal. $1: the rows other rounds hold.
REFERENCE = """
SELECT least(
    (SELECT min(a.fire_at)
     FROM actions a JOIN schedules s ON s.id = a.schedule_id
     WHERE a.state = 'PENDING' AND NOT a.held AND (s.state <> 'PAUSED' OR a.origin = 'MANUAL')
       AND a.id <> ALL($1::uuid[])),
    (SELECT min(ack_deadline) FROM actions WHERE state IN ('DISPATCHED', 'RUNNING'))
)
"""


def minutes(n: float) -> datetime:
    return NOW + timedelta(minutes=n)


@asynccontextmanager
async def held(database_url: str, ids: list[uuid.UUID]) -> AsyncIterator[None]:
    """These rows held by another round (locked in an open transaction), as a claim holds them."""
    other = await connect(database_url)
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM actions WHERE id = ANY($1) FOR UPDATE", ids)
            yield
    finally:
        await other.close()


@pytest.mark.parametrize("seed", range(12))
async def test_next_wake_equals_its_definition(
    db: asyncpg.Connection, database_url: str, seed: int
) -> None:
    """Random mixes of free, claimed (held by another round), held back (overlap), paused,
    manual-on-paused and in-flight occurrences: the same answer as the full scan."""
    rng = random.Random(seed)
    active = [await add_schedule(db, NOW) for _ in range(3)]
    paused = [await add_schedule(db, NOW, "PAUSED") for _ in range(2)]
    rows, kinds = [], []
    for _ in range(rng.randint(0, 40)):
        kind = rng.choice(["free", "claimed", "held", "paused", "manual", "flight", "done"])
        fire = minutes(rng.uniform(-30, 30))
        row = {"schedule": rng.choice(active), "fire_at": fire}
        if kind == "held":
            row["held"] = True
        elif kind == "paused":
            row["schedule"] = rng.choice(paused)
        elif kind == "manual":
            row |= {"schedule": rng.choice(paused), "origin": "MANUAL"}
        elif kind == "flight":
            row |= {"state": rng.choice(["DISPATCHED", "RUNNING"])}
            row["ack_deadline"] = minutes(rng.uniform(-10, 40))
        elif kind == "done":
            row["state"] = "SUCCEEDED"
        rows.append(row)
        kinds.append(kind)
    ids = await add_actions(db, rows, NOW)
    claimed = [i for i, kind in zip(ids, kinds, strict=True) if kind == "claimed"]
    async with held(database_url, claimed):
        assert await db.fetchval(Q.next_wake) == await db.fetchval(REFERENCE, claimed)


async def test_next_wake_is_the_first_ack_deadline_when_it_comes_before_any_fire(
    db: asyncpg.Connection,
) -> None:
    """Attempts in flight wake the ticker at the earliest of their deadlines (to time them out),
    not the latest, when that comes before the next occurrence to fire."""
    sid = await add_schedule(db, NOW)
    flight = [("RUNNING", minutes(20)), ("DISPATCHED", minutes(5)), ("RUNNING", minutes(12))]
    rows = [
        {"schedule": sid, "fire_at": minutes(-1), "state": state, "ack_deadline": deadline}
        for state, deadline in flight
    ]
    await add_actions(db, [*rows, {"schedule": sid, "fire_at": minutes(30)}], NOW)
    assert await db.fetchval(Q.next_wake) == minutes(5)


async def test_next_wake_reads_the_index_not_every_pending_row(
    db: asyncpg.Connection, database_url: str
) -> None:
    """50,000 future occurrences and a few due ones another round holds: a handful of pages
    read, not a scan."""
    sid = await add_schedule(db, NOW)
    await db.execute(
        "INSERT INTO actions (id, schedule_id, tenant, origin, type, due_at, fire_at, state,"
        " created_at, updated_at)"
        " SELECT gen_random_uuid(), $1, 't', 'EXPLICIT', 'x', t, t, 'PENDING', $2, $2"
        " FROM generate_series($2::timestamptz + interval '1 hour',"
        " $2::timestamptz + interval '50000 minutes', interval '1 minute') AS t",
        sid,
        NOW,
    )
    due = await add_actions(db, [{"schedule": sid, "fire_at": minutes(-1)}] * 5, NOW)
    await db.execute("ANALYZE actions")
    async with held(database_url, due):
        pages = await pages_read(db, Q.next_wake)
        assert await db.fetchval(Q.next_wake) == minutes(60)  # the first one no round holds
    assert pages < 100, f"next_wake read {pages} pages: it scans the pending occurrences"


async def test_next_wake_reads_the_index_with_many_schedules_stored(
    db: asyncpg.Connection, database_url: str
) -> None:
    """The scale run's shape: many schedules with one far-future occurrence each (10 M in the
    scale run, where a join of them once hashed every schedule and scanned every action, 13 s
    per call), and a few due ones another round holds."""
    await store_future_occurrences(db, NOW, 100_000, 1, "SERIES")
    sid = await add_schedule(db, NOW)
    due = await add_actions(db, [{"schedule": sid, "fire_at": minutes(-1)}] * 5, NOW)
    await db.execute("ANALYZE schedules")
    await db.execute("ANALYZE actions")
    async with held(database_url, due):
        pages = await pages_read(db, Q.next_wake)
        assert await db.fetchval(Q.next_wake) == await db.fetchval(REFERENCE, due)
    assert pages < 100, f"next_wake read {pages} pages: it scans the stored schedules"
