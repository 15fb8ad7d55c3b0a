"""The harness that runs services and servers for the end-to-end tests and the benchmarks
(`tests.processes.Services`, `tests.servers`) leaves none behind: not when the block using it
fails, not when the process that started them is killed. (Four schedulers left by failed
benchmark runs once took an eighth of a core from every measurement after them.)"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.integration.helpers import until
from tests.processes import Services, alive, ended

pytestmark = pytest.mark.e2e

# A parent that starts a ticker, says its pid and log folder, and waits to be killed.
PARENT = """
import asyncio
from shared.settings import Settings
from tests.processes import Services

async def main():
    running = Services(Settings())
    await running.start("ticker")
    print(running.procs["ticker"].pid, running.logdir, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


# A parent that starts the embedded servers as the test session and the benchmarks do, says
# where they listen, and waits to be killed.
SERVERS = """
import time
from tests.servers import kafka_server, postgres_server

with postgres_server() as pg, kafka_server() as (bootstrap, _):
    print(pg.url, bootstrap, flush=True)
    time.sleep(3600)
"""


async def test_a_failing_block_stops_its_services_and_keeps_their_logs(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(RuntimeError, match="the block failed"):
        async with Services(settings, tidy=True) as running:
            await running.start("ticker")
            proc = running.procs["ticker"]
            raise RuntimeError("the block failed")
    assert proc.returncode == 0  # stopped with SIGTERM, cleanly
    assert (running.logdir / "ticker.log").exists()
    assert f"service logs kept in {running.logdir}" in capsys.readouterr().err


async def test_a_tidy_block_that_ends_well_removes_its_logs(settings: Settings) -> None:
    """What a benchmark run leaves: nothing (each run once left a folder of logs in /tmp)."""
    async with Services(settings, tidy=True) as running:
        await running.start("ticker")
        assert (running.logdir / "ticker.log").exists()
    assert running.procs["ticker"].returncode == 0
    assert not running.logdir.exists()


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
async def test_services_end_when_the_process_that_started_them_is_killed(
    settings: Settings,
) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PARENT,
        env={**os.environ, **settings.to_env(), "CHIME_HTTP_PORT": "0"},
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert parent.stdout is not None
    said = (await asyncio.wait_for(parent.stdout.readline(), 90)).decode().split()
    ticker, logdir = int(said[0]), Path(said[1])
    assert alive(ticker)
    parent.send_signal(signal.SIGKILL)
    await parent.wait()
    try:
        await until(ended(ticker), timeout=30, every=0.1)  # else it outlived its parent
    finally:
        if alive(ticker):
            os.kill(ticker, signal.SIGKILL)
        shutil.rmtree(logdir)  # its parent, killed, could not


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
async def test_the_embedded_servers_end_when_the_process_that_started_them_is_killed() -> None:
    """A test run or a benchmark killed outright (a timeout's SIGTERM, which Python does not
    handle) once left its PostgreSQL and Tansu running."""
    from bench.common import listening_pid, postmaster_pid

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CHIME_DATABASE_URL", "CHIME_KAFKA_BOOTSTRAP_SERVERS")
    }
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVERS,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert parent.stdout is not None
    url, bootstrap = (await asyncio.wait_for(parent.stdout.readline(), 90)).decode().split()
    postgres, broker = await postmaster_pid(url), listening_pid(bootstrap)
    assert postgres is not None and broker is not None
    data = Path(Path(f"/proc/{postgres}/cmdline").read_bytes().split(b"\0")[2].decode())
    parent.send_signal(signal.SIGTERM)
    await parent.wait()
    try:
        await until(ended(postgres, broker), timeout=30, every=0.1)  # else they outlived it
    finally:
        for pid in (postgres, broker):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(data.parent)  # its parent, killed, could not


async def test_the_bus_reads_again_what_its_consumer_stepped_over() -> None:
    """A fetch served a later batch before an earlier one was stored (offsets 2-3 below, the
    embedded broker's race: shared/offsets.py), and the next one too: the bus notes the jumps
    and reads the partition again from the offset expected until the batch comes, so that it
    receives every record once."""
    from aiokafka import ConsumerRecord, TopicPartition

    from tests.e2e.conftest import Bus, _collect

    def record(offset: int) -> ConsumerRecord:
        return ConsumerRecord("due", 0, offset, 0, 0, None, b"{}", None, 2, 2, [])

    class Consumer:  # what _collect uses: getmany and seek
        def __init__(self) -> None:
            self.position, self.raced, self.seeks = 0, 0, []

        async def getmany(self, timeout_ms: int) -> dict:
            await asyncio.sleep(0)
            if self.position == 2 and self.raced < 2:
                self.raced, self.position = self.raced + 1, 6  # 2-3 not stored yet: 4-5 served
                return {TopicPartition("due", 0): [record(4), record(5)]}
            batch = [record(o) for o in range(self.position, min(self.position + 2, 6))]
            self.position += len(batch)
            return {TopicPartition("due", 0): batch} if batch else {}

        def seek(self, tp: TopicPartition, offset: int) -> None:
            self.seeks.append((tp.topic, tp.partition, offset))
            self.position = offset

    consumer = Consumer()
    bus = Bus(Settings(), producer=None)  # type: ignore[arg-type]
    collecting = asyncio.create_task(_collect(consumer, bus))  # type: ignore[arg-type]
    try:
        await bus.wait_for("due", lambda r: True, count=6, timeout=5)
    finally:
        collecting.cancel()
    assert bus.gaps == [("due", 0, 2, 4, 1), ("due", 0, 2, 4, 2)]
    assert consumer.seeks == [("due", 0, 2)] * 2
    assert [r.offset for r in bus.received["due"]] == [0, 1, 2, 3, 4, 5]
    assert bus.failed is None
