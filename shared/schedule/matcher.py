"""A wall-time pattern as sets: seconds, minutes, hours, months, years, and a day predicate.
Quartz cron and calendar triggers compile to it; it walks days, not seconds."""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

__all__ = ["DayRule", "WallMatcher", "last_day", "nearest_weekday"]

DayRule = Callable[[date], bool]
_SEARCH_YEARS = 100


def last_day(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def nearest_weekday(year: int, month: int, day: int) -> int | None:
    """Quartz `W`: the weekday nearest to `day` without leaving the month (None: no such day)."""
    end = last_day(year, month)
    if day > end:
        return None
    weekday = date(year, month, day).weekday()  # Monday = 0
    if weekday == 5:  # Saturday -> Friday, or Monday when the 1st
        return day - 1 if day > 1 else day + 2
    if weekday == 6:  # Sunday -> Monday, or Friday when the last day
        return day + 1 if day < end else day - 2
    return day


@dataclass(frozen=True)
class WallMatcher:
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: frozenset[int]
    day: DayRule
    years: frozenset[int] | None = None  # None: every year

    def next_wall(self, start: datetime) -> datetime | None:
        """First matching naive wall time strictly after `start`."""
        day = start.date()
        last_year = max(self.years) if self.years else start.year + _SEARCH_YEARS
        while day.year <= last_year:
            if self.years is not None and day.year not in self.years:
                day = date(day.year + 1, 1, 1)
                continue
            if day.month not in self.months:
                day = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
                continue
            if self.day(day):
                found = self._time_after(day, start)
                if found is not None:
                    return found
            day += timedelta(days=1)
        return None

    def _time_after(self, day: date, start: datetime) -> datetime | None:
        for hour in self.hours:
            for minute in self.minutes:
                for second in self.seconds:
                    candidate = datetime.combine(day, time(hour, minute, second))
                    if candidate > start:
                        return candidate
        return None
