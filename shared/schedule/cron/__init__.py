"""Cron, every dialect: the field count tells which.

- 5 fields (and `@hourly` … macros): Unix cron, walked by croniter (`unix`), the only place
  croniter is imported.
- 6 or 7 fields: Quartz (seconds first, optional year, `?`, `L`, `L-n`, `nL`, `W`, `LW`, `#`),
  which croniter rejects or misreads; `quartz` evaluates it itself.
"""

from __future__ import annotations

from shared.schedule.cron.quartz import QuartzSchedule, parse_quartz
from shared.schedule.cron.unix import MACROS, CronSchedule, parse_unix, to_quartz
from shared.schedule.errors import ScheduleError

__all__ = ["CronSchedule", "QuartzSchedule", "parse_cron", "quartz_form"]


def parse_cron(expression: str) -> CronSchedule | QuartzSchedule:
    """Validate an expression of any dialect; `ScheduleError` names the cron field."""
    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError("cron expression must be a non-empty string", "expression")
    text = " ".join(expression.split())
    if text.startswith("@") or len(text.split(" ")) == 5:
        return parse_unix(
            MACROS.get(text.lower(), text) if text.startswith("@") else text, expression
        )
    if len(text.split(" ")) in (6, 7):
        return parse_quartz(text)
    raise ScheduleError(
        f"cron expression {expression!r} has {len(text.split(' '))} fields; expected 5 (Unix: "
        "minute hour day-of-month month day-of-week) or 6-7 (Quartz: second minute hour "
        "day-of-month month day-of-week [year])",
        "expression",
    )


def quartz_form(schedule: CronSchedule | QuartzSchedule) -> str | None:
    """The Quartz `cronExpression` results carry, or None when Quartz cannot say it."""
    if isinstance(schedule, QuartzSchedule):
        return schedule.expression
    return to_quartz(schedule)
