"""Wall-clock time to instants, with Chime's DST rule.

- A wall time in a spring-forward gap does not exist: it maps to the first valid instant
  after the gap (the transition itself), once.
- A wall time in a fall-back overlap exists twice: it maps to the first occurrence only,
  unless the caller follows real time (`every_hour`), in which case both occurrences count.
- Triggers that follow real time (`every_hour`) skip gap times: that hour did not happen.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

__all__ = ["no_transition_near", "to_instants"]

_SECOND = timedelta(seconds=1)
MARGIN = timedelta(hours=3)  # larger than any DST shift in the tz database


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


def to_instants(wall: datetime, tz: tzinfo, every_hour: bool = False) -> list[datetime]:
    """Instants (aware UTC, ascending) at which the naive wall time `wall` happens in `tz`."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if first.astimezone(tz).replace(tzinfo=None) != wall:  # a gap: fold=0 lands past it
        if every_hour:
            return []
        return [_transition_after(second, first, tz)]
    return [first, second] if every_hour else [first]


def no_transition_near(instant: datetime, tz: tzinfo) -> bool:
    """True when `tz` keeps one offset for MARGIN either side of `instant`."""
    return (instant - MARGIN).astimezone(tz).utcoffset() == (instant + MARGIN).astimezone(
        tz
    ).utcoffset()
