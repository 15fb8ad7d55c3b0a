"""`apply_creates` (a run of creates in a few multi-row statements) answers and stores exactly
what `apply_command` does one by one, including every way a create can go wrong in a batch."""

from __future__ import annotations

import asyncio
import random
import re
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import shared.conditions
from services.scheduler.commands import Context, apply_command
from services.scheduler.creates import apply_creates
from shared.persistence.database import connect, create_pool
from tests.integration.helpers import command, generated, schedule

NOW = datetime(2030, 3, 30, 12, 0, tzinfo=UTC)
CTX = Context(action_topics=frozenset({"allowed.topic"}))
DAILY = {"kind": "daily", "hours": 1, "minutes": 30}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _batch() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(commands applied before, the batch)."""
    before = [
        command("schedule.create", schedule("taken", trigger=DAILY), commandId="pre-1"),
        command("schedule.create", schedule("seen", trigger=DAILY), commandId="seen-1"),
    ]
    first = command(
        "schedule.create",
        schedule("a", trigger=DAILY, timezone="Europe/London", labels={"team": "x"}),
    )
    again = dict(first, meta={**first["meta"], "correlationId": "again"})
    batch = [
        first,
        command(
            "schedule.create",
            schedule("b", trigger={"kind": "cron", "expression": "*/5 * * * *"}),
            tenant="acct-2",
        ),
        command(
            "schedule.create",
            schedule(
                "c",
                trigger={"kind": "interval", "every": "PT1H"},
                actions=[
                    {"type": "START", "at": "2030-04-01T08:00:00Z", "id": "s1"},
                    {"type": "STOP", "at": "2030-04-01T20:00:00Z", "payload": {"why": 1}},
                ],
            ),
        ),
        command(
            "schedule.create",
            schedule(
                "d",
                trigger=DAILY,
                enabled=False,
                actions=[{"type": "START", "at": "2030-04-02T08:00:00Z"}],
            ),
        ),
        command(
            "schedule.create", schedule("e", trigger={"kind": "cron", "expression": "61 * * * *"})
        ),
        {
            "type": "schedule.create",
            "meta": {"tenant": "acct-1"},
            "data": schedule("z", trigger=DAILY),
        },
        {"type": "schedule.create", "meta": {"tenant": 5}, "data": schedule("y", trigger=DAILY)},
        {"type": "schedule.create", "data": schedule("x", trigger=DAILY)},  # no meta
        again,  # same commandId as `first`: its result again
        command("schedule.create", schedule("a", trigger=DAILY)),  # name taken in this run
        command("schedule.create", schedule("taken", trigger=DAILY)),  # name taken before
        command("schedule.create", schedule("seen", trigger=DAILY), commandId="seen-1"),  # replay
        command("schedule.create", schedule("f", trigger=DAILY), idempotencyKey="k1"),
        command("schedule.create", schedule("g", trigger=DAILY), idempotencyKey="k1"),  # conflict
        command(
            "schedule.create", schedule("h", trigger={"kind": "once", "at": "2020-01-01T00:00:00Z"})
        ),
        command(
            "schedule.create",
            schedule("i", trigger=DAILY, action={"type": "x", "topic": "not.allowed"}),
        ),
        command(
            "schedule.create",
            schedule("j", trigger=DAILY, action={"type": "x", "topic": "allowed.topic"}),
            tenant="acct-2",
        ),
        command("schedule.create", schedule("b", trigger=DAILY)),  # same name, other tenant
        command(  # an explicit action's payload past 256 KiB
            "schedule.create",
            schedule("k", trigger=DAILY, actions=[{**LATE, "payload": {"b": "x" * 262_144}}]),
        ),
        command(  # 1,000 payloads within it, a definition of 3.7 MB as stored
            "schedule.create",
            schedule("l", actions=[{**LATE, "payload": {"n": [1e15] * 190}}] * 1000),
        ),
    ]
    return before, batch


LATE = {"type": "STOP", "at": "2030-04-01T20:00:00Z"}


def _normal(value: Any) -> Any:
    """The value with its UUIDs numbered by first appearance (ids are random)."""
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    names: dict[str, str] = {}
    return orjson.loads(UUID.sub(lambda m: names.setdefault(m[0], f"<uuid-{len(names)}>"), text))


async def _stored(conn: asyncpg.Connection) -> dict[str, Any]:
    schedules = await conn.fetch(
        "SELECT tenant, namespace, name, state, version, spec, cron_expression, ack_timeout_ms, "
        "created_at, updated_at FROM schedules ORDER BY tenant, namespace, name"
    )
    actions = await conn.fetch(
        "SELECT a.tenant, s.name, a.seq, a.origin, a.client_id, a.type, a.payload, a.due_at, "
        "a.fire_at, a.state, a.attempt FROM actions a JOIN schedules s ON s.id = a.schedule_id "
        "ORDER BY a.tenant, s.name, a.due_at, a.type"
    )
    processed = await conn.fetch(
        "SELECT tenant, command_id, idempotency_key, body_hash, result FROM processed_commands "
        "ORDER BY tenant, command_id"
    )
    rows = {
        "schedules": [dict(r) for r in schedules],
        "actions": [dict(r) for r in actions],
        "processed": [dict(r, result=_normal(r["result"])) for r in processed],
    }
    return orjson.loads(orjson.dumps(rows, default=str))


async def _both_ways(
    urls: tuple[str, str],
    before: list[dict[str, Any]],
    batch: list[dict[str, Any]],
    concurrency: int,
) -> list[dict[str, Any]]:
    """`before` applied one by one on both databases, then `batch` in bulk on the first and one
    by one on the second: asserts that the two answer and store the same; the answers."""
    outcomes = []
    pool = await create_pool(urls[0], 4)
    for url, bulk in zip(urls, (True, False), strict=True):
        conn = await connect(url, tenant=None)
        try:
            async with conn.transaction():
                for body in before:
                    await apply_command(conn, body, NOW, CTX)
            async with conn.transaction():
                if bulk:
                    results = await apply_creates(conn, batch, NOW, CTX, pool, concurrency)
                else:
                    results = [await apply_command(conn, body, NOW, CTX) for body in batch]
            outcomes.append((results, await _stored(conn)))
        finally:
            await conn.close()
    await pool.close()
    (bulk_results, bulk_rows), (single_results, single_rows) = outcomes
    assert len(bulk_results) == len(batch)
    for i, (bulk, single) in enumerate(zip(bulk_results, single_results, strict=True)):
        assert _normal(bulk) == _normal(single), f"command {i}"
    assert _normal(bulk_rows["schedules"]) == _normal(single_rows["schedules"])
    assert bulk_rows["actions"] == single_rows["actions"]
    assert bulk_rows["processed"] == single_rows["processed"]
    return single_results


@pytest.mark.parametrize("concurrency", [1, 3], ids=["savepoints", "tenants-at-once"])
async def test_bulk_and_one_by_one_agree(
    database_url: str, twin_database_url: str, concurrency: int
) -> None:
    """With `concurrency` 3 the batch's two tenants are applied at once, each in a
    transaction of its own on the pool, as the scheduler does."""
    before, batch = _batch()
    results = await _both_ways((database_url, twin_database_url), before, batch, concurrency)
    kinds = [r["type"] for r in results]
    codes = [r["errors"][0]["code"] if r["errors"] else None for r in results]
    # The batch does exercise every path.
    assert kinds.count("schedule.created") == 10, kinds  # 2 of them replays
    assert {"VALIDATION", "CONFLICT", "FORBIDDEN"} <= set(codes), codes
    assert codes[-2:] == ["PAYLOAD_TOO_LARGE"] * 2, codes  # a payload, a whole definition


async def test_a_command_after_one_sent_one_by_one_is_not_applied_before_it(
    database_url: str, twin_database_url: str
) -> None:
    """A create repeating a name of its run goes one by one, after the run; a later create
    sharing its idempotency key (and nothing with the run) was applied in the run, before it,
    and took the key: the first was answered CONFLICT on the key, the second on its own error,
    the other way round from one by one (found by the generated batches below)."""
    batch = [
        command("schedule.create", schedule("a", trigger=DAILY)),
        command("schedule.create", schedule("a", trigger=DAILY), idempotencyKey="k"),
        command("schedule.create", schedule("b", trigger=BAD_CRON), idempotencyKey="k"),
    ]
    results = await _both_ways((database_url, twin_database_url), [], batch, 1)
    assert [(r["errors"] or [{}])[0].get("field") for r in results] == [
        None,
        "data.name",
        "meta.idempotencyKey",
    ]


BAD_CRON = {"kind": "cron", "expression": "61 * * * *"}


# One database for every example (each takes tenants of its own; both databases go through the
# same examples, so a repeated seed meets the same rows on each).
@generated(40)
@given(st.integers(0, 2**32))
async def test_generated_batches_are_answered_alike(
    database_url: str, twin_database_url: str, seed: int
) -> None:
    """Runs of creates of three tenants sharing three names, four command ids and three keys,
    some refused (a bad trigger or condition, a past instant, PAUSED): applied in bulk and one
    by one, the same answers and rows."""
    rng = random.Random(seed)
    tenants = [f"acct-{seed}-{i}" for i in range(3)]
    triggers = [DAILY, BAD_CRON, {"kind": "cron", "expression": "0 0 12 ? * MON"}, None]
    instants = ["2031-01-01T00:00:00Z", "2020-01-01T00:00:00Z"]
    batch = []
    for _ in range(12):
        data = schedule(rng.choice("abc"))
        if (trigger := rng.choice(triggers)) is not None:
            data["trigger"] = trigger
        if trigger is None or rng.random() < 0.3:
            data["actions"] = [{"type": "S", "at": rng.choice(instants)}]
        if rng.random() < 0.2:
            data["condition"] = rng.choice(["a == 1", "a ==", "trueish"])
        if rng.random() < 0.2:
            data["enabled"] = False
        meta: dict[str, Any] = {}
        if rng.random() < 0.3:
            meta["commandId"] = f"c{rng.randrange(4)}"
        if rng.random() < 0.3:
            meta["idempotencyKey"] = f"k{rng.randrange(3)}"
        batch.append(command("schedule.create", data, tenant=rng.choice(tenants), **meta))
    await _both_ways((database_url, twin_database_url), [], batch, 3)


async def test_a_tenant_losing_its_connection_fails_the_run_as_a_retryable_error(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenants applied at once: when one loses the database, apply_creates raises that error
    (which the scheduler retries, the batch rewound), not a group of errors it would not
    recognise as transient."""
    from services.scheduler import creates

    apply_tenant = creates._apply_tenant

    async def losing_acct_2(conn, tenant, items, now):
        if tenant == "acct-2":
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection lost")
        return await apply_tenant(conn, tenant, items, now)

    monkeypatch.setattr(creates, "_apply_tenant", losing_acct_2)
    _, batch = _batch()
    pool = await create_pool(database_url, 4)
    try:
        async with pool.acquire() as conn, conn.transaction():
            with pytest.raises(asyncpg.exceptions.ConnectionDoesNotExistError):
                await apply_creates(conn, batch, NOW, CTX, pool, 3)
    finally:
        await pool.close()


async def test_tenants_wait_for_nothing_the_batch_holds(database_url: str) -> None:
    """A batch that first pauses a schedule, then (reusing that command's id, by mistake)
    creates one, for two tenants: the create must not run in a transaction of its own while
    the batch's transaction holds that command id uncommitted — it would wait for a commit
    that waits for it. Answered within seconds, as one by one would answer."""
    from services.scheduler.app import CommandConsumer
    from shared.clock import SystemClock
    from shared.runtime import ServiceRuntime
    from shared.settings import Settings

    settings = Settings(database_url=database_url, database_pool_size=4)
    pool = await create_pool(database_url, 4)
    consumer = CommandConsumer(pool, settings, SystemClock(), ServiceRuntime("scheduler", settings))
    try:
        existing = command("schedule.create", schedule("existing", trigger=DAILY))
        [created] = [orjson.loads(m.value) for m in await consumer._apply([(existing, None)])]
        pause = command("schedule.pause", {"id": created["data"]["id"]}, commandId="reused")
        create = command("schedule.create", schedule("new", trigger=DAILY), commandId="reused")
        other = command("schedule.create", schedule("other", trigger=DAILY), tenant="acct-2")
        batch = [(pause, None), (create, None), (other, None)]
        out = await asyncio.wait_for(consumer._apply(batch), 20)
    finally:
        await pool.close()
    kinds = [orjson.loads(m.value)["type"] for m in out]
    assert kinds[0] == "schedule.paused" and kinds[2] == "schedule.created", kinds


async def test_tickers_are_woken_when_occurrences_were_stored(database_url: str) -> None:
    """The bulk insert notifies `chime_due` (a sleeping ticker claims at once) when it stored
    an occurrence, and stays quiet when nothing was stored to fire: paused schedules and
    rejections only."""
    listener = await connect(database_url, tenant=None)
    woken: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("chime_due", lambda *args: woken.put_nowait(args[2]))
    conn = await connect(database_url, tenant=None)
    try:
        quiet = [
            command("schedule.create", schedule("paused", trigger=DAILY, enabled=False)),
            command("schedule.create", schedule("bad", trigger={"kind": "daily", "hours": 24})),
        ]
        async with conn.transaction():
            results = await apply_creates(conn, quiet, NOW, CTX)
        assert [r["type"] for r in results] == ["schedule.created", "command.rejected"]
        # A session delivers what was notified before it answers a query.
        await listener.execute("SELECT 1")
        await asyncio.sleep(0)  # the listener's callbacks run
        assert woken.empty()
        async with conn.transaction():
            results = await apply_creates(
                conn, [command("schedule.create", schedule("due", trigger=DAILY))], NOW, CTX
            )
        assert results[0]["type"] == "schedule.created"
        assert await asyncio.wait_for(woken.get(), 10) == "chime_due"
    finally:
        await conn.close()
        await listener.close()


async def test_a_name_another_replica_takes_meanwhile_sends_the_run_one_by_one(
    database_url: str,
) -> None:
    """Another replica creates the same name while this run's statements are in flight: the
    run's insert waits for that writer, fails on the name once it commits, and the run's
    commands are answered one by one (CONFLICT for that one, the others created), in the
    batch's transaction, still usable."""
    other = await connect(database_url, tenant=None)
    conn = await connect(database_url, tenant=None)
    try:
        theirs = other.transaction()
        await theirs.start()
        first = await apply_command(
            other, command("schedule.create", schedule("race", trigger=DAILY)), NOW, CTX
        )
        assert first["type"] == "schedule.created"
        mine = [
            command("schedule.create", schedule("race", trigger=DAILY)),
            command("schedule.create", schedule("calm", trigger=DAILY)),
        ]
        async with conn.transaction():
            run = asyncio.create_task(apply_creates(conn, mine, NOW, CTX))
            for _ in range(2000):  # until the run's insert waits for the other writer
                if run.done() or await other.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                ):
                    break
                await asyncio.sleep(0.005)
            assert not run.done(), "the run did not wait for the other writer"
            await theirs.commit()
            results = await asyncio.wait_for(run, 20)
        names = await conn.fetch("SELECT name FROM schedules ORDER BY name")
    finally:
        await conn.close()
        await other.close()
    assert [r["type"] for r in results] == ["command.rejected", "schedule.created"]
    assert results[0]["errors"][0]["code"] == "CONFLICT", results[0]
    assert [r["name"] for r in names] == ["calm", "race"]


async def test_validating_a_run_lets_the_event_loop_run(
    db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyjexl takes seconds to parse a condition of 65,535 characters (the seed's limit), and a
    run of creates was validated in one go: a few of them held the event loop past the
    consumer's session timeout, its heartbeats unsent, and the group evicted the scheduler and
    delivered the batch again. Here each condition takes 50 ms to check."""
    check = shared.conditions.check_condition

    def slow(expression: str) -> None:
        time.sleep(0.05)
        check(expression)

    monkeypatch.setattr(shared.conditions, "check_condition", slow)
    gaps: list[float] = []

    async def beat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    bodies = [
        command("schedule.create", schedule(f"slow-{i}", trigger=DAILY, condition="attempt < 3"))
        for i in range(20)
    ]
    heart = asyncio.create_task(beat())
    try:
        await asyncio.sleep(0.02)
        async with db.transaction():
            results = await apply_creates(db, bodies, NOW, CTX)
    finally:
        heart.cancel()
    assert [r["type"] for r in results] == ["schedule.created"] * 20
    assert max(gaps) < 0.4  # validating all twenty held it for a whole second
