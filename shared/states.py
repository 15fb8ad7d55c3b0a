"""The action state machine (pure): what an ack does to an occurrence.

    PENDING -> DISPATCHED -> RUNNING -> SUCCEEDED | FAILED
    (+ SKIPPED, CANCELLED, TIMED_OUT)

An ack may go straight from DISPATCHED to SUCCEEDED or FAILED; RUNNING is optional and
renews the deadline. An ack that arrives before the ticker has marked its publish waits for
the mark (the ticker's round holds the row until it commits) and finds it DISPATCHED. One that
finds its attempt PENDING and due names a round published and then rolled back: the acker
records that fire first (services/acker/acks.py), so what is still PENDING here has not fired.
Duplicate, stale and unknown acks change nothing and are reported with a reason, never raised.

The acker applies the commonest acks (RUNNING or SUCCEEDED of the attempt in flight) in SQL
without calling `decide_ack` (queries.sql, `apply_in_flight_acks`); tests/unit/test_states.py
holds this module to the rule that statement follows.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["TERMINAL", "AckDecision", "decide_ack"]

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED"})
_ACKABLE = frozenset({"DISPATCHED", "RUNNING"})


class AckDecision(NamedTuple):
    """What an ack does (immutable; a tuple, made for every ack, is quicker to build than a
    frozen dataclass)."""

    apply: bool
    new_state: str | None = None
    reason: str | None = None  # why nothing changed: DUPLICATE, STALE, ...
    renew_deadline: bool = False


def decide_ack(state: str, attempt: int, ack_state: str, ack_attempt: int) -> AckDecision:
    """What an ack of `ack_attempt` in `ack_state` does to an occurrence in `state` at `attempt`."""
    if ack_attempt < attempt:
        return AckDecision(
            False, reason=f"STALE: attempt {ack_attempt} was superseded by attempt {attempt}"
        )
    if ack_attempt > attempt:
        return AckDecision(
            False,
            reason=f"UNKNOWN_ATTEMPT: attempt {ack_attempt} was never fired (current {attempt})",
        )
    if state in TERMINAL:
        if state == ack_state:
            return AckDecision(False, reason=f"DUPLICATE: already {state}")
        return AckDecision(False, reason=f"STALE: already {state}, {ack_state} ignored")
    if state == "TIMED_OUT":
        return AckDecision(False, reason="STALE: the attempt timed out before this ack")
    if state == "PENDING":
        return AckDecision(False, reason="NOT_DISPATCHED: this occurrence has not fired yet")
    if state in _ACKABLE:
        return AckDecision(True, new_state=ack_state, renew_deadline=ack_state == "RUNNING")
    return AckDecision(False, reason=f"STALE: state {state} does not accept acks")
