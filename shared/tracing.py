"""OpenTelemetry tracing through FastStream's Kafka middleware; off unless an OTLP endpoint is
configured. Every message Chime publishes carries a correlation id (a command's
correlationId on its result; the actionId on action.due and on every event about the action),
which the spans record as `messaging.message.conversation_id`."""

from __future__ import annotations

from typing import Any

from shared.settings import Settings

__all__ = ["tracing_middlewares"]


def tracing_middlewares(
    settings: Settings, service: str, tracer_provider: Any = None
) -> tuple[Any, ...]:
    """The broker middlewares for tracing: none unless `CHIME_OTLP_ENDPOINT` is set (or a
    provider is given, as tests do)."""
    if tracer_provider is None:
        if not settings.otlp_endpoint:
            return ()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(
            resource=Resource.create({"service.name": f"chime-{service}"})
        )
        endpoint = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

    return (KafkaTelemetryMiddleware(tracer_provider=tracer_provider),)
