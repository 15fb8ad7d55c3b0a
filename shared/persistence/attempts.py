"""Ending an attempt that did not succeed (FAILED ack, or TIMED_OUT): retry while attempts
remain, else FAILED for good with an `action.dead` on the DLQ. Runs in the caller's
transaction; returns what to publish."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from shared.contracts.common import format_instant
from shared.contracts.events import action_event_body, event_meta
from shared.messaging import JSON_HEADERS, Outgoing
from shared.metrics import Metrics
from shared.persistence.queries import load_queries
from shared.policy import retry_delay
from shared.settings import Topics
from shared.specs import compiled, why_unreadable

__all__ = ["dead_letter_event", "end_attempt", "fail_for_good", "occurrence_fields"]

Q = load_queries()
log = logging.getLogger("chime.attempts")


async def end_attempt(
    conn: asyncpg.Connection,
    row: Any,
    outcome: str,
    message: str | None,
    output: dict[str, Any] | None,
    now: datetime,
    rand: Callable[[], float],
    topics: Topics,
    metrics: Metrics | None = None,
    fault: str | None = None,
) -> list[Outgoing]:
    """`row` is the locked action joined with its schedule (see lock_action, claim_expired).

    An attempt of a schedule whose stored definition cannot be read has no retry policy to
    follow: it fails for good, saying why (rather than failing every batch it is in). So does
    one the caller names a `fault` for: why Chime could not end it as its policy says."""
    policy, not_retried = None, fault  # not_retried: why its policy is not followed
    if fault is None:
        try:
            policy = compiled(row)[0].policy
        except Exception as exc:
            not_retried = f"the schedule's definition cannot be read ({why_unreadable(exc)})"
    attempt, action_id, schedule_id = row["attempt"], str(row["id"]), str(row["schedule_id"])
    stamp = format_instant(now)

    def announce(state: str, reason: str) -> Outgoing:
        event = action_event_body(
            "action.state-changed",
            row["tenant"],
            action_id,
            attempt,
            stamp,
            state,
            scheduleId=schedule_id,
            state=state,
            previousState=row["state"],
            reason=reason,
            output=output or {},
        )
        return _message(topics.actions_events, event, row)

    await conn.execute(Q.insert_history, row["id"], attempt, outcome, now, message, output)
    if policy is not None and attempt < policy.retry.max_attempts:
        retry_at = now + retry_delay(policy, attempt, rand())
        if metrics:
            metrics.retries.labels(outcome).inc()
        await conn.execute(Q.retry_action, row["id"], now, retry_at)
        await conn.execute(Q.notify_due)
        return [
            announce(
                outcome,
                f"{message or outcome}; attempt {attempt + 1} at {format_instant(retry_at)}",
            )
        ]
    ended = outcome.lower().replace("_", " ")
    final = (
        f"attempt {attempt} of {attempt} {ended}: no attempts left"
        if not_retried is None
        else f"attempt {attempt} {ended}: {not_retried}, so it is not retried"
    )
    await fail_for_good(conn, row, now, final)
    log.warning(
        "action failed for good after %d attempt(s)",
        attempt,
        extra={"actionId": action_id, "scheduleId": schedule_id, "tenant": row["tenant"]},
    )
    if metrics:
        metrics.dead.inc()
    history = await conn.fetch(Q.action_history, row["id"])
    return [announce("FAILED", final), dead_letter_event(row, final, history, stamp, topics)]


async def fail_for_good(conn: asyncpg.Connection, row: Any, now: datetime, why: str) -> None:
    """The occurrence `row` (locked) FAILED for good at its attempt, its history saying `why`;
    the one held behind it (BUFFER_ONE) fires now."""
    await conn.execute(Q.fail_action, row["id"], now)
    await conn.execute(Q.insert_history, row["id"], row["attempt"], "FAILED", now, why, None)
    await conn.execute(Q.release_held, [row["schedule_id"]], now)


def dead_letter_event(
    row: Any, reason: str, history: list[Any], stamp: str, topics: Topics
) -> Outgoing:
    """The `action.dead` of an occurrence that failed for good at its attempt `row["attempt"]`
    (history: its stored rows, in order), on the DLQ with the reason in `chime-reason`."""
    action_id = str(row["id"])
    dead = {
        "type": "action.dead",
        "meta": event_meta(f"{action_id}:dead", stamp, row["tenant"]),
        "data": {
            **occurrence_fields(row),
            "attempts": row["attempt"],
            "reason": reason,
            "history": [
                {
                    "attempt": h["attempt"],
                    "state": h["state"],
                    "at": format_instant(h["at"]),
                    "message": h["message"],
                }
                for h in history
            ],
        },
    }
    return _message(topics.dlq, dead, row, **{"chime-reason": reason})


def _message(topic: str, body: dict[str, Any], row: Any, **headers: str) -> Outgoing:
    return Outgoing(
        topic,
        orjson.dumps(body),
        str(row["schedule_id"]).encode(),
        {**JSON_HEADERS, **headers},
        correlation_id=str(row["id"]),
        kind=body["type"],
    )


def occurrence_fields(row: Any) -> dict[str, Any]:
    """What every event about one occurrence says of it (row: action joined with schedule)."""
    return {
        "actionId": str(row["id"]),
        "scheduleId": str(row["schedule_id"]),
        "name": row["name"],
        "namespace": row["namespace"],
        "type": row["type"],
        "dueAt": format_instant(row["due_at"]),
    }
