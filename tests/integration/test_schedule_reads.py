"""A schedule's own reads (its view: position in the series, next fire times, recent
occurrences): what they show equals their definition over every stored row, and each reads
about what it shows however much is stored.

`actions_by_schedule` indexes occurrences only at rest, pending or finished (migration 0011),
so that a fire and a RUNNING ack do not write an entry to it: `recent_actions` must still show
the ones in flight, in their place."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from shared.persistence.queries import load_queries
from tests.integration.helpers import add_actions, add_schedule, pages_read

Q = load_queries()
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
STATES = ["SUCCEEDED", "FAILED", "SKIPPED", "DISPATCHED", "RUNNING", "PENDING"]

# Every occurrence of the schedule, newest first: the definition (what it read before 0011).
RECENT = """
SELECT id, type, due_at, state, attempt, fired_at, updated_at
FROM actions WHERE schedule_id = $1
ORDER BY due_at DESC LIMIT $2
"""


async def test_recent_actions_show_those_in_flight_in_their_place(
    db: asyncpg.Connection,
) -> None:
    sid = await add_schedule(db, NOW)
    other = await add_schedule(db, NOW)
    # Due every minute, the states interleaved: in-flight ones among the newest and oldest.
    rows = [
        {"schedule": sid, "fire_at": NOW + timedelta(minutes=i), "state": STATES[i % 6]}
        for i in range(30)
    ]
    await add_actions(db, rows, NOW)
    await add_actions(db, [{"schedule": other, "fire_at": NOW, "state": "RUNNING"}], NOW)
    for limit in (1, 3, 5, 20, 100):
        expected = await db.fetch(RECENT, sid, limit)
        assert await db.fetch(Q.recent_actions, sid, limit) == expected
    newest = await db.fetch(Q.recent_actions, sid, 6)
    assert [r["state"] for r in newest] == STATES[::-1]  # minutes 29 down to 24
    assert len(await db.fetch(Q.recent_actions, sid, 100)) == 30


async def test_series_position_counts_series_occurrences_only(db: asyncpg.Connection) -> None:
    """The last series occurrence, whether it is still to fire: PENDING at its first attempt;
    fired, skipped or waiting to be retried, its successor was decided."""
    sid = await add_schedule(db, NOW)
    series = [
        {"schedule": sid, "fire_at": NOW + timedelta(hours=k), "origin": "SERIES", "seq": k}
        for k in (1, 2, 3)
    ]
    *_, last = await add_actions(db, series, NOW)
    later = NOW + timedelta(days=1)
    await add_actions(db, [{"schedule": sid, "fire_at": later, "origin": "MANUAL"}], NOW)
    position = await db.fetchrow(Q.series_position, sid)
    assert tuple(position) == (3, NOW + timedelta(hours=3), True)
    assert await db.fetchval(Q.last_series_seq, sid) == 3
    for state, attempt in [("SKIPPED", 1), ("DISPATCHED", 1), ("PENDING", 2)]:
        await db.execute(
            "UPDATE actions SET state = $2, attempt = $3 WHERE id = $1", last, state, attempt
        )
        assert (await db.fetchrow(Q.series_position, sid))["to_fire"] is False, state
    assert await db.fetchrow(Q.series_position, uuid.uuid4()) is None


async def test_a_schedules_reads_stay_small_with_many_rows_stored(
    db: asyncpg.Connection,
) -> None:
    """2,000 series of 50 occurrences each, in every state: each read of one schedule takes
    a few pages, not the table's thousands (a sequential scan, or an index of every schedule's
    rows read through)."""
    await db.execute(
        "INSERT INTO schedules (id, tenant, namespace, name, state, spec, ack_timeout_ms,"
        " created_at, updated_at)"
        " SELECT gen_random_uuid(), 't', 'default', 'stored-' || i, 'ACTIVE', '{}', 300000,"
        " $1, $1 FROM generate_series(1, 2000) AS i",
        NOW,
    )
    await db.execute(
        "INSERT INTO actions (id, schedule_id, tenant, seq, origin, type, due_at, fire_at, state,"
        " created_at, updated_at)"
        " SELECT gen_random_uuid(), s.id, 't', k, 'SERIES', 'x', t, t,"
        " ($2::text[])[1 + k % 6], $1, $1"
        " FROM schedules s, generate_series(1, 50) AS k,"
        " LATERAL (SELECT $1::timestamptz + k * interval '1 hour') AS x(t)",
        NOW,
        STATES,
    )
    await db.execute("VACUUM ANALYZE schedules")
    await db.execute("VACUUM ANALYZE actions")
    table = await db.fetchval("SELECT relpages FROM pg_class WHERE relname = 'actions'")
    assert table > 1_000
    sid = await db.fetchval("SELECT id FROM schedules WHERE name = 'stored-1000'")
    reads = {
        "recent_actions": (Q.recent_actions, (sid, 20)),
        "series_position": (Q.series_position, (sid,)),
        "last_series_seq": (Q.last_series_seq, (sid,)),
        "pending_due_times": (Q.pending_due_times, (sid, 5, False)),
        "in_flight_schedules": (Q.in_flight_schedules, ([sid],)),  # the ticker's overlap check
    }
    for name, (statement, args) in reads.items():
        pages = await pages_read(db, statement, *args)
        assert pages < 60, f"{name} read {pages} pages of a table of {table}"
    recent = await db.fetch(Q.recent_actions, sid, 20)
    assert recent == await db.fetch(RECENT, sid, 20)
    assert {r["state"] for r in recent} == set(STATES)
    assert (await db.fetchrow(Q.series_position, sid))["seq"] == 50
