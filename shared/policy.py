"""Delivery policy arithmetic (pure): retry backoff and misfire decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.contracts.commands import Policy
from shared.schedule.durations import parse_duration

__all__ = ["JITTER", "MisfireDecision", "decide_misfire", "retry_delay"]

JITTER = 0.2  # a delay is drawn from [base * (1 - JITTER), base]: never above maxBackoff


def retry_delay(policy: Policy, failed_attempt: int, rand: float) -> timedelta:
    """Wait before the attempt after `failed_attempt` (1-based); `rand` in [0, 1)."""
    retry = policy.retry
    initial = parse_duration(retry.initial_backoff).total_seconds()
    cap = parse_duration(retry.max_backoff).total_seconds()
    base = min(initial * retry.multiplier ** (failed_attempt - 1), cap)
    return timedelta(seconds=base * (1 - JITTER * rand))


@dataclass(frozen=True)
class MisfireDecision:
    fire: bool
    misfired: bool  # later than misfireGrace
    reason: str | None = None


# The usual answers, made once: a frozen dataclass costs ~1 µs to build, and the ticker asks
# for every first attempt it fires.
_FIRE = MisfireDecision(True, False)
_FIRE_LATE = MisfireDecision(True, True)


def decide_misfire(policy: Policy, due_at: datetime, now: datetime) -> MisfireDecision:
    """What to do with a first attempt that is due at `due_at` and is being fired at `now`."""
    grace = parse_duration(policy.misfire_grace)
    late = now - due_at
    misfired = late > grace
    if policy.misfire == "SKIP" and misfired:
        return MisfireDecision(
            False,
            True,
            f"missed by {late} (more than misfireGrace {policy.misfire_grace}); "
            "policy.misfire is SKIP",
        )
    if policy.misfire == "FIRE_ALL" and late > parse_duration(policy.catchup_window):
        return MisfireDecision(
            False, True, f"missed by {late}, older than catchupWindow {policy.catchup_window}"
        )
    return _FIRE_LATE if misfired else _FIRE
