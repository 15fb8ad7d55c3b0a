"""Record batches compressed as CHIME_KAFKA_COMPRESSION says, on the real broker: what each of
Chime's producers writes (the batch's codec read from the broker's own fetch answer) and what a
plain consumer reads back."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from shared.messaging import BatchSender, build_broker, ensure_topics, json_message
from shared.settings import Settings
from tests.batches import CODECS, batch_codecs

BODIES = [{"n": n, "text": "the same words again " * 10} for n in range(50)]


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
    codecs = await batch_codecs(settings.kafka_bootstrap_servers, topic)
    assert codecs and set(codecs) == {CODECS[codec]}
    assert await read_back(settings, topic, len(BODIES)) == BODIES
