"""The ticker loop: claim due occurrences -> materialise the next ones -> publish -> mark.

Claims are leases (`claimed_by`, `lease_until`): a ticker that dies after claiming leaves
rows that another ticker takes once the lease ends, and republishes them with the same
`eventId`. The next occurrence of a series is stored in the claim's transaction, so neither
a crash after publishing nor an ack racing the mark can end a series early.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import asyncpg
import orjson

from shared.clock import Clock
from shared.conditions import ConditionError, evaluate_condition
from shared.contracts import ScheduleSpec, format_instant
from shared.contracts.events import action_event_body
from shared.health import Metrics
from shared.messaging import Outgoing, retry_forever
from shared.persistence.queries import load_queries
from shared.schedule import Series, compile_series
from shared.settings import Settings

__all__ = ["Ticker"]

log = logging.getLogger("chime.ticker")
Q = load_queries()
Publish = Callable[[Sequence[Outgoing]], Awaitable[None]]


@lru_cache(maxsize=65_536)
def _compiled(
    schedule_id: uuid.UUID, version: int, created_at: datetime, spec_json: bytes
) -> tuple[ScheduleSpec, Series]:
    spec = ScheduleSpec.model_validate_json(spec_json)
    series, _ = compile_series(spec, created_at)
    return spec, series


def _schedule(row: Any) -> tuple[ScheduleSpec, Series]:
    return _compiled(
        row["schedule_id"],
        row["schedule_version"],
        row["schedule_created_at"],
        orjson.dumps(row["spec"]),
    )


class Ticker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publish: Publish,
        settings: Settings,
        clock: Clock,
        metrics: Metrics | None = None,
        claimer: str = "ticker",
    ) -> None:
        self.pool, self.publish, self.clock = pool, publish, clock
        self.topic = settings.topics.actions_due
        self.events_topic = settings.topics.actions_events
        self.batch_size = settings.ticker_batch_size
        self.lease = timedelta(seconds=settings.ticker_lease_seconds)
        self.max_idle = settings.ticker_max_idle_seconds
        self.metrics = metrics or Metrics()
        self.claimer = claimer

    async def tick(self) -> int:
        """One round: fire what is due now. Returns how many occurrences were published."""
        now = self.clock.now()
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                Q.claim_due, now, self.batch_size, self.claimer, now + self.lease
            )
            if not rows:
                return 0
            await self._advance_series(conn, rows, now)
        fired_at = self.clock.now()
        messages, fired, deadlines, skipped, reasons = [], [], [], [], []
        for row in rows:
            reason = self._condition_says_no(row)
            if reason is not None:
                messages.append(self._skip_event(row, reason, fired_at))
                skipped.append(row["id"])
                reasons.append(reason)
                continue
            message, deadline = self._event(row, fired_at)
            messages.append(message)
            fired.append(row["id"])
            deadlines.append(deadline)
        await self.publish(messages)
        async with self.pool.acquire() as conn, conn.transaction():
            if fired:
                await conn.execute(Q.mark_dispatched, fired, fired_at, self.claimer, deadlines)
            if skipped:
                await conn.execute(Q.mark_skipped, skipped, fired_at, self.claimer, reasons)
        self.metrics.inc("actions_fired", len(fired))
        self.metrics.inc("actions_skipped", len(skipped))
        return len(rows)

    def _condition_says_no(self, row: Any) -> str | None:
        """Why a due occurrence must not fire (its condition), or None to fire it."""
        spec, _ = _schedule(row)
        if spec.condition is None:
            return None
        payload = row["payload"] if row["payload"] is not None else spec.action.payload
        try:
            ok = evaluate_condition(
                spec.condition,
                spec.parameters,
                payload,
                format_instant(row["due_at"]),
                row["attempt"],
            )
        except ConditionError as exc:
            return f"condition could not be evaluated: {exc}"
        return None if ok else f"condition is false: {spec.condition}"

    def _skip_event(self, row: Any, reason: str, now: datetime) -> Outgoing:
        body = action_event_body(
            "action.state-changed",
            row["tenant"],
            str(row["id"]),
            row["attempt"],
            format_instant(now),
            "SKIPPED",
            scheduleId=str(row["schedule_id"]),
            state="SKIPPED",
            previousState="PENDING",
            reason=reason,
            output={},
        )
        return Outgoing(self.events_topic, orjson.dumps(body), str(row["schedule_id"]).encode())

    async def _advance_series(
        self, conn: asyncpg.Connection, rows: list[Any], now: datetime
    ) -> None:
        """Store each claimed series occurrence's successor; complete schedules that ended."""
        new: list[tuple[Any, ...]] = []
        ended: list[uuid.UUID] = []
        for row in rows:
            if row["origin"] != "SERIES":
                ended.append(row["schedule_id"])
                continue
            spec, series = _schedule(row)
            # FIRE_ONCE: a late occurrence fires once; the series resumes after `now`.
            nxt = series.next_after(max(row["due_at"], now), fired=row["seq"])
            if nxt is None:
                ended.append(row["schedule_id"])
            else:
                new.append(
                    (row["schedule_id"], row["tenant"], row["seq"] + 1, spec.action.type, nxt)
                )
        if new:
            n = len(new)
            await conn.execute(
                Q.insert_actions,
                [uuid.uuid4() for _ in new],
                [r[0] for r in new],
                [r[1] for r in new],
                [r[2] for r in new],
                ["SERIES"] * n,
                [None] * n,
                [r[3] for r in new],
                [r[4] for r in new],
                now,
                [None] * n,
            )
        if ended:
            await conn.execute(Q.complete_schedules, ended, now)

    def _event(self, row: Any, fired_at: datetime) -> tuple[Outgoing, datetime]:
        spec, _ = _schedule(row)
        deadline = fired_at + timedelta(milliseconds=row["ack_timeout_ms"])
        action_id = str(row["id"])
        schedule_id = str(row["schedule_id"])
        due = format_instant(row["due_at"])
        body = {
            "type": "action.due",
            "meta": {
                "eventId": f"{action_id}:{row['attempt']}",
                "timestamp": format_instant(fired_at),
                "tenant": row["tenant"],
                "schemaVersion": 1,
            },
            "data": {
                "actionId": action_id,
                "scheduleId": schedule_id,
                "name": row["name"],
                "namespace": row["namespace"],
                "type": row["type"],
                "dueAt": due,
                "firedAt": format_instant(fired_at),
                "attempt": row["attempt"],
                "ackDeadline": format_instant(deadline),
                "idempotencyKey": f"{schedule_id}/{due}",
                "payload": row["payload"] if row["payload"] is not None else spec.action.payload,
                "labels": spec.labels,
                "externalRef": spec.external_ref,
            },
        }
        topic = spec.action.topic or self.topic
        return Outgoing(topic, orjson.dumps(body), schedule_id.encode()), deadline

    async def next_wake(self) -> datetime | None:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(Q.next_wake)

    async def run(
        self,
        stop: asyncio.Event,
        wake: asyncio.Event,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        """Fire until `stop`; sleep until the next due instant, a `wake` (NOTIFY), or max idle."""
        while not stop.is_set():
            fired = await retry_forever("firing due occurrences", self.tick, on_health)
            if fired >= self.batch_size:
                continue
            wake.clear()  # before asking: a NOTIFY after this point still wakes us
            nxt = await retry_forever("finding the next due time", self.next_wake, on_health)
            timeout = self.max_idle
            if nxt is not None:
                timeout = min(timeout, (nxt - self.clock.now()).total_seconds())
            if timeout <= 0:
                continue
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
