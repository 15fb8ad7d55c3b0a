"""`schedule.create` in bulk: a run of consecutive creates applied with two multi-row
statements per tenant (one reads what was seen before, one writes), instead of some fifteen
statements each.

Results and stored rows are the ones `apply_command` gives (tests compare both paths). What the
multi-row statements cannot decide alone goes through `apply_command`, one by one, after the
run: a command id or idempotency key seen before (a replay or a conflict), a name already taken
or repeated in the run, and every command of a tenant whose statements met a concurrent writer
(another replica inserting the same name or command id).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import ValidationError

from services.scheduler.commands import (
    apply_command,
    body_hash,
    rejected_result,
    success_result,
)
from services.scheduler.errors import CommandError, parse
from services.scheduler.handlers import Context, Prepared, prepare
from services.scheduler.views import NEXT_FIRE_COUNT, schedule_view
from shared.contracts import CommandEnvelope, ErrorItem, ScheduleSpec, errors_from_validation
from shared.ids import new_ids
from shared.messaging import is_transient
from shared.persistence.queries import load_queries
from shared.runtime import together

__all__ = ["apply_creates"]

Q = load_queries()
YIELD_AFTER = 0.1  # seconds of validation before the event loop is let run


@dataclass
class _Item:
    index: int
    raw: dict[str, Any]
    env: CommandEnvelope
    prepared: Prepared | None = None
    errors: list[ErrorItem] | None = None  # a rejection that is recorded (as apply_command does)


async def apply_creates(
    conn: asyncpg.Connection,
    bodies: list[dict[str, Any]],
    now: datetime,
    ctx: Context,
    pool: asyncpg.Pool | None = None,
    concurrency: int = 1,
) -> list[dict[str, Any]]:
    """Apply decoded `schedule.create` commands, in order; returns their results (wire), one
    per body.

    Without a pool, every tenant's run is a savepoint of the caller's transaction on `conn`.
    With one, the tenants' runs are transactions of their own on the pool's connections, up
    to `concurrency` at once: one tenant's statements run in PostgreSQL while the next
    tenant's commands are validated and prepared, and its rows built, here. Tenants share no
    rows, and a command of one tenant is applied in order with the others of that tenant. A
    run committed before a failure elsewhere in the batch is applied again as replays when the
    batch is (processed commands answer with their first result)."""
    results: list[dict[str, Any] | None] = [None] * len(bodies)
    one_by_one: list[int] = []
    by_tenant: dict[str, list[int]] = {}
    for index, raw in enumerate(bodies):
        meta = raw.get("meta")
        tenant = meta.get("tenant") if isinstance(meta, dict) else None
        if isinstance(tenant, str):
            by_tenant.setdefault(tenant, []).append(index)
            continue
        try:  # no tenant to run it with: rejected, whatever else is wrong with it
            CommandEnvelope.model_validate(raw)
        except ValidationError as exc:
            results[index] = rejected_result(raw, errors_from_validation(exc), now)
            continue
        one_by_one.append(index)

    async def admit(tenant: str, indexes: list[int]) -> list[_Item]:
        """A tenant's creates validated and prepared; what the run cannot decide goes one by
        one. Done in the tenant's run, so that the next tenant is validated while the
        database applies this one's statements. The event loop is let run between creates
        when validating has held it for YIELD_AFTER: a condition of 65,535 characters takes
        up to ~50 ms to read (pyjexl's grammar took seconds), and a run of them held the loop
        past the consumer's session timeout, its heartbeats unsent."""
        items: list[_Item] = []
        seen: set[str] = set()
        held_since = time.monotonic()
        for index in indexes:
            if time.monotonic() - held_since > YIELD_AFTER:
                await asyncio.sleep(0)
                held_since = time.monotonic()
            raw = bodies[index]
            try:
                env = CommandEnvelope.model_validate(raw)
            except ValidationError as exc:
                results[index] = rejected_result(raw, errors_from_validation(exc), now)
                continue
            meta = env.meta
            marks = ["id:" + meta.command_id]
            if meta.idempotency_key is not None:
                marks.append("key:" + meta.idempotency_key)
            item = _Item(index, raw, env)
            faulty = False
            try:
                spec = parse(ScheduleSpec, env.data)
                item.prepared = prepare(spec, now, ctx)
                marks.append(f"name:{spec.namespace}/{spec.name}")
            except CommandError as err:
                item.errors = err.items
            except Exception:  # a fault in Chime: apply_command answers it, alone
                faulty = True
            alone = (
                faulty
                or env.type != "schedule.create"
                or meta.tenant != tenant
                or any(m in seen for m in marks)  # repeated in this run: after it, it sees it
            )
            # Its marks are seen even when it goes one by one (after the run): a later command
            # sharing one with it goes after it too, not before it in the run.
            seen.update(marks)
            if alone:
                one_by_one.append(index)
            else:
                items.append(item)
        return items

    async def tenant_run(tenant: str, indexes: list[int], own: asyncpg.Connection) -> None:
        items = await admit(tenant, indexes)
        if not items:
            return
        try:
            async with own.transaction():
                await own.execute(Q.set_tenant, tenant)
                done, later = await _apply_tenant(own, tenant, items, now)
        except asyncpg.PostgresError as exc:
            if is_transient(exc):
                raise
            # Another replica wrote the same name or command id (or a row the database refuses):
            # one by one, each command gets its own answer.
            one_by_one.extend(item.index for item in items)
            return
        for index, result in done.items():
            results[index] = result
        one_by_one.extend(later)

    if pool is None or concurrency < 2 or len(by_tenant) < 2:
        for tenant, indexes in by_tenant.items():
            await tenant_run(tenant, indexes, conn)
    else:
        slots = asyncio.Semaphore(concurrency)

        async def on_its_own(tenant: str, indexes: list[int]) -> None:
            async with slots, pool.acquire() as own:
                await tenant_run(tenant, indexes, own)

        # the first failure cancels the others and is raised as the sequential path raises it
        await together([on_its_own(tenant, indexes) for tenant, indexes in by_tenant.items()])
    for index in sorted(one_by_one):
        results[index] = await apply_command(conn, bodies[index], now, ctx)
    return [r for r in results if r is not None]


async def _apply_tenant(
    conn: asyncpg.Connection, tenant: str, items: list[_Item], now: datetime
) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """One tenant's creates: ({index: result} applied here, [indexes] left to apply_command)."""
    prepared = [i.prepared for i in items if i.prepared is not None]
    seen = await conn.fetch(
        Q.seen_before,
        tenant,
        [i.env.meta.command_id for i in items],
        [i.env.meta.idempotency_key for i in items if i.env.meta.idempotency_key],
        [p.spec.namespace for p in prepared],
        [p.spec.name for p in prepared],
    )
    applied = {r["first"] for r in seen if r["kind"] == "command"}
    keys = {r["second"] for r in seen if r["kind"] == "command"} - {None}
    taken = {(r["first"], r["second"]) for r in seen if r["kind"] == "name"}
    later: list[int] = []
    for item in items:
        meta, p = item.env.meta, item.prepared
        if meta.command_id in applied or meta.idempotency_key in keys:
            later.append(item.index)  # a replay, or a key reused: answered there
        elif p is not None and (p.spec.namespace, p.spec.name) in taken:
            later.append(item.index)  # answered CONFLICT there, with the usual message
    deferred = set(later)
    items = [i for i in items if i.index not in deferred]

    schedules: list[tuple[Any, ...]] = []
    actions: list[tuple[Any, ...]] = []
    done: dict[int, dict[str, Any]] = {}
    ids = iter(new_ids(len(items), now))  # one read of the system's randomness, not one each
    for item in items:
        if item.prepared is None:
            done[item.index] = rejected_result(item.raw, item.errors or [], now)
            continue
        p = item.prepared
        state = "ACTIVE" if p.spec.enabled else "PAUSED"
        schedule_id = next(ids)
        namespace, name, state, spec_wire, shape, cron, ack_ms = p.columns(state)
        schedules.append((schedule_id, namespace, name, state, spec_wire, shape, cron, ack_ms))
        own: list[tuple[Any, ...]] = []
        first = p.first if state == "ACTIVE" else None
        if first is not None:
            own.append((1, "SERIES", None, p.spec.action.type, first, None))
        own += [(None, "EXPLICIT", a.id, a.type, a.at, a.payload) for a in p.spec.actions]
        actions += [(schedule_id, *row) for row in own]
        row = {
            "id": schedule_id,
            "namespace": namespace,
            "name": name,
            "state": state,
            "version": 1,
            "spec": spec_wire,
            "cron_expression": cron,
            "created_at": now,
            "updated_at": now,
        }
        # a paused schedule's explicit actions wait
        pending = sorted(r[4] for r in own)[:NEXT_FIRE_COUNT] if state == "ACTIVE" else []
        position = (1, first) if first is not None else (0, None)
        view = schedule_view(row, p.series, pending, position, now)
        done[item.index] = success_result(item.env, view, now)

    if done:
        by_index = {i.index: i for i in items}
        envs = [by_index[index].env for index in done]
        await conn.execute(
            Q.insert_creates,
            tenant,
            now,
            *_columns(schedules, 8),
            new_ids(len(actions), now),
            *_columns(actions, 7),
            [e.meta.command_id for e in envs],
            [e.meta.idempotency_key for e in envs],
            [body_hash(e) for e in envs],
            list(done.values()),
        )
    return done, later


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of `width` values as `width` columns: the array arguments of a multi-row
    statement."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
