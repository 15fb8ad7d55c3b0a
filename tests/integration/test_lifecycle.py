"""Every command and error code on real PostgreSQL; pause/resume/trigger/conditions with the
ticker under a settable clock; every file in examples/ applied as a user would."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.scheduler.commands import Context, apply_command
from shared.clock import SettableClock
from shared.persistence.database import connect
from tests.integration.commands_doc import render_commands_doc
from tests.integration.helpers import command, run, schedule
from tests.integration.test_ticker import Collector, drive, make_ticker

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DAILY = {"kind": "daily", "hours": 10, "minutes": 30}


async def create(db: asyncpg.Connection, now: datetime = NOW, **fields) -> dict:
    result = await run(db, command("schedule.create", schedule(**fields)), now)
    assert result["type"] == "schedule.created", result
    return result["data"]


async def test_examples_apply_in_order(db: asyncpg.Connection) -> None:
    ctx = Context(action_topics=frozenset())
    order = [
        ("000-faas-scheduled-event.json", "schedule.created"),
        ("001-custom-scheduled-event.json", "schedule.created"),
        ("002-subscription-schedule.json", "schedule.created"),
        ("003-campaign-template-schedule.json", "schedule.replaced"),
        ("pause.json", "schedule.paused"),
        ("resume.json", "schedule.resumed"),
        ("update.json", "schedule.updated"),
        ("replace.json", "schedule.replaced"),
        ("trigger.json", "schedule.triggered"),
        ("get.json", "schedule.fetched"),
        ("delete.json", "schedule.deleted"),
        ("quickstart.json", "command.rejected"),  # meta is filled in by `chime publish`
    ]
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(name for name, _ in order)
    pairs = []
    for name, expected in order:
        body = json.loads((EXAMPLES / name).read_text())
        async with db.transaction():
            result = await apply_command(db, body, NOW, ctx)
        assert result["type"] == expected, (name, result)
        pairs.append((name, body, result))
    # docs/commands.md shows each example with the result Chime really gives
    rendered = render_commands_doc(pairs, NOW)
    doc = EXAMPLES.parent / "docs" / "commands.md"
    if os.environ.get("CHIME_UPDATE_DOCS"):
        doc.write_text(rendered)
    assert doc.read_text() == rendered, "docs/commands.md is stale: CHIME_UPDATE_DOCS=1 make test"
    seed_001 = await run(
        db, json.loads((EXAMPLES / "001-custom-scheduled-event.json").read_text()), NOW
    )
    assert seed_001["data"]["cronExpression"] == "0 30 10 ? * *"  # replayed: same result


async def test_replace_overwrites_and_creates_when_absent(db: asyncpg.Connection) -> None:
    created = await create(db, trigger=DAILY)
    replaced = await run(
        db,
        command(
            "schedule.replace", schedule(trigger={"kind": "daily", "hours": 11}, expectedVersion=1)
        ),
        NOW,
    )
    assert replaced["type"] == "schedule.replaced"
    assert replaced["data"]["id"] == created["id"] and replaced["data"]["version"] == 2
    assert replaced["data"]["scheduledFor"] == "2026-03-11T11:00:00Z"
    pending = await db.fetch("SELECT due_at FROM actions WHERE state = 'PENDING'")
    assert [r["due_at"] for r in pending] == [datetime(2026, 3, 11, 11, tzinfo=UTC)]
    fresh_id = str(uuid.uuid4())
    by_id = await run(
        db, command("schedule.replace", {**schedule("other", trigger=DAILY), "id": fresh_id}), NOW
    )
    assert by_id["type"] == "schedule.replaced" and by_id["data"]["id"] == fresh_id
    foreign = await run(
        db,
        command(
            "schedule.replace", {**schedule("x", trigger=DAILY), "id": fresh_id}, tenant="acct-2"
        ),
        NOW,
    )
    assert foreign["errors"][0]["code"] == "NOT_FOUND"
    stale = await run(
        db, command("schedule.replace", schedule(trigger=DAILY, expectedVersion=1)), NOW
    )
    assert stale["errors"][0]["code"] == "CONFLICT"
    assert stale["errors"][0]["detail"] == {"expectedVersion": 1, "actualVersion": 2}


async def test_concurrent_replace_with_same_expected_version_one_wins(database_url: str) -> None:
    first, second = await connect(database_url), await connect(database_url)
    try:
        await create(first, trigger=DAILY)
        started = asyncio.Event()

        async def replace(conn: asyncpg.Connection, hours: int) -> dict:
            async with conn.transaction():
                result = await apply_command(
                    conn,
                    command(
                        "schedule.replace",
                        schedule(trigger={"kind": "daily", "hours": hours}, expectedVersion=1),
                    ),
                    NOW,
                )
                started.set()
                await asyncio.sleep(0.2)  # hold the transaction open: the other must wait
                return result

        results = await asyncio.gather(replace(first, 5), replace(second, 6))
        outcomes = sorted(r["type"] for r in results)
        assert outcomes == ["command.rejected", "schedule.replaced"]
        loser = next(r for r in results if r["type"] == "command.rejected")
        assert loser["errors"][0]["code"] == "CONFLICT"
        assert await first.fetchval("SELECT version FROM schedules") == 2
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize("kind", ["schedule.create", "schedule.update"])
async def test_one_command_applied_by_two_replicas_at_once_takes_effect_once(
    database_url: str, kind: str
) -> None:
    """Two schedulers given the same command (a redelivery after a rebalance): the second
    waits for the first's commit, finds the command recorded and answers with its result."""
    first, second = await connect(database_url), await connect(database_url)
    try:
        if kind == "schedule.update":
            created = await create(first, trigger=DAILY)
            body = command(kind, {"id": created["id"], "changes": {"labels": {"team": "x"}}})
        else:
            body = command(kind, schedule(trigger=DAILY))
        holding = asyncio.Event()

        async def apply(conn: asyncpg.Connection, hold: bool) -> dict:
            async with conn.transaction():
                result = await apply_command(conn, body, NOW)
                if hold:  # the first keeps its transaction open: the second must wait on it
                    holding.set()
                    await asyncio.sleep(0.3)
                return result

        async def later() -> dict:
            await holding.wait()
            return await apply(second, hold=False)

        one, other = await asyncio.gather(apply(first, hold=True), later())
        assert one["type"] == (
            "schedule.created" if kind == "schedule.create" else "schedule.updated"
        )
        assert other == one  # the first's result, replayed
        assert await first.fetchval("SELECT count(*) FROM schedules") == 1
        assert await first.fetchval("SELECT version FROM schedules") == (
            1 if kind == "schedule.create" else 2
        )
        recorded = "SELECT count(*) FROM processed_commands WHERE command_id = $1"
        assert await first.fetchval(recorded, body["meta"]["commandId"]) == 1
    finally:
        await first.close()
        await second.close()


async def test_update_merges_and_names_fields_under_changes(db: asyncpg.Connection) -> None:
    created = await create(db, trigger=DAILY, policy={"ackTimeout": "PT1M", "misfire": "SKIP"})
    updated = await run(
        db,
        command(
            "schedule.update",
            {
                "id": created["id"],
                "changes": {
                    "trigger": {"kind": "daily", "hours": 12},
                    "policy": {"ackTimeout": "PT2M"},
                },
            },
        ),
        NOW,
    )
    assert updated["type"] == "schedule.updated" and updated["data"]["version"] == 2
    assert updated["data"]["spec"]["policy"]["ackTimeout"] == "PT2M"
    assert updated["data"]["spec"]["policy"]["misfire"] == "SKIP"  # merged, not replaced
    assert updated["data"]["scheduledFor"] == "2026-03-11T12:00:00Z"
    bad = await run(
        db,
        command(
            "schedule.update",
            {"id": created["id"], "changes": {"trigger": {"kind": "daily", "hours": 25}}},
        ),
        NOW,
    )
    assert bad["errors"][0]["field"] == "data.changes.trigger.hours"
    await create(db, name="taken", trigger=DAILY)
    clash = await run(
        db, command("schedule.update", {"id": created["id"], "changes": {"name": "taken"}}), NOW
    )
    assert (clash["errors"][0]["code"], clash["errors"][0]["field"]) == (
        "CONFLICT",
        "data.changes.name",
    )
    reset = await run(
        db, command("schedule.update", {"id": created["id"], "changes": {"policy": None}}), NOW
    )
    assert reset["data"]["spec"]["policy"]["ackTimeout"] == "PT5M"  # null resets to the default


async def test_every_error_code(db: asyncpg.Connection, database_url: str) -> None:
    codes = {}
    codes["VALIDATION"] = await run(
        db, command("schedule.create", schedule(trigger={"kind": "daily", "hours": -1})), NOW
    )
    codes["NOT_FOUND"] = await run(db, command("schedule.pause", {"name": "nope"}), NOW)
    await create(db, trigger=DAILY)
    codes["CONFLICT"] = await run(db, command("schedule.create", schedule(trigger=DAILY)), NOW)
    codes["FORBIDDEN"] = await run(
        db,
        command(
            "schedule.create",
            schedule("t", trigger=DAILY, action={"type": "x", "topic": "payments.due"}),
        ),
        NOW,
    )
    big = schedule("big", trigger=DAILY)
    big["action"]["payload"] = {"blob": "x" * 300_000}
    codes["PAYLOAD_TOO_LARGE"] = await run(db, command("schedule.create", big), NOW)
    codes["UNSUPPORTED"] = await run(db, command("schedule.frobnicate", {}), NOW)
    await db.execute("ALTER TABLE processed_commands RENAME TO processed_commands_gone")
    try:
        codes["INTERNAL"] = await run(db, command("schedule.get", {"name": "nightly"}), NOW)
    finally:
        await db.execute("ALTER TABLE processed_commands_gone RENAME TO processed_commands")
    for code, result in codes.items():
        assert result["type"] == "command.rejected", (code, result)
        assert result["errors"][0]["code"] == code, (code, result)
        assert result["errors"][0]["message"]


async def test_action_topic_from_allow_list_routes_fired_events(db, pool) -> None:
    ctx = Context(action_topics=frozenset({"payments.due"}))
    body = command(
        "schedule.create",
        schedule(
            trigger={"kind": "once", "at": "2026-03-10T12:00:01Z"},
            action={"type": "payment-run", "topic": "payments.due"},
        ),
    )
    async with db.transaction():
        assert (await apply_command(db, body, NOW, ctx))["type"] == "schedule.created"
    clock, sink = SettableClock(NOW + timedelta(seconds=1)), Collector()
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()
    assert sink.topics == ["payments.due"]


async def test_disabled_and_active_false_store_paused(db: asyncpg.Connection) -> None:
    data = await create(db, trigger=DAILY, active=False)
    assert data["state"] == "PAUSED" and data["spec"]["enabled"] is False
    both = await run(
        db,
        command("schedule.create", schedule("b", trigger=DAILY, active=False, enabled=True)),
        NOW,
    )
    assert "active and enabled disagree" in both["errors"][0]["message"]


async def test_pause_holds_everything_and_resume_now_skips_what_was_missed(db, pool) -> None:
    clock, sink = SettableClock(NOW), Collector()
    data = await create(
        db,
        clock.now(),
        trigger={"kind": "interval", "every": "PT1M"},
        actions=[
            {"type": "START", "at": "2026-03-10T12:02:30Z"},
            {"type": "STOP", "at": "2026-03-10T12:30:00Z"},
        ],
    )
    paused = await run(db, command("schedule.pause", {"id": data["id"]}), clock.now())
    assert paused["data"]["state"] == "PAUSED" and paused["data"]["nextFireTimes"] == []
    ticker = make_ticker(pool, clock, sink)
    clock.advance(timedelta(minutes=5))
    assert await ticker.tick() == 0  # nothing fires while paused, explicit actions included
    resumed = await run(
        db, command("schedule.resume", {"id": data["id"], "resumeFrom": "NOW"}), clock.now()
    )
    assert resumed["data"]["state"] == "ACTIVE"
    assert resumed["data"]["scheduledFor"] == "2026-03-10T12:06:00Z"
    skipped = await db.fetchval(
        "SELECT count(*) FROM actions WHERE state = 'SKIPPED' AND type = 'START'"
    )
    assert skipped == 1  # START fell due while paused
    await drive(ticker, clock, NOW + timedelta(minutes=31))
    types = [e["data"]["type"] for e in sink.fired]
    assert types.count("STOP") == 1 and "START" not in types
    assert sink.fired[0]["data"]["dueAt"] == "2026-03-10T12:06:00Z"


async def test_resume_from_paused_at_catches_up_once(db, pool) -> None:
    clock, sink = SettableClock(NOW), Collector()
    data = await create(db, clock.now(), trigger={"kind": "interval", "every": "PT1M"})
    await run(db, command("schedule.pause", {"id": data["id"]}), clock.now())
    clock.advance(timedelta(minutes=10))
    await run(
        db, command("schedule.resume", {"id": data["id"], "resumeFrom": "PAUSED_AT"}), clock.now()
    )
    ticker = make_ticker(pool, clock, sink)
    await ticker.tick()
    # FIRE_ONCE: one late occurrence for the missed run, then on schedule
    assert [e["data"]["dueAt"] for e in sink.events] == ["2026-03-10T12:01:00Z"]
    assert await ticker.next_wake() == datetime(2026, 3, 10, 12, 11, tzinfo=UTC)


async def _stored(db: asyncpg.Connection, schedule_id: str) -> tuple[dict, list[dict]]:
    """A schedule's row and its occurrences, as stored."""
    sid = uuid.UUID(schedule_id)
    row = await db.fetchrow(
        "SELECT state, version, paused_at, updated_at, spec FROM schedules WHERE id = $1", sid
    )
    actions = await db.fetch(
        "SELECT id, origin, state, version, due_at, fire_at FROM actions"
        " WHERE schedule_id = $1 ORDER BY due_at, id",
        sid,
    )
    return dict(row), [dict(a) for a in actions]


async def test_each_command_changes_its_schedule_and_not_the_others(db) -> None:
    """Update, pause, resume and delete of one schedule leave every other schedule of the same
    tenant as it was: its row, its series, its explicit actions (one falls due meanwhile)."""
    clock = SettableClock(NOW)
    both = {
        "trigger": {"kind": "interval", "every": "PT1M"},
        "actions": [
            {"type": "START", "at": "2026-03-10T12:02:30Z"},
            {"type": "STOP", "at": "2026-03-10T12:30:00Z"},
        ],
    }
    mine = await create(db, clock.now(), name="mine", **both)
    other = await create(db, clock.now(), name="other", **both)
    before = await _stored(db, other["id"])
    assert [a["origin"] for a in before[1]] == ["SERIES", "EXPLICIT", "EXPLICIT"]
    ref = {"id": mine["id"]}
    steps = [
        ("schedule.update", {**ref, "changes": {"description": "redone"}}, timedelta(0)),
        ("schedule.pause", ref, timedelta(0)),
        ("schedule.resume", {**ref, "resumeFrom": "NOW"}, timedelta(minutes=5)),
        ("schedule.delete", ref, timedelta(0)),
    ]
    for kind, data, later in steps:
        clock.advance(later)
        answer = await run(db, command(kind, data), clock.now())
        assert answer["type"] != "command.rejected", answer
        assert await _stored(db, other["id"]) == before, kind
    assert [a["state"] for a in (await _stored(db, mine["id"]))[1]] == [
        "SKIPPED",  # START: fell due while paused, resumed from NOW
        "CANCELLED",  # the series' next, redone on resume, then deleted
        "CANCELLED",  # STOP
    ]


@pytest.mark.parametrize(
    ("start", "stop", "paused", "fired", "states"),
    [
        # STOP is due at the resume instant itself: not missed, it fires
        ("12:02:30", "12:05:00", "12:00", "STOP", [("START", "SKIPPED"), ("STOP", "DISPATCHED")]),
        # START fell due before the pause, not fired yet (the ticker behind): not missed while
        # paused, it fires late (policy.misfire); it was SKIPPED too, "due while paused"
        ("12:01:00", "12:03:00", "12:02", "START", [("START", "DISPATCHED"), ("STOP", "SKIPPED")]),
    ],
)
async def test_resume_from_now_skips_only_what_fell_due_while_paused(
    db, pool, start, stop, paused, fired, states
) -> None:
    """Paused at `paused`, resumed from NOW at 12:05: what fell due in between is SKIPPED."""
    clock, sink = SettableClock(NOW), Collector()
    actions = [
        {"type": "START", "at": f"2026-03-10T{start}Z"},
        {"type": "STOP", "at": f"2026-03-10T{stop}Z"},
    ]
    data = await create(
        db, clock.now(), trigger={"kind": "once", "at": "2026-03-10T13:00:00Z"}, actions=actions
    )
    clock.set(datetime.fromisoformat(f"2026-03-10T{paused}:00+00:00"))
    await run(db, command("schedule.pause", {"id": data["id"]}), clock.now())
    clock.set(datetime(2026, 3, 10, 12, 5, tzinfo=UTC))
    await run(db, command("schedule.resume", {"id": data["id"], "resumeFrom": "NOW"}), clock.now())
    await make_ticker(pool, clock, sink).tick()
    assert [e["data"]["type"] for e in sink.fired] == [fired]
    assert sink.fired[0]["data"]["misfired"] is (fired == "START")
    stored = await db.fetch(
        "SELECT type, state FROM actions WHERE origin = 'EXPLICIT' ORDER BY due_at"
    )
    assert [(r["type"], r["state"]) for r in stored] == states


async def test_an_update_while_paused_keeps_the_instant_it_was_paused(db, pool) -> None:
    """resumeFrom PAUSED_AT catches up from when the schedule was paused, also after an
    update made while it was paused (the update does not restart the pause)."""
    clock, sink = SettableClock(NOW), Collector()
    data = await create(db, clock.now(), trigger={"kind": "interval", "every": "PT1M"})
    await run(db, command("schedule.pause", {"id": data["id"]}), clock.now())
    clock.advance(timedelta(minutes=5))
    changes = {"id": data["id"], "changes": {"description": "edited while paused"}}
    updated = await run(db, command("schedule.update", changes), clock.now())
    assert updated["data"]["state"] == "PAUSED"
    clock.advance(timedelta(minutes=5))
    await run(
        db, command("schedule.resume", {"id": data["id"], "resumeFrom": "PAUSED_AT"}), clock.now()
    )
    await make_ticker(pool, clock, sink).tick()
    # the first run missed since 12:00, not since the update at 12:05
    assert [e["data"]["dueAt"] for e in sink.events] == ["2026-03-10T12:01:00Z"]


async def test_trigger_fires_now_outside_the_series_with_reason(db, pool) -> None:
    clock, sink = SettableClock(NOW), Collector()
    data = await create(db, clock.now(), trigger=DAILY)
    await run(db, command("schedule.pause", {"id": data["id"]}), clock.now())
    triggered = await run(
        db,
        command(
            "schedule.trigger",
            {"id": data["id"], "reason": "incident 42", "payload": {"rerun": True}},
        ),
        clock.now(),
    )
    assert triggered["type"] == "schedule.triggered"
    manual = triggered["data"]["recentActions"][0]
    assert manual["dueAt"] == "2026-03-10T12:00:00Z" and manual["state"] == "PENDING"
    await make_ticker(pool, clock, sink).tick()  # fires even though the schedule is paused
    assert [e["data"]["payload"] for e in sink.events] == [{"rerun": True}]
    history = await db.fetchval(
        "SELECT message FROM action_history WHERE action_id = $1 AND state = 'PENDING'",
        uuid.UUID(manual["actionId"]),
    )
    assert history.endswith("incident 42")


@pytest.mark.parametrize(
    ("condition", "parameters", "fires", "reason"),
    [
        (
            "Subscription.Status == _SUBSCRIPTION_STATUS",
            {"Subscription": {"Status": "Active"}, "_SUBSCRIPTION_STATUS": "Active"},
            True,
            None,
        ),
        (
            "Subscription.Status == _SUBSCRIPTION_STATUS",
            {"Subscription": {"Status": "Cancelled"}, "_SUBSCRIPTION_STATUS": "Active"},
            False,
            "condition is false",
        ),
        ("payload.amount > limit && attempt == 1", {"limit": 1000}, True, None),
        ("Missing.Field > 1", {}, False, "condition could not be evaluated"),
        # in the ticker's event loop: what would hold every fire up is refused, not computed
        (
            "2 ^ base > 0",
            {"base": 4_000_000_000},
            False,
            "condition could not be evaluated: ValueError: '^' would make an integer of about",
        ),
        (
            '"a" * n != ""',
            {"n": 10_000_000_000},
            False,
            "condition could not be evaluated: ValueError: '*' would make 10000000000 items",
        ),
        ('2 ^ 10 == 1024 && "ab" * 3 == "ababab"', {}, True, None),
    ],
)
async def test_condition_at_fire_time(db, pool, condition, parameters, fires, reason) -> None:
    clock, sink = SettableClock(NOW), Collector()
    await create(
        db,
        clock.now(),
        trigger={"kind": "once", "at": "2026-03-10T12:00:01Z"},
        condition=condition,
        parameters=parameters,
        action={"type": "billing-run", "payload": {"amount": 2000}},
    )
    clock.advance(timedelta(seconds=1))
    await make_ticker(pool, clock, sink).tick()
    due = [e for e in sink.events if e["type"] == "action.due"]
    skipped = [e for e in sink.events if e["type"] == "action.state-changed"]
    assert bool(due) is fires and bool(skipped) is not fires
    state = await db.fetchval("SELECT state FROM actions")
    assert state == ("DISPATCHED" if fires else "SKIPPED")
    if reason:
        assert skipped[0]["data"]["reason"].startswith(reason)
        assert skipped[0]["data"]["state"] == "SKIPPED"


async def test_condition_reads_an_explicit_actions_own_payload(db, pool) -> None:
    """An explicit action's payload (stored on its occurrence, not the schedule's) is what the
    condition sees and what its action.due carries."""
    clock, sink = SettableClock(NOW), Collector()
    at = "2026-03-10T12:00:01Z"
    await create(
        db,
        clock.now(),
        actions=[
            {"type": "charge", "at": at, "payload": {"amount": 2000, "note": "big"}},
            {"type": "charge", "at": at, "payload": {"amount": 5}},
        ],
        condition="payload.amount > 1000",
        action={"type": "charge", "payload": {"amount": 0}},
    )
    clock.advance(timedelta(seconds=1))
    await make_ticker(pool, clock, sink).tick()
    [due] = [e for e in sink.events if e["type"] == "action.due"]
    [skipped] = [e for e in sink.events if e["type"] == "action.state-changed"]
    assert due["data"]["payload"] == {"amount": 2000, "note": "big"}
    assert skipped["data"]["reason"] == "condition is false: payload.amount > 1000"


async def test_condition_syntax_is_checked_on_create(db: asyncpg.Connection) -> None:
    result = await run(
        db, command("schedule.create", schedule(trigger=DAILY, condition="a ==== b")), NOW
    )
    assert result["errors"][0]["field"] == "data.condition"
    assert "not valid JEXL" in result["errors"][0]["message"]


@pytest.mark.parametrize(
    "payload",
    [{"note": "a\x00b"}, {"a\x00": 1}, {"deep": [1, {"list": ["ok", "\x00"]}]}],
    ids=["value", "key", "nested"],
)
async def test_nul_characters_are_refused(db: asyncpg.Connection, payload: dict) -> None:
    data = schedule(trigger=DAILY)
    data["action"]["payload"] = payload
    result = await run(db, command("schedule.create", data), NOW)
    assert result["errors"][0]["code"] == "VALIDATION" and "NUL" in result["errors"][0]["message"]


async def test_text_that_looks_like_an_escaped_nul_is_stored(db: asyncpg.Connection) -> None:
    data = schedule(trigger=DAILY)
    data["action"]["payload"] = {"note": "\\u0000 is how JSON writes NUL"}
    result = await run(db, command("schedule.create", data), NOW)
    assert result["type"] == "schedule.created", result["errors"]
    assert result["data"]["spec"]["action"]["payload"] == data["action"]["payload"]


async def test_commands_on_a_completed_schedule(db, pool) -> None:
    """A schedule whose series has ended (its once trigger fired) cannot be paused or resumed;
    an update with a trigger that fires again makes it ACTIVE, as a replace would."""
    clock, sink = SettableClock(NOW), Collector()
    once = await create(db, trigger={"kind": "once", "at": "2026-03-10T12:00:05Z"})
    await drive(make_ticker(pool, clock, sink), clock, NOW + timedelta(minutes=1))
    assert len(sink.fired) == 1
    assert await db.fetchval("SELECT state FROM schedules") == "COMPLETED"
    now = clock.now()
    for kind, message in [
        ("schedule.pause", "the schedule is COMPLETED: nothing left to pause"),
        ("schedule.resume", "the schedule is COMPLETED: replace it to start again"),
    ]:
        refused = await run(db, command(kind, {"id": once["id"]}), now)
        assert refused["type"] == "command.rejected", refused
        error = refused["errors"][0]
        assert (error["code"], error["field"], error["message"]) == ("CONFLICT", "data", message)
    assert await db.fetchval("SELECT state FROM schedules") == "COMPLETED"  # nothing changed
    again = await run(
        db, command("schedule.update", {"id": once["id"], "changes": {"trigger": DAILY}}), now
    )
    assert again["type"] == "schedule.updated", again
    assert again["data"]["state"] == "ACTIVE"
    assert again["data"]["scheduledFor"] == "2026-03-11T10:30:00Z"
    pending = await db.fetch("SELECT due_at FROM actions WHERE state = 'PENDING'")
    assert [r["due_at"] for r in pending] == [datetime(2026, 3, 11, 10, 30, tzinfo=UTC)]


async def test_replace_by_id_names_what_is_wrong_with_it(db: asyncpg.Connection) -> None:
    not_an_id = await run(
        db, command("schedule.replace", {**schedule(trigger=DAILY), "id": "nightly"}), NOW
    )
    error = not_an_id["errors"][0]
    assert (error["code"], error["field"]) == ("VALIDATION", "data.id")
    assert error["message"] == "id 'nightly' is not a UUID"
    absent = await run(
        db, command("schedule.replace", schedule(trigger=DAILY, expectedVersion=3)), NOW
    )
    error = absent["errors"][0]
    assert (error["code"], error["field"]) == ("CONFLICT", "data.expectedVersion")
    assert "does not exist: leave expectedVersion out to create it" in error["message"]
    assert error["detail"] == {"expectedVersion": 3, "actualVersion": None}
    assert await db.fetchval("SELECT count(*) FROM schedules") == 0
