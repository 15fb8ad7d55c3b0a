"""Composition root of the scheduler: settings -> pool -> service -> broker -> app."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson
from aiokafka import ConsumerRecord
from faststream import FastStream

from services.scheduler.commands import Context, apply_command, rejected_result
from services.scheduler.creates import apply_creates
from shared.auth import Authenticator, command_scope
from shared.clock import Clock
from shared.contracts import COMMAND_TYPES, CommandEnvelope, CommandResult, ErrorItem
from shared.contracts.common import NUL_REFUSED, ROUNDED, nul_path, rounded_path
from shared.messaging import Outgoing, dead_letter, json_message, retry_forever, too_large
from shared.metrics import count_each
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
        self.auth = Authenticator.from_settings(settings)
        self.max_bytes = settings.max_message_bytes
        # tenants' runs of creates at once, each on a connection of its own (one stays with
        # the batch's transaction)
        self.concurrency = settings.database_pool_size - 1

    async def handle(self, records: list[ConsumerRecord]) -> list[Outgoing]:
        out: list[Outgoing] = []
        decoded: list[tuple[dict[str, Any], ErrorItem | None]] = []
        for record in records:
            if (oversized := too_large(record, self.max_bytes, self.topics.dlq)) is not None:
                out.append(oversized)
                continue
            try:
                body = orjson.loads(record.value or b"")
            except orjson.JSONDecodeError as exc:
                out.append(dead_letter(record, f"not JSON: {exc}", self.topics.dlq))
                continue
            if not isinstance(body, dict):
                out.append(dead_letter(record, "a command must be a JSON object", self.topics.dlq))
                continue
            decoded.append((body, self._refused(record, body) or _unstorable(record, body)))
        if decoded:
            results = await retry_forever(
                "applying commands",
                lambda: self._apply(decoded),
                self.runtime.set_dependencies_ok,
                stop=self.runtime.stopping,
            )
            out.extend(results)
        self.runtime.metrics.dlq.labels("scheduler").inc(len(records) - len(decoded))
        return out

    def _refused(self, record: ConsumerRecord, body: dict[str, Any]) -> ErrorItem | None:
        """Why the sender may not send this command, if it may not."""
        if self.auth is None:
            return None
        meta = body.get("meta")
        tenant = meta.get("tenant") if isinstance(meta, dict) else None
        kind = body.get("type")
        what = kind[:64] if isinstance(kind, str) else "a command"
        denied = self.auth.check(record.headers, tenant, command_scope(kind), what)
        if denied is None:
            return None
        return ErrorItem(code=denied.code, message=denied.message, field=denied.field)

    async def _results(
        self, conn: Any, bodies: list[tuple[dict[str, Any], ErrorItem | None]]
    ) -> list[dict[str, Any]]:
        """One result per body, in order; runs of consecutive creates are applied in bulk.

        A run's tenants are applied at once, in transactions of their own, only while the
        batch's transaction has written nothing: a create waiting for a row that transaction
        holds (a command id it recorded, reused by mistake) would wait for a commit that waits
        for the create."""
        results: list[dict[str, Any]] = []
        run: list[dict[str, Any]] = []
        untouched = True  # nothing written yet in the batch's transaction
        for body, refused in [*bodies, (None, None)]:
            if body is not None and refused is None and body.get("type") == "schedule.create":
                run.append(body)
                continue
            if run:
                pool = self.pool if untouched else None
                results += await apply_creates(
                    conn, run, self.clock.now(), self.context, pool, self.concurrency
                )
                run, untouched = [], False
            if body is None:
                break
            if refused is None:
                results.append(await apply_command(conn, body, self.clock.now(), self.context))
                untouched = False
            else:  # refused before reading the database: nothing changes
                results.append(rejected_result(body, [refused], self.clock.now()))
        return results

    async def _apply(self, bodies: list[tuple[dict[str, Any], ErrorItem | None]]) -> list[Outgoing]:
        out = []
        outcomes: list[tuple[str, str]] = []  # (command type, result type) of each
        async with self.pool.acquire() as conn, conn.transaction():
            for (body, _), result in zip(bodies, await self._results(conn, bodies), strict=True):
                data = result.get("data") or {}
                key = data.get("id") or (result["meta"].get("correlationId"))
                outcomes.append((_type_label(body.get("type")), result["type"]))
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
        count_each(self.runtime.metrics.commands, outcomes)  # once the batch has committed
        return out


def _type_label(kind: Any) -> str:
    """A command's type as the `chime_commands_total` label: one of the types, or "other".
    Each label value is a series the service keeps for good: a type taken as sent made one per
    distinct text, and a sender of random types grew the scheduler's memory and every scrape
    without bound."""
    return kind if kind in COMMAND_TYPES else "other"


def _unstorable(record: ConsumerRecord, body: dict[str, Any]) -> ErrorItem | None:
    """A command with a NUL character in any text: refused before the database, which cannot
    store one (JSON writes it `\\u0000`; a record without that sequence is not walked). And one
    with a whole number that orjson read rounded: refused rather than stored changed."""
    raw = record.value or b""
    if (where := rounded_path(raw)) is not None:
        what = where.rsplit(".", 1)[-1]
        return ErrorItem(code="VALIDATION", message=f"{what} {ROUNDED}", field=where)
    if b"\\u0000" not in raw or (where := nul_path(body)) is None:
        return None
    what = where.rsplit(".", 1)[-1] or "a key"
    return ErrorItem(code="VALIDATION", message=f"{what} {NUL_REFUSED}", field=where or None)


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
