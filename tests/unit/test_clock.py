"""Clocks: the real one sleeps until an instant of the wall clock; the settable one jumps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import SettableClock, SystemClock

START = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)


async def test_system_clock_returns_once_the_instant_is_reached() -> None:
    clock = SystemClock()
    instant = clock.now() + timedelta(milliseconds=30)
    await clock.sleep_until(instant)
    assert clock.now() >= instant


async def test_system_clock_does_not_wait_for_an_instant_that_passed() -> None:
    clock = SystemClock()
    before = clock.now()
    await clock.sleep_until(before - timedelta(hours=1))
    assert clock.now() - before < timedelta(seconds=1)


async def test_settable_clock_moves_to_the_instant_a_sleeper_waits_for() -> None:
    clock = SettableClock(START)
    await clock.sleep_until(START + timedelta(milliseconds=45))
    assert clock.now() == START + timedelta(milliseconds=45)
    await clock.sleep_until(START)  # never backwards
    assert clock.now() == START + timedelta(milliseconds=45)


def test_settable_clock_refuses_a_naive_instant() -> None:
    with pytest.raises(ValueError, match="aware"):
        SettableClock(datetime(2026, 1, 1))
