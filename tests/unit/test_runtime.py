"""A service's background loops: one that ends while the service runs stops it (exit 1)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from shared.messaging import build_broker
from shared.runtime import ServiceApp, keep_running, service_app, together
from shared.settings import Settings


@asynccontextmanager
async def nothing() -> AsyncIterator[None]:
    yield


def an_app() -> ServiceApp:
    return service_app(build_broker(Settings(), "test"), nothing)  # never started here


async def test_a_loop_that_fails_while_the_service_runs_stops_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, stop = an_app(), asyncio.Event()

    async def broken() -> None:
        raise RuntimeError("a bug in the loop")

    with caplog.at_level(logging.CRITICAL, logger="chime.app"):
        task = asyncio.create_task(broken())
        keep_running(app, task, "the test loop", stop)
        with pytest.raises(RuntimeError):
            await task
        await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
    assert app.failed == "the test loop ended"
    [record] = caplog.records
    assert record.getMessage().startswith("the test loop ended while the service runs")
    assert record.exc_info is not None and "a bug in the loop" in str(record.exc_info[1])


async def test_a_loop_that_returns_early_stops_it_too() -> None:
    app, stop = an_app(), asyncio.Event()

    async def returns() -> None:
        return None

    task = asyncio.create_task(returns())
    keep_running(app, task, "the test loop", stop)
    await task
    await asyncio.sleep(0)
    assert app.failed == "the test loop ended"


async def test_a_loop_that_ends_on_stop_is_a_normal_shutdown() -> None:
    app, stop = an_app(), asyncio.Event()

    async def until_stopped() -> None:
        await stop.wait()
        raise RuntimeError("even a failure while draining is the shutdown's business")

    task = asyncio.create_task(until_stopped())
    keep_running(app, task, "the test loop", stop)
    stop.set()
    with pytest.raises(RuntimeError):
        await task
    await asyncio.sleep(0)
    assert app.failed is None


async def test_together_returns_results_in_order_and_raises_the_first_failure_itself() -> None:
    async def after(delay: float, value: int) -> int:
        await asyncio.sleep(delay)
        return value

    assert await together([after(0.02, 1), after(0, 2), after(0.01, 3)]) == [1, 2, 3]

    cancelled = asyncio.Event()

    async def slow() -> int:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    async def broken() -> int:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError, match="gone"):  # itself, not an ExceptionGroup
        await together([slow(), broken()])
    assert cancelled.is_set()
