"""Kafka plumbing shared by the services: broker factory, topic set-up, outgoing messages,
dead letters, and the retry loop that keeps a consumer from losing a batch."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from murmurhash2 import murmurhash2

from shared.settings import Settings
from shared.tracing import tracing_middlewares

__all__ = [
    "LARGEST_MESSAGE",
    "BatchSender",
    "Outgoing",
    "Publisher",
    "Stopping",
    "build_broker",
    "compression",
    "dead_letter",
    "ensure_topics",
    "is_fault",
    "is_transient",
    "json_message",
    "kafka_client_options",
    "kafka_security",
    "murmur2",
    "publish_all",
    "publishing_may_heal",
    "retry_forever",
    "too_large",
]

log = logging.getLogger("chime.messaging")
T = TypeVar("T")
JSON_HEADERS = {"content-type": "application/json"}
_JSON_HEADERS_ENCODED = [(k, v.encode()) for k, v in JSON_HEADERS.items()]


@dataclass(slots=True)
class Outgoing:
    """One message to publish after the transaction that produced it has committed.

    Not frozen (nothing changes one once made): one is made for every message, and a frozen
    dataclass sets each field through `object.__setattr__` (2.1 us a message against 0.8;
    3.9 % of the ticker's samples and 3.3 % of the acker's went there)."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))
    correlation_id: str | None = None  # traced as the conversation id
    kind: str | None = None  # an event's `type`, for the caller's metrics (not sent)


def json_message(
    topic: str, body: Any, key: str | None = None, correlation_id: str | None = None
) -> Outgoing:
    return Outgoing(
        topic, orjson.dumps(body), key.encode() if key else None, correlation_id=correlation_id
    )


def too_large(record: ConsumerRecord, limit: int, dlq_topic: str) -> Outgoing | None:
    """The dead letter for a record over `limit` bytes (left unread), or None."""
    size = len(record.value or b"")
    if size <= limit:
        return None
    return dead_letter(
        record, f"message of {size} bytes exceeds max_message_bytes ({limit})", dlq_topic
    )


# The most bytes Chime passes on in a message of what it was given. A broker at Kafka's default
# takes a record batch of 1,048,588 bytes, headers and all, and refuses a larger one for good: a
# dead letter carries at most this much of its record (one that came in just under the broker's
# limit, dead-lettered whole with Chime's headers, was refused on the way out), the ticker does
# not send an action.due past it (payloads stored before they were held to 256 KiB), and a
# definition is at most this much as stored (its command's result carries it, with ~10 KB more).
LARGEST_MESSAGE = 1_000_000
REASON_LIMIT = 1000  # bytes of `chime-reason`, as written (non-ASCII escaped)


def dead_letter(record: ConsumerRecord, reason: str, dlq_topic: str) -> Outgoing:
    """The original bytes, untouched, with why and where they came from in headers; past
    LARGEST_MESSAGE, their first part (`chime-truncated-from`: the size they had; the
    whole stays on the source topic at the offset named)."""
    log.warning(
        "dead-lettered a record: %s",
        reason[:200],
        extra={
            "topic": record.topic,
            "reason": reason[:200],
        },
    )
    value = record.value or b""
    headers = {
        "chime-reason": reason[:REASON_LIMIT]
        .encode("ascii", "backslashreplace")
        .decode()[:REASON_LIMIT],
        "chime-source-topic": record.topic,
        "chime-source-partition": str(record.partition),
        "chime-source-offset": str(record.offset),
    }
    if len(value) > LARGEST_MESSAGE:
        headers["chime-truncated-from"] = str(len(value))
        value = value[:LARGEST_MESSAGE]
    return Outgoing(dlq_topic, value, record.key, headers)


def kafka_security(settings: Settings) -> BaseSecurity | None:
    """TLS and SASL for every Kafka client of Chime, from `kafka_*` settings."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            password = settings.kafka_ssl_key_password
            context.load_cert_chain(
                settings.kafka_ssl_certfile,
                settings.kafka_ssl_keyfile,
                password.get_secret_value() if password else None,
            )
    if protocol == "SSL":
        return BaseSecurity(ssl_context=context, use_ssl=True)
    if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
        raise ValueError(
            f"kafka_security_protocol {protocol} needs kafka_sasl_username and "
            "kafka_sasl_password (CHIME_KAFKA_SASL_PASSWORD or CHIME_KAFKA_SASL_PASSWORD_FILE)"
        )
    sasl = {
        "PLAIN": SASLPlaintext,
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
    }[settings.kafka_sasl_mechanism]
    return sasl(
        settings.kafka_sasl_username,
        settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=protocol == "SASL_SSL",
    )


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for a plain aiokafka client (admin, CLI, probes): servers + security."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        **parse_security(kafka_security(settings)),
    }


def compression(settings: Settings) -> Literal["gzip", "snappy", "lz4", "zstd"] | None:
    """The codec Chime's producers compress record batches with (None: uncompressed)."""
    return None if settings.kafka_compression == "none" else settings.kafka_compression


def build_broker(
    settings: Settings, service: str, tracer_provider: Any = None, **kwargs: Any
) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        security=kafka_security(settings),
        middlewares=tracing_middlewares(settings, service, tracer_provider),
        client_id="chime",
        acks="all",
        linger_ms=1,
        max_request_size=20 * 1024 * 1024,
        compression_type=compression(settings),
        logger=logging.getLogger("chime.kafka"),
        **kwargs,
    )


async def ensure_topics(settings: Settings, topics: Sequence[str] | None = None) -> None:
    """Create Chime's topics with explicit partition counts; existing ones are left alone."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in (topics or settings.topics.all()) if t not in existing]
        if wanted:
            try:
                await admin.create_topics(
                    [NewTopic(t, settings.topic_partitions, 1) for t in wanted]
                )
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def publish_all(broker: KafkaBroker, messages: Sequence[Outgoing]) -> None:
    """Send every message and wait for all acknowledgements (pipelined, not one by one)."""
    if not messages:
        return
    futures = [
        await broker.publish(
            m.value,
            m.topic,
            key=m.key,
            headers=m.headers,
            correlation_id=m.correlation_id,
            no_confirm=True,
        )
        for m in messages
    ]
    # real brokers return delivery futures; FastStream's TestKafkaBroker delivers at once
    await asyncio.gather(*(f for f in futures if inspect.isawaitable(f)))


_MURMUR2_SEED = 0x9747B28C  # the Java client's


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of a key: the Java client's `Utils.murmur2` as an unsigned 32-bit value,
    equal to aiokafka's `murmur2` (tests/unit/test_partitioner.py holds it to both). Computed by
    the `murmurhash2` extension: 0.16 us for a 36-byte key, where the fastest pure Python of it
    took 2.7 and aiokafka's 10, and every result the scheduler publishes has a key of its own
    (bench/README.md, profile notes)."""
    return murmurhash2(data, _MURMUR2_SEED)


class BatchSender:
    """Publishes a round of messages in few record batches: grouped per topic partition, with
    one delivery future per batch instead of one per message.

    The ticker's hot path when tracing is off (per-message spans need FastStream's publish).
    Records carry what FastStream would write: the headers, `correlation_id`, and the
    partition of Kafka's default partitioner (murmur2 of the key).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("BatchSender.start() first")
        return self._producer

    async def start(self) -> None:
        """Connect (aiokafka creates its producer inside the running loop)."""
        producer = AIOKafkaProducer(
            **kafka_client_options(self.settings),
            client_id="chime",
            acks="all",
            linger_ms=1,
            # a round's part as one batch a partition: the embedded broker charges per batch
            # (64 KiB batches doubled its CPU a fire; bench/README.md, profile notes)
            max_batch_size=1024 * 1024,
            max_request_size=20 * 1024 * 1024,
            compression_type=compression(self.settings),
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # a failed start leaves connections and tasks to close
            raise
        self._producer = producer

    async def stop(self) -> None:
        await self.producer.stop()

    async def _partitions_of(self, topic: str) -> int:
        count = self._partitions[topic] = len(await self.producer.partitions_for(topic))
        return count

    def _partition(self, count: int, key: bytes | None) -> int:
        if key is None:
            return random.randrange(count)
        return (murmur2(key) & 0x7FFFFFFF) % count

    async def send(self, messages: Sequence[Outgoing]) -> None:
        """Send every message; return when the broker has acknowledged all of them."""
        futures = []
        batches: dict[tuple[str, int], Any] = {}
        for m in messages:
            count = self._partitions.get(m.topic)
            if count is None:  # once per topic: no coroutine awaited per message
                count = await self._partitions_of(m.topic)
            where = (m.topic, self._partition(count, m.key))
            if m.headers == JSON_HEADERS:  # nearly every message: encoded once
                headers = list(_JSON_HEADERS_ENCODED)
            else:
                headers = [(k, v.encode()) for k, v in m.headers.items()]
            if m.correlation_id is not None:
                headers.append(("correlation_id", m.correlation_id.encode()))
            batch = batches.get(where)
            if batch is None:
                batch = batches[where] = self.producer.create_batch()
            if batch.append(key=m.key, value=m.value, timestamp=None, headers=headers) is None:
                futures.append(await self.producer.send_batch(batch, m.topic, partition=where[1]))
                batch = batches[where] = self.producer.create_batch()
                if batch.append(key=m.key, value=m.value, timestamp=None, headers=headers) is None:
                    raise ValueError(f"a message of {len(m.value)} bytes exceeds the batch size")
        for (topic, partition), batch in batches.items():
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)


class Publisher:
    """Where a service's messages go: record batches (`BatchSender`) or, when tracing is on,
    FastStream's per-message publish, so that each message gets its span."""

    def __init__(self, settings: Settings, broker: KafkaBroker) -> None:
        self.broker = broker
        self.batches = None if settings.otlp_endpoint else BatchSender(settings)

    async def start(self) -> None:
        if self.batches is not None:
            await retry_forever("connecting the producer", self.batches.start)

    async def stop(self) -> None:
        if self.batches is not None:
            await self.batches.stop()

    async def send(self, messages: Sequence[Outgoing]) -> None:
        """Send every message; return when the broker has acknowledged all of them."""
        if self.batches is None:
            await publish_all(self.broker, messages)
        else:
            await self.batches.send(messages)


class Stopping(Exception):
    """A retry given up because the service is stopping (see `retry_forever`'s `stop`)."""


async def retry_forever(
    what: str,
    action: Callable[[], Awaitable[T]],
    on_state: Callable[[bool], None] | None = None,
    first_delay: float = 0.1,
    max_delay: float = 5.0,
    stop: asyncio.Event | None = None,
    may_heal: Callable[[BaseException], bool] = lambda exc: is_transient(exc),
) -> T:
    """Run `action` until it succeeds, backing off; log once when failing, once when healed.
    An error `may_heal` does not take (by default: one that is not an outage) is raised.

    A consumer calls this around a batch so that an unreachable database delays the batch
    instead of skipping it: the offset is committed only after it succeeds. With `stop`, a
    failing action is not tried again once `stop` is set: `Stopping` is raised instead (a
    service asked to stop while its database is down must not wait for it).
    """
    delay = first_delay
    failing = False
    while True:
        try:
            result = await action()
        except Exception as exc:
            if not may_heal(exc):
                if failing and on_state:
                    on_state(True)  # it answered: reachable again, whatever went wrong
                raise
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if failing:
                log.warning("%s: recovered", what)
                if on_state:
                    on_state(True)
            return result
        if not failing:
            log.error("%s failed, retrying with backoff: %s", what, reason)
            failing = True
            if on_state:
                on_state(False)
        if not gc.isenabled():
            # a consumer's run pauses the collector (runtime.collector_paused): what each
            # failed attempt left in cycles (tracebacks, half-made connections) would pile up
            # for as long as the dependency stays down
            gc.collect()
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                raise Stopping(f"{what}: left as the service stops ({reason})")
        delay = min(delay * 2, max_delay)


def is_fault(exc: BaseException) -> bool:
    """Neither a dependency out of reach for now nor a service stopping: a fault met on this
    input, to answer (or dead-letter) rather than retry for ever."""
    return not (is_transient(exc) or isinstance(exc, Stopping))


def publishing_may_heal(exc: BaseException) -> bool:
    """Worth publishing again later: an outage, and any error of the broker's. One it refuses
    a message with (larger than its limit, a topic the service may not write to) is for an
    operator to mend; meanwhile the batch waits, the service not ready. Raised, the batch
    would be rewound, read again at once and applied again (as replays) in a loop as fast as
    the database answers, a traceback each time."""
    return isinstance(exc, KafkaError) or is_transient(exc)


def is_transient(exc: BaseException) -> bool:
    """A dependency that is unreachable for now (database or broker): retry, do not answer.

    asyncpg's `InternalClientError` counts: when PostgreSQL shuts down, a backend's last
    message (its FATAL error) can reach an idle pooled connection just before the socket
    closes, and a statement started on it in between fails with "cannot switch to state 12;
    another operation (2) is in progress" (asyncpg issues #784, #1069; about once per restart
    under load here). The pool terminates that connection; the next attempt gets a new one.
    """
    import asyncpg

    if isinstance(exc, KafkaError):
        return exc.retriable or isinstance(exc, KafkaTimeoutError)
    return isinstance(
        exc,
        TimeoutError
        | OSError
        | ConnectionError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | asyncpg.AdminShutdownError
        | asyncpg.SerializationError
        | asyncpg.DeadlockDetectedError,
    )
