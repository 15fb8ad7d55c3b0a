"""The action state machine, as a table."""

from __future__ import annotations

import pytest

from shared.states import decide_ack


@pytest.mark.parametrize(
    ("state", "attempt", "ack", "ack_attempt", "applies", "new_state", "reason"),
    [
        ("DISPATCHED", 1, "RUNNING", 1, True, "RUNNING", None),
        ("DISPATCHED", 1, "SUCCEEDED", 1, True, "SUCCEEDED", None),
        ("DISPATCHED", 1, "FAILED", 1, True, "FAILED", None),
        ("RUNNING", 1, "RUNNING", 1, True, "RUNNING", None),
        ("RUNNING", 1, "SUCCEEDED", 1, True, "SUCCEEDED", None),
        ("PENDING", 1, "SUCCEEDED", 1, False, None, "NOT_DISPATCHED"),  # not due, or held
        ("PENDING", 2, "RUNNING", 2, False, None, "NOT_DISPATCHED"),  # a retry waiting
        ("SUCCEEDED", 1, "SUCCEEDED", 1, False, None, "DUPLICATE"),
        ("SUCCEEDED", 1, "RUNNING", 1, False, None, "STALE"),
        ("FAILED", 1, "SUCCEEDED", 1, False, None, "STALE"),
        ("DISPATCHED", 2, "SUCCEEDED", 1, False, None, "STALE"),
        ("DISPATCHED", 1, "SUCCEEDED", 2, False, None, "UNKNOWN_ATTEMPT"),
        ("TIMED_OUT", 1, "SUCCEEDED", 1, False, None, "STALE"),
        ("CANCELLED", 1, "RUNNING", 1, False, None, "STALE"),
    ],
)
def test_ack_transitions(state, attempt, ack, ack_attempt, applies, new_state, reason) -> None:
    decision = decide_ack(state, attempt, ack, ack_attempt)
    assert decision.apply is applies
    assert decision.new_state == new_state
    if reason:
        assert decision.reason is not None and decision.reason.startswith(reason)
    assert decision.renew_deadline is (applies and ack == "RUNNING")


@pytest.mark.parametrize("state", ["DISPATCHED", "RUNNING"])
@pytest.mark.parametrize("ack", ["RUNNING", "SUCCEEDED"])
def test_what_the_acker_applies_without_reading_the_row(state, ack) -> None:
    """queries.sql `apply_in_flight_acks` applies these acks in SQL, without asking
    `decide_ack`: an ack of the attempt in flight (DISPATCHED or RUNNING) moves it to the ack's
    state, a RUNNING one renewing the deadline. If this changes, change that statement too."""
    decision = decide_ack(state, 3, ack, 3)
    assert decision == (True, ack, None, ack == "RUNNING")
