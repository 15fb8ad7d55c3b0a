"""A service's garbage-collection metrics."""

import gc

from prometheus_client import generate_latest

from shared.metrics import Metrics
from shared.runtime import FULL_COLLECTION_EVERY, _freeze_startup_heap


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


async def test_a_started_service_freezes_its_heap_and_collects_fully_less_often() -> None:
    before = gc.get_threshold()
    try:
        await _freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        young, middle, full = gc.get_threshold()
        assert (young, middle) == before[:2]  # young objects are collected as often as before
        assert full == FULL_COLLECTION_EVERY > before[2]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
