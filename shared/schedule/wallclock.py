"""Wall-clock schedules to instants, with Chime's DST rule (or a schedule's `policy.dst`).

`AUTO` (the default):
- a wall time in a spring-forward gap does not exist: it fires once, at the first valid
  instant after the gap (the transition itself);
- a wall time in a fall-back overlap exists twice: it fires once, at the first occurrence;
- unless the trigger's hour field matches every hour: then it follows real time, firing at
  both occurrences of a repeated time and not at all in an hour that did not happen.
`ONCE_EARLIER` / `ONCE_LATER`: every wall time fires once (gap: after it; overlap: the first /
the second occurrence), whatever the hour field. `REAL_TIME`: always follow real time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

__all__ = ["DST_POLICIES", "DstPolicy", "WallSchedule", "no_transition_near", "to_instants"]

DstPolicy = Literal["AUTO", "ONCE_EARLIER", "ONCE_LATER", "REAL_TIME"]
DST_POLICIES: tuple[DstPolicy, ...] = ("AUTO", "ONCE_EARLIER", "ONCE_LATER", "REAL_TIME")
_SECOND = timedelta(seconds=1)
MARGIN = timedelta(hours=3)  # larger than any DST shift in the tz database
MEMO_SIZE = 64  # answers a WallSchedule keeps (then it starts again): ~13 KB


def _transition_after(low: datetime, high: datetime, tz: tzinfo) -> datetime:
    """First instant in (low, high] whose offset differs from low's (binary search, 1 s)."""
    before = low.astimezone(tz).utcoffset()
    lo, hi = 0, int((high - low) / _SECOND)
    while lo < hi:
        mid = (lo + hi) // 2
        if (low + mid * _SECOND).astimezone(tz).utcoffset() == before:
            lo = mid + 1
        else:
            hi = mid
    return low + lo * _SECOND


def to_instants(wall: datetime, tz: tzinfo, real_time: bool, later: bool) -> list[datetime]:
    """Instants (aware UTC, ascending) at which the naive wall time `wall` happens in `tz`."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if first.astimezone(tz).replace(tzinfo=None) != wall:  # a gap: fold=0 lands past it
        return [] if real_time else [_transition_after(second, first, tz)]
    if real_time:
        return [first, second]
    return [second] if later else [first]


def no_transition_near(instant: datetime, tz: tzinfo) -> bool:
    """True when `tz` keeps one offset for MARGIN either side of `instant`."""
    before = (instant - MARGIN).astimezone(tz).utcoffset()
    return before == (instant + MARGIN).astimezone(tz).utcoffset()


@dataclass(frozen=True)
class WallSchedule:
    """Fire times of a wall-clock pattern in a zone.

    `next_wall(start)` gives the first matching naive wall time strictly after `start`.
    """

    next_wall: Callable[[datetime], datetime | None]
    tz: tzinfo
    every_hour: bool  # the hour field matches every hour
    dst: DstPolicy = "AUTO"
    # Answers given, by `after`: a pure function of it. Schedules of one trigger share one
    # WallSchedule (compile_trigger), so their fire times after the same instant are computed
    # once (a schedule's view asks for its next five; bench/README.md, command ingest).
    _answers: dict[datetime, datetime | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def next_after(self, after: datetime) -> datetime | None:
        """First fire instant strictly after `after` (aware)."""
        answers = self._answers
        try:
            return answers[after]
        except KeyError:
            pass
        if len(answers) >= MEMO_SIZE:
            answers.clear()
        answer = answers[after] = self._next_after(after)
        return answer

    def _next_after(self, after: datetime) -> datetime | None:
        after = after.astimezone(UTC)
        real_time = self.dst == "REAL_TIME" or (self.dst == "AUTO" and self.every_hour)
        later = self.dst == "ONCE_LATER"
        start = after.astimezone(self.tz).replace(tzinfo=None)
        if not no_transition_near(after, self.tz):
            start -= MARGIN
        best: datetime | None = None
        horizon: datetime | None = None
        wall: datetime | None = start
        for _ in range(100_000):
            wall = self.next_wall(wall)
            if wall is None or (horizon is not None and wall > horizon):
                break
            for instant in to_instants(wall, self.tz, real_time, later):
                if instant > after and (best is None or instant < best):
                    best = instant
            if best is not None and horizon is None:
                if no_transition_near(best, self.tz):
                    return best
                horizon = wall + 2 * MARGIN  # overlaps reorder instants: look a little further
        return best
