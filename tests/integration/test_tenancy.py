"""Tenant isolation: no command or ack of one tenant reaches another tenant's schedule.

Run twice: as the owner of the tables (isolation by the SQL of every query) and as the
services' role, where the row-level security policies of migration 0004 apply as well.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest

from services.acker.acks import apply_ack
from shared.contracts import ActionAck
from shared.persistence.database import connect
from shared.settings import Topics
from tests.integration.helpers import command, run, schedule

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DAILY = {"kind": "daily", "hours": 10, "minutes": 30}
TOPICS = Topics("chime.")


@pytest.fixture(params=["owner", "service-role"])
async def conn(
    request: pytest.FixtureRequest, database_url: str, service_database_url: str
) -> AsyncIterator[asyncpg.Connection]:
    # The scheduler's and acker's pools carry no session tenant: each command sets its own.
    url = database_url if request.param == "owner" else service_database_url
    connection = await connect(url, tenant=None)
    yield connection
    await connection.close()


def _foreign_attempts(target: str) -> list[dict]:
    """Every command type, aimed by another tenant at `target` (an id)."""
    ref = {"id": target}
    return [
        command("schedule.get", ref, tenant="acct-2"),
        command("schedule.update", {**ref, "changes": {"description": "mine"}}, tenant="acct-2"),
        command("schedule.pause", ref, tenant="acct-2"),
        command("schedule.resume", ref, tenant="acct-2"),
        command("schedule.trigger", {**ref, "reason": "x"}, tenant="acct-2"),
        command("schedule.delete", ref, tenant="acct-2"),
        command("schedule.replace", {**schedule("stolen", trigger=DAILY), **ref}, tenant="acct-2"),
    ]


def _shape(result: dict, target: str) -> list[tuple]:
    return [(e["code"], e["field"], e["message"].replace(target, "<id>")) for e in result["errors"]]


async def test_every_command_type_is_blind_to_other_tenants(conn: asyncpg.Connection) -> None:
    created = await run(conn, command("schedule.create", schedule(trigger=DAILY)), NOW)
    own_id = created["data"]["id"]
    await run(conn, command("schedule.create", schedule("by-name", trigger=DAILY)), NOW)
    guessed = str(uuid.uuid4())
    for real, fake in zip(_foreign_attempts(own_id), _foreign_attempts(guessed), strict=True):
        answer = await run(conn, real, NOW)
        assert answer["type"] == "command.rejected", (real["type"], answer)
        assert answer["errors"][0]["code"] == "NOT_FOUND", (real["type"], answer)
        unknown = await run(conn, fake, NOW)
        if real["type"] == "schedule.replace":
            # DESIGN.md: replace creates when the id is free; a taken id is NOT_FOUND. Ids are
            # random UUIDs, so this says nothing about a schedule one does not already know.
            assert unknown["type"] == "schedule.replaced" and unknown["data"]["id"] == guessed
            continue
        # Same answer for an existing foreign id as for an id nobody has: existence not revealed.
        assert _shape(answer, own_id) == _shape(unknown, guessed), real["type"]
    by_name = await run(conn, command("schedule.get", {"name": "by-name"}, tenant="acct-2"), NOW)
    assert by_name["errors"][0]["code"] == "NOT_FOUND"
    mine = await run(conn, command("schedule.get", {"id": own_id}), NOW)
    assert mine["data"]["version"] == 1 and mine["data"]["state"] == "ACTIVE"
    assert mine["data"].get("description") is None
    assert not [a for a in mine["data"]["recentActions"] if a.get("origin") == "MANUAL"]
    # The same name is free in another tenant.
    theirs = await run(
        conn, command("schedule.create", schedule(trigger=DAILY), tenant="acct-2"), NOW
    )
    assert theirs["type"] == "schedule.created" and theirs["data"]["id"] != own_id


async def test_an_ack_from_another_tenant_changes_nothing(conn: asyncpg.Connection) -> None:
    created = await run(
        conn,
        command(
            "schedule.create", schedule(trigger={"kind": "once", "at": "2030-01-02T00:00:00Z"})
        ),
        NOW,
    )
    async with conn.transaction():
        await conn.execute("SELECT set_config('chime.tenant', '*', true)")
        action_id = await conn.fetchval(
            "SELECT id FROM actions WHERE schedule_id = $1", uuid.UUID(created["data"]["id"])
        )
    ack = ActionAck.model_validate(
        {
            "type": "action.ack",
            "meta": {"tenant": "acct-2"},
            "data": {"actionId": str(action_id), "attempt": 1, "state": "SUCCEEDED"},
        }
    )
    async with conn.transaction():
        events = await apply_ack(conn, ack, NOW, TOPICS, lambda: 0.0)
    body = orjson.loads(events[0].value)
    assert [body["type"], body["data"]["reason"]] == [
        "action.ack-ignored",
        "UNKNOWN_ACTION: no such action for this tenant",
    ]
    assert body["data"].get("scheduleId") is None  # nothing about the real action leaks
    mine = await run(conn, command("schedule.get", {"id": created["data"]["id"]}), NOW)
    assert [a["state"] for a in mine["data"]["recentActions"]] == ["PENDING"]


# Per table, the columns that make a copied row a new one (its key within a tenant).
STORED_COLUMNS = """SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
FROM information_schema.columns WHERE table_name = $1 AND is_generated = 'NEVER'"""
FOREIGN_ROW = {
    "schedules": "'id', gen_random_uuid(), 'name', 'copied'",
    "actions": "'id', gen_random_uuid(), 'seq', NULL",
    "processed_commands": "'command_id', 'copied'",
}


async def test_row_level_security_binds_the_service_role(
    db: asyncpg.Connection, service_database_url: str
) -> None:
    for tenant in ("acct-1", "acct-2"):
        await run(db, command("schedule.create", schedule(trigger=DAILY), tenant=tenant), NOW)
    raw = await asyncpg.connect(service_database_url)  # a session that names no tenant
    try:
        assert await raw.fetchval("SELECT count(*) FROM schedules") == 0
        assert await raw.fetchval("SELECT count(*) FROM actions") == 0
        assert await raw.fetchval("SELECT count(*) FROM processed_commands") == 0
        async with raw.transaction():
            await raw.execute("SELECT set_config('chime.tenant', 'acct-1', true)")
            tenants = await raw.fetch("SELECT DISTINCT tenant FROM schedules")
            assert [r["tenant"] for r in tenants] == ["acct-1"]
            # A query that forgot its tenant filter still cannot touch acct-2's rows ...
            assert await raw.execute("UPDATE schedules SET version = version + 1") == "UPDATE 1"
            # ... nor write a row for acct-2.
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                await raw.execute("UPDATE schedules SET tenant = 'acct-2' WHERE tenant = 'acct-1'")
        for table, fresh in FOREIGN_ROW.items():
            # A copy of an acct-1 row made acct-2's, written blind (no RETURNING, no WHERE on
            # the new row): only the policy's WITH CHECK stands in the way. Its columns are the
            # table's own, not those PostgreSQL computes (schedules.live).
            columns = await db.fetchval(STORED_COLUMNS, table)
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                async with raw.transaction():
                    await raw.execute("SELECT set_config('chime.tenant', 'acct-1', true)")
                    await raw.execute(
                        f"INSERT INTO {table} ({columns}) SELECT {columns}"
                        f" FROM (SELECT (jsonb_populate_record(NULL::{table}, to_jsonb(t)"
                        f" || jsonb_build_object('tenant', 'acct-2', {fresh}))).* FROM {table} t) c"
                    )
        async with raw.transaction():
            await raw.execute("SELECT set_config('chime.tenant', '*', true)")
            assert await raw.fetchval("SELECT count(DISTINCT tenant) FROM schedules") == 2
            # Acting for every tenant (the ticker, operator tools) writes every tenant's rows.
            for table in FOREIGN_ROW:
                assert await raw.execute(f"UPDATE {table} SET tenant = tenant") == "UPDATE 2"
        # No DDL, and the policies cannot be switched off by the service role.
        for ddl in (
            "CREATE TABLE intruder (x int)",
            "ALTER TABLE schedules DISABLE ROW LEVEL SECURITY",
            "DROP POLICY tenant_isolation ON schedules",
            "TRUNCATE actions",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await raw.execute(ddl)
    finally:
        await raw.close()
    assert await db.fetchval("SELECT max(version) FROM schedules WHERE tenant = 'acct-2'") == 1


async def test_a_connection_keeps_no_tenant_after_a_command_or_an_ack(
    service_database_url: str,
) -> None:
    """A command or an ack sets its tenant for its own transaction only: on a connection that
    names no tenant (as the scheduler's and acker's pools do), what runs next sees no rows
    until it sets one. Not only through the pool: asyncpg's pool also resets a connection it
    takes back, but a connection kept for several transactions must not carry a tenant over."""
    conn = await connect(service_database_url, tenant=None)
    try:
        once = {"kind": "once", "at": "2030-01-02T00:00:00Z"}
        created = await run(conn, command("schedule.create", schedule(trigger=once)), NOW)
        assert created["type"] == "schedule.created"
        assert await conn.fetchval("SELECT count(*) FROM schedules") == 0
        ack = ActionAck.model_validate(
            {
                "type": "action.ack",
                "meta": {"tenant": "acct-1"},
                "data": {"actionId": str(uuid.uuid4()), "attempt": 1, "state": "RUNNING"},
            }
        )
        async with conn.transaction():
            await apply_ack(conn, ack, NOW, TOPICS, lambda: 0.0)
        assert await conn.fetchval("SELECT count(*) FROM actions") == 0
        assert await conn.fetchval("SELECT count(*) FROM processed_commands") == 0
    finally:
        await conn.close()
