"""The harness that runs services for the end-to-end tests and the benchmarks
(`tests.processes.Services`) leaves none behind: not when the block using it fails, not when
the process that started them is killed. (Four schedulers left by failed benchmark runs once
took an eighth of a core from every measurement after them.)"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.processes import Services

pytestmark = pytest.mark.e2e

# A parent that starts a ticker, says its pid, and waits to be killed.
PARENT = """
import asyncio
from shared.settings import Settings
from tests.processes import Services

async def main():
    running = Services(Settings())
    await running.start("ticker")
    print(running.procs["ticker"].pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def _ended(pid: int, within: float) -> bool:
    for _ in range(int(within / 0.1)):
        if not _running(pid):
            return True
        await asyncio.sleep(0.1)
    return not _running(pid)


async def test_a_failing_block_stops_its_services(settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="the block failed"):
        async with Services(settings) as running:
            await running.start("ticker")
            proc = running.procs["ticker"]
            raise RuntimeError("the block failed")
    assert proc.returncode == 0  # stopped with SIGTERM, cleanly


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
    ticker = int(await asyncio.wait_for(parent.stdout.readline(), 90))
    assert _running(ticker)
    parent.send_signal(signal.SIGKILL)
    await parent.wait()
    try:
        assert await _ended(ticker, 30), "the ticker outlived the process that started it"
    finally:
        if _running(ticker):
            os.kill(ticker, signal.SIGKILL)


async def test_the_bus_notes_offsets_its_consumer_stepped_over() -> None:
    """A batch served after a later one (offsets 2-3 below) is never fetched again by a consumer
    past it: the bus notes the gap, so that a test waiting for those messages says why."""
    from aiokafka import ConsumerRecord

    from tests.e2e.conftest import Bus, _collect

    def record(topic: str, partition: int, offset: int) -> ConsumerRecord:
        return ConsumerRecord(topic, partition, offset, 0, 0, None, b"{}", None, 2, 2, [])

    class Consumer:  # what _collect reads: an async iterator of records
        def __init__(self, records: list[ConsumerRecord]) -> None:
            self.records = records

        def __aiter__(self):
            return self._each()

        async def _each(self):
            for r in self.records:
                yield r

    records = [record("due", 0, 0), record("due", 0, 1), record("due", 0, 4), record("due", 1, 0)]
    bus = Bus(Settings(), producer=None)  # type: ignore[arg-type]
    await _collect(Consumer(records), bus)  # type: ignore[arg-type]
    assert bus.gaps == [("due", 0, 2, 4)]  # partition 1 started at its first offset: no gap
    assert len(bus.received["due"]) == 4 and bus.failed is None
