"""Retention (CHIME_RETENTION_DAYS): what goes, what stays, in batches, read from an index."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.ticker.retention import Retention
from shared.clock import SettableClock
from shared.metrics import Metrics
from shared.persistence.database import create_pool
from shared.persistence.queries import load_queries
from shared.states import TERMINAL
from tests.integration.helpers import add_actions, add_schedule, pages_read

Q = load_queries()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
KEEP = timedelta(days=7)
OLD, RECENT = NOW - timedelta(days=8), NOW - timedelta(days=6)


async def histories(db: asyncpg.Connection, ids: list[uuid.UUID]) -> None:
    await db.executemany(
        "INSERT INTO action_history (action_id, attempt, state, at) VALUES ($1, 1, $2, $3)",
        [(i, state, OLD) for i in ids for state in ("DISPATCHED", "SUCCEEDED")],
    )


async def series(db: asyncpg.Connection, sid: uuid.UUID, states: list[str]) -> list[uuid.UUID]:
    """Series occurrences 1..n of a schedule, a day apart, all due long ago."""
    rows = [
        {
            "schedule": sid,
            "origin": "SERIES",
            "seq": n + 1,
            "state": state,
            "fire_at": OLD - timedelta(days=len(states) - n),
        }
        for n, state in enumerate(states)
    ]
    return await add_actions(db, rows, NOW)


async def test_finished_occurrences_past_retention_go_with_their_history(
    db: asyncpg.Connection, service_database_url: str
) -> None:
    """Old finished occurrences of every terminal state go, with their history; recent ones
    (due within the retention, or exactly at its limit), and old ones still pending, in flight
    or timed out (to be retried), stay; so does each schedule's last series occurrence, however
    old, which the series counts from."""
    sid = await add_schedule(db, NOW)
    finished = await add_actions(
        db, [{"schedule": sid, "fire_at": OLD, "state": s} for s in sorted(TERMINAL)], NOW
    )
    kept = await add_actions(
        db,
        [
            {"schedule": sid, "fire_at": RECENT, "state": "SUCCEEDED"},
            {"schedule": sid, "fire_at": NOW - KEEP, "state": "SUCCEEDED"},  # due at the limit
        ]
        + [
            {"schedule": sid, "fire_at": OLD, "state": s}
            for s in ("PENDING", "DISPATCHED", "RUNNING", "TIMED_OUT")
        ],
        NOW,
    )
    other = await add_schedule(db, NOW)
    *older, last = await series(db, other, ["SUCCEEDED", "FAILED", "SKIPPED", "SUCCEEDED"])
    longer = await add_schedule(db, NOW)  # a longer series: each keeps its own last
    *longer_older, longer_last = await series(db, longer, ["SUCCEEDED"] * 6)
    await histories(db, finished + kept + older + [last] + longer_older + [longer_last])

    pool = await create_pool(service_database_url, 2, "*")
    try:
        metrics = Metrics()
        pruned = await Retention(pool, KEEP, SettableClock(NOW), metrics).prune()
    finally:
        await pool.close()

    gone = set(finished + older + longer_older)
    assert pruned == len(gone) == 12
    assert metrics.pruned._value.get() == 12
    left = {r["id"] for r in await db.fetch("SELECT id FROM actions")}
    assert left == set(kept) | {last, longer_last}
    with_history = {r["action_id"] for r in await db.fetch("SELECT action_id FROM action_history")}
    assert with_history == set(kept) | {last, longer_last}
    assert await db.fetchval(Q.last_series_seq, other) == 4  # the series goes on from 4


async def test_a_pass_deletes_in_batches_until_one_comes_out_short(
    db: asyncpg.Connection, database_url: str
) -> None:
    sid = await add_schedule(db, NOW)
    rows = [
        {"schedule": sid, "fire_at": OLD - timedelta(minutes=i), "state": "SUCCEEDED"}
        for i in range(10)
    ]
    await add_actions(db, rows, NOW)
    pool = await create_pool(database_url, 2, "*")
    try:
        retention = Retention(pool, KEEP, SettableClock(NOW), batch=3)
        assert await retention.prune_once() == 3
        assert await retention.prune() == 7  # 3 + 3 + 1
        assert await retention.prune() == 0
    finally:
        await pool.close()
    assert await db.fetchval("SELECT count(*) FROM actions") == 0


async def test_pruning_reads_the_finished_index_not_what_is_pending(
    db: asyncpg.Connection,
) -> None:
    """100,000 occurrences pending (and 100,000 finished recently) of 100 schedules: old ones are
    found through the index of finished occurrences by due_at, in a few pages."""
    schedules = [await add_schedule(db, NOW) for _ in range(100)]
    for state, offset in (("PENDING", timedelta(days=1)), ("SUCCEEDED", timedelta(days=-1))):
        await db.execute(
            "INSERT INTO actions (id, schedule_id, tenant, origin, type, due_at, fire_at, state,"
            " created_at, updated_at)"
            " SELECT gen_random_uuid(), ($1::uuid[])[1 + n % 100], 't', 'EXPLICIT', 'x', t, t,"
            " $3, $2, $2"
            " FROM generate_series(0, 99999) AS n,"
            " LATERAL (SELECT $2::timestamptz + $4::interval + n * interval '1 second') AS x(t)",
            schedules,
            NOW,
            state,
            offset,
        )
    old = await add_actions(
        db, [{"schedule": s, "fire_at": OLD, "state": "SUCCEEDED"} for s in schedules[:20]], NOW
    )
    await histories(db, old)
    await db.execute("VACUUM ANALYZE actions")
    pages = await pages_read(db, Q.prune_finished, NOW - KEEP, 5_000)
    assert pages < 250, f"pruning 20 occurrences read {pages} pages"
    assert await db.fetchval("SELECT count(*) FROM actions") == 200_000
