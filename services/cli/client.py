"""`chime publish` and `chime tail`: a person's Kafka client for Chime's topics."""

from __future__ import annotations

import asyncio
import sys
import uuid

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.settings import Settings

__all__ = ["publish", "tail"]


async def publish(settings: Settings, text: str, source: str, wait_seconds: float) -> int:
    """Send one command, wait for the result with its correlationId, print it.

    Exit 0 when applied, 1 when rejected, 2 on bad input or no result in time.
    """
    try:
        command = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        print(f"chime publish: {source} is not JSON: {exc}", file=sys.stderr)
        return 2
    meta = command.setdefault("meta", {})
    meta.setdefault("commandId", str(uuid.uuid4()))
    meta.setdefault("correlationId", str(uuid.uuid4()))
    meta.setdefault("tenant", "default")
    topics = settings.topics
    consumer = AIOKafkaConsumer(
        topics.command_results,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await consumer.start()
    await producer.start()
    try:
        await consumer.getmany(timeout_ms=200)  # take the partitions' current end as start
        await producer.send_and_wait(topics.commands, orjson.dumps(command))
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    result = orjson.loads(record.value)
                    if result.get("meta", {}).get("correlationId") == meta["correlationId"]:
                        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
                        return 1 if result.get("type") == "command.rejected" else 0
        print(f"chime publish: no result within {wait_seconds} s", file=sys.stderr)
        return 2
    finally:
        await producer.stop()
        await consumer.stop()


async def tail(settings: Settings, topic: str, from_beginning: bool, limit: int) -> int:
    """Print each message as one JSON line (non-JSON values are shown as text)."""
    name = topic if topic.startswith(settings.topic_prefix) else settings.topic_prefix + topic
    consumer = AIOKafkaConsumer(
        name,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    try:
        async for record in consumer:
            try:
                value = orjson.loads(record.value)
            except orjson.JSONDecodeError:
                value = (record.value or b"").decode("utf-8", "replace")
            headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
            line = {
                "topic": record.topic,
                "key": (record.key or b"").decode("utf-8", "replace"),
                "value": value,
            }
            if headers:
                line["headers"] = headers
            print(orjson.dumps(line).decode(), flush=True)
            seen += 1
            if limit and seen >= limit:
                break
    finally:
        await consumer.stop()
    return 0
