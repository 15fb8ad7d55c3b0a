"""Misfire decisions: what a first attempt fired at `now` does, under each policy; and the
wait before a retry."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.contracts.commands import Policy
from shared.policy import JITTER, MisfireDecision, decide_misfire, retry_delay

DUE = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


@pytest.mark.parametrize("misfire", ["FIRE_ONCE", "FIRE_ALL", "SKIP"])
def test_within_the_grace_it_fires_and_is_not_misfired(misfire: str) -> None:
    policy = Policy(misfire=misfire, misfire_grace="PT1M")
    for late in (timedelta(0), timedelta(seconds=59), timedelta(minutes=1)):
        assert decide_misfire(policy, DUE, DUE + late) == MisfireDecision(True, False)


def test_past_the_grace_fire_once_fires_it_marked_misfired() -> None:
    policy = Policy(misfire="FIRE_ONCE", misfire_grace="PT1M")
    late = decide_misfire(policy, DUE, DUE + timedelta(minutes=1, seconds=1))
    assert (late.fire, late.misfired, late.reason) == (True, True, None)


def test_past_the_grace_skip_skips_it_saying_by_how_much() -> None:
    policy = Policy(misfire="SKIP", misfire_grace="PT1M")
    skipped = decide_misfire(policy, DUE, DUE + timedelta(minutes=5))
    assert (skipped.fire, skipped.misfired) == (False, True)
    assert skipped.reason is not None
    assert "0:05:00" in skipped.reason and "SKIP" in skipped.reason


def test_fire_all_fires_late_ones_back_to_the_catchup_window_only() -> None:
    policy = Policy(misfire="FIRE_ALL", misfire_grace="PT1M", catchup_window="PT1H")
    within = decide_misfire(policy, DUE, DUE + timedelta(minutes=59))
    assert (within.fire, within.misfired) == (True, True)
    older = decide_misfire(policy, DUE, DUE + timedelta(hours=2))
    assert (older.fire, older.misfired) == (False, True)
    assert older.reason is not None and "catchupWindow PT1H" in older.reason


def test_retry_backoff_grows_by_the_multiplier_up_to_the_cap() -> None:
    policy = Policy.model_validate(
        {
            "retry": {
                "maxAttempts": 9,
                "initialBackoff": "PT10S",
                "multiplier": 3.0,
                "maxBackoff": "PT2M",
            }
        }
    )
    waits = [retry_delay(policy, failed, 0.0).total_seconds() for failed in range(1, 6)]
    assert waits == [10, 30, 90, 120, 120]


@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_retry_jitter_only_shortens_the_wait(rand: float) -> None:
    policy = Policy.model_validate({"retry": {"initialBackoff": "PT10S", "maxBackoff": "PT10S"}})
    wait = retry_delay(policy, 4, rand).total_seconds()
    assert wait == pytest.approx(10 * (1 - JITTER * rand))
    assert 10 * (1 - JITTER) < wait <= 10  # never above maxBackoff
