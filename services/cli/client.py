"""`chime publish`, `ack`, `tail`, `status`: a person's client for Chime's topics and state."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from shared.messaging import compression, kafka_client_options
from shared.offsets import OffsetGaps, settle
from shared.settings import Settings

__all__ = ["ack", "publish", "status", "tail"]


async def _send_and_wait(
    settings: Settings,
    topic: str,
    body: dict[str, Any],
    key: bytes | None,
    reply_topic: str,
    answer: Callable[[dict[str, Any]], bool],
    wait_seconds: float,
    correlation_id: str | None = None,
) -> dict[str, Any] | None:
    """Send `body`, then return the first message on `reply_topic` that `answer` accepts.

    `correlation_id` goes in the `correlation_id` header, which traces record.
    """
    consumer = AIOKafkaConsumer(
        reply_topic,
        **kafka_client_options(settings),
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(
        **kafka_client_options(settings), acks="all", compression_type=compression(settings)
    )
    try:  # stopped also when a start failed: nothing left open
        await consumer.start()
        await producer.start()
        await consumer.getmany(timeout_ms=200)  # take the partitions' current end as start
        # The embedded broker can step a fetch over the reply: read again (shared/offsets.py).
        gaps = OffsetGaps(read_again=settings.kafka_read_again_ms / 1000)
        for partition in consumer.assignment():
            gaps.expect((partition.topic, partition.partition), await consumer.position(partition))
        headers = [("correlation_id", correlation_id.encode())] if correlation_id else []
        if settings.auth_token is not None:
            token = settings.auth_token.get_secret_value()
            headers.append(("authorization", f"Bearer {token}".encode()))
        await producer.send_and_wait(topic, orjson.dumps(body), key=key, headers=headers or None)
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while asyncio.get_running_loop().time() < deadline:
            records, jumps = gaps.admit_fetched(await consumer.getmany(timeout_ms=200), consumer)
            await settle(jumps)
            for record in records:
                reply = orjson.loads(record.value)
                if answer(reply):
                    return reply
        return None
    finally:
        await producer.stop()
        await consumer.stop()


def _print(message: dict[str, Any]) -> None:
    print(orjson.dumps(message, option=orjson.OPT_INDENT_2).decode())


async def publish(settings: Settings, text: bytes, source: str, wait_seconds: float) -> int:
    """Send one command, wait for the result with its correlationId, print it.

    Exit 0 when applied, 1 when rejected, 2 on bad input or no result in time.
    """
    try:
        command = orjson.loads(text)
    except orjson.JSONDecodeError as exc:  # also text that is not UTF-8
        print(f"chime publish: {source} is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(command, dict):
        kind = type(command).__name__
        print(f"chime publish: {source} must hold one JSON object, not a {kind}", file=sys.stderr)
        return 2
    meta = command.setdefault("meta", {})
    if not isinstance(meta, dict):
        print(f"chime publish: {source}: meta must be a JSON object", file=sys.stderr)
        return 2
    meta.setdefault("commandId", str(uuid.uuid4()))
    meta.setdefault("correlationId", str(uuid.uuid4()))
    meta.setdefault("tenant", "default")
    topics = settings.topics
    result = await _send_and_wait(
        settings,
        topics.commands,
        command,
        None,
        topics.command_results,
        lambda r: r.get("meta", {}).get("correlationId") == meta["correlationId"],
        wait_seconds,
        meta["correlationId"],
    )
    if result is None:
        print(f"chime publish: no result within {wait_seconds} s", file=sys.stderr)
        return 2
    _print(result)
    return 1 if result.get("type") == "command.rejected" else 0


async def ack(
    settings: Settings,
    action_id: str,
    state: str,
    attempt: int,
    tenant: str,
    message: str | None,
    wait_seconds: float,
) -> int:
    """Send one action.ack and print the acker's answer: 0 applied, 1 ignored, 2 no answer."""
    body: dict[str, Any] = {
        "type": "action.ack",
        "meta": {"tenant": tenant},
        "data": {"actionId": action_id, "attempt": attempt, "state": state},
    }
    if message:
        body["data"]["message"] = message

    def answer(event: dict[str, Any]) -> bool:
        data = event.get("data", {})
        if data.get("actionId") != action_id or data.get("attempt") != attempt:
            return False
        # a duplicate's re-announcement (no previousState) is followed by its report
        return not (
            event.get("type") == "action.state-changed" and data.get("previousState") is None
        )

    topics = settings.topics
    event = await _send_and_wait(
        settings,
        topics.actions_acks,
        body,
        action_id.encode(),
        topics.actions_events,
        answer,
        wait_seconds,
        action_id,
    )
    if event is None:
        print(f"chime ack: no answer within {wait_seconds} s", file=sys.stderr)
        return 2
    _print(event)
    return 1 if event.get("type") == "action.ack-ignored" else 0


def pretty(topic: str, value: Any, headers: dict[str, str]) -> str:
    """One readable line for a message of one of Chime's topics."""
    if not isinstance(value, dict):
        reason = headers.get("chime-reason", "")
        return f"{topic}  {value!r:.80}  {reason}".rstrip()
    kind, data, meta = value.get("type", "?"), value.get("data") or {}, value.get("meta") or {}
    if kind == "action.due":
        flag = "  misfired" if data.get("misfired") else ""
        return (
            f"{kind}  {data.get('namespace')}/{data.get('name')}  {data.get('type')}  "
            f"due {data.get('dueAt')}  attempt {data.get('attempt')}  {data.get('actionId')}{flag}"
        )
    if kind.startswith("action."):
        return (
            f"{kind}  {data.get('actionId')}  attempt {data.get('attempt')}  "
            f"{data.get('previousState') or '-'} -> {data.get('state') or '-'}  "
            f"{data.get('reason') or ''}"
        ).rstrip()
    if kind == "command.rejected":
        errors = "; ".join(
            f"{e.get('field') or '-'}: {e.get('message')}" for e in value.get("errors", [])
        )
        return f"{kind}  {meta.get('correlationId')}  {errors}"
    if kind.startswith("schedule."):
        return (
            f"{kind}  {data.get('namespace')}/{data.get('name')}  {data.get('state')}  "
            f"v{data.get('version')}  next {data.get('scheduledFor')}  {meta.get('correlationId')}"
        )
    return f"{kind}  {orjson.dumps(data).decode():.120}"


async def tail(
    settings: Settings, topic: str, from_beginning: bool, limit: int, as_json: bool
) -> int:
    """Print each message: one readable line, or (`as_json`) one JSON object per line."""
    name = topic if topic.startswith(settings.topic_prefix) else settings.topic_prefix + topic
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
    )
    seen = 0
    # A partition whose offsets jump is read again from the one expected (shared/offsets.py).
    gaps = OffsetGaps(
        start=0 if from_beginning else None, read_again=settings.kafka_read_again_ms / 1000
    )
    try:
        await consumer.start()
        await _follow(consumer, name, from_beginning)
        while True:
            records, jumps = gaps.admit_fetched(await consumer.getmany(timeout_ms=500), consumer)
            await settle(jumps)
            if _show(records, as_json, limit - seen if limit else None):
                break
            seen += len(records)
    finally:
        await consumer.stop()
    return 0


async def _follow(consumer: AIOKafkaConsumer, topic: str, from_beginning: bool) -> None:
    """Read every partition of `topic` from its start, or from its end (see `_end_offsets`: on
    the embedded broker "latest" is inside the newest batch, whose other records would be
    printed as new). A topic the broker does not know yet is subscribed to, and read from
    where it begins once it exists."""
    partitions = await _partitions(consumer, topic)
    if not partitions:
        consumer.subscribe([topic])
    elif from_beginning:
        consumer.assign(partitions)
    else:
        for partition, end in (await _end_offsets(consumer, partitions)).items():
            consumer.seek(partition, end)


def _show(records: list[Any], as_json: bool, left: int | None) -> bool:
    """Print records (at most `left`); True when that limit was reached."""
    for shown, record in enumerate(records, 1):
        try:
            value = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            value = (record.value or b"").decode("utf-8", "replace")
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers}
        if as_json:
            line: dict[str, Any] = {
                "topic": record.topic,
                "key": (record.key or b"").decode("utf-8", "replace"),
                "value": value,
            }
            if headers:
                line["headers"] = headers
            print(orjson.dumps(line).decode(), flush=True)
        else:
            print(pretty(record.topic, value, headers), flush=True)
        if left is not None and shown >= left:
            return True
    return False


async def status(settings: Settings) -> int:
    """Schedules by state, what is due or in flight, and each consumer group's lag."""
    from shared.persistence.database import connect
    from shared.persistence.migrate import check_schema
    from shared.persistence.queries import load_queries

    conn = await connect(settings.database_url)
    try:
        await check_schema(conn)
        row = await conn.fetchrow(load_queries().status_report, datetime.now(UTC))
    finally:
        await conn.close()
    report: dict[str, object] = {
        "schedules": {s: n for s, n in zip(row["states"] or [], row["counts"] or [], strict=True)},
        "backlog": row["backlog"],
        "inFlight": row["in_flight"],
        "failed": row["failed"],
        "nextDue": row["next_due"].isoformat().replace("+00:00", "Z") if row["next_due"] else None,
    }
    consumed = (("scheduler", settings.topics.commands), ("acker", settings.topics.actions_acks))
    report["consumerLag"] = {
        settings.consumer_group(service): await _lag(
            settings, settings.consumer_group(service), topic
        )
        for service, topic in consumed
    }
    _print(report)
    return 0


async def _lag(settings: Settings, group: str, topic: str) -> int | None:
    """Messages of `topic` the group has not committed yet (None: the broker would not say)."""
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings), group_id=group, enable_auto_commit=False
    )
    try:
        await consumer.start()
        partitions = await _partitions(consumer, topic)
        ends = await _end_offsets(consumer, partitions)
        total = 0
        for partition in partitions:
            committed = await consumer.committed(partition)
            total += max(0, ends[partition] - (committed or 0))
        return total
    except KafkaError:
        return None
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of `topic` the cluster knows (none: the topic is not there yet)."""
    await consumer.topics()  # loads the cluster metadata
    return [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]


async def _end_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], within: float = 5.0
) -> dict[TopicPartition, int]:
    """Each partition's end: the broker's end offset, raised to the high watermark of a fetch
    of the partition's newest batch. Tansu 0.6 gives as the end offset the first offset of the
    newest batch plus one (Kafka: the last plus one); a fetch's high watermark is right on
    both. The consumer is assigned the partitions. A fetch not answered `within` seconds
    leaves the broker's end offset."""
    listed = await consumer.end_offsets(partitions)
    consumer.assign(partitions)
    for partition in partitions:
        consumer.seek(partition, max(0, listed[partition] - 1))
    waiting = [p for p in partitions if listed[p] > 0]
    deadline = asyncio.get_running_loop().time() + within
    while waiting and asyncio.get_running_loop().time() < deadline:
        await consumer.getmany(*waiting, timeout_ms=200)
        waiting = [p for p in waiting if consumer.highwater(p) is None]
    return {p: max(listed[p], consumer.highwater(p) or 0) for p in partitions}
