"""Reading again what a fetch stepped over.

In a partition of a topic that is neither compacted nor written in transactions, Kafka's offsets
are consecutive: a consumer that has read up to offset n - 1 is next given n. The embedded
broker (Tansu 0.6, memory storage) does not always keep to that. A produce takes its offsets
(advances the partition's high watermark) before it stores its batch, and a fetch from the first
of those offsets in between is served the next batch already stored: one that a concurrent
produce to the same partition took later offsets for. The consumer's position moves past the
earlier batch, which the broker holds but that consumer never asks for again
(`bench/broker_gaps.py`: 1-7 jumps in 20-30 s for each consumer tailing one partition that
two or six producers write to, each a batch of 50 missed). On Apache Kafka a consumer sees a
jump only where the offsets hold nothing it is given: transaction markers, aborted or
compacted records.

`OffsetGaps` follows the offset each partition should give next. When a record jumps ahead of
it, the partition is read again from the offset expected: the records from the jump on are left
out of the batch (neither handled nor committed: the consumer's position is moved back, which is
what its commit then stores). A batch still being stored when the partition is read again is
stepped over again from the same offset (a 2-core machine busy with a test suite: one read
again was not always enough), so a jump seen again is read again, further apart each time
(`backoff`), until it has been seen for `read_again` seconds (0.5 s by default); only then are
its records taken, as offsets that hold nothing to read (Kafka's transaction markers: each
costs a consumer that long). Where a partition begins is known when the consumer reads each
from its start (`start=0`), or from what the caller says (`expect`: a consumer service, the
group's committed offset); otherwise it is followed from the first record it gives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from aiokafka import TopicPartition

__all__ = ["Jump", "OffsetGaps", "Partition", "Seeks", "backoff", "settle"]

Partition = tuple[str, int]  # (topic, partition)

READ_AGAIN = 0.5  # seconds a jump is read again from the same offset before it is taken
FIRST_WAIT, LONGEST_WAIT = 0.005, 0.1  # between reads of a jump seen again: doubling


class Seeks(Protocol):
    def seek(self, partition: TopicPartition, offset: int) -> None: ...


class Jump(NamedTuple):
    """A partition that gave `received` where `expected` was next: read it again from there.
    `seen`: how many fetches in a row jumped from `expected` (1: the first)."""

    topic: str
    partition: int
    expected: int
    received: int
    seen: int = 1


@dataclass
class _Reading:
    """A partition read again from `expected` since `since`, after `seen` jumps from there."""

    expected: int
    since: float
    seen: int = 1


def backoff(jumps: Iterable[Jump]) -> float:
    """Seconds to wait before fetching again: none after a first jump (the batch stepped over
    is usually stored by then), doubling from `FIRST_WAIT` to `LONGEST_WAIT` while one is seen
    again."""
    seen = max((jump.seen for jump in jumps), default=1)
    return 0.0 if seen == 1 else min(FIRST_WAIT * 2 ** (seen - 2), LONGEST_WAIT)


async def settle(jumps: Iterable[Jump]) -> None:
    """Wait `backoff(jumps)` (a consumer's loop, before its next fetch)."""
    if wait := backoff(jumps):
        await asyncio.sleep(wait)


class OffsetGaps:
    """Each partition's next offset, and the jumps past it to read again."""

    def __init__(
        self,
        start: int | None = None,
        read_again: float = READ_AGAIN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`start`: where every partition begins, if known (a consumer that reads each from
        its beginning: 0); otherwise a partition is followed from the first record it gives.
        `read_again`: how long (seconds of `clock`) a jump from the same offset is read again
        before its records are taken."""
        self._start = start
        self._read_again_for = read_again
        self._clock = clock
        self._next: dict[Partition, int] = {}
        # Partitions being read again from where they jumped (until they give that offset, or
        # the jump is taken).
        self._reading: dict[Partition, _Reading] = {}
        # The jumps the last `admit` took after reading them again for `read_again` (offsets
        # that held nothing to read, or a batch the broker had still not stored: lost to this
        # consumer), for a caller to report.
        self.taken: list[Jump] = []

    def admit(self, records: Sequence[Any], consumer: Seeks) -> tuple[list[Any], list[Jump]]:
        """The records to handle, in their order, and the jumps to read again, at most one a
        partition: none of that partition's records from the jump on is handed on, and the
        consumer's position in it is moved back to the offset expected.

        A record behind the expected offset (a batch rewound, a partition assigned again) is
        taken: what follows it is expected from there."""
        kept: list[Any] = []
        jumps: dict[Partition, Jump] = {}
        reading = self._reading
        if self.taken:
            self.taken = []
        for record in records:
            where = (record.topic, record.partition)
            if where in jumps:
                continue
            expected = self._next.get(where, self._start)
            if expected is not None and record.offset > expected:
                jump = self._jumped(where, expected, record.offset)
                if jump is not None:
                    jumps[where] = jump
                    continue
            elif reading and where in reading:
                del reading[where]  # what it was read again for came (or it was rewound)
            self._next[where] = record.offset + 1
            kept.append(record)
        for jump in jumps.values():
            consumer.seek(TopicPartition(jump.topic, jump.partition), jump.expected)
        return kept, list(jumps.values())

    def _jumped(self, where: Partition, expected: int, received: int) -> Jump | None:
        """The jump to read again, or None once it has been read again for long enough (the
        offsets hold nothing to read: its records are taken)."""
        now, reading = self._clock(), self._reading.get(where)
        if reading is None or reading.expected != expected:
            self._reading[where] = _Reading(expected, now)
            return Jump(where[0], where[1], expected, received)
        if now - reading.since >= self._read_again_for:
            del self._reading[where]
            self.taken.append(Jump(where[0], where[1], expected, received, reading.seen + 1))
            return None
        reading.seen += 1
        return Jump(where[0], where[1], expected, received, reading.seen)

    def admit_fetched(
        self, fetched: Mapping[Any, Sequence[Any]], consumer: Seeks
    ) -> tuple[list[Any], list[Jump]]:
        """`admit` for what one `getmany` returned (records by partition)."""
        return self.admit([r for records in fetched.values() for r in records], consumer)

    def unknown(self, records: Iterable[Any]) -> set[Partition]:
        """The partitions of these records whose next offset is not known (first read since
        they were assigned): a caller that knows where each began says so with `expect`."""
        if self._start is not None:
            return set()
        return {(r.topic, r.partition) for r in records} - self._next.keys()

    def expect(self, where: Partition, offset: int) -> None:
        """The partition's next record is at `offset` (where the consumer starts reading it)."""
        self._next[where] = offset

    def rewound(self, jumps: Iterable[Jump]) -> None:
        """The batch these jumps were found in failed and is delivered again from its first
        records (FastStream's NACK_ON_ERROR), which moves a partition back to its first record
        in the batch, past the offset it was moved back to: the jump is to be read again when
        it comes, afresh."""
        for jump in jumps:
            where = (jump.topic, jump.partition)
            reading = self._reading.get(where)
            if reading is not None and reading.expected == jump.expected:
                del self._reading[where]

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions revoked or assigned: followed afresh from the first record they give
        (another consumer may have moved them on meanwhile), or from where the caller says
        they began (`unknown`, `expect`)."""
        for where in partitions:
            self._next.pop(where, None)
            self._reading.pop(where, None)
