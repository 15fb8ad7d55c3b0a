"""A schedule view and the result carrying it: `nextFireTimes` (stored pending times merged with
what the series makes next, the first five), and the wire form written directly, equal to the
models' own serialisation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.commands import success_result
from services.scheduler.views import NEXT_FIRE_COUNT, schedule_view
from shared.contracts import (
    CommandEnvelope,
    CommandResult,
    ScheduleSpec,
    ScheduleView,
    format_instant,
)
from shared.contracts.common import ContractModel
from shared.schedule import compile_series

NOW = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # the night Europe/Berlin springs forward
SPEC = ScheduleSpec.model_validate(
    {
        "name": "view",
        "timezone": "Europe/Berlin",
        "trigger": {"kind": "cron", "expression": "*/20 1-3 * * *"},
        "action": {"type": "x"},
    }
)
SERIES, _ = compile_series(SPEC, NOW)
ROW = {
    "id": "00000000-0000-0000-0000-000000000001",
    "name": "view",
    "namespace": "default",
    "state": "ACTIVE",
    "version": 1,
    "spec": SPEC.to_wire(),
    "cron_expression": None,
    "created_at": NOW,
    "updated_at": NOW,
}


def reference(pending: list[datetime], fired: int, last_due: datetime | None) -> list[datetime]:
    """What the view showed before it computed only the places left: five of the series."""
    upcoming = set(pending)
    if last_due is not None or fired == 0:
        upcoming.update(SERIES.preview(last_due or NOW, NEXT_FIRE_COUNT, fired))
    return sorted(upcoming)[:NEXT_FIRE_COUNT]


minutes = st.integers(min_value=-300, max_value=3000).map(lambda m: NOW + timedelta(minutes=m))


@given(
    pending=st.lists(minutes, max_size=8),
    fired=st.integers(min_value=0, max_value=3),
    last_due=st.none() | minutes,
    from_series=st.integers(min_value=0, max_value=3),
)
def test_next_fire_times_equal_the_full_merge(
    pending: list[datetime], fired: int, last_due: datetime | None, from_series: int
) -> None:
    if last_due is not None:  # stored series rows sit at or before the series' position
        pending = pending + SERIES.preview(last_due - timedelta(days=1), from_series)
        pending = [t for t in pending if t <= last_due] + pending
    view = schedule_view(ROW, SERIES, pending, (fired, last_due), NOW)
    expected = [format_instant(t) for t in reference(pending, fired, last_due)]
    assert view["nextFireTimes"] == expected
    assert view["scheduledFor"] == (expected[0] if expected else None)


def as_the_model_writes_it(wire: dict[str, Any], model: type[ContractModel]) -> dict[str, Any]:
    return model.model_validate(wire).to_wire()


@pytest.mark.parametrize("state", ["ACTIVE", "PAUSED"])
@pytest.mark.parametrize("with_recent", [False, True])
def test_the_view_and_its_result_are_what_the_models_serialise(
    state: str, with_recent: bool
) -> None:
    later = NOW + timedelta(hours=2, milliseconds=250)
    recent = [
        {"id": uuid.UUID(int=7), "type": "x", "due_at": later, "state": "PENDING", "attempt": 0,
         "fired_at": None, "updated_at": None},
        {"id": uuid.UUID(int=8), "type": "x", "due_at": NOW, "state": "SUCCEEDED", "attempt": 2,
         "fired_at": NOW + timedelta(seconds=1), "updated_at": later},
    ]  # fmt: skip
    berlin = NOW.astimezone(ZoneInfo("Europe/Berlin"))  # any offset is written as UTC
    row = {**ROW, "id": uuid.UUID(int=1), "state": state, "version": 3, "updated_at": berlin}
    view = schedule_view(row, SERIES, [later], (0, None), NOW, recent if with_recent else None)
    assert list(view) == list(as_the_model_writes_it(view, ScheduleView))  # the fields' order
    assert view == as_the_model_writes_it(view, ScheduleView)
    assert view["updatedAt"] == "2026-03-28T23:00:00Z"
    assert (view["recentActions"] is None) is not with_recent

    env = CommandEnvelope.model_validate(
        {
            "type": "schedule.update",
            "meta": {"commandId": "c-1", "correlationId": "r-1", "tenant": "t"},
            "data": {"id": str(uuid.UUID(int=1))},
        }
    )
    result = success_result(env, view, later)
    assert result == as_the_model_writes_it(result, CommandResult)
    assert list(result) == ["type", "meta", "data", "errors"]
    assert result["type"] == "schedule.updated"
    assert result["meta"]["timestamp"] == "2026-03-29T01:00:00.250000Z"
