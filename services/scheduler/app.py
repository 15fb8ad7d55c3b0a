"""Composition root of the scheduler: settings -> pool -> service -> broker -> app."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson
from aiokafka import ConsumerRecord
from faststream import FastStream

from services.scheduler.commands import Context, apply_command
from shared.clock import Clock
from shared.contracts import CommandEnvelope, CommandResult
from shared.messaging import Outgoing, dead_letter, json_message, retry_forever
from shared.runtime import Consumes, Publishes, ServiceRuntime, consumer_app
from shared.settings import Settings

__all__ = ["CommandConsumer", "build_app"]

log = logging.getLogger("chime.scheduler")


class CommandConsumer:
    """Turns a batch of raw command records into results and dead letters."""

    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, clock: Clock, runtime: ServiceRuntime
    ):
        self.pool, self.clock, self.runtime = pool, clock, runtime
        self.topics = settings.topics
        self.context = Context(action_topics=settings.action_topic_allow_list)

    async def handle(self, records: list[ConsumerRecord]) -> list[Outgoing]:
        out: list[Outgoing] = []
        decoded: list[dict[str, Any]] = []
        for record in records:
            try:
                body = orjson.loads(record.value or b"")
            except orjson.JSONDecodeError as exc:
                out.append(dead_letter(record, f"not JSON: {exc}", self.topics.dlq))
                continue
            if not isinstance(body, dict):
                out.append(dead_letter(record, "a command must be a JSON object", self.topics.dlq))
                continue
            decoded.append(body)
        if decoded:
            results = await retry_forever(
                "applying commands", lambda: self._apply(decoded), self.runtime.set_dependencies_ok
            )
            out.extend(results)
        self.runtime.metrics.dlq.labels("scheduler").inc(len(records) - len(decoded))
        return out

    async def _apply(self, bodies: list[dict[str, Any]]) -> list[Outgoing]:
        out = []
        async with self.pool.acquire() as conn, conn.transaction():
            for body in bodies:
                result = await apply_command(conn, body, self.clock.now(), self.context)
                data = result.get("data") or {}
                key = data.get("id") or (result["meta"].get("correlationId"))
                kind = str(body.get("type"))[:64]
                self.runtime.metrics.commands.labels(kind, result["type"]).inc()
                correlation = result["meta"].get("correlationId")
                if result["type"] == "command.rejected":
                    first = result["errors"][0]
                    log.info(
                        "command rejected: %s",
                        first["message"],
                        extra={
                            "correlationId": correlation,
                            "commandId": result["meta"].get("commandId"),
                            "tenant": result["meta"].get("tenant"),
                            "code": first["code"],
                            "field": first.get("field"),
                        },
                    )
                out.append(json_message(self.topics.command_results, result, key, correlation))
        return out


def build_app(settings: Settings, clock: Clock | None = None) -> FastStream:
    topics = settings.topics
    return consumer_app(
        "scheduler",
        settings,
        Consumes(topics.commands, CommandEnvelope, "Schedule commands from any producer."),
        CommandConsumer,
        clock,
        publishes=[
            Publishes(topics.command_results, CommandResult, "One result per command."),
            Publishes(topics.dlq, None, "Records that are not JSON objects, with chime-reason."),
        ],
    )
