"""OffsetGaps: which records a consumer hands on, and which partitions it reads again."""

from __future__ import annotations

from aiokafka import ConsumerRecord, TopicPartition

from shared.offsets import Jump, OffsetGaps, backoff


def record(offset: int, partition: int = 0, topic: str = "t") -> ConsumerRecord:
    return ConsumerRecord(topic, partition, offset, 0, 0, None, b"{}", None, 2, 2, [])


def offsets(records: list[ConsumerRecord]) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in records]


class Consumer:
    """Where each partition was moved back to."""

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition.topic, partition.partition, offset))


def test_consecutive_offsets_are_all_handed_on() -> None:
    gaps, consumer = OffsetGaps(), Consumer()
    kept, jumps = gaps.admit([record(5), record(6), record(0, 1), record(7)], consumer)
    assert offsets(kept) == [(0, 5), (0, 6), (1, 0), (0, 7)] and jumps == []
    kept, jumps = gaps.admit([record(8), record(1, 1)], consumer)
    assert offsets(kept) == [(0, 8), (1, 1)] and jumps == [] and consumer.seeks == []


def test_a_jump_holds_back_its_partition_from_there_and_is_read_again() -> None:
    gaps, consumer = OffsetGaps(), Consumer()
    gaps.admit([record(0), record(1), record(0, 1)], consumer)
    kept, jumps = gaps.admit([record(4), record(1, 1), record(5), record(2, 1)], consumer)
    assert jumps == [Jump("t", 0, 2, 4)]
    assert offsets(kept) == [(1, 1), (1, 2)]  # partition 0 from the jump on: not handed on
    assert consumer.seeks == [("t", 0, 2)]
    # Read again from 2: what the first fetch stepped over, then what it held back.
    kept, jumps = gaps.admit([record(2), record(3), record(4), record(5)], consumer)
    assert offsets(kept) == [(0, 2), (0, 3), (0, 4), (0, 5)] and jumps == []
    assert consumer.seeks == [("t", 0, 2)]  # once


class Clock:
    """Seconds, set by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_jump_seen_again_is_read_again_until_it_has_lasted_and_then_taken() -> None:
    """A batch the broker is still storing is stepped over again from the same offset: read
    again, further apart, for `read_again` seconds. Offsets that hold nothing a consumer is
    given (a transaction's marker) jump every time: taken then, so the consumer never loops."""
    clock, consumer = Clock(), Consumer()
    gaps = OffsetGaps(read_again=0.5, clock=clock)
    gaps.admit([record(0)], consumer)
    assert gaps.admit([record(2)], consumer) == ([], [Jump("t", 0, 1, 2, seen=1)])
    clock.now += 0.2
    assert gaps.admit([record(2), record(3)], consumer) == ([], [Jump("t", 0, 1, 2, seen=2)])
    clock.now += 0.29
    assert gaps.admit([record(2)], consumer) == ([], [Jump("t", 0, 1, 2, seen=3)])
    assert gaps.taken == []
    clock.now += 0.01  # seen from 1 for 0.5 s: nothing there
    kept, jumps = gaps.admit([record(2), record(3)], consumer)
    assert offsets(kept) == [(0, 2), (0, 3)] and jumps == []
    assert gaps.taken == [Jump("t", 0, 1, 2, seen=4)]  # for the logs
    assert consumer.seeks == [("t", 0, 1)] * 3
    # A later jump is read again, and one from the offset taken last time is too.
    assert gaps.admit([record(9)], consumer) == ([], [Jump("t", 0, 4, 9)])
    assert gaps.taken == []  # what the last admit took
    assert consumer.seeks[-1] == ("t", 0, 4)


def test_a_batch_stored_late_is_received_when_read_again_later() -> None:
    """What the broker stored after the first reading again comes at a later one, and the
    partition is followed as before; a jump from the same offset another time (the partition
    rewound past it) is read again afresh, not taken for having begun long ago."""
    clock, consumer = Clock(), Consumer()
    gaps = OffsetGaps(read_again=0.5, clock=clock)
    gaps.admit([record(0)], consumer)
    gaps.admit([record(3)], consumer)
    clock.now += 0.1
    assert gaps.admit([record(3)], consumer) == ([], [Jump("t", 0, 1, 3, seen=2)])
    kept, jumps = gaps.admit([record(1), record(2), record(3)], consumer)
    assert offsets(kept) == [(0, 1), (0, 2), (0, 3)] and jumps == []
    gaps.admit([record(0)], consumer)  # a batch delivered again from its start
    clock.now += 10
    assert gaps.admit([record(3)], consumer) == ([], [Jump("t", 0, 1, 3, seen=1)])


def test_without_reading_again_for_a_while_a_jump_seen_again_is_taken() -> None:
    gaps, consumer = OffsetGaps(read_again=0, clock=Clock()), Consumer()
    gaps.admit([record(0)], consumer)
    assert gaps.admit([record(2)], consumer) == ([], [Jump("t", 0, 1, 2)])
    kept, jumps = gaps.admit([record(2)], consumer)
    assert offsets(kept) == [(0, 2)] and jumps == []


def test_reading_again_waits_longer_each_time_a_jump_is_seen_again() -> None:
    def jump(seen: int) -> Jump:
        return Jump("t", 0, 1, 2, seen)

    assert backoff([]) == backoff([jump(1)]) == 0  # the first reading again: at once
    assert [backoff([jump(1), jump(n)]) for n in (2, 3, 4)] == [0.005, 0.01, 0.02]
    assert backoff([jump(60)]) == 0.1  # at most


def test_a_jump_in_a_batch_that_failed_is_read_again_when_it_comes_again() -> None:
    """A failed batch is delivered again from its first record in each partition: for a
    partition that jumped, the record past the jump, not the offset it was moved back to."""
    gaps, consumer = OffsetGaps(), Consumer()
    gaps.admit([record(0)], consumer)
    _, jumps = gaps.admit([record(3)], consumer)
    gaps.rewound(jumps)
    assert gaps.admit([record(3)], consumer) == ([], [Jump("t", 0, 1, 3)])
    assert consumer.seeks == [("t", 0, 1), ("t", 0, 1)]
    kept, _ = gaps.admit([record(1), record(2), record(3)], consumer)
    assert offsets(kept) == [(0, 1), (0, 2), (0, 3)]


def test_a_record_behind_the_expected_offset_is_taken() -> None:
    """A batch rewound after a failure comes again from its start."""
    gaps, consumer = OffsetGaps(), Consumer()
    gaps.admit([record(10), record(11), record(12)], consumer)
    kept, jumps = gaps.admit([record(10), record(11)], consumer)
    assert offsets(kept) == [(0, 10), (0, 11)] and jumps == []
    assert gaps.admit([record(13)], consumer) == ([], [Jump("t", 0, 12, 13)])  # 12 follows 11 now


def test_a_partition_forgotten_is_followed_afresh() -> None:
    gaps, consumer = OffsetGaps(), Consumer()
    gaps.admit([record(0), record(0, 1)], consumer)
    gaps.forget([("t", 0)])  # revoked: another consumer moved it on meanwhile
    kept, jumps = gaps.admit([record(50), record(5, 1)], consumer)
    assert offsets(kept) == [(0, 50)] and jumps == [Jump("t", 1, 1, 5)]
    assert consumer.seeks == [("t", 1, 1)]


def test_a_known_start_makes_the_first_record_past_it_a_jump() -> None:
    gaps, consumer = OffsetGaps(start=0), Consumer()
    assert gaps.admit([record(3)], consumer) == ([], [Jump("t", 0, 0, 3)])
    kept, _ = gaps.admit([record(0)], consumer)
    assert offsets(kept) == [(0, 0)] and consumer.seeks == [("t", 0, 0)]


def test_partitions_not_yet_followed_are_unknown() -> None:
    gaps, consumer = OffsetGaps(), Consumer()
    batch = [record(4), record(0, 1)]
    assert gaps.unknown(batch) == {("t", 0), ("t", 1)}
    gaps.admit(batch, consumer)
    assert gaps.unknown(batch) == set()
    gaps.forget([("t", 1)])
    assert gaps.unknown(batch) == {("t", 1)}
    assert OffsetGaps(start=0).unknown(batch) == set()  # every partition begins at 0


async def test_a_service_follows_a_partition_from_its_committed_offset() -> None:
    """A consumer service's first fetch of a partition begins at the group's committed offset:
    a later first record is a jump. Without a committed offset, or an answer, the partition
    is followed from its first record."""
    from aiokafka.errors import KafkaConnectionError

    from shared.runtime import _from_committed

    class Committed(Consumer):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[int] = []

        async def committed(self, partition: TopicPartition) -> int | None:
            self.asked.append(partition.partition)
            if partition.partition == 2:
                raise KafkaConnectionError()
            return {0: 5, 1: None, 3: 3}[partition.partition]

    gaps, consumer = OffsetGaps(), Committed()
    batch = [record(7), record(3, 1), record(9, 2), record(3, 3), record(4, 3)]
    await _from_committed(consumer, gaps, batch)  # type: ignore[arg-type]
    kept, jumps = gaps.admit(batch, consumer)
    assert jumps == [Jump("t", 0, 5, 7)] and consumer.seeks == [("t", 0, 5)]
    assert offsets(kept) == [(1, 3), (2, 9), (3, 3), (3, 4)]
    assert sorted(consumer.asked) == [0, 1, 2, 3]
    await _from_committed(consumer, gaps, [record(5), record(10, 2)])  # type: ignore[arg-type]
    assert sorted(consumer.asked) == [0, 1, 2, 3]  # followed now: not asked again


def test_what_one_getmany_returned_is_admitted_partition_by_partition() -> None:
    gaps, consumer = OffsetGaps(start=0), Consumer()
    fetched = {
        TopicPartition("t", 0): [record(0), record(1)],
        TopicPartition("t", 1): [record(2, 1), record(3, 1)],
    }
    kept, jumps = gaps.admit_fetched(fetched, consumer)
    assert offsets(kept) == [(0, 0), (0, 1)] and jumps == [Jump("t", 1, 0, 2)]
    assert consumer.seeks == [("t", 1, 0)]


def test_a_service_logs_and_counts_what_it_reads_again_and_what_it_takes(caplog) -> None:
    """The services' reporting (shared/runtime.py): a jump read again is a warning the first
    time and counted each time; one taken after reading again for long enough is a warning
    of its own (records that consumer may never have received) and counted apart."""
    import logging

    from shared.metrics import Metrics
    from shared.runtime import admit_reporting

    clock, consumer, metrics = Clock(), Consumer(), Metrics()
    gaps, log = OffsetGaps(read_again=0.5, clock=clock), logging.getLogger("chime.test")

    def counted(name: str) -> float | None:
        return metrics.registry.get_sample_value(f"chime_consumer_{name}_total", {"topic": "t"})

    admit_reporting(gaps, [record(0)], consumer, log, metrics)
    with caplog.at_level(logging.DEBUG, "chime.test"):
        for step in (0.0, 0.2, 0.2):
            clock.now += step
            admit_reporting(gaps, [record(2)], consumer, log, metrics)
        clock.now += 0.1  # read again from 1 for 0.5 s
        kept, _ = admit_reporting(gaps, [record(2)], consumer, log, metrics)
    assert offsets(kept) == [(0, 2)]
    levels = [(r.levelname, r.getMessage().rsplit(": ", 1)[-1][:14]) for r in caplog.records]
    assert levels == [
        ("WARNING", "reading it aga"),
        ("DEBUG", "reading it aga"),
        ("DEBUG", "reading it aga"),
        ("WARNING", "taken (nothing"),
    ]
    assert (counted("offsets_read_again"), counted("offsets_jumps_taken")) == (3.0, 1.0)
