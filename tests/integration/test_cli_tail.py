"""`chime tail` on a real broker: what it prints, and where it stops."""

from __future__ import annotations

import json

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from services.cli import client
from shared.messaging import ensure_topics, kafka_client_options
from shared.settings import Settings


async def test_tail_prints_from_the_beginning_up_to_max(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = settings.topics.actions_due
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await producer.start()
    try:
        for n in range(3):  # one key: one partition, in this order
            await producer.send_and_wait(topic, orjson.dumps({"n": n}), key=b"k")
    finally:
        await producer.stop()

    assert await client.tail(settings, topic, True, 2, True) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["topic"], line["key"], line["value"]) for line in lines] == [
        (topic, "k", {"n": 0}),
        (topic, "k", {"n": 1}),
    ]
