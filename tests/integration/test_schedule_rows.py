"""How a schedule's row is written (migration 0014): completing, pausing and resuming change
its `state` in place (HOT updates: no new index entry, the new version on the row's page), and
the queries by name are served by the name's unique index, whose predicate is `live`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from services.scheduler.commands import Context
from services.scheduler.creates import apply_creates
from shared.contracts.common import format_instant
from shared.persistence.migrate import migrate
from shared.persistence.queries import load_queries, migrations
from tests.integration.helpers import command, database_at, schedule
from tests.servers import PostgresHandle

Q = load_queries()
NOW = datetime(2030, 3, 30, 12, 0, tzinfo=UTC)
CTX = Context(action_topics=frozenset())
PAGES = "SELECT count(DISTINCT (ctid::text::point)[0]) FROM schedules"  # pages holding rows
UPDATES = """SELECT pg_stat_get_xact_tuples_updated('schedules'::regclass) AS updated,
                    pg_stat_get_xact_tuples_hot_updated('schedules'::regclass) AS hot"""


async def _updates(db: asyncpg.Connection, statement: str, *args: object) -> tuple[int, int]:
    """(rows `statement` updated in `schedules`, of them HOT), in a transaction of its own.
    The counters are the session's until they are flushed: the difference is this statement's."""
    async with db.transaction():
        before = await db.fetchrow(UPDATES)
        await db.execute(statement, *args)
        after = await db.fetchrow(UPDATES)
    return after["updated"] - before["updated"], after["hot"] - before["hot"]


async def test_a_burst_of_one_shot_schedules_completes_in_place(db: asyncpg.Connection) -> None:
    """Schedules created together (one bulk create, so they share pages) and completed together
    (the mark of the round that fired them): every completion is a HOT update, whatever the
    size of the definitions (a payload from 50 bytes to 2 KB)."""
    at = format_instant(NOW + timedelta(hours=1))
    bodies = [
        command(
            "schedule.create",
            schedule(
                f"reminder-{i}",
                actions=[{"type": "remind", "at": at, "payload": {"note": "x" * (50 * (i % 40))}}],
            ),
        )
        for i in range(400)
    ]
    async with db.transaction():
        results = await apply_creates(db, bodies, NOW, CTX)
    assert {r["type"] for r in results} == {"schedule.created"}
    ids = [r["id"] for r in await db.fetch("SELECT id FROM schedules")]
    fired = await db.fetch("SELECT id FROM actions WHERE schedule_id = ANY($1::uuid[])", ids)
    assert len(fired) == 400
    updated, hot = await _updates(
        db, Q.complete_schedules, ids, NOW + timedelta(hours=1), [r["id"] for r in fired]
    )
    assert (updated, hot) == (400, 400)
    states = await db.fetch("SELECT state, live FROM schedules WHERE id = ANY($1::uuid[])", ids)
    assert {(r["state"], r["live"]) for r in states} == {("COMPLETED", True)}


async def test_pausing_and_resuming_stay_in_place_and_deleting_frees_the_name(
    db: asyncpg.Connection,
) -> None:
    trigger = {"kind": "daily", "hours": 1, "minutes": 30}
    async with db.transaction():
        (created,) = await apply_creates(
            db, [command("schedule.create", schedule("nightly", trigger=trigger))], NOW, CTX
        )
    assert created["type"] == "schedule.created"
    sid = await db.fetchval("SELECT id FROM schedules")
    for state in ("PAUSED", "ACTIVE"):
        assert await _updates(db, Q.set_schedule_state, "acct-1", sid, state, NOW) == (1, 1)
    # Deleting makes the row not live: it leaves the index, and the name can be taken again.
    await _updates(db, Q.set_schedule_state, "acct-1", sid, "DELETED", NOW)
    assert await db.fetchrow(Q.get_schedule_by_name, "acct-1", "default", "nightly") is None
    async with db.transaction():
        (again,) = await apply_creates(
            db, [command("schedule.create", schedule("nightly", trigger=trigger))], NOW, CTX
        )
    assert again["type"] == "schedule.created"
    row = await db.fetchrow(Q.get_schedule_by_name, "acct-1", "default", "nightly")
    assert row["id"] != sid
    assert await db.fetchval("SELECT count(*) FROM schedules") == 2


async def test_queries_by_name_use_the_names_index(db: asyncpg.Connection) -> None:
    """With sequential scans priced out, a query whose condition does not imply the index's
    predicate still scans the table: the plan names the index only if it can use it."""
    await db.execute("SET enable_seqscan = off")
    for statement, args in (
        (Q.get_schedule_by_name, ("acct-1", "default", "nightly")),
        (Q.seen_before, ("acct-1", [], [], ["default"], ["nightly"])),
    ):
        plan = await db.fetchval("EXPLAIN (FORMAT JSON) " + statement, *args)
        assert "schedules_name_key" in str(plan), statement


async def test_the_migration_gives_stored_schedules_room_and_keeps_their_names_unique(
    postgres: PostgresHandle,
) -> None:
    """A database at migration 0013 with schedules stored (a name taken by a deleted schedule
    and by a live one): 0014 rewrites them with room on their pages, the names stay unique
    among live schedules, and stored rows complete in place."""
    async with database_at(postgres, "chime_rows_0014", 13) as url:
        db = await asyncpg.connect(url)
        try:
            spec = orjson.dumps({"name": "x", "payload": "y" * 400}).decode()
            await db.execute(
                "INSERT INTO schedules (id, tenant, namespace, name, state, spec, ack_timeout_ms,"
                " created_at, updated_at) SELECT gen_random_uuid(), 't', 'default', 's-' || i,"
                " CASE WHEN i = 0 THEN 'DELETED' ELSE 'ACTIVE' END, $1, 300000, $2, $2"
                " FROM generate_series(0, 999) AS i",
                spec,
                NOW,
            )
            await db.execute(
                "UPDATE schedules SET name = 's-1' WHERE state = 'DELETED'"  # a name used before
            )
            before = await db.fetchval(PAGES)
            assert await migrate(url) == [v for v, _, _ in migrations() if v > 13]
            assert await db.fetchval(PAGES) >= 1.8 * before
            live = await db.fetch(
                "SELECT live, count(*) FROM schedules GROUP BY live ORDER BY live"
            )
            assert [tuple(r) for r in live] == [(False, 1), (True, 999)]
            with pytest.raises(asyncpg.UniqueViolationError):
                await db.execute(
                    "INSERT INTO schedules (id, tenant, namespace, name, state, spec,"
                    " ack_timeout_ms, created_at, updated_at) VALUES (gen_random_uuid(), 't',"
                    " 'default', 's-2', 'PAUSED', '{}', 1, $1, $1)",
                    NOW,
                )
            ids = [r["id"] for r in await db.fetch("SELECT id FROM schedules WHERE live")]
            assert await _updates(db, Q.complete_schedules, ids, NOW, []) == (999, 999)
        finally:
            await db.close()
