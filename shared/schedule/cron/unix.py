"""Unix cron (5 fields): validation with field-named messages; croniter walks wall times.

The only module that imports croniter. croniter is right about naive wall-clock times;
`shared.schedule.wallclock` turns them into instants with Chime's DST rule (where croniter,
like most peers, fires a daily 01:30 job twice on fall-back day).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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
        try:
            return croniter(self.expression, start).get_next(datetime)
        except CroniterBadDateError:  # no match in croniter's search span (e.g. 30 Feb)
            return None


def parse_unix(text: str, original: str) -> CronSchedule:
    """Validate a 5-field Unix expression (`original` is what the user wrote, for messages)."""
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
