"""The ticker loop: claim due occurrences -> store their successors -> decide -> publish -> mark;
then expire attempts whose ack deadline passed.

Occurrences are claimed up to `ticker_lookahead_ms` before their instant, so that the claim's
round trip is done by the time they are due; each is then held until its `fire_at`, decided and
published at that instant (never before it), in the order they fall due.

A claim is a transaction: it locks the round's rows (other tickers pass over them), stores the
series' successors, and stays open on a connection of its own while the round is released and
published; the round is marked in it and committed. A ticker that dies takes its transaction
with it: the round is rolled back (successors too) and its rows are free at once, taken by
another ticker and republished with the same `eventId`. One that stops answering loses its
session after the lease (`idle_in_transaction_session_timeout`; a round waiting for a slow
broker keeps it alive with a statement every third of the lease). An ack racing the mark waits
for the commit, so it always finds its occurrence DISPATCHED.

Each claimed occurrence is decided in order: misfire policy (late first attempts), overlap
policy (an earlier occurrence not ended: in flight, or waiting for its retry), condition. It
then fires, is SKIPPED with the reason, or (BUFFER_ONE) is held until the earlier one ends.
One the ticker's own code fails on (deciding it, or computing its series' successor) is
SKIPPED, saying so: not the whole round, which would be claimed and fail again for ever.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import math
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
from shared.contracts import ScheduleSpec, format_instant
from shared.contracts.events import action_event_body, event_meta
from shared.messaging import (
    LARGEST_MESSAGE,
    Outgoing,
    Stopping,
    is_fault,
    publishing_may_heal,
    retry_forever,
)
from shared.metrics import Metrics
from shared.persistence.attempts import end_attempt, fail_for_good, occurrence_fields
from shared.persistence.queries import load_queries
from shared.persistence.successors import store_successors
from shared.policy import decide_misfire
from shared.settings import Settings
from shared.specs import Definition, Key, key_of, load_definitions

__all__ = ["Ticker"]

log = logging.getLogger("chime.ticker")
Q = load_queries()
Publish = Callable[[Sequence[Outgoing]], Awaitable[None]]
# Rounds dispatching at once: one being released, the ones before it waiting for the broker's
# acknowledgement or being marked.
ROUNDS_IN_FLIGHT = 3
# Seconds to wait before claiming again when all that was due is being decided by another
# round (overlap policies: a replica's, not committed yet): rounds take milliseconds.
DEFERRED_WAIT = 0.01
# Seconds between two warnings that PostgreSQL's lock table had no room for a round's locks.
LOCK_TABLE_WARNING_EVERY = 60.0
# Shortest time between two releases, in seconds of the monotonic clock (the wall clock may be
# stepped back): what falls due within it goes out together, as one produce request, instead
# of a request per millisecond. 3 ms: at 5,000 due/s the ticker's part of the lateness p50 2.1,
# p99 6.1-6.5 ms (5 ms: 3.3 and 8.8-10.1); 2 ms made Tansu fall behind (bench/README.md).
RELEASE_STEP = 0.003


@dataclass
class Round:
    """What one claimed batch turned into."""

    messages: list[Outgoing] = field(default_factory=list)
    fired: list[uuid.UUID] = field(default_factory=list)
    released: list[datetime] = field(default_factory=list)  # the instant of each part released
    part: list[int] = field(default_factory=list)  # each fired one's, 1-based into `released`
    ack_timeouts: list[int] = field(default_factory=list)  # ms: its ack deadline follows
    misfired: list[bool] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)  # seconds each fired after its fire_at
    skipped: list[uuid.UUID] = field(default_factory=list)
    skipped_at: list[datetime] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    held: list[uuid.UUID] = field(default_factory=list)


@dataclass
class Claimed:
    """A claimed batch (by `fire_at`), released part by part as its occurrences fall due."""

    rows: list[Any]
    fire_at: list[datetime]  # each row's instant (the claim returns it only where not due_at)
    busy: set[uuid.UUID]  # schedules with an occurrence in flight (grows as rows fire)
    buffered: set[uuid.UUID]  # schedules holding an occurrence back (BUFFER_ONE)
    guarded: set[uuid.UUID]  # its schedules that have an overlap policy
    definitions: dict[Key, Definition]  # of its rows' schedules (see shared.specs)
    # The claim's transaction, holding the rows until the round is marked (None once done).
    conn: asyncpg.pool.PoolConnectionProxy | None = None
    transaction: asyncpg.transaction.Transaction | None = None
    ended: list[uuid.UUID] = field(default_factory=list)  # schedules to complete at the mark
    released: int = 0  # rows[:released] have been decided, into `decided`
    decided: Round = field(default_factory=Round)
    # Set once every row is released (or the dispatch gave up): the next round may start.
    all_released: asyncio.Event = field(default_factory=asyncio.Event)
    # Occurrences found at the claim not to be decided, by id, with the reason they are
    # skipped for: their schedule's definition cannot be read, or the ticker failed on their
    # successor (a fault in Chime). They get no successor; without this, one of them would
    # fail every round that claims it.
    undecidable: dict[uuid.UUID, str] = field(default_factory=dict)


class _Instants:
    """The instants of one release, formatted once: when it fired, and its ack deadlines."""

    def __init__(self, fired_at: datetime) -> None:
        self.fired_at = fired_at
        self.fired = format_instant(fired_at)
        self._deadlines: dict[int, str] = {}

    def deadline(self, ack_timeout_ms: int) -> str:
        """The ack deadline of what fired here with this ack timeout (as `mark_dispatched`
        stores it: the instant plus the timeout)."""
        found = self._deadlines.get(ack_timeout_ms)
        if found is None:
            at = self.fired_at + timedelta(milliseconds=ack_timeout_ms)
            found = self._deadlines[ack_timeout_ms] = format_instant(at)
        return found


class Ticker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publish: Publish,
        settings: Settings,
        clock: Clock,
        metrics: Metrics | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.pool, self.publish, self.clock, self.rand = pool, publish, clock, rand
        self.topics = settings.topics
        self.batch_size = settings.ticker_batch_size
        self.lease = timedelta(seconds=settings.ticker_lease_seconds)
        self._idle_limit = str(max(1, round(settings.ticker_lease_seconds * 1000)))
        self.lookahead = timedelta(milliseconds=settings.ticker_lookahead_ms)
        self.max_idle = settings.ticker_max_idle_seconds
        self.metrics = metrics or Metrics()
        self._released_at = 0.0  # time.monotonic() of the last release of a round's part
        self.deferred = 0  # claims that left a schedule's occurrences to another round
        self.lock_table_full = 0  # claims whose overlap locks did not fit PostgreSQL's table
        self._lock_table_warned = -math.inf

    async def tick(self) -> int:
        """One round: fire what is due now, then expire overdue attempts. Returns the work done."""
        return await self.fire_due() + await self.expire_overdue()

    # --- firing -------------------------------------------------------------------------------

    async def fire_due(self) -> int:
        """Claim one batch of occurrences due within the lookahead and dispatch it (each
        published at its instant, then the batch marked)."""
        claimed = await self._claim()
        if claimed is None:
            return 0
        try:
            await self._dispatch(claimed)
        finally:
            await self._give_up(claimed)  # failed: rolled back, its rows free for the next claim
        return len(claimed.rows)

    async def _claim(self) -> Claimed | None:
        """Claim a batch: lock what is due up to the lookahead from now, oldest first, in a
        transaction left open for the round (see the module's docstring); store series
        successors and read the overlap state in it."""
        now = self.clock.now()
        conn = await self.pool.acquire()
        transaction = conn.transaction()
        try:
            await transaction.start()
            await conn.execute(Q.claim_plan, self._idle_limit)
            rows = await conn.fetch(Q.claim_due, now + self.lookahead, self.batch_size)
            if rows:
                unreadable: dict[Key, str] = {}
                definitions = await load_definitions(conn, rows, unreadable)
                guarded = _guarded(definitions)
                elsewhere = await self._decided_elsewhere(conn, guarded)
                if elsewhere:  # left to a claim after that round (locked by this one till then)
                    self.deferred += 1
                    rows = [r for r in rows if r["schedule_id"] not in elsewhere]
                    guarded -= elsewhere
                readable, undecidable = rows, dict[uuid.UUID, str]()
                if unreadable:  # their occurrences are skipped, saying why (see _decide)
                    log.error("schedule definitions that cannot be read: %s", unreadable)
                    readable = [r for r in rows if key_of(r) not in unreadable]
                    undecidable = {
                        r["id"]: f"the schedule's definition cannot be read ({why}): replace it"
                        for r in rows
                        if (why := unreadable.get(key_of(r))) is not None
                    }
                failed: dict[uuid.UUID, Exception] = {}
                ended = await store_successors(conn, readable, definitions, now, faulty=failed)
                for action_id, exc in failed.items():
                    undecidable[action_id] = _failed_on(action_id, exc, "its series stops here")
                busy, buffered = await self._overlap_state(conn, guarded)
        except BaseException:
            await _end(conn, transaction, self.pool)
            raise
        if not rows:
            await _end(conn, transaction, self.pool)
            return None
        fire_at = [r["fire_at"] or r["due_at"] for r in rows]
        order = sorted(range(len(rows)), key=fire_at.__getitem__)
        rows, fire_at = [rows[i] for i in order], [fire_at[i] for i in order]
        return Claimed(
            rows,
            fire_at,
            busy,
            buffered,
            guarded,
            definitions,
            conn,
            transaction,
            ended,
            undecidable=undecidable,
        )

    async def _dispatch(self, claimed: Claimed) -> None:
        """Release a claimed round as its occurrences fall due (decide, start publishing), wait
        for the broker (keeping the claim's transaction alive while it is slow), then mark the
        round in that transaction and commit it.

        A retry (the broker failed) publishes what was already decided again, as it was
        decided, with the same event ids; it does not decide it a second time. A round whose
        transaction failed (the database, or its session ended) is given up: rolled back, its
        rows are free and the next claim takes them."""
        conn, transaction = claimed.conn, claimed.transaction
        if conn is None or transaction is None:
            return  # given up after a failure: its rows are claimed again
        rows, fire_at, decided = claimed.rows, claimed.fire_at, claimed.decided
        sends: list[asyncio.Future[None]] = []
        try:
            if decided.messages:  # a retry: the transaction must still be alive to go on
                await self._keep(claimed)
                sends.append(asyncio.ensure_future(self.publish(decided.messages)))
            while claimed.released < len(rows):
                pause = RELEASE_STEP - (time.monotonic() - self._released_at)
                if pause > 0:
                    await asyncio.sleep(pause)
                await self.clock.sleep_until(fire_at[claimed.released])
                self._released_at = time.monotonic()
                now = self.clock.now()
                start = claimed.released
                end = bisect.bisect_right(fire_at, now, lo=start)
                # Deciding runs between the claim and the mark, where the session is idle in
                # its transaction: a part that takes a third of the lease (a condition takes
                # up to ~50 ms to read, once a process: thousands of them) is cut there, the
                # claim kept alive, and the rest released next (at once: the cut part took far
                # longer than the release step).
                until = time.monotonic() + self.lease.total_seconds() / 3
                part, decided_to = self._decide(
                    rows[start:end], fire_at[start:end], now, claimed, until
                )
                claimed.released = start + decided_to
                if part:
                    sends.append(asyncio.ensure_future(self.publish(part)))
                if claimed.released < end:
                    await self._keep(claimed)
            claimed.all_released.set()
            released = self.clock.now()
            await self._publish_keeping(claimed, sends)
            self.metrics.broker_ack_wait.observe((self.clock.now() - released).total_seconds())
            try:
                await self._mark(conn, claimed)
                await transaction.commit()
            finally:
                await self._give_up(claimed)  # failed: rolled back; committed: only returned
        finally:
            for send in sends:
                send.cancel()  # only those still running: a failed round is published again
            for send in sends:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await send  # retrieved, so that a failure is not logged twice
            claimed.all_released.set()
        self.metrics.claim_batch.observe(len(rows))
        self.metrics.actions_fired.inc(len(decided.fired))
        self.metrics.actions_skipped.inc(len(decided.skipped))
        self.metrics.firing_lateness.observe_many(decided.lateness)

    async def _mark(self, conn: asyncpg.Connection, claimed: Claimed) -> None:
        """Record what the round did, in the claim's transaction: fired, skipped, held; and
        complete the schedules whose last occurrences it took."""
        decided = claimed.decided
        if decided.fired:
            await conn.execute(
                Q.mark_dispatched,
                decided.fired,
                decided.part,
                decided.released,
                decided.ack_timeouts,
                decided.misfired,
            )
        if decided.skipped:
            await conn.execute(Q.mark_skipped, decided.skipped, decided.skipped_at, decided.reasons)
        if decided.held:
            held = set(decided.held)
            behind = list({r["schedule_id"] for r in claimed.rows if r["id"] in held})
            await conn.execute(Q.hold_actions, decided.held, self.clock.now(), behind)
        if claimed.ended:
            ids = [r["id"] for r in claimed.rows]
            await conn.execute(Q.complete_schedules, claimed.ended, self.clock.now(), ids)

    async def _give_up(self, claimed: Claimed) -> None:
        """End the round's transaction (a rollback, unless it was committed) and return its
        connection; a dispatch tried again after this does nothing."""
        conn, transaction = claimed.conn, claimed.transaction
        claimed.conn = claimed.transaction = None
        if conn is not None and transaction is not None:
            await _end(conn, transaction, self.pool)

    async def _decided_elsewhere(
        self, conn: asyncpg.Connection, guarded: set[uuid.UUID]
    ) -> set[uuid.UUID]:
        """Of the `guarded` schedules, those another round is deciding (this ticker's or a
        replica's): its fires cannot be seen before it commits. Each round holds a lock on the
        guarded schedules it decides, released with its transaction."""
        if not guarded:
            return set()
        try:
            async with conn.transaction():  # a savepoint: the locks may not fit (below)
                taken = {r["id"] for r in await conn.fetch(Q.lock_guarded, list(guarded))}
        except asyncpg.OutOfMemoryError as exc:
            # PostgreSQL's lock table is full (max_locks_per_transaction x max_connections,
            # shared by every session): this round's locks are gone with its savepoint, and
            # its guarded schedules are left to a round after the rounds holding locks now
            # commit, instead of failing the round (and every round after it) with the error.
            self.lock_table_full += 1
            if time.monotonic() - self._lock_table_warned > LOCK_TABLE_WARNING_EVERY:
                self._lock_table_warned = time.monotonic()
                log.warning(
                    "no room for the overlap locks of %d schedules (%s): left to a later "
                    "round; raise PostgreSQL's max_locks_per_transaction, or lower "
                    "CHIME_TICKER_BATCH_SIZE",
                    len(guarded),
                    str(exc).splitlines()[0],
                )
            return guarded
        return guarded - taken

    async def _overlap_state(
        self, conn: asyncpg.Connection, guarded: set[uuid.UUID]
    ) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
        """Of the `guarded` schedules (with an overlap policy), those that have an occurrence
        that has not ended (in flight, or waiting for its retry), and those that have one
        held."""
        if not guarded:
            return set(), set()
        schedules = list(guarded)
        busy = {r["schedule_id"] for r in await conn.fetch(Q.in_flight_schedules, schedules)}
        held = {r["schedule_id"] for r in await conn.fetch(Q.held_schedules, schedules)}
        return busy, held

    def _decide(
        self,
        rows: list[Any],
        fire_at: list[datetime],
        now: datetime,
        claimed: Claimed,
        until: float = math.inf,
    ) -> tuple[list[Outgoing], int]:
        """Decide rows of a round that are due at `now` (in `fire_at` order, their instants)
        into its `decided` round, stopping after the first row decided past `until` (of the
        monotonic clock); returns their messages and how many rows were decided."""
        out = claimed.decided
        messages: list[Outgoing] = []
        instants = _Instants(now)
        out.released.append(now)
        part = len(out.released)
        undecidable = claimed.undecidable  # rarely any: looked up only then
        decide_one = self._decide_one
        clock = time.monotonic
        decided = 0
        for row, instant in zip(rows, fire_at, strict=True):
            if decided and clock() > until:
                break
            decided += 1
            if undecidable and (reason := undecidable.get(row["id"])) is not None:
                messages.append(self._skipped(out, row, reason, now))
                continue
            try:
                message = decide_one(row, instant, now, claimed, instants, part)
            except Exception as exc:  # a fault in Chime: this occurrence is skipped, not the round
                message = self._skipped(out, row, _failed_on(row["id"], exc), now)
            if message is not None:
                messages.append(message)
        out.messages += messages
        return messages, decided

    def _decide_one(
        self,
        row: Any,
        instant: datetime,
        now: datetime,
        claimed: Claimed,
        instants: _Instants,
        part: int,
    ) -> Outgoing | None:
        """Decide one row of a release (fired, skipped or held) into the round's `decided`;
        returns its message (None: held). Raises before recording anything of it."""
        out, busy, buffered = claimed.decided, claimed.busy, claimed.buffered
        spec, _ = claimed.definitions[key_of(row)]
        policy, schedule = spec.policy, row["schedule_id"]
        first_try = row["attempt"] == 1 and row["origin"] != "MANUAL"
        misfire = decide_misfire(policy, row["due_at"], now) if first_try else None
        reason = None if misfire is None or misfire.fire else misfire.reason
        if reason is None and first_try and schedule in busy:
            if policy.overlap == "SKIP":
                reason = "an earlier occurrence has not ended (policy.overlap SKIP)"
            elif policy.overlap == "BUFFER_ONE":
                if schedule in buffered:
                    reason = "one occurrence is already buffered (policy.overlap BUFFER_ONE)"
                else:
                    buffered.add(schedule)
                    out.held.append(row["id"])
                    return None
        if reason is None:
            reason = self._condition_says_no(row, spec)
        if reason is not None:
            return self._skipped(out, row, reason, now)
        misfired = misfire is not None and misfire.misfired
        message = self._due_event(row, spec, instants, misfired)
        if len(message.value) > LARGEST_MESSAGE:  # a broker at its default would refuse it
            return self._skipped(out, row, _too_large(len(message.value)), now)
        out.fired.append(row["id"])
        out.part.append(part)
        out.ack_timeouts.append(row["ack_timeout_ms"])
        out.misfired.append(misfired)
        out.lateness.append((now - instant).total_seconds())
        if policy.overlap != "ALLOW":
            busy.add(schedule)
        return message

    @staticmethod
    def _condition_says_no(row: Any, spec: ScheduleSpec) -> str | None:
        """Why a due occurrence must not fire (its condition), or None to fire it."""
        if spec.condition is None:
            return None
        text = row["payload_json"]
        payload = orjson.loads(text) if text is not None else spec.action.payload
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

    def _skipped(self, out: Round, row: Any, reason: str, now: datetime) -> Outgoing:
        """A row of the round decided SKIPPED, for `reason`; its event."""
        event = self._skip_event(row, reason, now)
        out.skipped.append(row["id"])
        out.skipped_at.append(now)
        out.reasons.append(reason)
        return event

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
        self, row: Any, spec: ScheduleSpec, instants: _Instants, misfired: bool
    ) -> Outgoing:
        data = occurrence_fields(row)  # filled in place: no copy of it per event
        action_id, schedule_id, attempt = data["actionId"], data["scheduleId"], row["attempt"]
        data["firedAt"] = instants.fired
        data["attempt"] = attempt
        data["ackDeadline"] = instants.deadline(row["ack_timeout_ms"])
        data["idempotencyKey"] = f"{schedule_id}/{data['dueAt']}"
        text = row["payload_json"]  # the stored document's text, put in as it is
        data["payload"] = orjson.Fragment(text) if text is not None else spec.action.payload
        data["labels"] = spec.labels
        data["externalRef"] = spec.external_ref
        data["misfired"] = misfired
        body = {
            "type": "action.due",
            "meta": event_meta(f"{action_id}:{attempt}", instants.fired, row["tenant"]),
            "data": data,
        }
        topic = spec.action.topic or self.topics.actions_due
        return Outgoing(topic, orjson.dumps(body), schedule_id.encode(), correlation_id=action_id)

    async def _publish_keeping(self, claimed: Claimed, sends: list[asyncio.Future[None]]) -> None:
        """Wait for the broker to take every part of a round; while it is slow, keep the
        claim's transaction alive (a statement every third of the lease, within the session's
        idle limit). The first failing part fails the round."""
        interval = self.lease.total_seconds() / 3
        waiting = set(sends)
        while waiting:
            done, waiting = await asyncio.wait(
                waiting, timeout=interval, return_when=asyncio.FIRST_EXCEPTION
            )
            for send in done:
                send.result()
            if waiting and not done:
                await self._keep(claimed)

    async def _keep(self, claimed: Claimed) -> None:
        """A statement in the round's transaction, which keeps its session from the idle limit;
        if the transaction is gone (its session ended, the database failed), the round is given
        up and the error raised."""
        try:
            assert claimed.conn is not None
            await claimed.conn.execute(Q.keep_claim)
        except BaseException:
            await self._give_up(claimed)
            raise

    # --- ack deadlines ------------------------------------------------------------------------

    async def expire_overdue(self) -> int:
        """Attempts not acknowledged by their deadline: TIMED_OUT, then retried or failed.

        Events are published before the transaction commits: a crash in between repeats the
        expiry (same event ids), it never loses it. A batch the ticker's own code fails on is
        ended again one attempt at a time: the one it fails on is FAILED for good, saying so,
        rather than failing every expiry (and every deadline behind it) for ever.
        """
        now = self.clock.now()
        try:
            return await self._expire(now, alone=False)
        except Exception as exc:
            if not is_fault(exc):
                raise
            log.exception("the ticker failed ending overdue attempts; ending them one at a time")
            return await self._expire(now, alone=True)

    async def _expire(self, now: datetime, alone: bool) -> int:
        """End a batch of overdue attempts; `alone`: each in a savepoint of its own, and one
        the ticker fails on is failed for good, saying so."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q.keyed_plan)
            rows = await conn.fetch(Q.claim_expired, now, self.batch_size)
            if not rows:
                return 0
            messages: list[Outgoing] = []
            for row in rows:
                end = functools.partial(
                    end_attempt,
                    conn,
                    row,
                    "TIMED_OUT",
                    f"no ack for attempt {row['attempt']} by its deadline",
                    None,
                    now,
                    self.rand,
                    self.topics,
                )
                if not alone:
                    messages += await end()
                    continue
                try:
                    async with conn.transaction():  # a savepoint: a fault undoes this one only
                        messages += await end()
                except Exception as exc:
                    if not is_fault(exc):
                        raise
                    messages += await self._end_faulty(conn, row, now, end, exc)
            await self.publish(messages)
        self.metrics.retries.labels("TIMED_OUT").inc(len(rows))
        return len(rows)

    async def _end_faulty(
        self,
        conn: asyncpg.Connection,
        row: Any,
        now: datetime,
        end: Callable[..., Awaitable[list[Outgoing]]],
        exc: Exception,
    ) -> list[Outgoing]:
        """An overdue attempt the ticker failed on: FAILED for good, saying so. If ending it so
        fails too (building its events), it is FAILED all the same (and the one held behind it
        released), recorded in its history and logged, without events: left as it was, it
        failed every expiry after it, for ever."""
        why = _failed_on(row["id"], exc)
        try:
            async with conn.transaction():
                return await end(fault=why)
        except Exception as again:
            if not is_fault(again):
                raise
            log.exception("the ticker failed ending an overdue attempt as failed for good")
            await fail_for_good(
                conn,
                row,
                now,
                f"attempt {row['attempt']} timed out: {why}; ending it so failed as well "
                f"({type(again).__name__}), so it is FAILED without its events",
            )
            return []

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
        """Fire until `stop`; sleep until the lookahead before the next due instant, a `wake`
        (NOTIFY), or max idle.

        Rounds are pipelined: the next round is claimed while the previous is being released,
        and its release starts once the previous one's is done (so occurrences go out in the
        order they fall due), while earlier rounds may still wait for the broker and be marked;
        at most `ROUNDS_IN_FLIGHT` rounds are dispatching at once. The loop claims again at once
        while claims find work, and sleeps only when nothing is due within the lookahead.
        """
        inflight: list[tuple[Claimed, asyncio.Task[None]]] = []
        expired_at = 0.0
        while not stop.is_set():
            unsent: Claimed | None = None  # claimed, not yet handed to a dispatch
            deferred = self.deferred
            try:
                claimed = unsent = await retry_forever(
                    "claiming due occurrences", self._claim, on_health, stop=stop
                )
                if inflight:
                    await inflight[-1][0].all_released.wait()
                inflight = _reap(inflight)
                if claimed is not None:
                    while len(inflight) >= ROUNDS_IN_FLIGHT:
                        await inflight.pop(0)[1]
                    task = asyncio.create_task(self._dispatch_retrying(claimed, on_health, stop))
                    inflight.append((claimed, task))
                    unsent = None
                if claimed is None or time.monotonic() - expired_at >= 1.0:
                    expired_at = time.monotonic()  # deadlines: when idle, and once a second
                    expire = self.expire_overdue
                    if await retry_forever("expiring deadlines", expire, on_health, stop=stop):
                        continue
                if claimed is not None:
                    continue  # more may be due already: claim again while this round is sent
                wake.clear()  # before asking: a NOTIFY after this point still wakes us
                nxt = await retry_forever(
                    "finding the next due time", self.next_wake, on_health, stop=stop
                )
                timeout = idle_timeout(nxt, self.clock.now(), self.lookahead, self.max_idle)
                if self.deferred > deferred:  # what is due waits for another round's commit
                    timeout = max(timeout, DEFERRED_WAIT)
            except Stopping:
                if unsent is not None:
                    await self._give_up(unsent)
                break  # asked to stop while the database or the broker is failing
            except Exception:
                # Nothing may end this loop but `stop`: a task that ends leaves a ticker that
                # looks alive and fires nothing. A failed round was rolled back, and so is one
                # claimed but not dispatched: their rows are claimed again.
                if unsent is not None:
                    await self._give_up(unsent)
                log.exception("ticker loop failed; trying again in 1 s")
                inflight = [(c, t) for c, t in inflight if not t.done()]
                await asyncio.sleep(1.0)
                continue
            if timeout <= 0:
                continue
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        for _, task in inflight:
            try:
                await task  # drain: the rounds in flight are published and marked
            except Stopping as exc:
                log.warning("a round was left: %s; it was rolled back, for others to fire", exc)
            except Exception:
                log.exception("a round failed; it was rolled back, for others to fire")

    async def _dispatch_retrying(
        self,
        claimed: Claimed,
        on_health: Callable[[bool], None] | None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Dispatch a round until it succeeds (a republished event keeps its eventId), or until
        it is given up: its transaction failed, an error that is neither an outage nor the
        broker's (a broker refusing a message waits for an operator, as an outage does, rather
        than the round being rolled back, claimed and refused again in a loop), or a failing
        round when stopping. A round given up is rolled back; its rows are claimed again."""
        dispatch = functools.partial(self._dispatch, claimed)
        try:
            await retry_forever(
                "dispatching a round",
                dispatch,
                on_health,
                stop=stop,
                may_heal=publishing_may_heal,
            )
        finally:
            await self._give_up(claimed)  # stopping, or an error not retried: rolled back


def idle_timeout(
    nxt: datetime | None, now: datetime, lookahead: timedelta, max_idle: float
) -> float:
    """Seconds to sleep when a round found nothing: until the lookahead before `nxt` (the next
    instant a round could find work), at most `max_idle`.

    `nxt` may be an ack deadline, which no claim takes ahead of time: when the lookahead
    before it has already begun, sleep until `nxt` itself rather than ask again and again until
    then."""
    if nxt is None:
        return max_idle
    wake_at = nxt - lookahead
    if wake_at <= now:
        wake_at = nxt
    return min(max_idle, (wake_at - now).total_seconds())


async def _end(
    conn: asyncpg.pool.PoolConnectionProxy,
    transaction: asyncpg.transaction.Transaction,
    pool: asyncpg.Pool,
) -> None:
    """Roll a claim's transaction back unless it ended, and return its connection to the pool
    (a connection whose session ended is replaced by the pool)."""
    try:
        with contextlib.suppress(Exception):  # committed already, or its session is gone
            await transaction.rollback()
    finally:
        await pool.release(conn)


def _too_large(size: int) -> str:
    return (
        f"its action.due would be {size} bytes, more than the {LARGEST_MESSAGE} a message may "
        "carry (a payload stored before payloads were held to 256 KiB): replace the schedule "
        "with a smaller payload"
    )


def _failed_on(action_id: uuid.UUID, exc: Exception, then: str | None = None) -> str:
    """Log a fault of the ticker's own on one occurrence; the reason it is skipped (or failed)
    for."""
    log.error(
        "the ticker failed on an occurrence", exc_info=exc, extra={"actionId": str(action_id)}
    )
    reason = (
        f"the ticker failed on this occurrence ({type(exc).__name__}: a fault in Chime, logged)"
    )
    return f"{reason}: {then}" if then else reason


def _guarded(definitions: dict[Key, Definition]) -> set[uuid.UUID]:
    """The schedules of a round's definitions (its rows' schedules: one a schedule and version,
    not one a row) that have an overlap policy."""
    return {key[0] for key, (spec, _) in definitions.items() if spec.policy.overlap != "ALLOW"}


def _reap(
    inflight: list[tuple[Claimed, asyncio.Task[None]]],
) -> list[tuple[Claimed, asyncio.Task[None]]]:
    """The rounds still dispatching; a finished one that failed raises its error here."""
    done = [task for _, task in inflight if task.done()]
    left = [(claimed, task) for claimed, task in inflight if not task.done()]
    for task in done:
        task.result()
    return left
