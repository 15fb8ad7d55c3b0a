"""Composition root of the acker: settings -> pool -> broker -> app."""

from __future__ import annotations

import logging
import random

import asyncpg
import orjson
from aiokafka import ConsumerRecord
from faststream import FastStream
from pydantic import ValidationError

from services.acker.acks import apply_acks_in_parts, parts_of, refuse_ack
from shared.auth import SCOPE_ACK, Authenticator
from shared.clock import Clock
from shared.contracts import ActionAck, ActionEvent, errors_from_validation
from shared.contracts.common import ROUNDED, rounded_path
from shared.messaging import Outgoing, dead_letter, is_fault, retry_forever, too_large
from shared.metrics import count_each
from shared.runtime import Consumes, Publishes, ServiceRuntime, consumer_app
from shared.settings import Settings

__all__ = ["AckConsumer", "build_app"]

log = logging.getLogger("chime.acker")


class AckConsumer:
    """Turns a batch of raw ack records into state events and dead letters."""

    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, clock: Clock, runtime: ServiceRuntime
    ):
        self.pool, self.clock, self.runtime = pool, clock, runtime
        self.topics = settings.topics
        self.rand = random.random  # retry jitter
        self.auth = Authenticator.from_settings(settings)
        self.max_bytes = settings.max_message_bytes
        # parts of a batch applied at once, each on a connection of its own (one is left for
        # the readiness check)
        self.parts = max(1, settings.database_pool_size - 1)

    async def handle(self, records: list[ConsumerRecord]) -> list[Outgoing]:
        out: list[Outgoing] = []
        acks: list[ActionAck] = []
        sources: list[ConsumerRecord] = []  # the record of each ack
        for record in records:
            if (oversized := too_large(record, self.max_bytes, self.topics.dlq)) is not None:
                out.append(oversized)
                continue
            if (where := rounded_path(record.value or b"")) is not None:
                reason = f"not an action.ack: {where} {ROUNDED}"
                out.append(dead_letter(record, reason, self.topics.dlq))
                continue
            try:
                ack = ActionAck.model_validate(orjson.loads(record.value or b""))
            except orjson.JSONDecodeError as exc:
                out.append(dead_letter(record, f"not JSON: {exc}", self.topics.dlq))
                continue
            except ValidationError as exc:
                reason = "; ".join(f"{e.field}: {e.message}" for e in errors_from_validation(exc))
                out.append(dead_letter(record, f"not an action.ack: {reason}", self.topics.dlq))
                continue
            denied = self.auth and self.auth.check(
                record.headers, ack.meta.tenant, SCOPE_ACK, "an ack"
            )
            if denied:
                log.info(
                    "ack refused: %s",
                    denied.message,
                    extra={"actionId": ack.data.action_id, "tenant": ack.meta.tenant},
                )
                self.runtime.metrics.acks.labels(ack.data.state, "action.ack-ignored").inc()
                out.append(
                    refuse_ack(ack, denied.code, denied.message, self.clock.now(), self.topics)
                )
                continue
            acks.append(ack)
            sources.append(record)
        if acks:
            try:
                out.extend(await self._applied("applying acks", acks))
            except Exception as exc:
                if not is_fault(exc):
                    raise
                # A fault of the acker's own (the batch would be delivered again, and fail
                # again, for ever): each ack alone, and the one it fails on to the DLQ.
                log.exception("a batch of acks failed; applying them one at a time")
                out.extend(await self._one_at_a_time(acks, sources))
        self.runtime.metrics.dlq.labels("acker").inc(sum(o.topic == self.topics.dlq for o in out))
        return out

    async def _applied(self, what: str, acks: list[ActionAck]) -> list[Outgoing]:
        return await retry_forever(
            what,
            lambda: self._apply(acks),
            self.runtime.set_dependencies_ok,
            stop=self.runtime.stopping,
        )

    async def _one_at_a_time(
        self, acks: list[ActionAck], sources: list[ConsumerRecord]
    ) -> list[Outgoing]:
        out: list[Outgoing] = []
        for ack, record in zip(acks, sources, strict=True):
            try:
                out.extend(await self._applied("applying an ack", [ack]))
            except Exception as exc:
                if not is_fault(exc):
                    raise
                log.exception("the acker failed on an ack", extra={"actionId": ack.data.action_id})
                reason = f"the acker failed on it ({type(exc).__name__}: a fault in Chime, logged)"
                out.append(dead_letter(record, reason, self.topics.dlq))
        return out

    async def _apply(self, acks: list[ActionAck]) -> list[Outgoing]:
        per_ack = await apply_acks_in_parts(
            self.pool,
            acks,
            parts_of(acks, self.parts),
            self.clock.now(),
            self.topics,
            self.rand,
            self.runtime.metrics,
        )
        count_each(
            self.runtime.metrics.acks,
            ((ack.data.state, events[0].kind) for ack, events in zip(acks, per_ack, strict=True)),
        )
        return [event for events in per_ack for event in events]


def build_app(settings: Settings, clock: Clock | None = None) -> FastStream:
    topics = settings.topics
    return consumer_app(
        "acker",
        settings,
        Consumes(topics.actions_acks, ActionAck, "Acknowledgements from workers."),
        AckConsumer,
        clock,
        publishes=[
            Publishes(topics.actions_events, ActionEvent, "State changes and ignored acks."),
            Publishes(topics.dlq, None, "Acks that are not valid action.ack, with chime-reason."),
        ],
    )
