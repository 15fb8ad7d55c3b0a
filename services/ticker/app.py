"""Composition root of the ticker: settings -> pool + LISTEN -> Ticker (+ Retention) -> broker
-> app."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

import asyncpg
from faststream import FastStream

from services.dashboard.api import dashboard_routes
from services.ticker.engine import ROUNDS_IN_FLIGHT, Ticker
from services.ticker.retention import Retention
from shared.clock import Clock, SystemClock
from shared.contracts import ActionDue, ActionEvent
from shared.messaging import Publisher, build_broker, ensure_topics, is_transient, retry_forever
from shared.persistence.database import ALL_TENANTS, connect, create_pool
from shared.persistence.migrate import check_schema
from shared.runtime import (
    Publishes,
    ServiceRuntime,
    declare_publishers,
    keep_running,
    service_app,
)
from shared.settings import Settings

__all__ = ["build_app"]

log = logging.getLogger("chime.ticker")


async def _listen(settings: Settings, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Keep a LISTEN connection open (reconnecting) and turn NOTIFYs into wake-ups."""
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await connect(settings.database_url)
            await conn.add_listener("chime_due", lambda *_: wake.set())
            wake.set()  # anything may have been inserted while we were not listening
            while not stop.is_set() and not conn.is_closed():
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        except Exception as exc:  # whatever ends it, listen again: wake-ups must not stop
            if not is_transient(exc):
                log.warning(
                    "LISTEN connection failed, reconnecting: %s: %s", type(exc).__name__, exc
                )
            await asyncio.sleep(1.0)
        finally:
            if conn is not None and not conn.is_closed():
                try:
                    await conn.close(timeout=5)
                except Exception:
                    conn.terminate()


def build_app(settings: Settings, clock: Clock | None = None) -> FastStream:
    clock = clock or SystemClock()
    runtime = ServiceRuntime("ticker", settings)
    broker = build_broker(settings, "ticker")
    topics = settings.topics
    declare_publishers(
        broker,
        [
            Publishes(topics.actions_due, ActionDue, "One per due occurrence and attempt."),
            Publishes(topics.actions_events, ActionEvent, "Occurrences skipped by a condition."),
        ],
    )
    stop, wake = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    pools: list[asyncpg.Pool] = []
    claimer = settings.ticker_id or f"{socket.gethostname()}:{os.getpid()}"

    publisher = Publisher(settings, broker)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await retry_forever("creating topics", lambda: ensure_topics(settings))
        pools.append(
            await retry_forever(
                "connecting to PostgreSQL",
                # a connection for each round in flight and the one being claimed, each
                # holding its claim's transaction, beside the rest of the ticker's work
                lambda: create_pool(
                    settings.database_url,
                    settings.database_pool_size + ROUNDS_IN_FLIGHT + 1,
                    ALL_TENANTS,
                    f"chime-ticker {claimer}",
                ),
            )
        )
        await retry_forever("checking the database's schema", lambda: check_schema(pools[0]))
        await publisher.start()
        await runtime.start_http()
        runtime.watch(pools[0])
        try:
            yield
        finally:
            await runtime.stop()
            await publisher.stop()
            await pools[0].close()

    def start(loop: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.create_task(loop)
        keep_running(app, task, what, stop)
        tasks.append(task)

    async def start_loops() -> None:
        # After the broker started: the loop publishes through it.
        ticker = Ticker(pools[0], publisher.send, settings, clock, runtime.metrics)
        runtime.metrics.on_scrape(ticker.refresh_backlog)
        runtime.http.routes.update(dashboard_routes(pools[0], clock))
        start(_listen(settings, wake, stop), "the LISTEN loop")
        start(ticker.run(stop, wake, runtime.set_dependencies_ok), "the firing loop")
        if settings.retention_days is not None:
            keep = timedelta(days=settings.retention_days)
            retention = Retention(pools[0], keep, clock, runtime.metrics)
            start(retention.run(stop, runtime.set_dependencies_ok), "the retention loop")
        await runtime.mark_started()

    async def drain_loops() -> None:
        # Before the broker stops: finish the round in flight (publish + mark), then exit.
        stop.set()
        for task in tasks:
            try:
                await asyncio.wait_for(task, 30)
            except (asyncio.CancelledError, TimeoutError):
                log.warning("ticker loop did not drain in time")
            except Exception:
                pass  # it ended before: logged then (keep_running), and the service exits 1

    app = service_app(broker, lifespan, after_startup=[start_loops], on_shutdown=[drain_loops])
    return app
