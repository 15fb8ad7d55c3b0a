"""Seed 003's calendar trigger (DAILY/WEEKLY/MONTHLY/ANNUALLY/CALENDAR) as a WallMatcher.

Rules the seed states, enforced with messages naming the field:
- a field coarser than the cadence cannot be set (DAILY has no days; months only ANNUALLY);
- days are required except for DAILY; hours are required; minutes default to 0;
- ANNUALLY days are 1–31/L/L-n with `months`, otherwise `--MM-DD` (LIST only);
- CALENDAR days are `YYYY-MM-DD` (LIST only);
- `interval` steps from the first value: a LIST of one value, or a RANGE.
"""

from __future__ import annotations

import re
from datetime import date

from shared.contracts.triggers import CalendarTrigger, Selector
from shared.schedule.cron.quartz import quartz_weekday
from shared.schedule.errors import ScheduleError
from shared.schedule.matcher import DayRule, WallMatcher, last_day

__all__ = ["compile_calendar"]

_DAY_OF_MONTH = re.compile(r"^(?:L(?:-(\d{1,2}))?|(\d{1,2}))$")


def _fail(message: str, field: str) -> ScheduleError:
    return ScheduleError(message, f"trigger.{field}")


def _int(text: str, low: int, high: int, field: str) -> int:
    if not text.isdecimal() or not low <= int(text) <= high:  # isdigit() takes '²', int() not
        raise _fail(
            f"{field.split('.')[0]} value {text!r} must be a whole number {low}–{high}", field
        )
    return int(text)


def _numbers(sel: Selector, name: str, low: int, high: int) -> set[int]:
    """A LIST or RANGE of plain numbers, with `interval` stepping from the first value."""
    if sel.type == "RANGE":
        if len(sel.values) != 2:
            raise _fail(f"{name} RANGE needs exactly two values [from, to]", f"{name}.values")
        first = _int(sel.values[0], low, high, f"{name}.values[0]")
        last = _int(sel.values[1], low, high, f"{name}.values[1]")
        if last < first:
            hint = " (for 9 AM to 5 PM write 9–17)" if name == "hours" else ""
            raise _fail(f"{name} RANGE {first}–{last} runs backwards{hint}", f"{name}.values")
        return set(range(first, last + 1, sel.interval or 1))
    values = [_int(v, low, high, f"{name}.values[{i}]") for i, v in enumerate(sel.values)]
    if sel.interval is not None:
        if len(values) != 1:
            raise _fail(
                f"{name} interval steps from one LIST value; give one value or a RANGE",
                f"{name}.interval",
            )
        return set(range(values[0], high + 1, sel.interval))
    return set(values)


def _month_day(text: str, field: str) -> tuple[int | None, int]:
    """`n` -> (None, n); `L` -> (0, 0); `L-n` -> (n, 0): (days back from last, fixed day)."""
    m = _DAY_OF_MONTH.match(text.upper())
    if m is None:
        raise _fail(f"days value {text!r} must be 1–31, L or L-n", field)
    if m[2] is not None:
        return None, _int(m[2], 1, 31, field)
    back = int(m[1] or 0)
    if back > 30:
        raise _fail(f"days value {text!r}: L-n needs n between 0 and 30", field)
    return back, 0


def _resolve(spec: tuple[int | None, int], day: date) -> int:
    back, fixed = spec
    return fixed if back is None else last_day(day.year, day.month) - back


def _month_days(sel: Selector) -> DayRule:
    specs = [_month_day(v, f"days.values[{i}]") for i, v in enumerate(sel.values)]
    if sel.type == "RANGE":
        if len(specs) != 2:
            raise _fail("days RANGE needs exactly two values [from, to]", "days.values")
        step = sel.interval or 1
        lo, hi = specs
        if lo[0] is None and hi[0] is None and hi[1] < lo[1]:
            raise _fail(f"days RANGE {lo[1]}–{hi[1]} runs backwards", "days.values")
        return lambda d: (
            _resolve(lo, d) <= d.day <= _resolve(hi, d) and (d.day - _resolve(lo, d)) % step == 0
        )
    if sel.interval is not None:
        if len(specs) != 1 or specs[0][0] is not None:
            raise _fail(
                "days interval steps from one numeric LIST value; give one value or a RANGE",
                "days.interval",
            )
        start, step = specs[0][1], sel.interval
        return lambda d: d.day >= start and (d.day - start) % step == 0
    return lambda d: any(d.day == _resolve(spec, d) for spec in specs)


def _dates(sel: Selector, pattern: str, example: str) -> list[tuple[int, ...]]:
    if sel.type != "LIST":
        raise _fail(
            f"days must be a LIST of {example} dates; RANGE is not supported here", "days.type"
        )
    out = []
    for i, text in enumerate(sel.values):
        m = re.fullmatch(pattern, text)
        if m is None:
            raise _fail(f"days value {text!r} must look like {example!r}", f"days.values[{i}]")
        parts = tuple(int(g) for g in m.groups())
        try:
            date(*(parts if len(parts) == 3 else (2000, *parts)))  # 2000: a leap year
        except ValueError:
            raise _fail(f"days value {text!r} is not a date", f"days.values[{i}]") from None
        out.append(parts)
    return out


def compile_calendar(trigger: CalendarTrigger) -> WallMatcher:
    kind = trigger.type
    if trigger.months is not None and kind != "ANNUALLY":
        raise _fail(f"months can only be set on an ANNUALLY schedule, not {kind}", "months")
    if trigger.days is not None and kind == "DAILY":
        raise _fail("days cannot be set on a DAILY schedule: use WEEKLY or MONTHLY", "days")
    if trigger.days is None and kind != "DAILY":
        raise _fail(f"days is required for a {kind} schedule", "days")
    hours = _numbers(trigger.hours, "hours", 0, 23)
    minutes = _numbers(trigger.minutes, "minutes", 0, 59) if trigger.minutes else {0}
    months = frozenset(range(1, 13))
    years: frozenset[int] | None = None
    day: DayRule = lambda d: True  # noqa: E731 - DAILY
    days = trigger.days
    if kind == "WEEKLY" and days is not None:
        weekdays = _numbers(days, "days", 1, 7)
        day = lambda d: quartz_weekday(d) in weekdays  # noqa: E731
    elif kind == "MONTHLY" and days is not None:
        day = _month_days(days)
    elif kind == "ANNUALLY" and days is not None:
        if trigger.months is not None:
            months = frozenset(_numbers(trigger.months, "months", 1, 12))
            day = _month_days(days)
        else:
            pairs = set(_dates(days, r"--(\d{2})-(\d{2})", "--12-31"))
            months = frozenset(m for m, _ in pairs)
            day = lambda d: (d.month, d.day) in pairs  # noqa: E731
    elif kind == "CALENDAR" and days is not None:
        dates = {date(*parts) for parts in _dates(days, r"(\d{4})-(\d{2})-(\d{2})", "2020-12-31")}
        years = frozenset(d.year for d in dates)
        day = dates.__contains__
    return WallMatcher(
        seconds=(0,),
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        months=months,
        day=day,
        years=years,
    )
