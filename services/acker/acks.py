"""Applying acks: lock the occurrence, decide with the state machine, record, announce. An
ack of the attempt in flight (RUNNING or SUCCEEDED, nearly every ack) is applied in SQL instead,
by the rule the state machine has for it, and its occurrence is not read first.

A FAILED ack retries the occurrence while attempts remain (policy.retry), else fails it for
good with an `action.dead` on the DLQ. A terminal state releases an occurrence buffered
behind this one (policy.overlap BUFFER_ONE). A duplicate ack re-announces what it already
caused (same eventIds): the state change, and for a FAILED ack that ended the attempt, its
`action.dead` or its FAILED event although the occurrence has since moved on to its next
attempt. So every state change is announced at least once even when an acker dies between
its commit and its publish.
"""

from __future__ import annotations

import logging
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from shared.contracts import ActionAck
from shared.contracts.common import format_instant
from shared.contracts.events import action_event_body
from shared.ids import parse_id
from shared.messaging import Outgoing
from shared.metrics import Metrics
from shared.persistence.attempts import dead_letter_event, end_attempt
from shared.persistence.database import ALL_TENANTS
from shared.persistence.queries import load_queries
from shared.persistence.successors import store_successors
from shared.runtime import together
from shared.settings import Topics
from shared.specs import load_definitions
from shared.states import decide_ack

__all__ = ["MIN_PART", "apply_ack", "apply_acks", "apply_acks_in_parts", "parts_of", "refuse_ack"]

Q = load_queries()
log = logging.getLogger("chime.acker")
MIN_PART = 250
"""Fewest acks in a part of a batch applied at once (`apply_acks_in_parts`): a part costs a few
round trips whatever its size."""


def _event(kind: str, ack: ActionAck, now: datetime, **data: Any) -> dict[str, Any]:
    d = ack.data
    return action_event_body(
        kind, ack.meta.tenant, d.action_id, d.attempt, format_instant(now), d.state, **data
    )


def _announce(
    kind: str, ack: ActionAck, now: datetime, topics: Topics, key: bytes, **data: Any
) -> list[Outgoing]:
    body = orjson.dumps(_event(kind, ack, now, **data))
    event = Outgoing(topics.actions_events, body, key, correlation_id=ack.data.action_id, kind=kind)
    return [event]


def refuse_ack(ack: ActionAck, code: str, message: str, now: datetime, topics: Topics) -> Outgoing:
    """An ack whose token does not allow it: ignored, without reading the database."""
    key = ack.data.action_id.encode()
    return _announce("action.ack-ignored", ack, now, topics, key, reason=f"{code}: {message}")[0]


@dataclass
class _Change:
    """An ack that moves its occurrence to RUNNING or SUCCEEDED (written by the caller)."""

    row: Any
    state: str
    deadline: datetime | None


def _announcer(
    ack: ActionAck, row: Any, now: datetime, topics: Topics
) -> Callable[..., list[Outgoing]]:
    """Events about the ack's occurrence, keyed by its schedule (by the action id when the
    occurrence is unknown)."""
    key = (str(row["schedule_id"]) if row else ack.data.action_id).encode()

    def announce(kind: str, **data: Any) -> list[Outgoing]:
        return _announce(kind, ack, now, topics, key, **data)

    return announce


def _decide(
    ack: ActionAck, row: Any, now: datetime, topics: Topics
) -> tuple[list[Outgoing], _Change | None, bool]:
    """(events, the change to write or None, whether it ends the attempt as FAILED)."""
    announce = _announcer(ack, row, now, topics)
    if row is None:
        reason = "UNKNOWN_ACTION: no such action for this tenant"
        return announce("action.ack-ignored", reason=reason), None, False
    decision = decide_ack(row["state"], row["attempt"], ack.data.state, ack.data.attempt)
    common = {"scheduleId": str(row["schedule_id"]), "previousState": row["state"]}
    if not decision.apply:
        ignored = announce(
            "action.ack-ignored", state=row["state"], reason=decision.reason, **common
        )
        if decision.reason and decision.reason.startswith("DUPLICATE"):
            # The first copy may have been applied by an acker that died before announcing
            # it: announce the state change again, with the same eventId.
            again = {**common, "previousState": None}
            return (
                announce("action.state-changed", state=row["state"], **again) + ignored,
                None,
                False,
            )
        return ignored, None, False
    if decision.new_state == "FAILED":
        return [], None, True
    deadline = (
        now + timedelta(milliseconds=row["ack_timeout_ms"]) if decision.renew_deadline else None
    )
    changed = _state_changed(ack, common["scheduleId"], row["state"], now, topics)
    return changed, _Change(row, decision.new_state, deadline), False


def _state_changed(
    ack: ActionAck, schedule_id: str, previous: str, now: datetime, topics: Topics
) -> list[Outgoing]:
    """The event of an ack applied: its occurrence is now in the state the ack names."""
    return _announce(
        "action.state-changed",
        ack,
        now,
        topics,
        schedule_id.encode(),
        state=ack.data.state,
        output=ack.data.output,
        reason=ack.data.message,
        scheduleId=schedule_id,
        previousState=previous,
    )


def _action_id(ack: ActionAck) -> uuid.UUID | None:
    try:
        return parse_id(ack.data.action_id)
    except ValueError:
        return None


async def apply_ack(
    conn: asyncpg.Connection,
    ack: ActionAck,
    now: datetime,
    topics: Topics,
    rand: Callable[[], float],
    metrics: Metrics | None = None,
) -> list[Outgoing]:
    """Apply one ack in the caller's transaction; returns the events to publish."""
    action_id = _action_id(ack)
    tenant = ack.meta.tenant
    await conn.execute(Q.set_tenant, tenant)
    row = await conn.fetchrow(Q.lock_action, action_id, tenant) if action_id else None
    if _published_unrecorded(ack, row) and await _dispatch_acked(
        conn, tenant, [action_id], [ack.data.attempt], now, metrics
    ):
        row = await conn.fetchrow(Q.lock_action, action_id, tenant)
    events, change, failed = _decide(ack, row, now, topics)
    if failed:
        return await end_attempt(
            conn, row, "FAILED", ack.data.message, ack.data.output, now, rand, topics, metrics
        )
    if change is not None:
        await _write(conn, [(ack, change)], now)
    elif row is not None and ack.data.state == "FAILED":
        return await _failed_again(conn, ack, row, now, topics) or events
    return events


def _published_unrecorded(ack: ActionAck, row: Any) -> bool:
    """The ack names its occurrence's attempt, which is still PENDING: a ticker's round
    published it, and its transaction was rolled back before it recorded the fire (an ack
    racing a round that commits waits for the commit: the round holds its rows). Or the
    occurrence is not yet due, or held: `dispatch_acked` tells."""
    return row is not None and row["state"] == "PENDING" and row["attempt"] == ack.data.attempt


async def _dispatch_acked(
    conn: asyncpg.Connection,
    tenant: str,
    ids: list[uuid.UUID | None],
    attempts: list[int],
    now: datetime,
    metrics: Metrics | None,
) -> bool:
    """Record the fires of occurrences acknowledged while PENDING (`_published_unrecorded`),
    as the round that published them would have at its mark: DISPATCHED, their series'
    successors stored, schedules that ended completed. Their rows are locked already. Returns
    whether any was recorded (the others are not due yet, or held: the ack is NOT_DISPATCHED).

    The round's release instant was lost with it, so a successor follows the occurrence's own
    instant: a late occurrence's successor may be late as well, and its misfire policy decides.
    A ticker that claims the occurrence meanwhile fires it again with the same eventId; this
    ack then waits for that round's commit and finds it DISPATCHED."""
    fired = await conn.fetch(Q.dispatch_acked, ids, attempts, now, tenant)
    if not fired:
        return False
    definitions = await load_definitions(conn, fired)
    ended = await store_successors(conn, fired, definitions, now, [r["fire_at"] for r in fired])
    if ended:
        await conn.execute(Q.complete_schedules, ended, now, [r["id"] for r in fired])
    log.warning(
        "recorded %d fire(s) of a rolled-back round from their acks (tenant %s)", len(fired), tenant
    )
    if metrics is not None:
        metrics.fires_recorded_by_ack.inc(len(fired))
    return True


async def _failed_again(
    conn: asyncpg.Connection, ack: ActionAck, row: Any, now: datetime, topics: Topics
) -> list[Outgoing] | None:
    """A FAILED ack for an attempt that already ended FAILED (a copy of an ack whose acker died
    between its commit and its publish, or a worker repeating itself): what ending it
    announced, again with the same eventIds, and the ack reported as a duplicate. None when
    that attempt did not end FAILED (the ack is late or unknown: `_decide` answers it).

    Ending it either retried the occurrence (it is at a later attempt now, so `_decide` sees a
    stale ack) or failed it for good (FAILED, and its `action.dead` is sent again)."""
    attempt = ack.data.attempt
    if attempt > row["attempt"] or (attempt == row["attempt"] and row["state"] != "FAILED"):
        return None
    history = await conn.fetch(Q.action_history, row["id"])
    ended = [h for h in history if h["attempt"] == attempt and h["state"] == "FAILED"]
    if not ended:  # it timed out (TIMED_OUT) before this ack: stale
        return None
    dead = attempt == row["attempt"]  # and FAILED (above): it failed for good
    message = ended[-1]["message"]
    if not dead:
        message = f"{message or 'FAILED'}; retried as attempt {attempt + 1}"
    announce = _announcer(ack, row, now, topics)
    schedule_id = str(row["schedule_id"])
    events = announce(
        "action.state-changed",
        scheduleId=schedule_id,
        state="FAILED",
        previousState=None,
        reason=message,
        output=ended[0]["output"] or {},
    )
    if dead:
        events.append(dead_letter_event(row, message, history, format_instant(now), topics))
    return events + announce(
        "action.ack-ignored",
        scheduleId=schedule_id,
        previousState=row["state"],
        state=row["state"],
        reason=f"DUPLICATE: attempt {attempt} already FAILED",
    )


async def apply_acks(
    conn: asyncpg.Connection,
    acks: list[ActionAck],
    now: datetime,
    topics: Topics,
    rand: Callable[[], float],
    metrics: Metrics | None = None,
) -> list[list[Outgoing]]:
    """Apply a batch of acks in the caller's transaction, as `apply_ack` one by one would;
    returns each ack's events.

    Per tenant, the first RUNNING or SUCCEEDED ack of each occurrence is applied by one
    statement if its attempt is in flight (`apply_in_flight_acks`: nearly every ack). The
    others of those first acks are decided in memory after one statement has locked their
    occurrences, and their changes written with one UPDATE and one history INSERT. FAILED
    acks (they retry, fail for good, or repeat what a copy applied before caused), and any
    later ack of an occurrence named before in this batch, go through `apply_ack` after that.

    A tenant one of whose acks names an occurrence held behind another of its schedule
    (BUFFER_ONE) has all its acks applied one by one, in order: one by one, such an ack is
    NOT_DISPATCHED before the ack that releases its occurrence and records the fire after it,
    so its place decides it (found by comparing the two on generated batches). Only a round
    rolled back after publishing an occurrence that a later round held makes such an ack (or
    a worker naming an occurrence it was never sent).
    """
    events: dict[int, list[Outgoing]] = {}
    one_by_one: list[int] = []
    by_tenant: dict[str, list[int]] = {}
    for index, ack in enumerate(acks):
        by_tenant.setdefault(ack.meta.tenant, []).append(index)
    action_ids = [_action_id(ack) for ack in acks]  # parsed once, not twice (9 % of samples)
    for tenant, indexes in by_tenant.items():
        await conn.execute(Q.set_tenant, tenant)
        first: list[int] = []  # the first ack of each occurrence, unless FAILED
        named: set[uuid.UUID | None] = set()
        for index in indexes:
            action_id = action_ids[index]
            if action_id in named or acks[index].data.state == "FAILED":
                # sees what the acks before it changed; a FAILED ack needs the retry policy,
                # or the history if it is a copy of one applied before (`_failed_again`)
                one_by_one.append(index)
            else:
                first.append(index)
            named.add(action_id)
        named_ids = [i for i in named if i is not None]
        rest = await _apply_in_flight(
            conn, tenant, acks, action_ids, first, named_ids, now, topics, events
        )
        if rest is None:  # an ack names a held occurrence: nothing was applied
            one_by_one += first
            continue
        if rest:
            ids = [action_ids[i] for i in rest if action_ids[i] is not None]
            rows = {r["id"]: r for r in await conn.fetch(Q.lock_actions, ids, tenant)}
            early = [i for i in rest if _published_unrecorded(acks[i], rows.get(action_ids[i]))]
            early_ids = [action_ids[i] for i in early]
            if early and await _dispatch_acked(
                conn, tenant, early_ids, [acks[i].data.attempt for i in early], now, metrics
            ):
                # read again as they are now (DISPATCHED, or left PENDING: not due, or held)
                rows.update(
                    (r["id"], r) for r in await conn.fetch(Q.lock_actions, early_ids, tenant)
                )
            changes: list[tuple[ActionAck, _Change]] = []
            for index in rest:
                found, change, _ = _decide(acks[index], rows.get(action_ids[index]), now, topics)
                events[index] = found
                if change is not None:
                    changes.append((acks[index], change))
            await _write(conn, changes, now)
    for index in sorted(one_by_one):
        events[index] = await apply_ack(conn, acks[index], now, topics, rand, metrics)
    return [events[index] for index in range(len(acks))]


async def _apply_in_flight(
    conn: asyncpg.Connection,
    tenant: str,
    acks: list[ActionAck],
    action_ids: list[uuid.UUID | None],
    indexes: list[int],
    named: list[uuid.UUID],
    now: datetime,
    topics: Topics,
    events: dict[int, list[Outgoing]],
) -> list[int] | None:
    """Apply the acks at `indexes` (one per occurrence, none FAILED) whose attempt is in flight,
    putting their events in `events`; returns the indexes of the others, in order. None, and
    nothing applied, when an occurrence `named` by the tenant's acks in the batch is held."""
    # in the order of their ids, as lock_actions locks: two ackers given acks of the same
    # occurrences (sent on different partitions) lock them in one order, without a deadlock
    direct = sorted(
        (i for i in indexes if action_ids[i] is not None),
        key=lambda i: action_ids[i].int,  # type: ignore[union-attr]
    )
    if not direct:
        return indexes
    rows = await conn.fetch(
        Q.apply_in_flight_acks,
        [action_ids[i] for i in direct],
        [acks[i].data.attempt for i in direct],
        [acks[i].data.state for i in direct],
        [acks[i].data.message for i in direct],
        [acks[i].data.output for i in direct],
        now,
        tenant,
        named,
    )
    if rows and rows[0]["held"]:  # then nothing changed: every row is a held one
        return None
    changed = {r["id"]: r for r in rows}
    rest: list[int] = []
    succeeded: set[uuid.UUID] = set()
    for index in indexes:
        row = changed.get(action_ids[index])
        if row is None:
            rest.append(index)
            continue
        ack = acks[index]
        schedule_id = str(row["schedule_id"])
        events[index] = _state_changed(ack, schedule_id, row["previous_state"], now, topics)
        if ack.data.state == "SUCCEEDED":
            succeeded.add(row["schedule_id"])
    await _release_held(conn, succeeded, now)
    return rest


def parts_of(acks: list[ActionAck], most: int, min_part: int = MIN_PART) -> list[list[int]]:
    """The batch's indexes in up to `most` parts of at least `min_part` acks, by occurrence:
    every ack of one occurrence in the same part, in the batch's order."""
    count = max(1, min(most, len(acks) // max(1, min_part)))
    if count == 1:
        return [list(range(len(acks)))]
    parts: list[list[int]] = [[] for _ in range(count)]
    for index, ack in enumerate(acks):
        parts[zlib.crc32(ack.data.action_id.encode()) % count].append(index)
    return [part for part in parts if part]


async def apply_acks_in_parts(
    pool: asyncpg.Pool,
    acks: list[ActionAck],
    parts: list[list[int]],
    now: datetime,
    topics: Topics,
    rand: Callable[[], float],
    metrics: Metrics | None = None,
) -> list[list[Outgoing]]:
    """`apply_acks` over parts of the batch at once (indexes of `acks`, as `parts_of` splits
    them: no occurrence in two parts), each in a transaction of its own on a connection of its
    own: PostgreSQL runs one part's statements while the next part's decisions are made here.
    Returns each ack's events, in the batch's order.

    Parts share no occurrence, so they lock no row of each other's, except the occurrence that
    a SUCCEEDED or failed one releases (BUFFER_ONE), locked by whichever part comes first (two
    parts releasing two of those in opposite orders could deadlock, as two ackers could:
    PostgreSQL ends one). A part that fails fails the whole call with its error (the others
    are cancelled, or have committed): the batch is applied again, and what committed answers
    as replays do, announcing again what it caused under the same eventIds."""

    async def apply_part(indexes: list[int]) -> list[list[Outgoing]]:
        async with pool.acquire() as conn, conn.transaction():
            part = [acks[i] for i in indexes]
            return await apply_acks(conn, part, now, topics, rand, metrics)

    if len(parts) > 1 and await _names_held(pool, acks):
        # parts split by occurrence, not by schedule: the ack releasing a held occurrence and
        # one naming it could be applied at once, in either order; in one part, they are not
        parts = [list(range(len(acks)))]
    applied = await together([apply_part(part) for part in parts])
    events: list[list[Outgoing]] = [[] for _ in acks]
    for part, found_in_part in zip(parts, applied, strict=True):
        for index, found in zip(part, found_in_part, strict=True):
            events[index] = found
    return events


async def _names_held(pool: asyncpg.Pool, acks: list[ActionAck]) -> bool:
    """Whether an ack names an occurrence of its tenant held behind another (BUFFER_ONE)."""
    named = {(_action_id(ack), ack.meta.tenant) for ack in acks}
    ids = list({action_id for action_id, _ in named if action_id is not None})
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(Q.set_tenant, ALL_TENANTS)
        held = await conn.fetch(Q.held_among, ids)
    return any((r["id"], r["tenant"]) in named for r in held)


async def _write(
    conn: asyncpg.Connection, changes: list[tuple[ActionAck, _Change]], now: datetime
) -> None:
    """Store RUNNING/SUCCEEDED changes (one per occurrence) with their history; a SUCCEEDED
    occurrence releases the one held behind it (policy.overlap BUFFER_ONE)."""
    if not changes:
        return
    await conn.execute(
        Q.update_action_states,
        [c.row["id"] for _, c in changes],
        [c.row["version"] for _, c in changes],
        [c.state for _, c in changes],
        [c.deadline for _, c in changes],
        now,
    )
    await conn.execute(
        Q.insert_histories,
        [c.row["id"] for _, c in changes],
        [a.data.attempt for a, _ in changes],
        [c.state for _, c in changes],
        now,
        [a.data.message for a, _ in changes],
        [a.data.output for a, _ in changes],
    )
    await _release_held(
        conn, {c.row["schedule_id"] for _, c in changes if c.state == "SUCCEEDED"}, now
    )


async def _release_held(conn: asyncpg.Connection, schedules: set[uuid.UUID], now: datetime) -> None:
    """These schedules' running occurrence SUCCEEDED: the one buffered behind it fires now
    (policy.overlap BUFFER_ONE)."""
    if schedules:
        await conn.execute(Q.release_held, list(schedules), now)
