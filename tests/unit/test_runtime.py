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
    first_done, second_done = asyncio.Event(), asyncio.Event()

    async def first() -> int:  # finishes last
        await second_done.wait()
        return 1

    async def second() -> int:  # finishes in between
        await first_done.wait()
        second_done.set()
        return 2

    async def third() -> int:  # finishes first
        first_done.set()
        return 3

    assert await together([first(), second(), third()]) == [1, 2, 3]

    cancelled, never = asyncio.Event(), asyncio.Event()

    async def waiting() -> int:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    async def broken() -> int:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError, match="gone"):  # itself, not an ExceptionGroup
        await together([waiting(), broken()])
    assert cancelled.is_set()
