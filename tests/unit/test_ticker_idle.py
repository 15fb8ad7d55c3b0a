"""How long a ticker that found nothing sleeps: until the lookahead before the next instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.ticker.engine import idle_timeout

START = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("nxt_ms", "expected_s"),
    [
        (None, 5.0),  # nothing stored: the longest idle sleep
        (10_000, 5.0),  # far ahead: still at most max idle
        (1_000, 0.95),  # wake the lookahead (50 ms) before the next due instant
        (50, 0.05),  # the lookahead has begun: sleep until the instant itself, never spin
        (20, 0.02),
        (0, 0.0),  # due now: claim at once
        (-30, -0.03),
    ],
)
def test_the_idle_ticker_wakes_the_lookahead_before_the_next_instant(nxt_ms, expected_s) -> None:
    nxt = None if nxt_ms is None else START + timedelta(milliseconds=nxt_ms)
    timeout = idle_timeout(nxt, START, timedelta(milliseconds=50), 5.0)
    assert timeout == pytest.approx(expected_s)
