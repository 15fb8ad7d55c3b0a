"""Prometheus metrics of one Chime process (its own registry, served on /metrics)."""

from __future__ import annotations

import bisect
import gc
import logging
import math
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

__all__ = ["BulkHistogram", "Metrics", "count_each"]

log = logging.getLogger("chime.metrics")
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)
BATCH_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000)


def count_each(counter: Counter, labels: Iterable[tuple[str, ...]]) -> None:
    """Add one to `counter` for each tuple of label values, with one `labels()` call per
    distinct tuple: `labels(...).inc()` costs ~2.4 µs, a few per cent of a consumer's CPU
    when paid per message."""
    for values, count in Tally(labels).items():
        counter.labels(*values).inc(count)


class BulkHistogram:
    """A histogram without labels that takes a round's values at once (`observe_many`), exposed
    as prometheus_client's `Histogram` is (`_bucket`, `_count`, `_sum`). Its `observe` costs
    ~1.5 µs a value, ~4 % of the ticker's CPU per fire; a value here costs a bisection.
    Observed and collected on the event loop's thread only."""

    def __init__(
        self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = sorted(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket; the last above every bound
        self.sum = 0.0
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts, total = self.bounds, self.counts, 0.0
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1  # a bound holds what equals it
            total += value
        self.sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation)
        cumulative, buckets = 0, []
        for bound, count in zip([*self.bounds, math.inf], self.counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), float(cumulative)))
        family.add_metric([], buckets, self.sum)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.commands = Counter(
            "chime_commands",
            "Commands answered, by type and result type.",
            ["type", "outcome"],
            registry=r,
        )
        self.actions_fired = Counter(
            "chime_actions_fired", "action.due events published.", registry=r
        )
        self.fires_recorded_by_ack = Counter(
            "chime_fires_recorded_by_ack",
            "Fires of a round published then rolled back, recorded by the acker from their acks.",
            registry=r,
        )
        self.actions_skipped = Counter(
            "chime_actions_skipped",
            "Occurrences SKIPPED (condition, misfire, overlap).",
            registry=r,
        )
        self.firing_lateness = BulkHistogram(
            "chime_firing_lateness_seconds",
            "firedAt - fire time of each published attempt.",
            LATENESS_BUCKETS,
            r,
        )
        self.claim_batch = Histogram(
            "chime_claim_batch_size",
            "Occurrences claimed per ticker round.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.broker_ack_wait = Histogram(
            "chime_broker_ack_wait_seconds",
            "How long a ticker round waited, after its last release, for the broker to "
            "acknowledge every event of it (three rounds waiting hold back the next release).",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.acks = Counter(
            "chime_acks",
            "Acks applied or ignored, by state and result.",
            ["state", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "chime_retries", "Attempts scheduled again, by cause.", ["cause"], registry=r
        )
        self.dead = Counter("chime_actions_dead", "Occurrences failed for good.", registry=r)
        self.pruned = Counter(
            "chime_actions_pruned",
            "Finished occurrences deleted with their history (CHIME_RETENTION_DAYS).",
            registry=r,
        )
        self.dlq = Counter("chime_dlq_entries", "Records sent to the DLQ.", ["service"], registry=r)
        self.offsets_read_again = Counter(
            "chime_consumer_offsets_read_again",
            "Jumps in a partition's offsets that a consumer read again from (shared/offsets.py).",
            ["topic"],
            registry=r,
        )
        self.offsets_jumps_taken = Counter(
            "chime_consumer_offsets_jumps_taken",
            "Jumps read again for CHIME_KAFKA_READ_AGAIN_MS and then taken (shared/offsets.py).",
            ["topic"],
            registry=r,
        )
        self.due_backlog = Gauge(
            "chime_due_backlog", "Occurrences due now and not yet fired.", registry=r
        )
        self.consumer_lag = Gauge(
            "chime_consumer_lag", "Records not yet consumed, per topic.", ["topic"], registry=r
        )
        self.gc_pause = Histogram(
            "chime_gc_pause_seconds",
            "Garbage-collection pauses (the event loop stands still), by generation.",
            ["generation"],
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        for generation in ("0", "1", "2"):
            self.gc_pause.labels(generation)  # present (at zero) before the first pause
        self.heap_trim = Histogram(
            "chime_heap_trim_seconds",
            "Freed heap handed back to the OS after a consumer's batches (shared/memory.py).",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.gc_frozen = Gauge(
            "chime_gc_frozen_objects",
            "Objects kept out of collections (everything built at startup; see run_service).",
            registry=r,
        )
        self.gc_frozen.set_function(gc.get_freeze_count)
        self._refreshers: list[Callable[[], Awaitable[None]]] = []
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            pause = time.perf_counter() - self._gc_started
            self.gc_pause.labels(str(info["generation"])).observe(pause)

    def watch_gc(self) -> Callable[[], None]:
        """Time this process's garbage collections until the returned function is called."""
        gc.callbacks.append(self._on_gc)
        return lambda: gc.callbacks.remove(self._on_gc)

    def on_scrape(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Run `refresh` (updating gauges) before each scrape."""
        self._refreshers.append(refresh)

    async def render(self) -> bytes:
        for refresh in self._refreshers:
            try:
                await refresh()
            except Exception as exc:  # a gauge that cannot be read must not break the scrape
                log.debug("metrics refresh failed: %s", exc)
        return generate_latest(self.registry)
