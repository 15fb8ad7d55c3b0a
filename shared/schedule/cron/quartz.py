"""Quartz cron (6 or 7 fields), evaluated by Chime: croniter rejects or misreads its forms.

    second minute hour day-of-month month day-of-week [year]

Day-of-week is 1–7 = SUN–SAT. Exactly one day field is `?` (a `*` there is accepted, as users
write it). Day-of-month: `L` (last day), `L-n` (n days before it), `nW` (weekday nearest day n),
`LW` (last weekday). Day-of-week: `nL` (last such weekday of the month), `n#k` (k-th such
weekday), `L` alone (Saturday). Year: 1970–2099.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from shared.schedule.cron.fields import DAY_NAMES, MONTH_NAMES, Field, expand
from shared.schedule.errors import ScheduleError
from shared.schedule.matcher import DayRule, WallMatcher, last_day, nearest_weekday

__all__ = ["QuartzSchedule", "parse_quartz", "quartz_weekday"]

_SECOND = Field("second", 0, 59)
_MINUTE = Field("minute", 0, 59)
_HOUR = Field("hour", 0, 23)
_DOM = Field("day-of-month", 1, 31)
_MONTH = Field("month", 1, 12, {n: i + 1 for i, n in enumerate(MONTH_NAMES)})
_DOW = Field("day-of-week", 1, 7, {n: i + 1 for i, n in enumerate(DAY_NAMES)})
_YEAR = Field("year", 1970, 2099)
_ANY = ("*", "?")


def quartz_weekday(day: date) -> int:
    """1 = Sunday … 7 = Saturday."""
    return (day.weekday() + 1) % 7 + 1


def _last_weekday(year: int, month: int) -> int:
    end = last_day(year, month)
    weekday = date(year, month, end).weekday()
    return end - max(0, weekday - 4)


def _dom_rule(text: str, expr: str) -> DayRule:
    numbers: set[int] = set()
    rules: list[DayRule] = []
    for token in text.upper().split(","):
        if token == "L":
            rules.append(lambda d: d.day == last_day(d.year, d.month))
        elif token == "LW":
            rules.append(lambda d: d.day == _last_weekday(d.year, d.month))
        elif m := re.fullmatch(r"L-(\d+)", token):
            back = int(m[1])
            if back > 30:
                raise ScheduleError(f"day-of-month offset in {token!r} must be 0–30 in {expr!r}")
            rules.append(lambda d, back=back: d.day == last_day(d.year, d.month) - back)
        elif m := re.fullmatch(r"(\d+)W", token):
            target = _DOM.value(m[1], expr)
            rules.append(lambda d, t=target: d.day == nearest_weekday(d.year, d.month, t))
        else:
            numbers |= expand(token, _DOM, expr)
    if numbers:
        rules.append(lambda d: d.day in numbers)
    return lambda d: any(rule(d) for rule in rules)


def _dow_rule(text: str, expr: str) -> DayRule:
    days: set[int] = set()
    rules: list[DayRule] = []
    for token in text.upper().split(","):
        if token == "L":
            days.add(7)
        elif m := re.fullmatch(r"([A-Z0-9]+)L", token):
            weekday = _DOW.value(m[1], expr)
            rules.append(
                lambda d, w=weekday: (
                    quartz_weekday(d) == w and d.day + 7 > last_day(d.year, d.month)
                )
            )
        elif m := re.fullmatch(r"([A-Z0-9]+)#(\d+)", token):
            weekday, nth = _DOW.value(m[1], expr), int(m[2])
            if not 1 <= nth <= 5:
                raise ScheduleError(
                    f"day-of-week {token!r}: the week number must be 1–5 in {expr!r}"
                )
            rules.append(
                lambda d, w=weekday, n=nth: quartz_weekday(d) == w and (d.day - 1) // 7 + 1 == n
            )
        else:
            days |= expand(token, _DOW, expr)
    if days:
        rules.append(lambda d: quartz_weekday(d) in days)
    return lambda d: any(rule(d) for rule in rules)


def _day_rule(dom: str, dow: str, expr: str) -> DayRule:
    if dom == "?" and dow == "?":
        raise ScheduleError(f"only one of day-of-month and day-of-week may be '?' in {expr!r}")
    dom_free, dow_free = dom in _ANY, dow in _ANY
    if not dom_free and not dow_free:
        raise ScheduleError(
            f"Quartz cannot restrict both day-of-month ({dom}) and day-of-week ({dow}) in "
            f"{expr!r}: put '?' in one of them"
        )
    if not dom_free:
        return _dom_rule(dom, expr)
    if not dow_free:
        return _dow_rule(dow, expr)
    return lambda d: True


@dataclass(frozen=True)
class QuartzSchedule:
    expression: str
    matcher: WallMatcher
    every_hour: bool

    def next_wall(self, start: datetime) -> datetime | None:
        return self.matcher.next_wall(start)


def parse_quartz(text: str) -> QuartzSchedule:
    fields = text.split(" ")
    try:
        second, minute, hour, dom, month, dow = fields[:6]
        year = fields[6] if len(fields) == 7 else "*"
        hours = expand(hour, _HOUR, text)
        matcher = WallMatcher(
            seconds=tuple(sorted(expand(second, _SECOND, text))),
            minutes=tuple(sorted(expand(minute, _MINUTE, text))),
            hours=tuple(sorted(hours)),
            months=frozenset(expand(month, _MONTH, text)),
            day=_day_rule(dom, dow, text),
            years=None if year in _ANY else frozenset(expand(year, _YEAR, text)),
        )
    except ScheduleError as err:
        raise ScheduleError(err.message, "expression") from None
    return QuartzSchedule(text, matcher, every_hour=len(hours) == 24)
