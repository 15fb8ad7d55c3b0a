"""Applying acks: lock the occurrence, decide with the state machine, record, announce.

A FAILED ack retries the occurrence while attempts remain (policy.retry), else fails it for
good with an `action.dead` on the DLQ. A terminal state releases an occurrence buffered
behind this one (policy.overlap BUFFER_ONE). A duplicate ack re-announces the state it
already caused (same eventId), so a state change is announced at least once even when an
acker dies between its commit and its publish.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from shared.contracts import ActionAck
from shared.contracts.common import format_instant
from shared.contracts.events import action_event_body
from shared.messaging import Outgoing
from shared.metrics import Metrics
from shared.persistence.attempts import end_attempt
from shared.persistence.queries import load_queries
from shared.settings import Topics
from shared.states import decide_ack

__all__ = ["apply_ack", "refuse_ack"]

Q = load_queries()


def _event(kind: str, ack: ActionAck, now: datetime, **data: Any) -> dict[str, Any]:
    d = ack.data
    return action_event_body(
        kind, ack.meta.tenant, d.action_id, d.attempt, format_instant(now), d.state, **data
    )


def _announce(
    kind: str, ack: ActionAck, now: datetime, topics: Topics, key: bytes, **data: Any
) -> list[Outgoing]:
    body = orjson.dumps(_event(kind, ack, now, **data))
    return [Outgoing(topics.actions_events, body, key, correlation_id=ack.data.action_id)]


def refuse_ack(ack: ActionAck, code: str, message: str, now: datetime, topics: Topics) -> Outgoing:
    """An ack whose token does not allow it: ignored, without reading the database."""
    key = ack.data.action_id.encode()
    return _announce("action.ack-ignored", ack, now, topics, key, reason=f"{code}: {message}")[0]


async def apply_ack(
    conn: asyncpg.Connection,
    ack: ActionAck,
    now: datetime,
    topics: Topics,
    rand: Callable[[], float],
    metrics: Metrics | None = None,
) -> list[Outgoing]:
    """Apply one ack in the caller's transaction; returns the events to publish."""
    try:
        action_id = uuid.UUID(ack.data.action_id)
    except ValueError:
        action_id = None
    await conn.execute(Q.set_tenant, ack.meta.tenant)
    row = await conn.fetchrow(Q.lock_action, action_id, ack.meta.tenant) if action_id else None
    key = (str(row["schedule_id"]) if row else ack.data.action_id).encode()

    def announce(kind: str, **data: Any) -> list[Outgoing]:
        return _announce(kind, ack, now, topics, key, **data)

    if row is None:
        return announce(
            "action.ack-ignored", reason="UNKNOWN_ACTION: no such action for this tenant"
        )
    in_flight = row["claimed_by"] is not None or row["fired_at"] is not None
    decision = decide_ack(row["state"], row["attempt"], in_flight, ack.data.state, ack.data.attempt)
    common = {"scheduleId": str(row["schedule_id"]), "previousState": row["state"]}
    if not decision.apply:
        ignored = announce(
            "action.ack-ignored", state=row["state"], reason=decision.reason, **common
        )
        if decision.reason and decision.reason.startswith("DUPLICATE"):
            # The first copy may have been applied by an acker that died before announcing
            # it: announce the state change again, with the same eventId.
            again = {**common, "previousState": None}
            return announce("action.state-changed", state=row["state"], **again) + ignored
        return ignored
    if decision.new_state == "FAILED":
        return await end_attempt(
            conn, row, "FAILED", ack.data.message, ack.data.output, now, rand, topics, metrics
        )
    deadline = (
        now + timedelta(milliseconds=row["ack_timeout_ms"]) if decision.renew_deadline else None
    )
    await conn.execute(
        Q.update_action_state, row["id"], row["version"], decision.new_state, deadline, now
    )
    await conn.execute(
        Q.insert_history,
        row["id"],
        ack.data.attempt,
        decision.new_state,
        now,
        ack.data.message,
        ack.data.output,
    )
    if decision.new_state == "SUCCEEDED":
        await conn.execute(Q.release_held, row["schedule_id"], now)
    return announce(
        "action.state-changed",
        state=decision.new_state,
        output=ack.data.output,
        reason=ack.data.message,
        **common,
    )
