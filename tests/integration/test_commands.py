"""Commands applied on real PostgreSQL: results, errors, idempotency."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from tests.integration.helpers import command, run, schedule

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DAILY = {"kind": "daily", "hours": 10, "minutes": 30}


async def test_create_returns_view_with_next_fire_times(db: asyncpg.Connection) -> None:
    result = await run(
        db, command("schedule.create", schedule(trigger=DAILY, timezone="Europe/London")), NOW
    )
    assert result["type"] == "schedule.created" and result["errors"] == []
    data = result["data"]
    assert data["cronExpression"] == "0 30 10 ? * *"
    assert data["scheduledFor"] == "2026-03-11T10:30:00Z"
    assert data["nextFireTimes"][:2] == ["2026-03-11T10:30:00Z", "2026-03-12T10:30:00Z"]
    assert len(data["nextFireTimes"]) == 5
    assert data["state"] == "ACTIVE" and data["version"] == 1
    row = await db.fetchrow(
        "SELECT state, seq, due_at FROM actions WHERE schedule_id = $1", uuid.UUID(data["id"])
    )
    assert (row["state"], row["seq"]) == ("PENDING", 1)


async def test_validation_error_names_the_field(db: asyncpg.Connection) -> None:
    body = command(
        "schedule.create", schedule(trigger={"kind": "daily", "hours": 24, "minutes": 0})
    )
    result = await run(db, body, NOW)
    assert result["type"] == "command.rejected" and result["data"] is None
    assert result["errors"][0] == {
        "code": "VALIDATION",
        "message": "hours must be between 0 and 23 (got 24)",
        "field": "data.trigger.hours",
        "detail": None,
    }
    assert result["meta"]["correlationId"] == body["meta"]["correlationId"]
    assert await db.fetchval("SELECT count(*) FROM schedules") == 0


async def test_cron_error_and_unknown_zone(db: asyncpg.Connection) -> None:
    bad_cron = await run(
        db,
        command("schedule.create", schedule(trigger={"kind": "cron", "expression": "0 0 32 * *"})),
        NOW,
    )
    assert bad_cron["errors"][0]["field"] == "data.trigger.expression"
    assert "day-of-month 32 is out of range 1–31" in bad_cron["errors"][0]["message"]
    bad_zone = await run(
        db, command("schedule.create", schedule(trigger=DAILY, timezone="Mars/Base")), NOW
    )
    assert bad_zone["errors"][0]["field"] == "data.timezone"


async def test_name_taken_is_conflict(db: asyncpg.Connection) -> None:
    await run(db, command("schedule.create", schedule(trigger=DAILY)), NOW)
    again = await run(db, command("schedule.create", schedule(trigger=DAILY)), NOW)
    assert again["errors"][0]["code"] == "CONFLICT" and again["errors"][0]["field"] == "data.name"
    other_tenant = await run(
        db, command("schedule.create", schedule(trigger=DAILY), tenant="acct-2"), NOW
    )
    assert other_tenant["type"] == "schedule.created"


async def test_same_command_id_replays_the_original_result(db: asyncpg.Connection) -> None:
    body = command("schedule.create", schedule(trigger=DAILY))
    first = await run(db, body, NOW)
    body["meta"]["correlationId"] = "second-delivery"
    second = await run(db, body, NOW)
    assert second["data"] == first["data"]
    assert second["meta"]["correlationId"] == "second-delivery"
    assert await db.fetchval("SELECT count(*) FROM schedules") == 1
    # the same document, down to the order of its fields (stored as written: json, not jsonb)
    first["meta"]["correlationId"] = "second-delivery"
    assert orjson.dumps(second) == orjson.dumps(first)


async def test_idempotency_key_same_body_replays_other_body_conflicts(
    db: asyncpg.Connection,
) -> None:
    first = await run(
        db, command("schedule.create", schedule(trigger=DAILY), idempotencyKey="k-1"), NOW
    )
    replay = await run(
        db, command("schedule.create", schedule(trigger=DAILY), idempotencyKey="k-1"), NOW
    )
    assert replay["data"]["id"] == first["data"]["id"]
    clash = await run(
        db, command("schedule.create", schedule("other", trigger=DAILY), idempotencyKey="k-1"), NOW
    )
    assert (
        clash["errors"][0]["code"] == "CONFLICT"
        and clash["errors"][0]["field"] == "meta.idempotencyKey"
    )
    assert await db.fetchval("SELECT count(*) FROM schedules") == 1


async def test_a_command_id_already_applied_wins_over_a_key_another_command_took(
    db: asyncpg.Connection,
) -> None:
    """A redelivery whose command id was applied is that command again, whatever key it names:
    it gets that command's result, not a CONFLICT over a key another command took first. Both
    rows matched one lookup, and which one it read was left to the table's order (found by the
    generated batches of tests/integration/test_bulk_creates.py: bulk and one by one disagreed)."""
    keyed = command("schedule.create", schedule("keyed", trigger=DAILY), idempotencyKey="k-1")
    await run(db, keyed, NOW)  # stored first: a scan meets its row first
    original = command("schedule.create", schedule("original", trigger=DAILY), commandId="c-0")
    first = await run(db, original, NOW)
    again = command("schedule.create", schedule("other", trigger=DAILY), idempotencyKey="k-1")
    again["meta"]["commandId"] = "c-0"
    replay = await run(db, again, NOW)
    assert replay["type"] == "schedule.created", replay
    assert replay["data"] == first["data"]
    assert await db.fetchval("SELECT count(*) FROM schedules") == 2


async def test_get_by_name_and_id_and_tenant_isolation(db: asyncpg.Connection) -> None:
    created = (await run(db, command("schedule.create", schedule(trigger=DAILY)), NOW))["data"]
    by_name = await run(
        db, command("schedule.get", {"namespace": "default", "name": "nightly"}), NOW
    )
    assert by_name["type"] == "schedule.fetched" and by_name["data"]["id"] == created["id"]
    assert by_name["data"]["recentActions"][0]["state"] == "PENDING"
    by_id = await run(db, command("schedule.get", {"id": created["id"]}), NOW)
    assert by_id["data"]["nextFireTimes"] == created["nextFireTimes"]
    foreign = await run(db, command("schedule.get", {"id": created["id"]}, tenant="acct-2"), NOW)
    assert foreign["errors"][0]["code"] == "NOT_FOUND"
    garbage = await run(db, command("schedule.get", {"id": "not-a-uuid"}), NOW)
    assert garbage["errors"][0]["code"] == "NOT_FOUND"


async def test_delete_cancels_pending_and_checks_version(db: asyncpg.Connection) -> None:
    created = (await run(db, command("schedule.create", schedule(trigger=DAILY)), NOW))["data"]
    stale = await run(
        db, command("schedule.delete", {"id": created["id"], "expectedVersion": 7}), NOW
    )
    assert stale["errors"][0]["code"] == "CONFLICT"
    assert stale["errors"][0]["detail"] == {"expectedVersion": 7, "actualVersion": 1}
    deleted = await run(
        db, command("schedule.delete", {"id": created["id"], "expectedVersion": 1}), NOW
    )
    assert deleted["type"] == "schedule.deleted" and deleted["data"]["state"] == "DELETED"
    assert deleted["data"]["nextFireTimes"] == []
    assert await db.fetchval("SELECT state FROM actions") == "CANCELLED"
    assert await db.fetchval("SELECT count(*) FROM action_history WHERE state = 'CANCELLED'") == 1
    recreated = await run(db, command("schedule.create", schedule(trigger=DAILY)), NOW)
    assert recreated["type"] == "schedule.created"


async def test_unsupported_type_and_disabled_schedule(db: asyncpg.Connection) -> None:
    unsupported = await run(db, command("schedule.explode", {}), NOW)
    assert unsupported["errors"][0]["code"] == "UNSUPPORTED"
    paused = await run(db, command("schedule.create", schedule(trigger=DAILY, enabled=False)), NOW)
    assert paused["data"]["state"] == "PAUSED" and paused["data"]["nextFireTimes"] == []
    assert await db.fetchval("SELECT count(*) FROM actions") == 0


async def test_explicit_actions_inside_window(db: asyncpg.Connection) -> None:
    data = schedule(
        "peak-hours",
        startsAt="2026-03-15T08:00:00Z",
        endsAt="2026-03-15T20:00:00Z",
        actions=[
            {"type": "START", "at": "2026-03-15T08:00:00Z"},
            {"type": "STOP", "at": "2026-03-15T20:00:00Z"},
        ],
    )
    result = await run(db, command("schedule.create", data), NOW)
    assert result["data"]["nextFireTimes"] == ["2026-03-15T08:00:00Z", "2026-03-15T20:00:00Z"]
    outside = schedule(
        "late",
        endsAt="2026-03-15T20:00:00Z",
        actions=[{"type": "STOP", "at": "2026-03-15T21:00:00Z"}],
    )
    rejected = await run(db, command("schedule.create", outside), NOW)
    assert rejected["errors"][0]["field"] == "data.actions[0].at"


async def test_payload_too_large(db: asyncpg.Connection) -> None:
    """256 KiB of payload (as JSON) is allowed, one byte more is not."""
    wrapper = len('{"blob":""}')
    data = schedule("at-limit", trigger=DAILY)
    data["action"]["payload"] = {"blob": "x" * (256 * 1024 - wrapper)}
    assert (await run(db, command("schedule.create", data), NOW))["type"] == "schedule.created"
    data = schedule("past-limit", trigger=DAILY)
    data["action"]["payload"] = {"blob": "x" * (256 * 1024 - wrapper + 1)}
    result = await run(db, command("schedule.create", data), NOW)
    assert result["errors"][0]["code"] == "PAYLOAD_TOO_LARGE"
    assert result["errors"][0]["field"] == "data.action.payload"
    assert "262145 bytes" in result["errors"][0]["message"]


async def test_every_payload_and_the_whole_definition_are_bounded(db: asyncpg.Connection) -> None:
    """An explicit action's payload and a trigger's are held to 256 KiB as the series' is (each
    is what an action.due carries), and the definition as stored to 1,000,000 bytes (its result
    carries it): a 1 MiB command of `1e15`s is 3.7 MB once its numbers are written out."""
    blob = "x" * (256 * 1024 - len('{"blob":""}'))  # {"blob": blob} is 256 KiB of JSON

    def definition(name: str, payloads: int, **fields: Any) -> dict[str, Any]:
        one = {"type": "y", "at": "2030-01-01T00:00:00Z", "payload": {"blob": blob}}
        return schedule(name, action={"type": "x", "payload": {"blob": blob}}, **fields) | {
            "actions": [one] * payloads
        }

    three = await run(db, command("schedule.create", definition("three", 2)), NOW)
    assert three["type"] == "schedule.created"  # 786 KB
    floats = {"type": "y", "at": "2030-01-01T00:00:00Z", "payload": {"n": [1e15] * 190}}
    refused = [
        definition("four", 3),
        schedule("floats", actions=[floats] * 1000),
        schedule(
            "one-more", trigger=DAILY, actions=[floats, {**floats, "payload": {"blob": blob + "x"}}]
        ),
    ]
    results = [await run(db, command("schedule.create", data), NOW) for data in refused]
    assert [(r["errors"][0]["code"], r["errors"][0]["field"]) for r in results] == [
        ("PAYLOAD_TOO_LARGE", "data"),
        ("PAYLOAD_TOO_LARGE", "data"),
        ("PAYLOAD_TOO_LARGE", "data.actions[1].payload"),
    ]
    assert re.match(
        r"the definition is 369\d{4} bytes as stored \(numbers written out in full, defaults "
        r"filled in\); the limit is 1000000, so that its result fits a message",
        results[1]["errors"][0]["message"],
    )
    assert "262145 bytes" in results[2]["errors"][0]["message"]
    created = (await run(db, command("schedule.create", schedule(trigger=DAILY)), NOW))["data"]
    big = {"id": created["id"], "payload": {"blob": blob + "x"}}
    triggered = await run(db, command("schedule.trigger", big), NOW)
    assert (triggered["errors"][0]["code"], triggered["errors"][0]["field"]) == (
        "PAYLOAD_TOO_LARGE",
        "data.payload",
    )
    assert "262145 bytes" in triggered["errors"][0]["message"]
    assert await db.fetchval("SELECT count(*) FROM schedules") == 2  # three, and created
    assert await db.fetchval("SELECT count(*) FROM actions WHERE origin = 'MANUAL'") == 0


async def test_migrate_is_idempotent(database_url: str) -> None:
    from shared.persistence.migrate import migrate

    assert await migrate(database_url) == []  # the template already ran every migration


async def test_quartz_and_calendar_schedules(db: asyncpg.Connection) -> None:
    quartz = await run(
        db,
        command(
            "schedule.create",
            schedule("q", trigger={"kind": "cron", "expression": "0 15 10 L-2 * ?"}),
        ),
        NOW,
    )
    assert quartz["data"]["cronExpression"] == "0 15 10 L-2 * ?"
    assert quartz["data"]["scheduledFor"] == "2026-03-29T10:15:00Z"
    seed_003 = {
        "kind": "calendar",
        "type": "MONTHLY",
        "days": {"type": "RANGE", "values": ["20", "L"]},
        "hours": {"type": "LIST", "values": ["8"], "interval": 3},
    }
    created = await run(
        db, command("schedule.create", schedule("c", trigger=seed_003, timezone="CST")), NOW
    )
    assert created["data"]["nextFireTimes"][:2] == ["2026-03-20T13:00:00Z", "2026-03-20T16:00:00Z"]
    rule = await run(
        db, command("schedule.create", schedule("d", trigger={**seed_003, "type": "DAILY"})), NOW
    )
    assert rule["errors"][0]["field"] == "data.trigger.days"


async def test_trigger_that_never_fires_is_rejected(db: asyncpg.Connection) -> None:
    past_year = await run(
        db,
        command(
            "schedule.create", schedule(trigger={"kind": "cron", "expression": "0 0 12 * * ? 2020"})
        ),
        NOW,
    )
    assert past_year["errors"][0]["field"] == "data.trigger"
    assert "never fires" in past_year["errors"][0]["message"]
    ended = await run(
        db,
        command(
            "schedule.create",
            schedule(trigger={"kind": "daily", "hours": 1}, endsAt="2026-03-10T11:00:00Z"),
        ),
        NOW,
    )
    assert "never fires" in ended["errors"][0]["message"]
    calendar_ends = await run(  # its first would be 10000-01-01: the command is answered
        db,
        command(
            "schedule.create",
            schedule(trigger={"kind": "daily", "hours": 1}, startsAt="9999-12-31T02:00:00Z"),
        ),
        NOW,
    )
    assert calendar_ends["errors"][0]["field"] == "data.trigger"
    assert "never fires" in calendar_ends["errors"][0]["message"]
