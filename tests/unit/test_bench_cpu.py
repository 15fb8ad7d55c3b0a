"""The benchmarks' CPU meter: what it reads from /proc and how it reckons per operation."""

from __future__ import annotations

import asyncio
import mmap
import os
import subprocess
import sys
import time

import pytest

from bench.common import (
    CpuMeter,
    child_pids,
    cores_by_window,
    process_cpu_s,
    process_usage,
    watching_cores,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def _burn(cpu_seconds: float) -> None:
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_a_process_cpu_time_grows_with_the_work_it_does() -> None:
    before = process_cpu_s(os.getpid())
    _burn(0.3)
    used = process_cpu_s(os.getpid()) - before
    assert 0.25 <= used <= 1.0  # the counters tick every 10 ms


def test_a_gone_process_has_used_nothing() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_cpu_s(child.pid) == 0.0


def test_a_parent_counts_its_reaped_children_and_lists_its_live_ones() -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        assert live.pid in child_pids(os.getpid())
        reaped_before = process_cpu_s(os.getpid(), reaped=True) - process_cpu_s(os.getpid())
        subprocess.run([sys.executable, "-c", burn], check=True)  # ran, ended, waited for
        reaped = process_cpu_s(os.getpid(), reaped=True) - process_cpu_s(os.getpid())
        assert reaped - reaped_before >= 0.25
    finally:
        live.communicate(b"")
    assert live.pid not in child_pids(os.getpid())


def test_a_process_page_faults_grow_with_the_memory_it_touches_afresh() -> None:
    pages = 2048
    _, before = process_usage(os.getpid())
    with mmap.mmap(-1, pages * mmap.PAGESIZE) as memory:
        memoryview(memory)[:: mmap.PAGESIZE] = b"\1" * pages  # a byte in each page: its fault
    _, after = process_usage(os.getpid())
    assert after - before >= pages


def test_cpu_per_operation_by_part_and_the_cores_a_target_would_take() -> None:
    meter = CpuMeter({"ticker-0": 1}, postmaster=None, broker=None)
    meter.before = {"machine": 100.0, "ticker-0": 10.0, "bench": 1.0}
    meter.after = {"machine": 104.5, "ticker-0": 11.5, "bench": 2.0}  # 4.5 s of the machine
    meter.faults_before = {"machine": 1_000, "ticker-0": 500, "bench": 0}
    meter.faults_after = {"machine": 221_000, "ticker-0": 20_500, "bench": 1_000}
    figures = meter.per_operation(100_000, target_per_s=50_000)
    # per operation: 45 us of the machine, 15 the ticker's, 10 this process's, 20 nobody's named
    assert figures["us_per_op"] == {"machine": 45.0, "ticker-0": 15.0, "bench": 10.0, "other": 20.0}
    assert figures["cores_for_target"] == 2.25  # 45 us x 50,000 a second
    assert figures["cores"] == os.cpu_count()
    assert figures["faults_per_op"] == {"machine": 2.2, "ticker-0": 0.2, "bench": 0.01}


def test_other_is_never_below_zero_and_nothing_is_reckoned_without_a_window() -> None:
    meter = CpuMeter({}, postmaster=None, broker=None)
    assert meter.per_operation(10, 1000)["us_per_op"] is None  # never started
    meter.before = {"machine": 1.00, "bench": 0.0}
    meter.after = {"machine": 1.01, "bench": 0.02}  # ticks of 10 ms: the part above the whole
    assert meter.per_operation(10, 1000)["us_per_op"]["other"] == 0.0
    assert meter.per_operation(0, 1000)["cores_for_target"] is None  # nothing happened


def test_a_meter_reads_the_machine_and_this_process() -> None:
    meter = CpuMeter({"self": os.getpid()}, postmaster=None, broker=None)
    meter.start()
    _burn(0.2)
    with mmap.mmap(-1, 1024 * mmap.PAGESIZE) as memory:
        memoryview(memory)[:: mmap.PAGESIZE] = b"\1" * 1024
    meter.stop()
    figures = meter.per_operation(1, 1)
    us = figures["us_per_op"]
    assert set(us) == {"machine", "self", "bench", "other"}
    assert us["bench"] >= 150_000 and us["self"] >= 150_000  # the same process, two ways
    assert us["machine"] >= us["bench"] - 20_000  # this process ran on the machine
    faults = figures["faults_per_op"]
    assert set(faults) == {"machine", "self", "bench"}
    assert min(faults["self"], faults["bench"]) >= 1024  # the pages it touched afresh
    # one process read twice, a moment apart: what the reading itself touched may fall between
    assert abs(faults["self"] - faults["bench"]) <= 8
    assert faults["machine"] >= 1024  # the machine's count has them too


async def test_cores_by_window_follow_a_process_that_works_then_waits() -> None:
    burn = (
        "import sys, time\nend = time.process_time() + 0.4\n"
        "while time.process_time() < end: pass\nprint('done', flush=True)\nsys.stdin.read()"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", burn, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    window, cores = 0.25, []
    watching = asyncio.create_task(cores_by_window(child.pid, time.time(), window, cores))
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"done\n"
        await asyncio.sleep(3 * window)  # windows of the child waiting
    finally:
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching
        child.stdin.close()  # type: ignore[union-attr]
        await child.wait()
    assert len(cores) >= 3 and all(0 <= c <= 1.2 for c in cores), cores
    assert sum(cores) * window >= 0.3  # its 0.4 s of work, over the windows
    assert cores[-2] <= 0.1  # a window of waiting used no core


async def test_watching_cores_fills_its_list_by_the_end_of_the_block_or_gives_none() -> None:
    async with watching_cores(None, time.time(), 10) as nothing:
        pass
    assert nothing is None  # no process here to watch: a broker elsewhere
    async with watching_cores(os.getpid(), time.time(), 10) as cores:
        await asyncio.sleep(0.05)  # the watcher takes its first reading
        _burn(0.3)  # within the first window, which the block leaves before it ends
    assert cores is not None and len(cores) == 1 and cores[0] >= 0.5, cores
