"""Applying commands: each one at most once, in the caller's transaction, with a result."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import orjson
from pydantic import BaseModel, ValidationError

from services.scheduler.views import NEXT_FIRE_COUNT, schedule_view
from shared.contracts import (
    COMMAND_TYPES,
    CommandEnvelope,
    CommandResult,
    ErrorItem,
    ResultMeta,
    ScheduleRef,
    ScheduleSpec,
    errors_from_validation,
)
from shared.persistence.queries import load_queries
from shared.schedule import ScheduleError, Series, compile_series
from shared.schedule.durations import parse_duration

__all__ = ["PAYLOAD_LIMIT", "CommandError", "apply_command", "rejected_result"]

log = logging.getLogger("chime.scheduler")
Q = load_queries()
M = TypeVar("M", bound=BaseModel)
PAYLOAD_LIMIT = 256 * 1024
RESULT_TYPES = {
    "schedule.create": "schedule.created",
    "schedule.get": "schedule.fetched",
    "schedule.delete": "schedule.deleted",
}


class CommandError(Exception):
    """A command that cannot be applied; carries the error items of the rejection."""

    def __init__(self, *items: ErrorItem) -> None:
        super().__init__(items[0].message)
        self.items = list(items)

    @classmethod
    def of(
        cls, code: str, message: str, field: str | None = None, detail: Any = None
    ) -> CommandError:
        return cls(ErrorItem(code=code, message=message, field=field, detail=detail))


def _meta(raw: dict[str, Any], now: datetime) -> ResultMeta:
    meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}

    def text(key: str) -> str | None:
        value = meta.get(key)
        return value[:200] if isinstance(value, str) else None

    return ResultMeta(
        command_id=text("commandId"),
        correlation_id=text("correlationId"),
        tenant=text("tenant"),
        timestamp=now,
    )


def rejected_result(raw: dict[str, Any], errors: list[ErrorItem], now: datetime) -> dict[str, Any]:
    return CommandResult(
        type="command.rejected", meta=_meta(raw, now), data=None, errors=errors
    ).to_wire()


def _parse(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CommandError(*errors_from_validation(exc, "data")) from None


def _body_hash(env: CommandEnvelope) -> str:
    body = orjson.dumps({"type": env.type, "data": env.data}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


async def apply_command(
    conn: asyncpg.Connection, raw: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Apply one decoded command inside the caller's transaction; return its result (wire)."""
    try:
        env = CommandEnvelope.model_validate(raw)
    except ValidationError as exc:
        return rejected_result(raw, errors_from_validation(exc), now)
    meta = env.meta
    digest = _body_hash(env)
    if (replay := await _replay(conn, env, digest, now)) is not None:
        return replay
    try:
        async with conn.transaction():
            try:
                async with conn.transaction():
                    result = await _dispatch(conn, env, now)
            except CommandError as err:
                result = rejected_result(raw, err.items, now)
            await conn.execute(
                Q.insert_processed_command,
                meta.tenant,
                meta.command_id,
                meta.idempotency_key,
                digest,
                result,
                now,
            )
    except asyncpg.UniqueViolationError:
        # Another replica applied the same command first: answer with its result.
        replay = await _replay(conn, env, digest, now)
        if replay is None:
            raise
        return replay
    return result


async def _replay(
    conn: asyncpg.Connection, env: CommandEnvelope, digest: str, now: datetime
) -> dict[str, Any] | None:
    meta = env.meta
    row = await conn.fetchrow(
        Q.find_processed_command, meta.tenant, meta.command_id, meta.idempotency_key
    )
    if row is None:
        return None
    if row["command_id"] != meta.command_id and row["body_hash"] != digest:
        raise_conflict = CommandError.of(
            "CONFLICT",
            f"idempotencyKey {meta.idempotency_key!r} was already used by command "
            f"{row['command_id']!r} with a different body: use a new key for a new request",
            "meta.idempotencyKey",
        )
        return rejected_result(
            env.model_dump(by_alias=True, mode="json"), raise_conflict.items, now
        )
    result = dict(row["result"])
    result["meta"] = {**result["meta"], "correlationId": meta.correlation_id}
    return result


async def _dispatch(
    conn: asyncpg.Connection, env: CommandEnvelope, now: datetime
) -> dict[str, Any]:
    handler = _HANDLERS.get(env.type)
    if handler is None:
        raise CommandError.of(
            "UNSUPPORTED",
            f"command type {env.type!r} is not supported: use one of {', '.join(COMMAND_TYPES)}",
            "type",
        )
    view = await handler(conn, env, now)
    meta = ResultMeta(
        command_id=env.meta.command_id,
        correlation_id=env.meta.correlation_id,
        tenant=env.meta.tenant,
        timestamp=now,
    )
    return CommandResult(type=RESULT_TYPES[env.type], meta=meta, data=view, errors=[]).to_wire()


# --- schedule.create -------------------------------------------------------------------------


def _compile(spec: ScheduleSpec, created_at: datetime) -> tuple[Series, str | None]:
    try:
        return compile_series(spec, created_at)
    except ScheduleError as err:
        raise CommandError.of(
            "VALIDATION", err.message, f"data.{err.field}" if err.field else "data"
        ) from None


def _check_limits(spec: ScheduleSpec) -> None:
    size = len(orjson.dumps(spec.action.payload))
    if size > PAYLOAD_LIMIT:
        raise CommandError.of(
            "PAYLOAD_TOO_LARGE",
            f"action payload is {size} bytes; the limit is {PAYLOAD_LIMIT} (256 KiB): "
            "store large data elsewhere and pass a reference",
            "data.action.payload",
        )
    for i, action in enumerate(spec.actions):
        if (spec.starts_at and action.at < spec.starts_at) or (
            spec.ends_at and action.at > spec.ends_at
        ):
            raise CommandError.of(
                "VALIDATION",
                f"actions[{i}].at {action.at.isoformat()} lies outside the window "
                "startsAt..endsAt: move it or widen the window",
                f"data.actions[{i}].at",
            )


async def _create(conn: asyncpg.Connection, env: CommandEnvelope, now: datetime):
    spec = _parse(ScheduleSpec, env.data)
    series, cron_expression = _compile(spec, now)
    _check_limits(spec)
    first = series.first(now)
    if spec.trigger is not None and first is None:
        raise CommandError.of(
            "VALIDATION",
            f"the trigger never fires after {now.isoformat()} within the schedule's window: "
            "check its year, dates, endsAt, expiration or maxOccurrences",
            "data.trigger",
        )
    schedule_id = uuid.uuid4()
    state = "ACTIVE" if spec.enabled else "PAUSED"
    ack_timeout = parse_duration(spec.policy.ack_timeout)
    try:
        row = await conn.fetchrow(
            Q.insert_schedule,
            schedule_id,
            env.meta.tenant,
            spec.namespace,
            spec.name,
            state,
            spec.to_wire(),
            cron_expression,
            int(ack_timeout.total_seconds() * 1000),
            now,
        )
    except asyncpg.UniqueViolationError:
        raise CommandError.of(
            "CONFLICT",
            f"a schedule named {spec.name!r} already exists in namespace {spec.namespace!r}: "
            "choose another name, or replace that schedule",
            "data.name",
        ) from None
    rows: list[tuple[Any, ...]] = []
    if state == "ACTIVE":
        if first is not None:
            rows.append((1, "SERIES", None, spec.action.type, first, None))
        for action in spec.actions:
            rows.append((None, "EXPLICIT", action.id, action.type, action.at, action.payload))
    await insert_actions(conn, schedule_id, env.meta.tenant, rows, now)
    first_series = next((r for r in rows if r[1] == "SERIES"), None)
    position = (1, first_series[4]) if first_series else (0, None)
    return schedule_view(row, series, [r[4] for r in rows], position, now)


async def insert_actions(
    conn: asyncpg.Connection,
    schedule_id: uuid.UUID,
    tenant: str,
    rows: list[tuple[Any, ...]],
    now: datetime,
) -> None:
    """Store occurrences (seq, origin, client_id, type, due_at, payload) and wake the tickers."""
    if not rows:
        return
    n = len(rows)
    await conn.execute(
        Q.insert_actions,
        [uuid.uuid4() for _ in rows],
        [schedule_id] * n,
        [tenant] * n,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
        now,
        [r[5] for r in rows],
    )
    await conn.execute(Q.notify_due)


# --- addressing an existing schedule ---------------------------------------------------------


async def _find(conn: asyncpg.Connection, tenant: str, ref: ScheduleRef) -> Any:
    row = None
    if ref.id is not None:
        try:
            row = await conn.fetchrow(Q.get_schedule_by_id, tenant, uuid.UUID(ref.id))
        except ValueError:
            row = None
        where = f"id {ref.id!r}"
    else:
        row = await conn.fetchrow(Q.get_schedule_by_name, tenant, ref.namespace, ref.name)
        where = f"name {ref.name!r} in namespace {ref.namespace!r}"
    if row is None:
        raise CommandError.of(
            "NOT_FOUND",
            f"no schedule with {where}: check the id or name",
            "data.id" if ref.id else "data.name",
        )
    if ref.expected_version is not None and ref.expected_version != row["version"]:
        raise CommandError.of(
            "CONFLICT",
            f"expectedVersion {ref.expected_version} does not match the schedule's version "
            f"{row['version']}: fetch it again and retry",
            "data.expectedVersion",
            {"expectedVersion": ref.expected_version, "actualVersion": row["version"]},
        )
    return row


async def _current_view(conn: asyncpg.Connection, row: Any, now: datetime, recent: bool = False):
    spec = ScheduleSpec.model_validate(row["spec"])
    series, _ = compile_series(spec, row["created_at"])
    position = await conn.fetchrow(Q.series_position, row["id"])
    pending = [
        r["due_at"] for r in await conn.fetch(Q.pending_due_times, row["id"], NEXT_FIRE_COUNT)
    ]
    recent_rows = await conn.fetch(Q.recent_actions, row["id"], 20) if recent else None
    return schedule_view(
        row, series, pending, (position["seq"] or 0, position["due_at"]), now, recent_rows
    )


async def _get(conn: asyncpg.Connection, env: CommandEnvelope, now: datetime):
    row = await _find(conn, env.meta.tenant, _parse(ScheduleRef, env.data))
    return await _current_view(conn, row, now, recent=True)


async def _delete(conn: asyncpg.Connection, env: CommandEnvelope, now: datetime):
    row = await _find(conn, env.meta.tenant, _parse(ScheduleRef, env.data))
    await conn.execute(Q.cancel_pending_actions, row["id"], now, "schedule deleted")
    row = await conn.fetchrow(Q.set_schedule_state, env.meta.tenant, row["id"], "DELETED", now)
    return await _current_view(conn, row, now)


_HANDLERS: dict[str, Callable[[asyncpg.Connection, CommandEnvelope, datetime], Awaitable[Any]]] = {
    "schedule.create": _create,
    "schedule.get": _get,
    "schedule.delete": _delete,
}
