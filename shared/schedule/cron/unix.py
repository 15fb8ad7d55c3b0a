"""Unix cron (5 fields): validation with field-named messages; croniter walks wall times.

The only module that imports croniter. croniter is right about naive wall-clock times;
`shared.schedule.wallclock` turns them into instants with Chime's DST rule (where croniter,
like most peers, fires a daily 01:30 job twice on fall-back day).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from croniter import CroniterBadDateError, croniter

from shared.schedule.cron.fields import DAY_NAMES, MONTH_NAMES, Field, expand
from shared.schedule.errors import ScheduleError

__all__ = ["MACROS", "CronSchedule", "parse_unix", "to_quartz"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_UNIX_FIELDS = (
    Field("minute", 0, 59),
    Field("hour", 0, 23),
    Field("day-of-month", 1, 31),
    Field("month", 1, 12, {n: i + 1 for i, n in enumerate(MONTH_NAMES)}),
    Field("day-of-week", 0, 7, {n: i for i, n in enumerate(DAY_NAMES)}),
)


@dataclass(frozen=True)
class CronSchedule:
    """A validated 5-field Unix expression; croniter walks its wall times."""

    expression: str  # normalised 5-field Unix form
    every_hour: bool

    def next_wall(self, start: datetime) -> datetime | None:
        """The first wall time strictly after `start` (naive) that the expression matches."""
        every_day = _every_day(self.expression)
        if every_day is not None:
            return _next_in_day(every_day, start)
        walker = _walker(self.expression)  # parsed once; repositioned for each question
        walker.set_current(start, force=True)
        try:
            return walker.get_next(datetime)
        except CroniterBadDateError:  # no match in croniter's search span (e.g. 30 Feb)
            return None


@lru_cache(maxsize=4096)
def _every_day(expression: str) -> tuple[list[int], list[int]] | None:
    """(hours, minutes) of an expression that matches every day (`30 1 * * *`, `*/5 * * * *`,
    daily triggers), else None. Those are answered without croniter: it spends most of a
    command's time walking them (tests check both agree)."""
    minute, hour, dom, month, dow = expression.split(" ")
    if (dom, month, dow) != ("*", "*", "*"):
        return None
    return (
        sorted(expand(hour, _UNIX_FIELDS[1], expression)),
        sorted(expand(minute, _UNIX_FIELDS[0], expression)),
    )


def _next_in_day(every_day: tuple[list[int], list[int]], start: datetime) -> datetime:
    hours, minutes = every_day
    at = start.replace(second=0, microsecond=0) + timedelta(minutes=1)  # strictly after start
    day = at.replace(hour=0, minute=0)
    i = bisect_left(hours, at.hour)
    if i < len(hours) and hours[i] == at.hour:
        j = bisect_left(minutes, at.minute)
        if j < len(minutes):
            return day.replace(hour=at.hour, minute=minutes[j])
        i += 1
    if i < len(hours):
        return day.replace(hour=hours[i], minute=minutes[0])
    return (day + timedelta(days=1)).replace(hour=hours[0], minute=minutes[0])


@lru_cache(maxsize=4096)
def _walker(expression: str) -> croniter:
    """One croniter per expression: parsing it is most of the cost of a question. Safe to
    share: each use repositions it and asks at once, without yielding to the event loop."""
    return croniter(expression, datetime(2000, 1, 1))


@lru_cache(maxsize=4096)
def parse_unix(text: str, original: str) -> CronSchedule:
    """Validate a 5-field Unix expression (`original` is what the user wrote, for messages).
    Cached: schedules share few expressions, and the result is immutable."""
    if text.startswith("@"):
        raise ScheduleError(
            f"unknown cron macro {original!r}: use one of {', '.join(sorted(MACROS))}",
            "expression",
        )
    fields = text.split(" ")
    try:
        for part, spec in zip(fields, _UNIX_FIELDS, strict=True):
            expand(part, spec, original)
    except ScheduleError as err:
        raise ScheduleError(err.message, "expression") from None
    _compile(text)
    return CronSchedule(text, every_hour=fields[1] in ("*", "*/1"))


@lru_cache(maxsize=4096)
def _compile(text: str) -> None:
    if not croniter.is_valid(text):
        raise ScheduleError(f"cron expression {text!r} is not valid", "expression")


def to_quartz(schedule: CronSchedule) -> str | None:
    """Quartz form (`0 30 10 ? * *`) of a Unix expression, or None when Quartz cannot say it."""
    minute, hour, dom, month, dow = schedule.expression.split(" ")
    days = None if dow in ("*", "*/1") else {d % 7 for d in expand(dow, _UNIX_FIELDS[4], dow)}
    if days is None:
        return (
            f"0 {minute} {hour} {dom} {month} ?" if dom != "*" else f"0 {minute} {hour} ? {month} *"
        )
    if dom not in ("*", "?"):
        return None  # Unix ORs both day fields; Quartz cannot
    names = ",".join(DAY_NAMES[d] for d in sorted(days))
    return f"0 {minute} {hour} ? {month} {names}"
