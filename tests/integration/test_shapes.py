"""A schedule's shape (migration 0015): the scheduler stores a digest of what its definition says
about firing, the claim names it, and the ticker compiles a schedule of a shape it parsed already
without reading that schedule's definition. A definition rewritten without its shape loses it,
and a schedule without one (stored before 0015) is read as before."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.scheduler.commands import Context
from services.scheduler.creates import apply_creates
from shared import specs
from shared.persistence.database import connect
from shared.persistence.migrate import migrate
from shared.persistence.queries import load_queries, migrations
from tests.integration.helpers import command, database_at, run, schedule
from tests.servers import PostgresHandle

Q = load_queries()
NOW = datetime(2030, 3, 30, 12, 0, tzinfo=UTC)
LATER = "2030-03-30T13:00:00Z"


@pytest.fixture(autouse=True)
def empty_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(specs, "_CACHE", type(specs._CACHE)())
    monkeypatch.setattr(specs, "_SHAPES", type(specs._SHAPES)())


class Recording:
    """A real connection whose fetches are recorded (which statements the definitions took)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.fetched: list[str] = []

    async def fetch(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        self.fetched.append(statement)
        return await self.conn.fetch(statement, *args)


def reminder(n: int, **fields: Any) -> dict[str, Any]:
    """Schedules of one template: each its own name, namespace and instant."""
    return schedule(
        f"reminder-{n}",
        namespace=f"team-{n % 2}",
        actions=[{"type": "remind", "at": f"2030-03-30T13:0{n}:00Z"}],
        **fields,
    )


async def stored(db: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    rows = await db.fetch("SELECT id, name, version, shape, spec FROM schedules")
    return {r["name"]: r for r in rows}


async def claimed(db: asyncpg.Connection, names: list[str]) -> list[asyncpg.Record]:
    """The claim's rows of these schedules' occurrences (as the ticker reads them)."""
    async with db.transaction():
        rows = await db.fetch(Q.claim_due, datetime(2031, 1, 1, tzinfo=UTC), 1_000)
    return [r for r in rows if r["name"] in names]


async def test_the_scheduler_stores_each_definitions_shape(db: asyncpg.Connection) -> None:
    """One at a time and in bulk, the stored digest is the definition's shape as stored:
    equal for schedules of one template, another where what fires differs."""
    await run(db, command("schedule.create", reminder(1)), NOW)
    bodies = [
        command("schedule.create", reminder(2)),
        command("schedule.create", reminder(3, action={"type": "other"})),
    ]
    async with db.transaction():
        await apply_creates(db, bodies, NOW, Context())
    rows = await stored(db)
    for r in rows.values():
        assert r["shape"] == specs.shape_of(r["spec"])
    assert rows["reminder-1"]["shape"] == rows["reminder-2"]["shape"]
    assert rows["reminder-3"]["shape"] != rows["reminder-1"]["shape"]


async def test_replacing_a_definition_stores_its_new_shape_or_none(
    db: asyncpg.Connection,
) -> None:
    """A replace that changes what fires stores the new shape. One that keeps the shape but
    rewrites the definition (its actions here) leaves none (the database cannot tell it from a
    writer that knows no shapes: below): its definition is then read, as before 0015."""
    created = await run(db, command("schedule.create", reminder(1)), NOW)
    sid = created["data"]["id"]
    other = reminder(1, action={"type": "other"})
    await run(db, command("schedule.replace", {"id": sid, **other}), NOW)
    row = (await stored(db))["reminder-1"]
    assert row["spec"]["action"]["type"] == "other"
    assert row["shape"] == specs.shape_of(row["spec"])
    moved = other | {"actions": [{"type": "remind", "at": LATER}]}
    await run(db, command("schedule.replace", {"id": sid, **moved}), NOW)
    row = (await stored(db))["reminder-1"]
    assert row["spec"]["actions"][0]["at"] == LATER
    assert row["shape"] is None


async def test_a_definition_rewritten_without_its_shape_loses_it(db: asyncpg.Connection) -> None:
    """Code that knows no shapes (still running while 0015 lands) rewrites `spec` alone: the
    stored shape is cleared, so the ticker never fires the new definition as the old shape
    says. Updates that leave `spec` alone keep it."""
    await run(db, command("schedule.create", reminder(1)), NOW)
    await run(db, command("schedule.create", reminder(2)), NOW)
    shape = (await stored(db))["reminder-1"]["shape"]
    await db.execute("UPDATE schedules SET state = 'PAUSED' WHERE name = 'reminder-2'")
    same = (await stored(db))["reminder-1"]["spec"]
    await db.execute("UPDATE schedules SET spec = $1 WHERE name = 'reminder-1'", same)
    assert [r["shape"] for r in (await stored(db)).values()] == [shape, shape]
    changed = same | {"action": {"type": "other"}}
    await db.execute("UPDATE schedules SET spec = $1 WHERE name = 'reminder-1'", changed)
    rows = await stored(db)
    assert (rows["reminder-1"]["shape"], rows["reminder-2"]["shape"]) == (None, shape)

    await db.execute("UPDATE schedules SET state = 'ACTIVE'")
    conn = Recording(db)
    found = await specs.load_definitions(conn, await claimed(db, ["reminder-2"]))
    assert conn.fetched == [Q.schedule_definitions]  # its shape parsed (once) here
    found |= await specs.load_definitions(conn, await claimed(db, ["reminder-1"]))
    assert conn.fetched == [Q.schedule_definitions] * 2  # no shape stored: its definition read
    assert sorted(spec.action.type for spec, _ in found.values()) == ["billing-run", "other"]


async def test_a_schedule_of_a_shape_parsed_already_is_compiled_from_its_claim(
    db: asyncpg.Connection,
) -> None:
    """The first schedules of a shape are read (one query); a later one of that shape is
    compiled from the claim's row alone. A schedule of another shape is read, and the digest
    the ticker computes for a definition without one is the scheduler's."""
    for n in (1, 2):
        await run(db, command("schedule.create", reminder(n)), NOW)
    conn = Recording(db)
    first = await specs.load_definitions(conn, await claimed(db, ["reminder-1", "reminder-2"]))
    assert conn.fetched == [Q.schedule_definitions]
    await run(db, command("schedule.create", reminder(3)), NOW)
    later = await specs.load_definitions(conn, await claimed(db, ["reminder-3"]))
    assert conn.fetched == [Q.schedule_definitions]
    [(spec, series)] = later.values()
    assert spec is next(iter(first.values()))[0]
    assert (spec.name, spec.action.type) == (specs.SHARED, "billing-run")
    assert series is not None

    await run(db, command("schedule.create", reminder(4, labels={"team": "ops"})), NOW)
    await run(db, command("schedule.create", reminder(5)), NOW)
    await db.execute("UPDATE schedules SET shape = NULL WHERE name = 'reminder-5'")
    specs._SHAPES.clear()
    specs._CACHE.clear()
    await specs.load_definitions(conn, await claimed(db, ["reminder-4", "reminder-5"]))
    assert conn.fetched == [Q.schedule_definitions] * 2
    await specs.load_definitions(conn, await claimed(db, ["reminder-1"]))  # reminder-5's shape
    assert conn.fetched == [Q.schedule_definitions] * 2


async def test_schedules_stored_before_the_migration_have_no_shape_and_are_read(
    postgres: PostgresHandle,
) -> None:
    """A database at migration 0014 with a schedule stored: after 0015 it has no shape, and
    the ticker reads its definition as before."""
    async with database_at(postgres, "chime_shapes_0015", 14) as url:
        db = await connect(url)
        try:
            sid = uuid.uuid4()
            spec = {"name": "old", "action": {"type": "remind"}, "policy": {"ackTimeout": "PT2M"}}
            await db.execute(
                "INSERT INTO schedules (id, tenant, namespace, name, state, spec, ack_timeout_ms,"
                " created_at, updated_at) VALUES ($1, 't', 'default', 'old', 'ACTIVE', $2,"
                " 120000, $3, $3)",
                sid,
                spec,
                NOW,
            )
            await db.execute(
                "INSERT INTO actions (id, schedule_id, tenant, seq, origin, type, due_at,"
                " fire_at, state, created_at, updated_at) VALUES ($1, $2, 't', NULL, 'EXPLICIT',"
                " 'remind', $3, $3, 'PENDING', $3, $3)",
                uuid.uuid4(),
                sid,
                NOW,
            )
            assert await migrate(url) == [v for v, _, _ in migrations() if v > 14]
            assert await db.fetchval("SELECT shape FROM schedules") is None
            conn = Recording(db)
            found = await specs.load_definitions(conn, await claimed(db, ["old"]))
            assert conn.fetched == [Q.schedule_definitions]
            assert [spec.policy.ack_timeout for spec, _ in found.values()] == ["PT2M"]
            assert list(specs._SHAPES) == [specs.shape_of(spec)]
        finally:
            await db.close()
