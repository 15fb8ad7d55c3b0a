"""A service's metrics: garbage collections, and the counts and histograms taken in bulk."""

import gc

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shared.metrics import LATENESS_BUCKETS, BulkHistogram, Metrics, count_each
from shared.runtime import FULL_COLLECTION_EVERY, YOUNG_COLLECTION_AFTER, _freeze_startup_heap


def _count(metrics: Metrics, generation: str) -> float:
    value = metrics.registry.get_sample_value(
        "chime_gc_pause_seconds_count", {"generation": generation}
    )
    return value or 0.0


def test_full_collections_are_timed_while_watched_and_not_after() -> None:
    metrics = Metrics()
    unwatch = metrics.watch_gc()
    try:
        gc.collect()
        gc.collect()
        assert _count(metrics, "2") == 2
        assert (
            metrics.registry.get_sample_value("chime_gc_pause_seconds_sum", {"generation": "2"}) > 0
        )
    finally:
        unwatch()
    gc.collect()
    assert _count(metrics, "2") == 2
    assert metrics._on_gc not in gc.callbacks


def test_the_frozen_count_is_read_at_scrape() -> None:
    metrics = Metrics()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        assert (
            f"chime_gc_frozen_objects {float(frozen)}" in generate_latest(metrics.registry).decode()
        )
    finally:
        gc.unfreeze()
    assert "chime_gc_frozen_objects 0.0" in generate_latest(metrics.registry).decode()


async def test_a_started_service_freezes_its_heap_and_collects_less_often() -> None:
    before = gc.get_threshold()
    try:
        await _freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        young, middle, full = gc.get_threshold()
        assert young == YOUNG_COLLECTION_AFTER > before[0]
        assert middle == before[1]
        assert full == FULL_COLLECTION_EVERY > before[2]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _exposed(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


@given(
    st.lists(
        st.lists(
            st.one_of(
                st.floats(min_value=0, max_value=100, allow_nan=False),
                st.sampled_from(LATENESS_BUCKETS),  # a value on a bound counts in its bucket
            ),
            max_size=20,
        ),
        max_size=5,
    )
)
def test_a_bulk_histogram_exposes_what_a_histogram_observing_one_by_one_does(
    rounds: list[list[float]],
) -> None:
    ones, bulk = CollectorRegistry(), CollectorRegistry()
    one_by_one = Histogram("lateness_seconds", "doc", buckets=LATENESS_BUCKETS, registry=ones)
    at_once = BulkHistogram("lateness_seconds", "doc", LATENESS_BUCKETS, bulk)
    for values in rounds:
        for value in values:
            one_by_one.observe(value)
        at_once.observe_many(values)
    want, got = _exposed(ones), _exposed(bulk)
    sums = [i for i, line in enumerate(want) if line.startswith("lateness_seconds_sum")]
    assert [x for i, x in enumerate(got) if i not in sums] == [
        x for i, x in enumerate(want) if i not in sums
    ]
    total = sum(v for values in rounds for v in values)
    assert bulk.get_sample_value("lateness_seconds_sum") == pytest.approx(total)


def test_count_each_adds_one_per_tuple_of_labels() -> None:
    registry = CollectorRegistry()
    acks = Counter("acks", "doc", ["state", "outcome"], registry=registry)
    count_each(acks, [("SUCCEEDED", "changed"), ("RUNNING", "changed"), ("SUCCEEDED", "changed")])
    count_each(acks, [])
    count_each(acks, [("SUCCEEDED", "changed")])
    assert (
        registry.get_sample_value("acks_total", {"state": "SUCCEEDED", "outcome": "changed"}) == 3
    )
    assert registry.get_sample_value("acks_total", {"state": "RUNNING", "outcome": "changed"}) == 1
