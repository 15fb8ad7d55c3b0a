"""The broker alone: do consumers tailing a partition that several producers write to at once
receive every record?

    python -m bench.broker_gaps [--producers 6] [--consumers 2] [--seconds 20] [--batch 50]

`--producers` producers (a connection each) send records to one topic of one partition as fast
as the broker takes them, `--batch` at a time, each batch awaited before the next. While they
do, consumers follow the partition from its start, asking often (`fetch_max_wait_ms` 5, as a
worker that wants its events promptly does): `--consumers` plain ones, and as many that read
a partition again from the offset expected when its offsets jump (`shared/offsets.py`, what
Chime's consumers do). The topic is neither compacted nor transactional, so its offsets are
consecutive and every jump is records stepped over. Once the producers stop, each consumer
reads to the partition's end (one partition: the records acknowledged are offsets 0 to
`records` - 1). Per consumer: `jumps` seen, `missed` (records below the furthest offset it
read that it never received: stepped over for good) and `not_reached` (records past that
offset when its minute to catch up ran out: a broker slow to deliver, not a record lost); for
those that read again, `seen_again`: jumps that came again when the partition was read again
(the batch still not stored: read again until it comes, `shared/offsets.py`). No Chime service
runs. One JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import line, servers
from shared.messaging import ensure_topics, kafka_client_options
from shared.offsets import OffsetGaps, settle
from shared.settings import Settings

RECORD_BYTES = 200


async def produce(settings: Settings, topic: str, batch: int, stop: asyncio.Event) -> int:
    """Send `batch` records at a time until `stop`; returns how many were acknowledged."""
    producer = AIOKafkaProducer(**kafka_client_options(settings), acks="all", linger_ms=0)
    await producer.start()
    sent, value = 0, b"x" * RECORD_BYTES
    try:
        while not stop.is_set():
            await asyncio.gather(*[await producer.send(topic, value) for _ in range(batch)])
            sent += batch
    finally:
        await producer.stop()
    return sent


async def follow(
    settings: Settings, topic: str, read_again: bool, total: asyncio.Future[int], within: float
) -> dict[str, int]:
    """Follow the partition from its start until the producers are done (`total`: the records
    they had acknowledged, offsets 0 to total - 1), then to that end (for at most `within`
    seconds more): jumps seen, records stepped over for good, records not reached."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        enable_auto_commit=False,
        fetch_max_wait_ms=5,
        max_poll_records=10_000,
    )
    await consumer.start()
    consumer.assign([tp])
    consumer.seek(tp, 0)
    gaps, seen, jumps, seen_again, expected = OffsetGaps(start=0), set(), 0, 0, 0
    try:
        deadline = None
        while not total.done() or (expected < total.result() and time.monotonic() < deadline):
            fetched = (await consumer.getmany(timeout_ms=100)).get(tp, [])
            if read_again:
                fetched, found = gaps.admit(fetched, consumer)
                jumps += sum(jump.seen == 1 for jump in found)
                seen_again += sum(jump.seen == 2 for jump in found)
                await settle(found)
            for record in fetched:
                if not read_again and record.offset > expected:
                    jumps += 1
                seen.add(record.offset)
                expected = record.offset + 1
            if deadline is None and total.done():
                deadline = time.monotonic() + within
        reached = max(seen) + 1 if seen else 0
        figures = {
            "jumps": jumps,
            "missed": reached - len(seen),
            "not_reached": total.result() - reached,
        }
        return figures | ({"seen_again": seen_again} if read_again else {})
    finally:
        await consumer.stop()


async def scenario(producers: int, consumers: int, seconds: float, batch: int) -> dict:
    async with servers("gaps") as settings:
        topic = f"{settings.topic_prefix}gaps.{uuid.uuid4().hex[:6]}"
        await ensure_topics(settings.model_copy(update={"topic_partitions": 1}), [topic])
        stop, total = asyncio.Event(), asyncio.get_running_loop().create_future()
        kinds = [False] * consumers + [True] * consumers
        following = [
            asyncio.create_task(follow(settings, topic, again, total, 60)) for again in kinds
        ]
        producing = [
            asyncio.create_task(produce(settings, topic, batch, stop)) for _ in range(producers)
        ]
        await asyncio.sleep(seconds)
        stop.set()
        sent = sum(await asyncio.gather(*producing))
        total.set_result(sent)
        followed = await asyncio.gather(*following)
    return {
        "scenario": "broker_gaps",
        "producers": producers,
        "seconds": seconds,
        "batch": batch,
        "records": sent,
        "plain": [f for f, again in zip(followed, kinds, strict=True) if not again],
        "reading_again": [f for f, again in zip(followed, kinds, strict=True) if again],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--producers", type=int, default=6)
    parser.add_argument("--consumers", type=int, default=2, help="of each kind")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    line(**await scenario(args.producers, args.consumers, args.seconds, args.batch))


if __name__ == "__main__":
    asyncio.run(main())
