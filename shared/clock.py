"""Time as a dependency: loops and services ask a `Clock`, never `datetime.now()`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "SettableClock", "SystemClock"]


class Clock(Protocol):
    """Source of the current instant (aware, UTC)."""

    def now(self) -> datetime: ...

    async def sleep_until(self, instant: datetime) -> None:
        """Return once `now()` has reached `instant` (at once if it has)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, instant: datetime) -> None:
        # The event loop's timers run on the monotonic clock and may wake a little before the
        # wall clock reaches the instant: sleep again for what is left.
        while (left := (instant - datetime.now(UTC)).total_seconds()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)


class SettableClock:
    """A clock tests move by hand; `advance` wakes nobody, callers drive their loops.

    A sleeper is simulated time: `sleep_until` moves the clock to the instant it waits for.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("SettableClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, instant: datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("SettableClock needs an aware datetime")
        self._now = instant.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    async def sleep_until(self, instant: datetime) -> None:
        if instant > self._now:
            self._now = instant.astimezone(UTC)
        await asyncio.sleep(0)
