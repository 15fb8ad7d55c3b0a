"""Tracing: off by default; when on, spans record the correlation id Chime publishes with."""

from __future__ import annotations

from typing import Any

from faststream.kafka import TestKafkaBroker
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.messaging import Outgoing, Publisher, build_broker, publish_all
from shared.settings import Settings
from shared.tracing import tracing_middlewares

CONVERSATION = "messaging.message.conversation_id"


def test_tracing_is_off_unless_an_endpoint_is_set() -> None:
    assert tracing_middlewares(Settings(), "scheduler") == ()
    assert len(tracing_middlewares(Settings(otlp_endpoint="http://collector:4318"), "ticker")) == 1


async def test_result_spans_carry_the_commands_correlation_id() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    broker = build_broker(Settings(), "scheduler", tracer_provider=provider)

    @broker.subscriber("commands")
    async def handle(body: Any) -> None:  # a stand-in for a service answering a command
        await publish_all(broker, [Outgoing("results", b"{}", correlation_id="corr-42")])

    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish({"type": "schedule.create"}, "commands", correlation_id="corr-42")
    spans = exporter.get_finished_spans()
    published = [s for s in spans if s.attributes.get("messaging.destination.name") == "results"]
    assert published and all(s.attributes.get(CONVERSATION) == "corr-42" for s in published)
    processed = [s for s in spans if s.attributes.get("messaging.destination.name") == "commands"]
    assert any(s.attributes.get(CONVERSATION) == "corr-42" for s in processed)


async def test_with_tracing_on_a_service_publishes_through_faststream() -> None:
    """Per-message spans need FastStream's publish: the record batches are not used at all
    (nothing to connect at start, nothing to close at stop)."""
    broker = build_broker(Settings(), "scheduler")  # its spans are not what is tested here
    received: list[dict] = []

    @broker.subscriber("results")
    async def got(body: dict) -> None:
        received.append(body)

    publisher = Publisher(Settings(otlp_endpoint="http://collector:4318"), broker)
    async with TestKafkaBroker(broker):
        await publisher.start()
        await publisher.send([Outgoing("results", b'{"n":1}'), Outgoing("results", b'{"n":2}')])
        await publisher.stop()
    assert publisher.batches is None
    assert received == [{"n": 1}, {"n": 2}]
