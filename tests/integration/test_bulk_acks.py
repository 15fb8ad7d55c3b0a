"""`apply_acks` (a batch of acks in a few multi-row statements), and `apply_acks_in_parts` (the
batch split by occurrence, the parts applied at once on connections of their own), announce
and store exactly what `apply_ack` does one by one: chained and duplicate acks, retries, dead
letters, copies of FAILED acks, stale and unknown acks, another tenant's, and a buffered
occurrence released."""

from __future__ import annotations

import asyncio
import functools
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.acker.acks import apply_ack, apply_acks, apply_acks_in_parts, parts_of
from services.scheduler.commands import Context, apply_command
from shared.contracts import ActionAck, format_instant
from shared.persistence.database import connect, create_pool
from shared.settings import Topics
from tests.integration.helpers import add_schedule, command, generated, schedule

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
TOPICS = Topics("chime.")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _explicit(types: list[str]) -> list[dict[str, Any]]:
    return [
        {"type": t, "at": format_instant(NOW - timedelta(minutes=30 - i))}
        for i, t in enumerate(types)
    ]


async def _world(conn: asyncpg.Connection) -> dict[str, str]:
    """Schedules with fired occurrences; returns action type -> action id."""
    created = NOW - timedelta(hours=1)
    bodies = [
        command(
            "schedule.create",
            schedule(
                "x",
                actions=_explicit(["A1", "A2", "A3", "A4", "A5", "A6", "A8", "A9"]),
                policy={"retry": {"maxAttempts": 2, "initialBackoff": "PT1M"}},
            ),
        ),
        command(
            "schedule.create",
            schedule("y", actions=_explicit(["A7"]), policy={"retry": {"maxAttempts": 1}}),
        ),
        command(
            "schedule.create",
            schedule("z", actions=_explicit(["Z1", "Z2"]), policy={"overlap": "BUFFER_ONE"}),
        ),
    ]
    async with conn.transaction():
        for body in bodies:
            result = await apply_command(conn, body, created, Context())
            assert result["type"] == "schedule.created", result
        await conn.execute(
            "UPDATE actions SET state = 'DISPATCHED', fired_at = $1, "
            "ack_deadline = $2 WHERE type NOT IN ('A6', 'A9', 'Z2')",
            NOW - timedelta(minutes=1),
            NOW + timedelta(minutes=5),
        )
        # A6 is not due yet; A9 is due and PENDING, as a round rolled back after publishing
        # leaves it
        await conn.execute(
            "UPDATE actions SET due_at = $1, fire_at = $1 WHERE type = 'A6'",
            NOW + timedelta(hours=1),
        )
        await conn.execute(
            "UPDATE actions SET state = 'RUNNING', ack_deadline = $1 WHERE type = 'A8'",
            NOW + timedelta(seconds=30),
        )
        await conn.execute("UPDATE actions SET held = true WHERE type = 'Z2'")
    return {r["type"]: str(r["id"]) for r in await conn.fetch("SELECT id, type FROM actions")}


def _ack(
    ids: dict[str, str], action: str, state: str, attempt: int = 1, tenant: str = "acct-1"
) -> ActionAck:
    return ActionAck.model_validate(
        {
            "type": "action.ack",
            "meta": {"tenant": tenant},
            "data": {
                "actionId": ids.get(action, action),
                "attempt": attempt,
                "state": state,
                "message": f"{action} {state}",
                "output": {"n": attempt},
            },
        }
    )


def _acks(ids: dict[str, str]) -> list[ActionAck]:
    ack = functools.partial(_ack, ids)
    return [
        ack("A1", "RUNNING"),
        ack("A2", "SUCCEEDED"),
        ack("A1", "SUCCEEDED"),  # after its RUNNING in the same batch
        ack("A2", "SUCCEEDED"),  # duplicate
        ack("A3", "FAILED"),  # retried
        ack("A4", "RUNNING", attempt=2),  # never fired
        ack("A5", "SUCCEEDED", tenant="acct-2"),  # another tenant's
        ack("not-a-uuid", "SUCCEEDED"),
        ack("A6", "RUNNING"),  # not dispatched: not due yet
        ack("A9", "SUCCEEDED"),  # published by a round rolled back: its fire recorded first
        ack("A7", "FAILED"),  # last attempt: dead letter
        ack("Z1", "SUCCEEDED"),  # releases Z2
        ack("A5", "RUNNING"),
        ack("A3", "FAILED"),  # a copy of a retried failure: announced again
        ack("A7", "FAILED"),  # a copy of the last attempt's: the dead letter again
        ack("A8", "RUNNING"),  # already RUNNING: renews the deadline
    ]


def _normal(value: Any) -> Any:
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    names: dict[str, str] = {}
    return orjson.loads(UUID.sub(lambda m: names.setdefault(m[0], f"<uuid-{len(names)}>"), text))


async def _stored(conn: asyncpg.Connection) -> Any:
    actions = await conn.fetch(
        "SELECT type, state, attempt, version, ack_deadline, held, fire_at, fired_at "
        "FROM actions ORDER BY type, attempt"
    )
    history = await conn.fetch(
        "SELECT a.type, h.attempt, h.state, h.at, h.message, h.output FROM action_history h "
        "JOIN actions a ON a.id = h.action_id ORDER BY a.type, h.id"
    )
    # the dashboard's timeline, counted by a trigger as the history is written
    counted = await conn.fetchrow(
        "SELECT sum(fired)::int AS fired, sum(acknowledged)::int AS acknowledged"
        " FROM activity_minutes"
    )
    return orjson.loads(
        orjson.dumps(
            [[dict(r) for r in actions], [dict(r) for r in history], dict(counted)], default=str
        )
    )


async def _applied(
    conn: asyncpg.Connection,
    url: str,
    how: str,
    picks: list[tuple[str, str, int, str]] | None = None,
) -> Any:
    """The world, then `_acks` (or acks of `picks`: label, state, attempt, tenant) applied
    `how`: in bulk, in parts, or one by one. Their events, and the rows after."""
    ids = await _world(conn)
    acks = _acks(ids) if picks is None else [_ack(ids, *pick) for pick in picks]
    if how == "parts" and picks is not None:
        parts = parts_of(acks, 3, 1)
        pool = await create_pool(url, 4)
        try:
            per_ack = await apply_acks_in_parts(pool, acks, parts, NOW, TOPICS, lambda: 0.0)
        finally:
            await pool.close()
    elif how == "parts":
        # three parts by occurrence (an occurrence's acks together, in order): the chains of A1,
        # A2 and A3 in different parts, Z1 (releasing Z2) among others, unknown ids in the last
        part_of = {"A1": 0, "A2": 1, "A3": 2, "A4": 0, "A5": 1, "A6": 2, "A7": 0, "Z1": 1}
        label = {v: k for k, v in ids.items()}
        parts: list[list[int]] = [[], [], []]
        for index, ack in enumerate(acks):
            parts[part_of.get(label.get(ack.data.action_id, ""), 2)].append(index)
        pool = await create_pool(url, 4)
        try:
            per_ack = await apply_acks_in_parts(pool, acks, parts, NOW, TOPICS, lambda: 0.0)
        finally:
            await pool.close()
    else:
        async with conn.transaction():
            if how == "bulk":
                per_ack = await apply_acks(conn, acks, NOW, TOPICS, lambda: 0.0)
            else:
                per_ack = [await apply_ack(conn, a, NOW, TOPICS, lambda: 0.0) for a in acks]
    events = [[(o.topic, o.key is not None, orjson.loads(o.value)) for o in out] for out in per_ack]
    return events, await _stored(conn)


@pytest.mark.parametrize("how", ["bulk", "parts"])
async def test_bulk_and_one_by_one_agree(
    database_url: str, twin_database_url: str, how: str
) -> None:
    outcomes = []
    for url, way in ((database_url, how), (twin_database_url, "one by one")):
        conn = await connect(url, tenant=None)
        try:
            outcomes.append(await _applied(conn, url, way))
        finally:
            await conn.close()
    (bulk_events, bulk_rows), (single_events, single_rows) = outcomes
    kinds = {e[2]["type"] for out in single_events for e in out}
    reasons = {e[2]["data"].get("reason", "").split(":")[0] for out in single_events for e in out}
    # The batch does exercise every path.
    assert {"action.state-changed", "action.ack-ignored", "action.dead"} <= kinds, kinds
    assert {"DUPLICATE", "UNKNOWN_ACTION", "UNKNOWN_ATTEMPT", "NOT_DISPATCHED"} <= reasons, reasons
    for i, (bulk, single) in enumerate(zip(bulk_events, single_events, strict=True)):
        assert _normal(bulk) == _normal(single), f"ack {i}"
    assert bulk_rows == single_rows
    assert single_rows[2]["acknowledged"] >= 4, single_rows[2]
    released = [a for a in single_rows[0] if a["type"] == "Z2"]
    assert released and released[0]["held"] is False
    recorded = [h["state"] for h in single_rows[1] if h["type"] == "A9"]
    assert recorded == ["DISPATCHED", "SUCCEEDED"], recorded


async def test_a_part_losing_its_connection_fails_the_batch_as_a_retryable_error(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts applied at once: when one loses the database, apply_acks_in_parts raises that
    error (which the acker retries, the batch rewound), not a group of errors it would not
    recognise as transient. Applied again, the batch announces every state change, whether
    the other part had committed before the failure or not."""
    from services.acker import acks as module

    apply_acks = module.apply_acks
    failures = [asyncpg.exceptions.ConnectionDoesNotExistError("connection lost")]

    async def losing_a2_once(conn, part, now, topics, rand, metrics=None):  # type: ignore[no-untyped-def]
        if failures and part[0].data.action_id == ids["A2"]:
            raise failures.pop()
        return await apply_acks(conn, part, now, topics, rand, metrics)

    conn = await connect(database_url, tenant=None)
    pool = await create_pool(database_url, 4)
    try:
        ids = await _world(conn)
        acks = [a for a in _acks(ids) if a.data.action_id in (ids["A1"], ids["A2"])]
        parts = [
            [i for i, a in enumerate(acks) if a.data.action_id == ids[t]] for t in ("A1", "A2")
        ]
        monkeypatch.setattr(module, "apply_acks", losing_a2_once)
        with pytest.raises(asyncpg.exceptions.ConnectionDoesNotExistError):
            await apply_acks_in_parts(pool, acks, parts, NOW, TOPICS, lambda: 0.0)
        again = await apply_acks_in_parts(pool, acks, parts, NOW, TOPICS, lambda: 0.0)
        rows = await conn.fetch("SELECT type, state FROM actions WHERE type IN ('A1', 'A2')")
    finally:
        await pool.close()
        await conn.close()
    assert {r["type"]: r["state"] for r in rows} == {"A1": "SUCCEEDED", "A2": "SUCCEEDED"}
    bodies = [orjson.loads(o.value) for out in again for o in out]
    announced = {
        (b["data"]["actionId"], b["data"]["state"])
        for b in bodies
        if b["type"] == "action.state-changed"
    }
    assert {(ids["A1"], "SUCCEEDED"), (ids["A2"], "SUCCEEDED")} <= announced


async def test_an_ack_that_waited_for_another_reports_the_state_that_one_left(
    database_url: str,
) -> None:
    """Two ackers at once with acks of one occurrence: RUNNING commits while SUCCEEDED waits
    for the row. SUCCEEDED is applied to the row as RUNNING left it, and says so
    (previousState RUNNING, not the DISPATCHED its statement read before it waited)."""
    conn = await connect(database_url, tenant=None)
    first = await connect(database_url, tenant=None)
    second = await connect(database_url, tenant=None)
    try:
        ids = await _world(conn)
        waiting = await second.fetchval("SELECT pg_backend_pid()")

        async def succeeded() -> list[list[Any]]:
            async with second.transaction():
                return await apply_acks(
                    second, [_ack(ids, "A1", "SUCCEEDED")], NOW, TOPICS, lambda: 0.0
                )

        async with first.transaction():
            await apply_acks(first, [_ack(ids, "A1", "RUNNING")], NOW, TOPICS, lambda: 0.0)
            later = asyncio.create_task(succeeded())
            async with asyncio.timeout(10):
                # until it waits for the row `first` changed (a server's state: polled)
                while not await conn.fetchval("SELECT pg_blocking_pids($1)", waiting):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        (events,) = await later
        row = await conn.fetchrow("SELECT state, version FROM actions WHERE type = 'A1'")
        history = await conn.fetch(
            "SELECT state FROM action_history WHERE action_id = $1 ORDER BY id", ids["A1"]
        )
    finally:
        for c in (conn, first, second):
            await c.close()
    (event,) = [orjson.loads(o.value) for o in events]
    assert event["type"] == "action.state-changed"
    assert (event["data"]["previousState"], event["data"]["state"]) == ("RUNNING", "SUCCEEDED")
    assert (row["state"], row["version"]) == ("SUCCEEDED", 3)
    assert [h["state"] for h in history] == ["RUNNING", "SUCCEEDED"]


async def test_two_ackers_given_the_same_acks_in_opposite_orders_do_not_deadlock(
    database_url: str,
) -> None:
    """Acks of one occurrence sent on two partitions reach two ackers. Two batches naming the
    same occurrences in opposite orders, applied at once, both held up by a row in the middle:
    each occurrence is applied by one and answered DUPLICATE by the other, and neither waits for
    the other in a cycle (PostgreSQL would end one with a deadlock error). Rows locked in the
    order given would deadlock: each batch would hold its half when the middle row is let go."""
    conn = await connect(database_url, tenant=None)
    holder, *ackers = [await connect(database_url, tenant=None) for _ in range(3)]
    try:
        at = [format_instant(NOW - timedelta(minutes=30, seconds=i)) for i in range(100)]
        body = schedule("many", actions=[{"type": "M", "at": t} for t in at])
        async with conn.transaction():
            result = await apply_command(
                conn, command("schedule.create", body), NOW - timedelta(hours=1), Context()
            )
            assert result["type"] == "schedule.created", result
            await conn.execute(
                "UPDATE actions SET state = 'DISPATCHED', fired_at = $1", NOW - timedelta(minutes=1)
            )
            # finished occurrences of another schedule: a table large enough for the plan a
            # production table gets (each row found by key, in the order given)
            filler = await add_schedule(conn, NOW)
            await conn.execute(
                "INSERT INTO actions (id, schedule_id, tenant, origin, type, due_at, fire_at,"
                " state, created_at, updated_at)"
                " SELECT gen_random_uuid(), $1, 't', 'EXPLICIT', 'x', $2, $2, 'SUCCEEDED', $2, $2"
                " FROM generate_series(1, 20000)",
                filler,
                NOW - timedelta(days=1),
            )
        await conn.execute("ANALYZE actions")
        ids = [str(r["id"]) for r in await conn.fetch("SELECT id FROM actions WHERE type = 'M'")]
        acks = [_ack({}, action, "SUCCEEDED") for action in ids]
        pids = [await a.fetchval("SELECT pg_backend_pid()") for a in ackers]

        async def apply(acker: asyncpg.Connection, batch: list[ActionAck]) -> list[list[Any]]:
            async with acker.transaction():
                return await apply_acks(acker, batch, NOW, TOPICS, lambda: 0.0)

        async with asyncio.timeout(30):
            hold = holder.transaction()
            await hold.start()
            await holder.execute("SELECT 1 FROM actions WHERE id = $1 FOR UPDATE", ids[50])
            both = asyncio.gather(
                apply(ackers[0], acks), apply(ackers[1], acks[::-1]), return_exceptions=True
            )
            for pid in pids:  # until each batch waits for a row (a server's state: polled)
                while not await conn.fetchval("SELECT pg_blocking_pids($1)", pid):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            await hold.rollback()
            results = await both
        states = await conn.fetch("SELECT DISTINCT state FROM actions WHERE type = 'M'")
    finally:
        for c in (conn, holder, *ackers):
            await c.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    kinds: dict[str, int] = {}
    for per_ack in results:
        for events in per_ack:  # type: ignore[union-attr]
            kind = orjson.loads(events[-1].value)["type"]
            kinds[kind] = kinds.get(kind, 0) + 1
    # each occurrence: applied by one, a duplicate for the other (which announces it again)
    assert kinds == {"action.state-changed": 100, "action.ack-ignored": 100}, kinds
    assert [r["state"] for r in states] == ["SUCCEEDED"]


async def _alike(urls: tuple[str, str], how: str, picks: list[tuple[str, str, int, str]]) -> Any:
    """`picks` applied `how` on the first database and one by one on the second, each emptied
    and given the world first: asserts the same events and rows; the events one by one."""
    outcomes = []
    for url, way in zip(urls, (how, "one by one"), strict=True):
        conn = await connect(url, tenant=None)
        try:
            await conn.execute(
                "TRUNCATE action_history, actions, schedules, processed_commands,"
                " activity_minutes CASCADE"
            )
            outcomes.append(await _applied(conn, url, way, picks))
        finally:
            await conn.close()
    (bulk_events, bulk_rows), (single_events, single_rows) = outcomes
    for i, (bulk, single) in enumerate(zip(bulk_events, single_events, strict=True)):
        assert _normal(bulk) == _normal(single), f"ack {i} of {picks}"
    assert bulk_rows == single_rows, picks
    return single_events


@pytest.mark.parametrize("how", ["bulk", "parts"])
async def test_an_ack_naming_a_held_occurrence_is_decided_by_its_place(
    database_url: str, twin_database_url: str, how: str
) -> None:
    """Z2 is held behind Z1 (BUFFER_ONE); an ack naming it is NOT_DISPATCHED before Z1's
    SUCCEEDED releases it, and records its fire after. In bulk, Z1's was applied by the first
    statement and released Z2 before Z2's ack was decided, whatever their places; in parts,
    the two could go at once, in either order. Now the tenant's acks go one by one when one
    names a held occurrence (found by the generated batches below)."""
    urls = (database_url, twin_database_url)
    before = [("Z2", "SUCCEEDED", 1, "acct-1"), ("Z1", "SUCCEEDED", 1, "acct-1")]
    events = await _alike(urls, how, before)
    assert events[0][0][2]["data"]["reason"].startswith("NOT_DISPATCHED")
    after = [("Z1", "SUCCEEDED", 1, "acct-1"), ("Z2", "SUCCEEDED", 1, "acct-1")]
    events = await _alike(urls, how, after)
    assert events[1][0][2]["data"]["state"] == "SUCCEEDED"


async def test_parts_naming_a_held_occurrence_are_applied_as_one(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts are split by occurrence, not schedule: the ack releasing Z2 and one naming it
    could be applied at once, and which came first decided the second. A batch in which an ack
    names a held occurrence (of its own tenant) is applied in one part; others keep their parts.
    (Whether the two parts met in the wrong order was a matter of timing: the parts are counted
    here instead.)"""
    from services.acker import acks as module

    apply_acks, applied_parts = module.apply_acks, []

    async def counted(conn, part, now, topics, rand, metrics=None):  # type: ignore[no-untyped-def]
        applied_parts.append(len(part))
        return await apply_acks(conn, part, now, topics, rand, metrics)

    monkeypatch.setattr(module, "apply_acks", counted)
    conn = await connect(database_url, tenant=None)
    pool = await create_pool(database_url, 4)
    try:
        ids = await _world(conn)
        batches = {
            "names Z2": [_ack(ids, "Z1", "RUNNING"), _ack(ids, "Z2", "SUCCEEDED")],
            "another tenant's Z2": [
                _ack(ids, "A1", "RUNNING"),
                _ack(ids, "Z2", "SUCCEEDED", tenant="acct-2"),
            ],
            "no held one": [_ack(ids, "A1", "RUNNING"), _ack(ids, "A2", "RUNNING")],
        }
        parts = {}
        for name, acks in batches.items():
            applied_parts.clear()
            await apply_acks_in_parts(pool, acks, [[0], [1]], NOW, TOPICS, lambda: 0.0)
            parts[name] = sorted(applied_parts)
    finally:
        await pool.close()
        await conn.close()
    assert parts == {"names Z2": [2], "another tenant's Z2": [1, 1], "no held one": [1, 1]}


@generated(60)  # the databases are emptied for each example
@given(st.integers(0, 2**32), st.sampled_from(["bulk", "parts"]))
async def test_generated_batches_are_applied_alike(
    database_url: str, twin_database_url: str, seed: int, how: str
) -> None:
    """Batches of up to 15 acks of the world's occurrences (any state, attempts 1-3, another
    tenant's now and then, an id that is no UUID), in bulk or in parts and one by one: the same
    events and rows."""
    rng = random.Random(seed)
    labels = ["A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9", "Z1", "Z2", "not-a-uuid"]
    picks = [
        (
            rng.choice(labels),
            rng.choice(["RUNNING", "SUCCEEDED", "FAILED"]),
            rng.choice([1, 1, 1, 2, 3]),
            "acct-1" if rng.random() < 0.9 else "acct-2",
        )
        for _ in range(rng.randrange(1, 16))
    ]
    await _alike((database_url, twin_database_url), how, picks)
