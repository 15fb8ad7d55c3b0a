"""Building commands and driving service functions in tests; waiting on a condition."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, settings

import shared.persistence.migrate
from services.scheduler.commands import apply_command
from shared.persistence.migrate import migrate
from shared.persistence.queries import migrations
from tests.servers import PostgresHandle


def command(kind: str, data: dict[str, Any], tenant: str = "acct-1", **meta: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "meta": {
            "commandId": str(uuid.uuid4()),
            "correlationId": str(uuid.uuid4()),
            "tenant": tenant,
            **meta,
        },
        "data": data,
    }


async def until(
    condition: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.5
) -> None:
    """Poll an async condition until true (bounded)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


async def run(conn: asyncpg.Connection, body: dict[str, Any], now: datetime) -> dict[str, Any]:
    async with conn.transaction():
        return await apply_command(conn, body, now)


def schedule(name: str = "nightly", **fields: Any) -> dict[str, Any]:
    return {"name": name, "action": {"type": "billing-run", "payload": {"k": 1}}, **fields}


async def add_schedule(db: asyncpg.Connection, now: datetime, state: str = "ACTIVE") -> uuid.UUID:
    """A schedule row of tenant `t` as the tests of stored rows want it (no command)."""
    sid = uuid.uuid4()
    await db.execute(
        "INSERT INTO schedules (id, tenant, namespace, name, state, spec, ack_timeout_ms,"
        " created_at, updated_at) VALUES ($1, 't', 'default', $2, $3, $4, 300000, $5, $5)",
        sid,
        f"s-{sid.hex[:8]}",
        state,
        orjson.dumps({"name": "x"}).decode(),
        now,
    )
    return sid


async def add_actions(db: asyncpg.Connection, rows: list[dict], now: datetime) -> list[uuid.UUID]:
    """Occurrence rows of tenant `t`: schedule and fire_at given, the rest defaulted (a series
    occurrence: origin SERIES and its `seq`); their ids."""
    ids = [uuid.uuid4() for _ in rows]
    await db.executemany(
        "INSERT INTO actions (id, schedule_id, tenant, origin, type, due_at, fire_at, state,"
        " held, ack_deadline, created_at, updated_at, seq)"
        " VALUES ($1, $2, 't', $3, 'x', $4, $4, $5, $6, $7, $8, $8, $9)",
        [
            (
                action_id,
                r["schedule"],
                r.get("origin", "EXPLICIT"),
                r["fire_at"],
                r.get("state", "PENDING"),
                r.get("held", False),
                r.get("ack_deadline"),
                now,
                r.get("seq"),
            )
            for action_id, r in zip(ids, rows, strict=True)
        ],
    )
    return ids


async def store_future_occurrences(
    db: asyncpg.Connection, now: datetime, schedules: int, each: int, origin: str
) -> None:
    """`schedules` schedules of tenant `t`, each with `each` pending occurrences a year or more
    ahead (schedule n's k-th: now + k years + n minutes): a large store, written in SQL."""
    await db.execute(
        "INSERT INTO schedules (id, tenant, namespace, name, state, spec, ack_timeout_ms,"
        " created_at, updated_at)"
        " SELECT gen_random_uuid(), 't', 'default', 'stored-' || i, 'ACTIVE', '{}', 300000,"
        " $1, $1 FROM generate_series(1, $2) AS i",
        now,
        schedules,
    )
    await db.execute(
        "INSERT INTO actions (id, schedule_id, tenant, origin, type, due_at, fire_at, state,"
        " created_at, updated_at)"
        " SELECT gen_random_uuid(), s.id, 't', $3, 'x', t, t, 'PENDING', $1, $1"
        " FROM (SELECT id, row_number() OVER () AS n FROM schedules) s,"
        " generate_series(1, $2) AS k,"
        " LATERAL (SELECT $1::timestamptz + s.n * interval '1 minute' + k * interval '1 year')"
        " AS x(t)",
        now,
        each,
        origin,
    )


async def plan_of(db: asyncpg.Connection, statement: str, *args: Any) -> dict[str, Any]:
    """The top node of the plan PostgreSQL ran `statement` with (EXPLAIN ANALYZE, BUFFERS)."""
    explained = await db.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, *args)
    return explained[0]["Plan"]


async def pages_read(db: asyncpg.Connection, statement: str, *args: Any) -> int:
    """Pages `statement` read (from shared buffers or not) when PostgreSQL ran it."""
    plan = await plan_of(db, statement, *args)
    return plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)


def generated(examples: int) -> settings:
    """Settings of the generated tests on real servers: derandomized (a failure is the same in
    CI and by hand), no deadline, and the test's fixtures shared by every example (each example
    empties the tables, or takes rows of its own); raise `examples` by hand when changing the
    paths they compare."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


@asynccontextmanager
async def database_at(postgres: PostgresHandle, name: str, version: int) -> AsyncIterator[str]:
    """A database of its own (its URL), migrated up to `version` as `chime migrate` of the code
    before the next migration would; dropped afterwards."""
    url = postgres.database_url(name)
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        with pytest.MonkeyPatch.context() as older:
            before = [m for m in migrations() if m[0] <= version]
            older.setattr(shared.persistence.migrate, "migrations", lambda: before)
            await migrate(url)
        yield url
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
