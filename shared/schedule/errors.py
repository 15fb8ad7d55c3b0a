"""The one error type schedule math raises: it names the field and says what to change."""

from __future__ import annotations

__all__ = ["ScheduleError"]


class ScheduleError(ValueError):
    """An input that cannot be scheduled. `field` is a dotted path relative to the trigger."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
