"""Cron expressions: validation with field-named messages, and evaluation in wall time.

This is the only module that imports croniter. croniter walks naive wall-clock times (where
it is right); `shared.schedule.wallclock` turns each wall time into instants with Chime's
DST rule (where croniter, like most peers, is wrong on fall-back day).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache

from croniter import CroniterBadDateError, croniter

from shared.schedule.errors import ScheduleError
from shared.schedule.wallclock import MARGIN, no_transition_near, to_instants

__all__ = ["CronSchedule", "parse_cron"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_UNIX_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTHS)}),
    _Field("day-of-week", 0, 7, {n: i for i, n in enumerate(_DAYS)}),
)
_TOKEN = re.compile(r"^(?P<base>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>\d+))?$")


def _value(text: str, field: _Field, expr: str) -> int:
    upper = text.upper()
    if upper in field.names:
        return field.names[upper]
    if not text.isdigit():
        raise ScheduleError(f"{field.name} value {text!r} in {expr!r} is not a number or name")
    number = int(text)
    if not field.low <= number <= field.high:
        raise ScheduleError(
            f"{field.name} {number} is out of range {field.low}–{field.high} in {expr!r}"
        )
    return number


def _check_field(text: str, field: _Field, expr: str) -> None:
    for token in text.split(","):
        m = _TOKEN.match(token)
        if m is None:
            raise ScheduleError(f"{field.name} {token!r} in {expr!r} is not valid cron syntax")
        base, step = m["base"], m["step"]
        if step is not None and int(step) == 0:
            raise ScheduleError(f"{field.name} step in {token!r} must be at least 1")
        if base == "*":
            continue
        low, _, high = base.partition("-")
        first = _value(low, field, expr)
        if high:
            last = _value(high, field, expr)
            if last < first:
                raise ScheduleError(
                    f"{field.name} range {token!r} in {expr!r} runs backwards ({first} > {last})"
                )


@dataclass(frozen=True)
class CronSchedule:
    """A validated 5-field cron expression evaluated in a time zone."""

    expression: str  # normalised 5-field Unix form
    tz: tzinfo
    every_hour: bool  # hour field matches every hour: follow real time through DST

    def next_after(self, after: datetime) -> datetime | None:
        """First fire instant strictly after `after` (aware)."""
        after = after.astimezone(UTC)
        steady = no_transition_near(after, self.tz)
        start = after.astimezone(self.tz).replace(tzinfo=None)
        if not steady:
            start -= MARGIN
        it = croniter(self.expression, start)
        best: datetime | None = None
        horizon: datetime | None = None
        for _ in range(100_000):
            try:
                wall: datetime = it.get_next(datetime)
            except CroniterBadDateError:  # no match in croniter's search span (e.g. 30 Feb)
                return best
            if horizon is not None and wall > horizon:
                break
            for instant in to_instants(wall, self.tz, self.every_hour):
                if instant > after and (best is None or instant < best):
                    best = instant
            if best is not None and horizon is None:
                if no_transition_near(best, self.tz):
                    return best
                horizon = wall + 2 * MARGIN  # overlaps reorder instants: look a little further
        return best


def parse_cron(expression: str, tz: tzinfo) -> CronSchedule:
    """Validate a 5-field Unix cron expression or a macro; `ScheduleError` names the field."""
    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError("cron expression must be a non-empty string", "expression")
    text = " ".join(expression.split())
    text = MACROS.get(text.lower(), text)
    if text.startswith("@"):
        raise ScheduleError(
            f"unknown cron macro {expression!r}: use one of {', '.join(sorted(MACROS))}",
            "expression",
        )
    fields = text.split(" ")
    if len(fields) != 5:
        raise ScheduleError(
            f"cron expression {expression!r} has {len(fields)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week)",
            "expression",
        )
    try:
        for part, spec in zip(fields, _UNIX_FIELDS, strict=True):
            _check_field(part, spec, expression)
    except ScheduleError as err:
        raise ScheduleError(err.message, "expression") from None
    _compile(text)
    return CronSchedule(text, tz, every_hour=fields[1] in ("*", "*/1"))


@lru_cache(maxsize=4096)
def _compile(text: str) -> None:
    if not croniter.is_valid(text):
        raise ScheduleError(f"cron expression {text!r} is not valid", "expression")


def _expand_days(field: str) -> set[int] | None:
    """Day-of-week field as a set of 0–6 (Sunday = 0); None when it is `*`."""
    if field in ("*", "*/1", "?"):
        return None
    days: set[int] = set()
    spec = _UNIX_FIELDS[4]
    for token in field.split(","):
        m = _TOKEN.match(token)
        assert m is not None  # validated by parse_cron
        step = int(m["step"] or 1)
        if m["base"] == "*":
            first, last = 0, 6
        else:
            low, _, high = m["base"].partition("-")
            first = _value(low, spec, field)
            last = _value(high, spec, field) if high else (6 if m["step"] else first)
        days.update(d % 7 for d in range(first, last + 1, step))
    return days


def to_quartz(schedule: CronSchedule) -> str | None:
    """Quartz form (`0 30 10 ? * *`) of a Unix expression, or None when Quartz cannot say it."""
    minute, hour, dom, month, dow = schedule.expression.split(" ")
    days = _expand_days(dow)
    if days is None:
        return (
            f"0 {minute} {hour} {dom} {month} ?" if dom != "*" else f"0 {minute} {hour} ? {month} *"
        )
    if dom not in ("*", "?"):
        return None  # Unix ORs both day fields; Quartz cannot
    names = ",".join(_DAYS[d] for d in sorted(days))
    return f"0 {minute} {hour} ? {month} {names}"
