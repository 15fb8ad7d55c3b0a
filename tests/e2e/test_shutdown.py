"""SIGTERM stops a service with exit code 0 also while it still waits for its dependencies."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from shared.embedded import free_port
from shared.settings import Settings
from tests.batches import send_as_one_batch
from tests.e2e.conftest import Bus, own_postgres
from tests.processes import Services

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("service", ["scheduler", "ticker", "acker"])
async def test_sigterm_while_dependencies_are_unreachable(service: str) -> None:
    nothing = free_port()  # nobody listens here
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "run",
        service,
        env={
            **os.environ,
            "CHIME_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{nothing}",
            "CHIME_DATABASE_URL": f"postgresql://chime@127.0.0.1:{nothing}/chime",
            "CHIME_HTTP_PORT": "0",
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 60
    while b"retrying with backoff" not in seen:  # it is in its startup retry loop
        assert time.monotonic() < deadline, seen.decode()[-2000:]
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert line, f"{service} exited on its own: {seen.decode()[-2000:]}"
        seen += line
    proc.send_signal(signal.SIGTERM)
    rest = await asyncio.wait_for(proc.stderr.read(), 20)
    assert await proc.wait() == 0, (seen + rest).decode()[-2000:]
    assert b"Traceback" not in seen + rest


async def test_sigterm_while_work_waits_for_a_stopped_database(
    settings: Settings, bus: Bus, tmp_path: Path
) -> None:
    """A command and an ack in hand, the ticker claiming, PostgreSQL stopped: each service
    leaves the work it cannot finish (uncommitted, it is redelivered) and exits 0 at once,
    instead of retrying until the shutdown grace period runs out. Meanwhile the records behind
    the work in hand show as the consumer's lag."""
    async with own_postgres(settings, tmp_path / "pg") as (pg, own):
        running = Services(own)
        services = ("scheduler", "ticker", "acker")
        await asyncio.wait_for(asyncio.gather(*(running.start(n) for n in services)), 90)
        try:
            await asyncio.to_thread(pg.stop)
            meta = {"commandId": "c-1", "correlationId": "c-1", "tenant": "acct-stop"}
            data = {
                "name": "late",
                "trigger": {"kind": "daily", "hours": 3},
                "action": {"type": "x"},
            }
            await bus.send(
                own.topics.commands, {"type": "schedule.create", "meta": meta, "data": data}
            )
            ack = {"actionId": str(uuid.uuid4()), "attempt": 1, "state": "SUCCEEDED"}
            await bus.send(
                own.topics.actions_acks,
                {"type": "action.ack", "meta": {"tenant": "acct-stop"}, "data": ack},
                b"k",
            )
            for name in services:  # each is retrying its work against the stopped database
                what = {"scheduler": b"applying commands", "acker": b"applying acks"}.get(
                    name, b"claiming due occurrences"
                )
                deadline = time.monotonic() + 60
                while what + b" failed, retrying" not in running.logs[name].read_bytes():
                    assert time.monotonic() < deadline, running.logs[name].read_text()[-2000:]
                    await asyncio.sleep(0.2)
            # what arrives behind the work in hand is counted as each consumer's lag, all of
            # it. Commands sent a record at a time, so that the scheduler's fetcher has
            # buffered the first (and fetches no more) before the next is there: the last
            # fetch's figure stops at 1. Acks sent as one batch, which the acker's fetcher
            # takes whole: Tansu's end offset counts the batch's first record only.
            for n in range(2, 5):
                behind = {**meta, "commandId": f"c-{n}", "correlationId": f"c-{n}"}
                await bus.send(
                    own.topics.commands, {"type": "schedule.create", "meta": behind, "data": data}
                )
                await asyncio.sleep(0.5)
            value = {"type": "action.ack", "meta": {"tenant": "acct-stop"}, "data": ack}
            acks = [orjson.dumps(value)] * 2
            await send_as_one_batch(bus.producer, own.topics.actions_acks, 0, acks, b"k")
            for name, topic, lag in (
                ("scheduler", own.topics.commands, 3),
                ("acker", own.topics.actions_acks, 2),
            ):
                gauge = f'chime_consumer_lag{{topic="{topic}"}} {float(lag)}'
                deadline = time.monotonic() + 30
                while gauge not in (metrics := await asyncio.to_thread(running.metrics, name)):
                    assert time.monotonic() < deadline, metrics
                    await asyncio.sleep(0.2)
            started = time.monotonic()
            codes = await asyncio.wait_for(running.stop_all(), 30)
            took = time.monotonic() - started
        finally:
            for proc in running.procs.values():
                if proc.returncode is None:
                    proc.kill()
        assert codes == dict.fromkeys(services, 0)
        assert took < 10, f"stopping took {took:.1f} s: a retry held the shutdown"
        for name in ("scheduler", "acker"):
            assert b"left as the service stops" in running.logs[name].read_bytes()


FAILING_LOOP = """
import asyncio, sys
from contextlib import asynccontextmanager
from shared.messaging import build_broker
from shared.runtime import configure_logging, keep_running, run_service, service_app
from shared.settings import Settings

configure_logging()
stop = asyncio.Event()

@asynccontextmanager
async def lifespan():
    yield

async def broken():
    await asyncio.sleep(0.2)
    raise RuntimeError("a bug in the loop")

async def start():
    keep_running(app, asyncio.create_task(broken()), "the test loop", stop)

async def drain():
    stop.set()

app = service_app(
    build_broker(Settings(), "test"), lifespan, after_startup=[start], on_shutdown=[drain]
)
sys.exit(run_service(app))
"""


async def test_a_service_whose_loop_ends_exits_1(settings: Settings) -> None:
    """What the ticker's firing loop once did after a PostgreSQL restart (an error it did not
    expect got out of it): the process stayed up and ready, and fired nothing. A loop that
    ends while the service runs now stops the service, gracefully, with exit status 1, for its
    supervisor to see (compose restarts it; `chime dev` reports it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FAILING_LOOP,
        env={**os.environ, "CHIME_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    log = stderr.decode()
    assert proc.returncode == 1, log[-2000:]
    assert "the test loop ended while the service runs" in log
    assert "a bug in the loop" in log  # the traceback is in the log
    assert "shut down gracefully" in log
