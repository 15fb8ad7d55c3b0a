"""Record batches compressed as CHIME_KAFKA_COMPRESSION says, on the real broker: what each of
Chime's producers writes (the batch's codec read from the broker's own fetch answer) and what a
plain consumer reads back."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from shared.messaging import BatchSender, build_broker, ensure_topics, json_message
from shared.settings import Settings

# the codec ids of a record batch's attributes (Kafka's protocol)
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
BODIES = [{"n": n, "text": "the same words again " * 10} for n in range(50)]


async def batch_codecs(settings: Settings, topic: str) -> list[int]:
    """The codec of every record batch partition 0 of `topic` holds, as the broker serves it."""
    client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        leader = client.cluster.leader_for_partition(TopicPartition(topic, 0))
        request = FetchRequest(1_000, 1, 10_000_000, 0, [(topic, [(0, 0, 10_000_000)])])
        response = await client.send(leader, request)
    finally:
        await client.close()
    [(_, [partition])] = response.topics  # in every version: its error second, records last
    assert partition[1] == 0
    raw = partition[-1]
    records, codecs = MemoryRecords(raw), []
    while (batch := records.next_batch()) is not None:
        codecs.append(batch.compression_type)
    return codecs


async def read_back(settings: Settings, topic: str, count: int) -> list[dict]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        values: list[dict] = []
        for _ in range(40):
            for records in (await consumer.getmany(timeout_ms=250)).values():
                values += [orjson.loads(r.value) for r in records]
            if len(values) >= count:
                break
        return values
    finally:
        await consumer.stop()


async def with_batch_sender(settings: Settings, topic: str) -> None:
    sender = BatchSender(settings)
    await sender.start()
    try:
        await sender.send([json_message(topic, body) for body in BODIES])
    finally:
        await sender.stop()


async def with_faststream(settings: Settings, topic: str) -> None:
    """The path of every message when tracing is on (FastStream's publish)."""
    broker = build_broker(settings, "test")
    await broker.start()
    try:
        for body in BODIES:
            await broker.publish(orjson.dumps(body), topic, partition=0)
    finally:
        await broker.stop()


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("publish", [with_batch_sender, with_faststream])
async def test_chimes_batches_are_compressed_as_configured(
    kafka: tuple[str, bool],
    codec: str,
    publish: Callable[[Settings, str], Awaitable[None]],
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka[0],
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.chime.",
        topic_partitions=1,
        kafka_compression=codec,
    )
    topic = settings.topics.actions_due
    await ensure_topics(settings, [topic])
    await publish(settings, topic)
    codecs = await batch_codecs(settings, topic)
    assert codecs and set(codecs) == {CODECS[codec]}
    assert await read_back(settings, topic, len(BODIES)) == BODIES
