"""The ticker loop: claim due occurrences -> store their successors -> decide -> publish -> mark;
then expire attempts whose ack deadline passed.

Claims are leases (`claimed_by`, `lease_until`), renewed while publishing: a ticker that dies
after claiming leaves rows that another ticker takes once the lease ends, and republishes them
with the same `eventId`. The next occurrence of a series is stored in the claim's transaction,
so neither a crash after publishing nor an ack racing the mark can end a series early.

Each claimed occurrence is decided in order: misfire policy (late first attempts), overlap
policy (an earlier occurrence still in flight), condition. It then fires, is SKIPPED with the
reason, or (BUFFER_ONE) is held until the running one ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from shared.clock import Clock
from shared.conditions import ConditionError, evaluate_condition
from shared.contracts import format_instant
from shared.contracts.events import action_event_body, event_meta
from shared.messaging import Outgoing, Stopping, retry_forever
from shared.metrics import Metrics
from shared.persistence.attempts import end_attempt, occurrence_fields
from shared.persistence.queries import load_queries
from shared.policy import decide_misfire
from shared.schedule.durations import parse_duration
from shared.settings import Settings
from shared.specs import compiled, preload

__all__ = ["Ticker"]

log = logging.getLogger("chime.ticker")
Q = load_queries()
Publish = Callable[[Sequence[Outgoing]], Awaitable[None]]


@dataclass
class Round:
    """What one claimed batch turned into."""

    messages: list[Outgoing] = field(default_factory=list)
    fired: list[uuid.UUID] = field(default_factory=list)
    deadlines: list[datetime] = field(default_factory=list)
    misfired: list[bool] = field(default_factory=list)
    skipped: list[uuid.UUID] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    held: list[uuid.UUID] = field(default_factory=list)


@dataclass
class Claimed:
    """A claimed and decided batch, waiting to be dispatched."""

    rows: list[Any]
    decided: Round
    fired_at: datetime
    guarded: set[uuid.UUID]  # its schedules that have an overlap policy


class _Instants:
    """The instants of one round, formatted once: when it fired, and its ack deadlines."""

    def __init__(self, fired_at: datetime) -> None:
        self.fired_at = fired_at
        self.fired = format_instant(fired_at)
        self._deadlines: dict[int, tuple[datetime, str]] = {}

    def deadline(self, ack_timeout_ms: int) -> tuple[datetime, str]:
        found = self._deadlines.get(ack_timeout_ms)
        if found is None:
            at = self.fired_at + timedelta(milliseconds=ack_timeout_ms)
            found = self._deadlines[ack_timeout_ms] = (at, format_instant(at))
        return found


class Ticker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publish: Publish,
        settings: Settings,
        clock: Clock,
        metrics: Metrics | None = None,
        claimer: str = "ticker",
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.pool, self.publish, self.clock, self.rand = pool, publish, clock, rand
        self.topics = settings.topics
        self.batch_size = settings.ticker_batch_size
        self.lease = timedelta(seconds=settings.ticker_lease_seconds)
        self.max_idle = settings.ticker_max_idle_seconds
        self.metrics = metrics or Metrics()
        self.claimer = claimer
        # Schedules (with an overlap policy) of rounds being dispatched, and those holding one.
        self._dispatching: set[uuid.UUID] = set()
        self._holding: set[uuid.UUID] = set()

    async def tick(self) -> int:
        """One round: fire what is due now, then expire overdue attempts. Returns the work done."""
        return await self.fire_due() + await self.expire_overdue()

    # --- firing -------------------------------------------------------------------------------

    async def fire_due(self) -> int:
        """Claim one batch of due occurrences and dispatch it (publish, then mark)."""
        claimed = await self._claim()
        if claimed is None:
            return 0
        await self._dispatch(claimed)
        return len(claimed.rows)

    async def _claim(self) -> Claimed | None:
        """Claim a batch (leased to this ticker), store series successors, decide each row."""
        now = self.clock.now()
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                Q.claim_due, now, self.batch_size, self.claimer, now + self.lease
            )
            if not rows:
                return None
            await preload(conn, rows)
            await self._advance_series(conn, rows, now)
            busy, buffered = await self._overlap_state(conn, rows)
        # Rounds still being dispatched are in flight too, though not yet marked.
        busy |= self._dispatching
        buffered |= self._holding
        fired_at = self.clock.now()
        decided = self._decide(rows, fired_at, busy, buffered)
        guarded = {r["schedule_id"] for r in rows if compiled(r)[0].policy.overlap != "ALLOW"}
        return Claimed(rows, decided, fired_at, guarded)

    async def _dispatch(self, claimed: Claimed) -> None:
        """Publish a claimed round (renewing its lease while the broker is slow), then mark it."""
        rows, decided, fired_at = claimed.rows, claimed.decided, claimed.fired_at
        held_ids = set(decided.held)
        held = {r["schedule_id"] for r in rows if r["id"] in held_ids}
        self._dispatching |= claimed.guarded
        self._holding |= held
        try:
            await self._publish_renewing([r["id"] for r in rows], decided.messages)
            async with self.pool.acquire() as conn, conn.transaction():
                if decided.fired:
                    await conn.execute(
                        Q.mark_dispatched,
                        decided.fired,
                        fired_at,
                        self.claimer,
                        decided.deadlines,
                        decided.misfired,
                    )
                if decided.skipped:
                    await conn.execute(
                        Q.mark_skipped, decided.skipped, fired_at, self.claimer, decided.reasons
                    )
                if decided.held:
                    await conn.execute(Q.hold_actions, decided.held, fired_at, self.claimer)
        finally:
            self._dispatching -= claimed.guarded
            self._holding -= held
        fired_ids = set(decided.fired)
        self.metrics.claim_batch.observe(len(rows))
        self.metrics.actions_fired.inc(len(decided.fired))
        self.metrics.actions_skipped.inc(len(decided.skipped))
        for row in rows:
            if row["id"] in fired_ids:
                self.metrics.firing_lateness.observe((fired_at - row["fire_at"]).total_seconds())

    async def _advance_series(
        self, conn: asyncpg.Connection, rows: list[Any], now: datetime
    ) -> None:
        """Store each claimed series occurrence's successor; complete schedules that ended."""
        new: list[tuple[Any, ...]] = []
        # A set: a round of 1,000 explicit actions of one schedule named it 1,000 times, and
        # from that array's length the planner expected that many schedules and chose to read
        # every pending occurrence (a sequential scan of actions per round, ~100 ms at 300,000
        # rows, whenever the column statistics were missing or stale).
        ended: set[uuid.UUID] = set()
        for row in rows:
            if row["origin"] != "SERIES":
                ended.add(row["schedule_id"])
                continue
            if row["attempt"] > 1:
                continue  # a retry: its successor was stored with the first attempt
            spec, series = compiled(row)
            if spec.policy.misfire == "FIRE_ALL":
                # every missed occurrence, oldest first, back to catchupWindow
                window = now - parse_duration(spec.policy.catchup_window)
                after = max(row["due_at"], window)
            else:  # FIRE_ONCE, SKIP: a late occurrence is the only catch-up
                after = max(row["due_at"], now)
            nxt = series.next_after(after, fired=row["seq"])
            if nxt is None:
                ended.add(row["schedule_id"])
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
            await conn.execute(Q.complete_schedules, list(ended), now)

    async def _overlap_state(
        self, conn: asyncpg.Connection, rows: list[Any]
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        """Schedules (with an overlap policy) that have an occurrence in flight, or one held."""
        guarded = list({r["schedule_id"] for r in rows if compiled(r)[0].policy.overlap != "ALLOW"})
        if not guarded:
            return set(), set()
        ids = [r["id"] for r in rows]
        busy = {r["schedule_id"] for r in await conn.fetch(Q.in_flight_schedules, guarded, ids)}
        held = {r["schedule_id"] for r in await conn.fetch(Q.held_schedules, guarded)}
        return busy, held

    def _decide(
        self, rows: list[Any], now: datetime, busy: set[uuid.UUID], held: set[uuid.UUID]
    ) -> Round:
        out = Round()
        busy = set(busy)
        instants = _Instants(now)
        for row in sorted(rows, key=lambda r: r["fire_at"]):
            spec, _ = compiled(row)
            policy, schedule = spec.policy, row["schedule_id"]
            first_try = row["attempt"] == 1 and row["origin"] != "MANUAL"
            misfire = decide_misfire(policy, row["due_at"], now) if first_try else None
            reason = None if misfire is None or misfire.fire else misfire.reason
            if reason is None and first_try and schedule in busy:
                if policy.overlap == "SKIP":
                    reason = "the previous occurrence is still in flight (policy.overlap SKIP)"
                elif policy.overlap == "BUFFER_ONE":
                    if schedule in held:
                        reason = "one occurrence is already buffered (policy.overlap BUFFER_ONE)"
                    else:
                        held.add(schedule)
                        out.held.append(row["id"])
                        continue
            if reason is None:
                reason = self._condition_says_no(row, spec)
            if reason is not None:
                out.messages.append(self._skip_event(row, reason, now))
                out.skipped.append(row["id"])
                out.reasons.append(reason)
                continue
            message, deadline = self._due_event(row, instants, bool(misfire and misfire.misfired))
            out.messages.append(message)
            out.fired.append(row["id"])
            out.deadlines.append(deadline)
            out.misfired.append(bool(misfire and misfire.misfired))
            if policy.overlap != "ALLOW":
                busy.add(schedule)
        return out

    @staticmethod
    def _condition_says_no(row: Any, spec: Any) -> str | None:
        """Why a due occurrence must not fire (its condition), or None to fire it."""
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
        return Outgoing(
            self.topics.actions_events,
            orjson.dumps(body),
            str(row["schedule_id"]).encode(),
            correlation_id=str(row["id"]),
        )

    def _due_event(
        self, row: Any, instants: _Instants, misfired: bool
    ) -> tuple[Outgoing, datetime]:
        spec, _ = compiled(row)
        deadline, deadline_text = instants.deadline(row["ack_timeout_ms"])
        fields = occurrence_fields(row)
        action_id, schedule_id = fields["actionId"], fields["scheduleId"]
        body = {
            "type": "action.due",
            "meta": event_meta(f"{action_id}:{row['attempt']}", instants.fired, row["tenant"]),
            "data": {
                **fields,
                "firedAt": instants.fired,
                "attempt": row["attempt"],
                "ackDeadline": deadline_text,
                "idempotencyKey": f"{schedule_id}/{fields['dueAt']}",
                "payload": row["payload"] if row["payload"] is not None else spec.action.payload,
                "labels": spec.labels,
                "externalRef": spec.external_ref,
                "misfired": misfired,
            },
        }
        topic = spec.action.topic or self.topics.actions_due
        message = Outgoing(
            topic, orjson.dumps(body), schedule_id.encode(), correlation_id=action_id
        )
        return message, deadline

    async def _publish_renewing(self, ids: list[uuid.UUID], messages: list[Outgoing]) -> None:
        """Publish; while the broker is slow, keep renewing the claims' lease."""
        sending = asyncio.ensure_future(self.publish(messages))
        interval = self.lease.total_seconds() / 3
        try:
            while True:
                done, _ = await asyncio.wait({sending}, timeout=interval)
                if done:
                    sending.result()
                    return
                async with self.pool.acquire() as conn:
                    await conn.execute(
                        Q.renew_leases, ids, self.claimer, self.clock.now() + self.lease
                    )
        finally:
            if not sending.done():
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending

    # --- ack deadlines ------------------------------------------------------------------------

    async def expire_overdue(self) -> int:
        """Attempts not acknowledged by their deadline: TIMED_OUT, then retried or failed.

        Events are published before the transaction commits: a crash in between repeats the
        expiry (same event ids), it never loses it.
        """
        now = self.clock.now()
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(Q.claim_expired, now, self.batch_size)
            if not rows:
                return 0
            messages: list[Outgoing] = []
            for row in rows:
                messages += await end_attempt(
                    conn,
                    row,
                    "TIMED_OUT",
                    f"no ack for attempt {row['attempt']} by its deadline",
                    None,
                    now,
                    self.rand,
                    self.topics,
                )
            await self.publish(messages)
        self.metrics.retries.labels("TIMED_OUT").inc(len(rows))
        return len(rows)

    # --- the loop -----------------------------------------------------------------------------

    async def refresh_backlog(self) -> None:
        async with self.pool.acquire() as conn:
            self.metrics.due_backlog.set(await conn.fetchval(Q.due_backlog, self.clock.now()))

    async def next_wake(self) -> datetime | None:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(Q.next_wake)

    async def run(
        self,
        stop: asyncio.Event,
        wake: asyncio.Event,
        on_health: Callable[[bool], None] | None = None,
    ) -> None:
        """Fire until `stop`; sleep until the next due instant, a `wake` (NOTIFY), or max idle.

        Rounds are pipelined: while one round is being published and marked, the next is
        claimed and decided (at most one round dispatching at a time). The loop claims again at
        once while claims find work, and sleeps only when nothing is due.
        """
        dispatching: asyncio.Task[None] | None = None
        expired_at = 0.0
        while not stop.is_set():
            try:
                claimed = await retry_forever(
                    "claiming due occurrences", self._claim, on_health, stop=stop
                )
                if dispatching is not None:
                    await dispatching
                    dispatching = None
                if claimed is not None:
                    dispatching = asyncio.create_task(
                        self._dispatch_retrying(claimed, on_health, stop)
                    )
                if claimed is None or time.monotonic() - expired_at >= 1.0:
                    expired_at = time.monotonic()  # deadlines: when idle, and once a second
                    expire = self.expire_overdue
                    if await retry_forever("expiring deadlines", expire, on_health, stop=stop):
                        continue
            except Stopping:
                break  # asked to stop while the database or the broker is failing
            except Exception:  # a bug must not stop the ticker: claims are retried after the lease
                log.exception("ticker round failed")
                if dispatching is not None and dispatching.done():
                    dispatching = None
                await asyncio.sleep(1.0)
                continue
            if claimed is not None:
                continue  # more may be due already: claim again while this round is sent
            wake.clear()  # before asking: a NOTIFY after this point still wakes us
            try:
                nxt = await retry_forever(
                    "finding the next due time", self.next_wake, on_health, stop=stop
                )
            except Stopping:
                break
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
        if dispatching is not None:
            try:
                await dispatching  # drain: the round in flight is published and marked
            except Stopping as exc:
                log.warning(
                    "the last round was left: %s; its claims are retried after the lease", exc
                )
            except Exception:
                log.exception("the last round failed; its claims are retried after the lease")

    async def _dispatch_retrying(
        self,
        claimed: Claimed,
        on_health: Callable[[bool], None] | None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Dispatch a round until it succeeds (a republished event keeps its eventId), or until
        a failing round is given up on stopping (its claims are taken again after the lease)."""
        dispatch = functools.partial(self._dispatch, claimed)
        await retry_forever("dispatching a round", dispatch, on_health, stop=stop)
