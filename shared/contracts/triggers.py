"""Trigger contracts (`data.trigger`): when a schedule fires. Math lives in shared.schedule."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from shared.contracts.common import ContractModel, UtcInstant

__all__ = [
    "TRIGGER_KINDS",
    "CronTrigger",
    "DailyTrigger",
    "IntervalTrigger",
    "OnceTrigger",
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
    hours: Annotated[int, between(0, 23)] = Field(description="Hour, 0–23.", examples=[10])
    minutes: Annotated[int, between(0, 59)] = Field(0, description="Minute, 0–59.", examples=[30])


class CronTrigger(ContractModel):
    """A cron expression evaluated in the schedule's time zone."""

    kind: Literal["cron"] = Field(description="Trigger kind.", examples=["cron"])
    expression: str = Field(
        min_length=1,
        max_length=1024,
        description="5-field Unix cron (minute hour day-of-month month day-of-week) or a macro.",
        examples=["30 0 * * *"],
    )


class IntervalTrigger(ContractModel):
    """Every `every` of elapsed time from `anchor`; unaffected by DST."""

    kind: Literal["interval"] = Field(description="Trigger kind.", examples=["interval"])
    every: str = Field(description="ISO-8601 duration, at least 1 second.", examples=["PT15M"])
    anchor: UtcInstant | None = Field(
        None,
        description="Occurrences are anchor + k·every; default: the schedule's creation time.",
        examples=["2026-03-10T12:00:00Z"],
    )


Trigger = Annotated[
    OnceTrigger | DailyTrigger | CronTrigger | IntervalTrigger,
    Field(discriminator="kind"),
]
TRIGGER_KINDS = ("once", "daily", "cron", "interval")
