"""`nextFireTimes` of a schedule view: stored pending times merged with what the series makes
next, the first five."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.views import NEXT_FIRE_COUNT, schedule_view
from shared.contracts import ScheduleSpec
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
    assert view.next_fire_times == reference(pending, fired, last_due)
    assert view.scheduled_for == (view.next_fire_times[0] if view.next_fire_times else None)
