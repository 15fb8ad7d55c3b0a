"""Fire-time sources for each trigger kind, and the schedule window around them.

Pure functions of their inputs: no clock, no I/O. `after` is always exclusive, instants are
aware UTC. Scheduler (nextFireTimes), ticker (materialising occurrences) and `chime preview`
all go through `compile_series`, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Protocol

from shared.contracts.commands import ScheduleSpec
from shared.contracts.common import LATEST
from shared.contracts.triggers import (
    CalendarTrigger,
    CronTrigger,
    DailyTrigger,
    IntervalTrigger,
    OnceTrigger,
)
from shared.schedule.calendar import compile_calendar
from shared.schedule.cron import parse_cron, quartz_form
from shared.schedule.durations import parse_duration
from shared.schedule.errors import ScheduleError
from shared.schedule.timezones import resolve_zone
from shared.schedule.wallclock import DstPolicy, WallSchedule

__all__ = [
    "FireSource",
    "Interval",
    "Once",
    "Series",
    "Until",
    "compile_series",
    "compile_trigger",
]

_TICK = timedelta(microseconds=1)


class FireSource(Protocol):
    """Anything that can say when it next fires."""

    def next_after(self, after: datetime) -> datetime | None: ...


@dataclass(frozen=True)
class Once:
    at: datetime

    def next_after(self, after: datetime) -> datetime | None:
        return self.at if self.at > after else None


@dataclass(frozen=True)
class Interval:
    """anchor + k·every, k >= 0: elapsed time, blind to wall clocks and DST."""

    anchor: datetime
    every: timedelta

    def next_after(self, after: datetime) -> datetime | None:
        if after < self.anchor:
            return self.anchor
        steps = (after - self.anchor) // self.every + 1
        return self.anchor + steps * self.every


@dataclass(frozen=True)
class Until:
    """A source that stops after `until` (a calendar trigger's `expiration`)."""

    source: FireSource
    until: datetime

    def next_after(self, after: datetime) -> datetime | None:
        instant = self.source.next_after(after)
        return instant if instant is not None and instant <= self.until else None


AnyTrigger = OnceTrigger | DailyTrigger | CronTrigger | IntervalTrigger | CalendarTrigger


def compile_trigger(
    trigger: AnyTrigger, timezone: str, created_at: datetime, dst: DstPolicy = "AUTO"
) -> tuple[FireSource, str | None]:
    """The fire source of a trigger and its Quartz `cronExpression` (when it has one).

    Raises ScheduleError whose `field` is relative to `data` (`trigger.expression`).
    """
    tz = resolve_zone(timezone)
    if isinstance(trigger, OnceTrigger):
        return Once(trigger.at), None
    if isinstance(trigger, IntervalTrigger):
        try:
            every = parse_duration(trigger.every, "every")
        except ScheduleError as err:
            raise ScheduleError(err.message, "trigger.every") from None
        if every < timedelta(seconds=1):
            raise ScheduleError(
                f"every {trigger.every!r} must be at least 1 second", "trigger.every"
            )
        return Interval(trigger.anchor or created_at, every), None
    if isinstance(trigger, CalendarTrigger):
        matcher = compile_calendar(trigger)
        source: FireSource = WallSchedule(matcher.next_wall, tz, len(matcher.hours) == 24, dst)
        return (Until(source, trigger.expiration) if trigger.expiration else source), None
    text = (
        trigger.expression
        if isinstance(trigger, CronTrigger)
        else f"{trigger.minutes} {trigger.hours} * * *"
    )
    try:
        return _cron_source(text, tz, dst)
    except ScheduleError as err:
        raise ScheduleError(err.message, "trigger.expression") from None


@lru_cache(maxsize=1024)  # with MEMO_SIZE answers each: at most ~13 MB
def _cron_source(text: str, tz: tzinfo, dst: DstPolicy) -> tuple[WallSchedule, str | None]:
    """One WallSchedule per (expression, zone, DST policy): it remembers its answers, so the
    schedules that share a trigger share them."""
    cron = parse_cron(text)
    return WallSchedule(cron.next_wall, tz, cron.every_hour, dst), quartz_form(cron)


# A search that starts in these years may run past 9999-12-31 (an annual rule, 29 February):
# the series ends there.
_LAST_YEARS = 9000


@dataclass(frozen=True)
class Series:
    """A fire source bounded by the schedule's window: startsAt ≤ t ≤ endsAt, maxOccurrences."""

    source: FireSource | None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    max_occurrences: int | None = None

    def next_after(self, after: datetime, fired: int = 0) -> datetime | None:
        """Next fire strictly after `after`, given `fired` occurrences already made."""
        if self.source is None:
            return None
        if self.max_occurrences is not None and fired >= self.max_occurrences:
            return None
        if self.starts_at is not None and after < self.starts_at:
            after = self.starts_at - _TICK
        try:
            instant = self.source.next_after(after)
        except OverflowError:  # the next is past 9999-12-31, the last day a datetime has
            return None
        except ValueError:  # the same, as croniter and the calendar say it ("year 10000 is
            if after.year < _LAST_YEARS:  # out of range"); earlier, it is a fault
                raise
            return None
        if instant is None or (self.ends_at is not None and instant > self.ends_at):
            return None
        return instant if instant < LATEST else None  # the database's infinity: never due

    def first(self, created_at: datetime) -> datetime | None:
        """The first occurrence of a new schedule. A past `once` still fires (as a misfire)."""
        if isinstance(self.source, Once):
            return self.next_after(self.source.at - _TICK)
        return self.next_after(created_at)

    def preview(self, after: datetime, count: int, fired: int = 0) -> list[datetime]:
        """Up to `count` fire times strictly after `after`; fewer when the series ends."""
        out: list[datetime] = []
        while len(out) < count:
            instant = self.next_after(after, fired + len(out))
            if instant is None:
                break
            out.append(instant)
            after = instant
        return out


def compile_series(spec: ScheduleSpec, created_at: datetime) -> tuple[Series, str | None]:
    """The series of a `ScheduleSpec` (its trigger inside its window)."""
    source, cron_expression = (None, None)
    resolve_zone(spec.timezone)
    if spec.trigger is not None:
        source, cron_expression = compile_trigger(
            spec.trigger, spec.timezone, created_at, spec.policy.dst
        )
    return (
        Series(source, spec.starts_at, spec.ends_at, spec.max_occurrences),
        cron_expression,
    )
