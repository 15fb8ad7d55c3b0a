"""Applying acks: lock the occurrence, decide with the state machine, record, announce."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.contracts import ActionAck
from shared.contracts.common import format_instant
from shared.contracts.events import action_event_body
from shared.persistence.queries import load_queries
from shared.states import decide_ack

__all__ = ["apply_ack"]

Q = load_queries()


def _event(kind: str, ack: ActionAck, now: datetime, **data: Any) -> dict[str, Any]:
    d = ack.data
    return action_event_body(
        kind, ack.meta.tenant, d.action_id, d.attempt, format_instant(now), d.state, **data
    )


async def apply_ack(conn: asyncpg.Connection, ack: ActionAck, now: datetime) -> dict[str, Any]:
    """Apply one ack in the caller's transaction; returns the event to announce."""
    try:
        action_id = uuid.UUID(ack.data.action_id)
    except ValueError:
        action_id = None
    row = await conn.fetchrow(Q.lock_action, action_id, ack.meta.tenant) if action_id else None
    if row is None:
        return _event(
            "action.ack-ignored", ack, now, reason="UNKNOWN_ACTION: no such action for this tenant"
        )
    in_flight = row["claimed_by"] is not None or row["fired_at"] is not None
    decision = decide_ack(row["state"], row["attempt"], in_flight, ack.data.state, ack.data.attempt)
    common = {"scheduleId": str(row["schedule_id"]), "previousState": row["state"]}
    if not decision.apply:
        return _event(
            "action.ack-ignored", ack, now, state=row["state"], reason=decision.reason, **common
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
    return _event(
        "action.state-changed",
        ack,
        now,
        state=decision.new_state,
        output=ack.data.output,
        reason=ack.data.message,
        **common,
    )
