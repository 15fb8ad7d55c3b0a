"""Applying commands: each one at most once, in the caller's transaction, with a result."""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from pydantic import ValidationError

from services.scheduler.errors import CommandError
from services.scheduler.handlers import HANDLERS, RESULT_TYPES, Context
from services.scheduler.views import View
from shared.contracts import (
    COMMAND_TYPES,
    SCHEMA_VERSION,
    CommandEnvelope,
    CommandResult,
    ErrorItem,
    ResultMeta,
    errors_from_validation,
    format_instant,
)
from shared.contracts.common import TENANT_PATTERN
from shared.messaging import is_fault
from shared.persistence.queries import load_queries

__all__ = ["Context", "apply_command", "body_hash", "rejected_result", "success_result"]

Q = load_queries()
log = logging.getLogger("chime.scheduler")
TENANT = re.compile(TENANT_PATTERN)


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
    result = CommandResult(type="command.rejected", meta=_meta(raw, now), data=None, errors=errors)
    return result.to_wire()


def body_hash(env: CommandEnvelope) -> str:
    body = orjson.dumps({"type": env.type, "data": env.data}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


async def apply_command(
    conn: asyncpg.Connection, raw: dict[str, Any], now: datetime, ctx: Context | None = None
) -> dict[str, Any]:
    """Apply one decoded command inside the caller's transaction; return its result (wire).

    The command runs in its own savepoint: a database error it meets, or a fault of Chime's
    own, is answered INTERNAL and leaves the rest of the batch intact (a batch that failed
    would be delivered again, and fail again, for ever). Connection-level errors propagate, so
    that the caller retries the whole batch.
    """
    meta = raw.get("meta")
    tenant = meta.get("tenant") if isinstance(meta, dict) else None
    if not isinstance(tenant, str) or not TENANT.fullmatch(tenant):
        tenant = ""  # sees no rows; the envelope's validation names what is wrong with it
    await conn.execute(Q.set_tenant, tenant)
    try:
        async with conn.transaction():
            return await _apply(conn, raw, now, ctx or Context())
    except Exception as exc:
        if not is_fault(exc):
            raise
        log.exception("command failed")
        kind = type(exc).__name__
        message = (
            f"the database refused the command ({kind}); it was not applied"
            if isinstance(exc, asyncpg.PostgresError)
            else f"the scheduler failed on this command ({kind}: a fault in Chime, logged); "
            "it was not applied"
        )
        return rejected_result(raw, [ErrorItem(code="INTERNAL", message=message)], now)


async def _apply(
    conn: asyncpg.Connection, raw: dict[str, Any], now: datetime, ctx: Context
) -> dict[str, Any]:
    try:
        env = CommandEnvelope.model_validate(raw)
    except ValidationError as exc:
        return rejected_result(raw, errors_from_validation(exc), now)
    meta = env.meta
    digest = body_hash(env)
    if (replay := await _replay(conn, env, raw, digest, now)) is not None:
        return replay
    try:
        async with conn.transaction():
            try:
                async with conn.transaction():
                    result = await _dispatch(conn, env, now, ctx)
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
        replay = await _replay(conn, env, raw, digest, now)
        if replay is None:
            raise
        return replay
    return result


async def _replay(
    conn: asyncpg.Connection, env: CommandEnvelope, raw: dict[str, Any], digest: str, now: datetime
) -> dict[str, Any] | None:
    meta = env.meta
    row = await conn.fetchrow(
        Q.find_processed_command, meta.tenant, meta.command_id, meta.idempotency_key
    )
    if row is None:
        return None
    if row["command_id"] != meta.command_id and row["body_hash"] != digest:
        conflict = CommandError.of(
            "CONFLICT",
            f"idempotencyKey {meta.idempotency_key!r} was already used by command "
            f"{row['command_id']!r} with a different body: use a new key for a new request",
            "meta.idempotencyKey",
        )
        return rejected_result(raw, conflict.items, now)
    result = dict(row["result"])
    result["meta"] = {**result["meta"], "correlationId": meta.correlation_id}
    return result


async def _dispatch(
    conn: asyncpg.Connection, env: CommandEnvelope, now: datetime, ctx: Context
) -> dict[str, Any]:
    handler = HANDLERS.get(env.type)
    if handler is None:
        raise CommandError.of(
            "UNSUPPORTED",
            f"command type {env.type!r} is not supported: use one of {', '.join(COMMAND_TYPES)}",
            "type",
        )
    return success_result(env, await handler(conn, env, now, ctx), now)


def success_result(env: CommandEnvelope, view: View, now: datetime) -> dict[str, Any]:
    """A `CommandResult` carrying `view` (`schedule_view`'s wire form), written as the model
    would serialise it (`tests/unit/test_views.py` holds the two equal)."""
    meta = env.meta
    return {
        "type": RESULT_TYPES[env.type],
        "meta": {
            "commandId": meta.command_id,
            "correlationId": meta.correlation_id,
            "tenant": meta.tenant,
            "timestamp": format_instant(now),
            "schemaVersion": SCHEMA_VERSION,
        },
        "data": view,
        "errors": [],
    }
