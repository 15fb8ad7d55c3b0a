"""One function per command type. Each runs inside the command's savepoint, raises
CommandError to reject, and returns the schedule view its result carries."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.scheduler.errors import CommandError, parse
from services.scheduler.views import NEXT_FIRE_COUNT, View, schedule_view
from shared.contracts import (
    CommandEnvelope,
    ReplaceData,
    ResumeData,
    ScheduleRef,
    ScheduleSpec,
    TriggerData,
    UpdateData,
)
from shared.contracts.common import NUL_REFUSED, PAYLOAD_LIMIT, has_nul
from shared.ids import new_id, new_ids, parse_id
from shared.messaging import LARGEST_MESSAGE
from shared.persistence.queries import load_queries
from shared.schedule import ScheduleError, Series, compile_series
from shared.schedule.durations import parse_duration
from shared.specs import shape_of

__all__ = [
    "DEFINITION_LIMIT",
    "HANDLERS",
    "RESULT_TYPES",
    "Context",
    "Prepared",
    "insert_actions",
    "prepare",
]

Q = load_queries()
# Bytes of JSON of a definition as stored (numbers written out in full, defaults filled in): the
# result of the command that stores it carries it whole, with at most ~10 KB more, and must fit
# a message of the broker's default. A command of 1 MiB could make one of 3.7 MB (`1e15` is
# stored as 1000000000000000.0): the broker refuses it, and the batch that answered it was
# answered again, refused again, for ever.
DEFINITION_LIMIT = LARGEST_MESSAGE
RESULT_TYPES = {
    "schedule.create": "schedule.created",
    "schedule.replace": "schedule.replaced",
    "schedule.update": "schedule.updated",
    "schedule.pause": "schedule.paused",
    "schedule.resume": "schedule.resumed",
    "schedule.delete": "schedule.deleted",
    "schedule.trigger": "schedule.triggered",
    "schedule.get": "schedule.fetched",
}


@dataclass(frozen=True)
class Context:
    """What commands need from settings."""

    action_topics: frozenset[str] = frozenset()


# --- checking a definition -------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    spec: ScheduleSpec
    series: Series
    cron_expression: str | None
    ack_timeout_ms: int
    wire: dict[str, Any]  # the definition as stored and shown (camelCase JSON)
    first: datetime | None = None  # prepare(): the trigger's first fire after its `now`

    def columns(self, state: str) -> tuple[Any, ...]:
        """namespace, name, state, spec, shape, cron_expression, ack_timeout_ms: as
        insert_schedule and overwrite_schedule take them."""
        s = self.spec
        return (
            s.namespace,
            s.name,
            state,
            self.wire,
            shape_of(self.wire),
            self.cron_expression,
            self.ack_timeout_ms,
        )


def prepare(spec: ScheduleSpec, now: datetime, ctx: Context, prefix: str = "data") -> Prepared:
    """Compile and check a definition; `prefix` is where its fields sit in the command."""
    try:
        series, cron_expression = compile_series(spec, now)
    except ScheduleError as err:
        raise CommandError.of(
            "VALIDATION", err.message, f"{prefix}.{err.field}" if err.field else prefix
        ) from None
    wire = spec.to_wire()
    if has_nul(wire):
        raise CommandError.of(
            "VALIDATION",
            f"text {NUL_REFUSED}",
            prefix,
        )
    size = len(orjson.dumps(wire))
    if size > PAYLOAD_LIMIT:  # else no payload in it can be
        _check_payload(spec.action.payload, f"{prefix}.action.payload")
        for i, action in enumerate(spec.actions):
            _check_payload(action.payload, f"{prefix}.actions[{i}].payload")
    if size > DEFINITION_LIMIT:
        raise CommandError.of(
            "PAYLOAD_TOO_LARGE",
            f"the definition is {size} bytes as stored (numbers written out in full, defaults "
            f"filled in); the limit is {DEFINITION_LIMIT}, so that its result fits a message: "
            "store large data elsewhere and pass a reference",
            prefix,
        )
    if spec.action.topic is not None and spec.action.topic not in ctx.action_topics:
        raise CommandError.of(
            "FORBIDDEN",
            f"action.topic {spec.action.topic!r} is not in the allow-list (CHIME_ACTION_TOPICS): "
            "ask an operator to add it, or leave topic out to use the default",
            f"{prefix}.action.topic",
        )
    for i, action in enumerate(spec.actions):
        early = spec.starts_at is not None and action.at < spec.starts_at
        if early or (spec.ends_at is not None and action.at > spec.ends_at):
            raise CommandError.of(
                "VALIDATION",
                f"actions[{i}].at {action.at.isoformat()} lies outside the window "
                "startsAt..endsAt: move it or widen the window",
                f"{prefix}.actions[{i}].at",
            )
    first = series.first(now) if spec.trigger is not None else None
    if spec.trigger is not None and first is None:
        raise CommandError.of(
            "VALIDATION",
            f"the trigger never fires after {now.isoformat()} within the schedule's window: "
            "check its year, dates, endsAt, expiration or maxOccurrences",
            f"{prefix}.trigger",
        )
    ack_ms = int(parse_duration(spec.policy.ack_timeout).total_seconds() * 1000)
    return Prepared(spec, series, cron_expression, ack_ms, wire, first)


def _check_payload(payload: dict[str, Any] | None, field: str) -> None:
    """PAYLOAD_TOO_LARGE unless `payload` is at most PAYLOAD_LIMIT bytes of JSON."""
    if payload is not None and (size := len(orjson.dumps(payload))) > PAYLOAD_LIMIT:
        raise CommandError.of(
            "PAYLOAD_TOO_LARGE",
            f"action payload is {size} bytes; the limit is {PAYLOAD_LIMIT} (256 KiB): "
            "store large data elsewhere and pass a reference",
            field,
        )


# --- occurrences -----------------------------------------------------------------------------


async def insert_actions(
    conn: asyncpg.Connection, tenant: str, rows: list[tuple[Any, ...]], now: datetime
) -> None:
    """Store one tenant's occurrences (schedule_id, seq, origin, client_id, type, due_at,
    payload), of one schedule or many, and wake the tickers."""
    if not rows:
        return
    await conn.execute(
        Q.insert_actions,
        new_ids(len(rows), now),
        [r[0] for r in rows],
        [tenant] * len(rows),
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
        [r[5] for r in rows],
        now,
        [r[6] for r in rows],
    )
    await conn.execute(Q.notify_due)


async def _schedule_occurrences(
    conn: asyncpg.Connection,
    row: Any,
    prepared: Prepared,
    now: datetime,
    series_after: datetime | None,
    explicit_from: datetime | None,
    all_explicit: bool = False,
) -> None:
    """Store the series' next occurrence after `series_after` (None: none) and the explicit
    actions at or after `explicit_from` (every one when `all_explicit`, as on create; none when
    both are unset). Explicit actions of a paused schedule wait, held by the claim query."""
    spec = prepared.spec
    rows: list[tuple[Any, ...]] = []
    if series_after is not None:
        await conn.execute(Q.drop_pending_series, row["id"])
        last_seq = await conn.fetchval(Q.last_series_seq, row["id"])
        first = prepared.series.first(series_after) if last_seq == 0 else None
        nxt = first or prepared.series.next_after(series_after, fired=last_seq)
        if nxt is not None:
            rows.append((last_seq + 1, "SERIES", None, spec.action.type, nxt, None))
    for action in spec.actions:
        if all_explicit or (explicit_from is not None and action.at >= explicit_from):
            rows.append((None, "EXPLICIT", action.id, action.type, action.at, action.payload))
    await insert_actions(conn, row["tenant"], [(row["id"], *r) for r in rows], now)


async def view_of(conn: asyncpg.Connection, row: Any, now: datetime, recent: bool = False) -> View:
    spec = ScheduleSpec.stored(row["spec"])
    series, _ = compile_series(spec, row["created_at"])
    last = await conn.fetchrow(Q.series_position, row["id"])
    manual_only = row["state"] == "PAUSED"  # it holds the others back
    pending = [
        r["due_at"]
        for r in await conn.fetch(Q.pending_due_times, row["id"], NEXT_FIRE_COUNT, manual_only)
    ]
    recent_rows = await conn.fetch(Q.recent_actions, row["id"], 20) if recent else None
    # The series goes on after its last occurrence only while that one is still to fire.
    position = (
        (0, None) if last is None else (last["seq"], last["due_at"] if last["to_fire"] else None)
    )
    return schedule_view(row, series, pending, position, now, recent_rows)


# --- addressing ------------------------------------------------------------------------------


def _uuid(text: str, field: str = "data.id") -> uuid.UUID:
    try:
        return parse_id(text)
    except ValueError:
        raise CommandError.of("VALIDATION", f"id {text!r} is not a UUID", field) from None


def _check_version(row: Any, expected: int | None) -> None:
    if expected is not None and expected != row["version"]:
        raise CommandError.of(
            "CONFLICT",
            f"expectedVersion {expected} does not match the schedule's version "
            f"{row['version']}: fetch it again and retry",
            "data.expectedVersion",
            {"expectedVersion": expected, "actualVersion": row["version"]},
        )


async def _find(conn: asyncpg.Connection, tenant: str, ref: ScheduleRef) -> Any:
    """The tenant's schedule, locked for this transaction. Another tenant's id is NOT_FOUND."""
    if ref.id is not None:
        try:
            row = await conn.fetchrow(Q.get_schedule_by_id, tenant, parse_id(ref.id))
        except ValueError:
            row = None
        where, field = f"id {ref.id!r}", "data.id"
    else:
        row = await conn.fetchrow(Q.get_schedule_by_name, tenant, ref.namespace, ref.name)
        where, field = f"name {ref.name!r} in namespace {ref.namespace!r}", "data.name"
    if row is None:
        raise CommandError.of("NOT_FOUND", f"no schedule with {where}: check the id or name", field)
    _check_version(row, ref.expected_version)
    return row


def _name_taken(spec: ScheduleSpec, prefix: str = "data") -> CommandError:
    return CommandError.of(
        "CONFLICT",
        f"a schedule named {spec.name!r} already exists in namespace {spec.namespace!r}: "
        "choose another name, or replace that schedule",
        f"{prefix}.name",
    )


# --- the commands ----------------------------------------------------------------------------

Env = CommandEnvelope


async def _insert(
    conn: asyncpg.Connection, schedule_id: uuid.UUID, env: Env, p: Prepared, now: datetime
) -> View:
    state = "ACTIVE" if p.spec.enabled else "PAUSED"
    try:
        row = await conn.fetchrow(
            Q.insert_schedule,
            schedule_id,
            env.meta.tenant,
            *p.columns(state),
            now,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "schedules_pkey":
            # schedule.replace with an id that is taken: by a deleted schedule or by another
            # tenant's, which this tenant cannot see (also not under row-level security).
            raise CommandError.of(
                "NOT_FOUND", f"no schedule with id {str(schedule_id)!r}", "data.id"
            ) from None
        raise _name_taken(p.spec) from None
    series_after = now if state == "ACTIVE" else None
    await _schedule_occurrences(conn, row, p, now, series_after, None, all_explicit=True)
    return await view_of(conn, row, now)


async def _create(conn: asyncpg.Connection, env: Env, now: datetime, ctx: Context) -> View:
    spec = parse(ScheduleSpec, env.data)
    return await _insert(conn, new_id(now), env, prepare(spec, now, ctx), now)


async def _overwrite(
    conn: asyncpg.Connection, row: Any, p: Prepared, state: str, now: datetime, prefix: str
) -> View:
    """Replace a stored definition; what it had scheduled and not yet fired is redone."""
    try:
        row = await conn.fetchrow(
            Q.overwrite_schedule,
            row["tenant"],
            row["id"],
            *p.columns(state),
            now,
        )
    except asyncpg.UniqueViolationError:
        raise _name_taken(p.spec, prefix) from None
    await conn.execute(Q.drop_pending_series, row["id"])
    await conn.execute(Q.drop_pending_explicit, row["id"])
    series_after = now if state == "ACTIVE" else None
    await _schedule_occurrences(conn, row, p, now, series_after, explicit_from=now)
    return await view_of(conn, row, now)


async def _replace(conn: asyncpg.Connection, env: Env, now: datetime, ctx: Context) -> View:
    data = parse(ReplaceData, env.data)
    spec = ScheduleSpec.model_validate(data.model_dump(exclude={"id", "expected_version"}))
    tenant = env.meta.tenant
    if data.id is not None:
        schedule_id = _uuid(data.id)
        row = await conn.fetchrow(Q.get_schedule_by_id, tenant, schedule_id)
    else:
        schedule_id = new_id(now)
        row = await conn.fetchrow(Q.get_schedule_by_name, tenant, spec.namespace, spec.name)
    prepared = prepare(spec, now, ctx)
    if row is None:
        if data.expected_version is not None:
            raise CommandError.of(
                "CONFLICT",
                f"expectedVersion {data.expected_version} given, but the schedule does not "
                "exist: leave expectedVersion out to create it",
                "data.expectedVersion",
                {"expectedVersion": data.expected_version, "actualVersion": None},
            )
        return await _insert(conn, schedule_id, env, prepared, now)
    _check_version(row, data.expected_version)
    return await _overwrite(
        conn, row, prepared, "ACTIVE" if spec.enabled else "PAUSED", now, "data"
    )


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge_patch(merged.get(key), value)
    return merged


async def _update(conn: asyncpg.Connection, env: Env, now: datetime, ctx: Context) -> View:
    data = parse(UpdateData, env.data)
    row = await _find(conn, env.meta.tenant, data)
    # A trigger is one value: `changes.trigger` replaces it whole instead of merging into it.
    stored = {
        k: v for k, v in row["spec"].items() if not (k == "trigger" and "trigger" in data.changes)
    }
    spec = parse(ScheduleSpec, _merge_patch(stored, data.changes), "data.changes")
    prepared = prepare(spec, now, ctx, "data.changes")
    state = row["state"]
    if {"enabled", "active"} & data.changes.keys() or state == "COMPLETED":
        state = "ACTIVE" if spec.enabled else "PAUSED"
    return await _overwrite(conn, row, prepared, state, now, "data.changes")


async def _pause(conn: asyncpg.Connection, env: Env, now: datetime, ctx: Context) -> View:
    row = await _find(conn, env.meta.tenant, parse(ScheduleRef, env.data))
    if row["state"] == "COMPLETED":
        raise CommandError.of(
            "CONFLICT", "the schedule is COMPLETED: nothing left to pause", "data"
        )
    if row["state"] == "ACTIVE":
        row = await conn.fetchrow(Q.set_schedule_state, row["tenant"], row["id"], "PAUSED", now)
        await conn.execute(Q.drop_pending_series, row["id"])
    return await view_of(conn, row, now)


async def _resume(conn: asyncpg.Connection, env: Env, now: datetime, ctx: Context) -> View:
    data = parse(ResumeData, env.data)
    row = await _find(conn, env.meta.tenant, data)
    if row["state"] == "COMPLETED":
        raise CommandError.of(
            "CONFLICT", "the schedule is COMPLETED: replace it to start again", "data"
        )
    if row["state"] == "PAUSED":
        paused_at = row["paused_at"] or now
        row = await conn.fetchrow(Q.set_schedule_state, row["tenant"], row["id"], "ACTIVE", now)
        after = now
        if data.resume_from == "NOW":
            await conn.execute(
                Q.skip_missed, row["id"], now, "due while the schedule was paused", paused_at
            )
        else:
            after = min(paused_at, now)  # missed runs fire late, per policy.misfire
        spec = ScheduleSpec.stored(row["spec"])
        series, cron_expression = compile_series(spec, row["created_at"])
        prepared = Prepared(spec, series, cron_expression, row["ack_timeout_ms"], row["spec"])
        await _schedule_occurrences(conn, row, prepared, now, after, explicit_from=None)
    return await view_of(conn, row, now)


async def _trigger(conn: asyncpg.Connection, env: Env, now: datetime, ctx: Context) -> View:
    data = parse(TriggerData, env.data)
    _check_payload(data.payload, "data.payload")
    row = await _find(conn, env.meta.tenant, data)
    spec = ScheduleSpec.stored(row["spec"])
    action_id = new_id(now)
    await conn.execute(
        Q.insert_manual_action,
        action_id,
        row["id"],
        row["tenant"],
        spec.action.type,
        data.payload,
        now,
    )
    reason = f"triggered by command {env.meta.command_id}" + (
        f": {data.reason}" if data.reason else ""
    )
    await conn.execute(Q.insert_history, action_id, 1, "PENDING", now, reason, None)
    await conn.execute(Q.notify_due)
    return await view_of(conn, row, now, recent=True)


async def _delete(conn: asyncpg.Connection, env: Env, now: datetime, ctx: Context) -> View:
    row = await _find(conn, env.meta.tenant, parse(ScheduleRef, env.data))
    await conn.execute(Q.cancel_pending_actions, row["id"], now, "schedule deleted")
    row = await conn.fetchrow(Q.set_schedule_state, row["tenant"], row["id"], "DELETED", now)
    return await view_of(conn, row, now)


async def _get(conn: asyncpg.Connection, env: Env, now: datetime, ctx: Context) -> View:
    row = await _find(conn, env.meta.tenant, parse(ScheduleRef, env.data))
    return await view_of(conn, row, now, recent=True)


Handler = Callable[[asyncpg.Connection, Env, datetime, Context], Awaitable[View]]
HANDLERS: dict[str, Handler] = {
    "schedule.create": _create,
    "schedule.replace": _replace,
    "schedule.update": _update,
    "schedule.pause": _pause,
    "schedule.resume": _resume,
    "schedule.delete": _delete,
    "schedule.trigger": _trigger,
    "schedule.get": _get,
}
