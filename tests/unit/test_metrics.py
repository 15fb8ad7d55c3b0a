"""A service's garbage-collection metrics."""

import gc

from prometheus_client import generate_latest

from shared.metrics import Metrics


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
