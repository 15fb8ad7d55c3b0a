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
it, the partition is read again from the offset expected, once per jump: the records from the
jump on are left out of the batch (neither handled nor committed: the consumer's position
is moved back, which is what its commit then stores). If the partition jumps to the
same place again, nothing was there to read, and its records are taken. Where a partition
begins is known when the consumer reads each from its start (`start=0`), or from what the
caller says (`expect`: a consumer service, the group's committed offset); otherwise it is
followed from the first record it gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from aiokafka import TopicPartition

__all__ = ["Jump", "OffsetGaps", "Partition", "Seeks"]

Partition = tuple[str, int]  # (topic, partition)


class Seeks(Protocol):
    def seek(self, partition: TopicPartition, offset: int) -> None: ...


class Jump(NamedTuple):
    """A partition that gave `received` where `expected` was next: read it again from there."""

    topic: str
    partition: int
    expected: int
    received: int


class OffsetGaps:
    """Each partition's next offset, and the jumps past it to read again."""

    def __init__(self, start: int | None = None) -> None:
        """`start`: where every partition begins, if known (a consumer that reads each from
        its beginning: 0); otherwise a partition is followed from the first record it gives."""
        self._start = start
        self._next: dict[Partition, int] = {}
        # The offset each partition was last read again from, so that a jump seen twice (one
        # over offsets that hold nothing to read) is taken the second time.
        self._read_again: dict[Partition, int] = {}

    def admit(self, records: Sequence[Any], consumer: Seeks) -> tuple[list[Any], list[Jump]]:
        """The records to handle, in their order, and the jumps to read again, at most one a
        partition: none of that partition's records from the jump on is handed on, and the
        consumer's position in it is moved back to the offset expected.

        A record behind the expected offset (a batch rewound, a partition assigned again) is
        taken: what follows it is expected from there."""
        kept: list[Any] = []
        jumps: dict[Partition, Jump] = {}
        for record in records:
            where = (record.topic, record.partition)
            if where in jumps:
                continue
            expected = self._next.get(where, self._start)
            if (
                expected is not None
                and record.offset > expected
                and self._read_again.get(where) != expected
            ):
                self._read_again[where] = expected
                jumps[where] = Jump(record.topic, record.partition, expected, record.offset)
                continue
            self._next[where] = record.offset + 1
            kept.append(record)
        for jump in jumps.values():
            consumer.seek(TopicPartition(jump.topic, jump.partition), jump.expected)
        return kept, list(jumps.values())

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
        it comes, not taken as one seen twice."""
        for jump in jumps:
            where = (jump.topic, jump.partition)
            if self._read_again.get(where) == jump.expected:
                del self._read_again[where]

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions revoked or assigned: followed afresh from the first record they give
        (another consumer may have moved them on meanwhile), or from where the caller says
        they began (`unknown`, `expect`)."""
        for where in partitions:
            self._next.pop(where, None)
            self._read_again.pop(where, None)
