"""Schedule math: pure, clock-free, aware-UTC in and out. Only `cron` imports croniter."""

from shared.schedule.errors import ScheduleError
from shared.schedule.triggers import Series, compile_series, compile_trigger

__all__ = ["ScheduleError", "Series", "compile_series", "compile_trigger"]
