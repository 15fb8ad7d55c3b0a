"""Trigger contracts (`data.trigger`): when a schedule fires. Math lives in shared.schedule."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from shared.contracts.common import ContractModel, Positive, UtcInstant, Whole

__all__ = [
    "TRIGGER_KINDS",
    "CalendarTrigger",
    "CronTrigger",
    "DailyTrigger",
    "IntervalTrigger",
    "OnceTrigger",
    "Selector",
    "Trigger",
    "between",
]


def between(low: int, high: int) -> AfterValidator:
    """An integer bound whose message says the range and the value given."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} (got {value})")
        return value

    return AfterValidator(check)


class OnceTrigger(ContractModel):
    """Fire once, at `at`."""

    kind: Literal["once"] = Field(description="Trigger kind.", examples=["once"])
    at: UtcInstant = Field(
        description="The instant to fire; any offset, normalised to UTC.",
        examples=["2026-03-15T08:00:00Z"],
    )


class DailyTrigger(ContractModel):
    """Every day at hours:minutes in the schedule's time zone (seed 001)."""

    kind: Literal["daily"] = Field(description="Trigger kind.", examples=["daily"])
    hours: Annotated[Whole, between(0, 23)] = Field(description="Hour, 0–23.", examples=[10])
    minutes: Annotated[Whole, between(0, 59)] = Field(0, description="Minute, 0–59.", examples=[30])


class CronTrigger(ContractModel):
    """A cron expression evaluated in the schedule's time zone."""

    kind: Literal["cron"] = Field(description="Trigger kind.", examples=["cron"])
    expression: str = Field(
        min_length=1,
        max_length=1024,
        description="5-field Unix cron (minute hour day-of-month month day-of-week), a macro "
        "(@hourly @daily @weekly @monthly @yearly), or 6/7-field Quartz (second first, "
        "optional year, ?, L, L-n, nL, W, LW, #).",
        examples=["30 0 * * *", "0 15 10 L-2 * ?"],
    )


class IntervalTrigger(ContractModel):
    """Every `every` of elapsed time from `anchor`; unaffected by DST."""

    kind: Literal["interval"] = Field(description="Trigger kind.", examples=["interval"])
    every: str = Field(
        max_length=64, description="ISO-8601 duration, at least 1 second.", examples=["PT15M"]
    )
    anchor: UtcInstant | None = Field(
        None,
        description="Occurrences are anchor + k·every; default: the schedule's creation time.",
        examples=["2026-03-10T12:00:00Z"],
    )


class Selector(ContractModel):
    """Which months, days, hours or minutes (seed 003): a LIST of values or a RANGE of two."""

    type: Literal["LIST", "RANGE"] = Field(description="LIST or RANGE.", examples=["LIST"])
    values: list[Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)]] = (
        Field(min_length=1, max_length=400, description="Values as strings.", examples=[["1"]])
    )
    interval: Positive | None = Field(
        None,
        description="Step from the first value (LIST of one value, or RANGE).",
        examples=[3],
    )


class CalendarTrigger(ContractModel):
    """Seed 003's campaign schedule: a cadence and selectors, in the schedule's time zone."""

    kind: Literal["calendar"] = Field(description="Trigger kind.", examples=["calendar"])
    type: Literal["DAILY", "WEEKLY", "MONTHLY", "ANNUALLY", "CALENDAR"] = Field(
        description="Cadence; fields coarser than it cannot be set.", examples=["MONTHLY"]
    )
    months: Selector | None = Field(
        None, description="Months 1–12 (ANNUALLY only).", examples=[None]
    )
    days: Selector | None = Field(
        None,
        description="WEEKLY: 1–7 (1 = Sunday); MONTHLY: 1–31, L, L-n; ANNUALLY: as MONTHLY "
        "with months, else --MM-DD; CALENDAR: YYYY-MM-DD. Not for DAILY.",
        examples=[{"type": "LIST", "values": ["L-1"]}],
    )
    hours: Selector = Field(
        description="Hours 0–23.", examples=[{"type": "LIST", "values": ["8"], "interval": 3}]
    )
    minutes: Selector | None = Field(None, description="Minutes 0–59; default 0.", examples=[None])
    expiration: UtcInstant | None = Field(
        None, description="No occurrence after this instant.", examples=[None]
    )


Trigger = Annotated[
    OnceTrigger | DailyTrigger | CronTrigger | IntervalTrigger | CalendarTrigger,
    Field(discriminator="kind"),
]
TRIGGER_KINDS = ("once", "daily", "cron", "interval", "calendar")
