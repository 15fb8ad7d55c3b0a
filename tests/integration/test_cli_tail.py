"""`chime tail` on a real broker: what it prints, and where it stops."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from services.cli import client
from shared.messaging import ensure_topics, kafka_client_options
from shared.settings import Settings
from tests.batches import send_as_one_batch


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


async def test_tail_without_from_beginning_prints_only_what_comes_after_it(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Started at each partition's end, also where the newest records came as one batch: on the
    embedded broker, "latest" is inside that batch (its end offset counts the batch's first
    record only), and the rest of it was printed as new."""
    topic = settings.topics.actions_due
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await producer.start()
    try:
        old = [orjson.dumps({"old": n}) for n in range(5)]
        for partition in (0, 1):
            await send_as_one_batch(producer, topic, partition, old)
        tailing = asyncio.create_task(client.tail(settings, topic, False, 1, True))
        n = 0
        while not tailing.done():  # new records until it has printed one
            await producer.send_and_wait(topic, orjson.dumps({"new": n}), partition=n % 2)
            await asyncio.wait([tailing], timeout=0.3)
            n += 1
        assert await tailing == 0
    finally:
        await producer.stop()
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "new" in line["value"], line


async def test_tail_of_the_dead_letters_prints_what_is_not_json_with_its_reason(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dead-letter topic holds records as they came, JSON or not: tail shows the text (bytes
    that are not UTF-8 replaced) with the header that says why it is there."""
    topic = settings.topics.dlq
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, b"not json \xff", key=b"k", headers=[("chime-reason", b"not JSON: x")]
        )
    finally:
        await producer.stop()

    assert await client.tail(settings, topic, True, 1, True) == 0
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert line == {
        "topic": topic,
        "key": "k",
        "value": "not json \ufffd",
        "headers": {"chime-reason": "not JSON: x"},
    }
    assert await client.tail(settings, topic, True, 1, False) == 0
    assert capsys.readouterr().out == f"{topic}  'not json \ufffd'  not JSON: x\n"
