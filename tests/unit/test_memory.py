"""A consumer hands the heap it freed back to the OS: once after work, never while idle."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from shared.memory import HeapTrimmer, malloc_trim


class Trims:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, pad: int) -> int:
        self.calls.append(pad)
        return 1


def test_the_heap_is_trimmed_once_after_work_and_not_while_idle() -> None:
    trims, seconds = Trims(), []
    heap = HeapTrimmer(trims, seconds.append)
    assert heap.trim_if_worked() is False  # nothing applied yet
    heap.worked()
    heap.worked()
    assert heap.trim_if_worked() is True
    assert heap.trim_if_worked() is False  # no work since
    heap.worked()
    assert heap.trim_if_worked() is True
    assert trims.calls == [0, 0]  # all free space, the top's included
    assert len(seconds) == 2 and all(s >= 0 for s in seconds)  # each trim timed


def test_without_malloc_trim_nothing_is_trimmed() -> None:
    heap = HeapTrimmer(None)
    heap.worked()
    assert heap.trim_if_worked() is False


async def test_the_loop_trims_at_each_period_that_followed_work() -> None:
    trims, periods = Trims(), []
    heap = HeapTrimmer(trims)

    async def sleep(seconds: float) -> None:  # a period passes; work happens in some
        periods.append(seconds)
        if len(periods) in (2, 3):
            heap.worked()
        if len(periods) == 6:
            raise EOFError  # ends the test's loop

    with pytest.raises(EOFError):
        await heap.run(every=5.0, sleep=sleep)
    assert periods == [5.0] * 6
    assert len(trims.calls) == 2  # after the second and the third period, not the others


async def test_the_loop_ends_at_once_without_malloc_trim() -> None:
    async def sleep(seconds: float) -> None:
        raise AssertionError("it should not wait")

    await HeapTrimmer(None).run(sleep=sleep)


@pytest.mark.skipif(malloc_trim is None, reason="this C library has no malloc_trim")
def test_glibc_gives_back_freed_heap_that_live_objects_above_it_held() -> None:
    """Freed 1 KB objects between ones still alive: RSS stays up until the heap is trimmed."""
    script = textwrap.dedent(
        """
        import os

        from bench.common import rss_mib
        from shared.memory import malloc_trim

        before = rss_mib(os.getpid())
        objects = [bytes(1000) + bytes([i % 256]) for i in range(80_000)]
        kept = objects[::64]  # pins scattered through the heap
        del objects
        held = rss_mib(os.getpid())
        malloc_trim(0)
        print(before, held, rss_mib(os.getpid()))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    before, held, trimmed = map(float, out.split())  # MiB
    assert held - before > 40  # ~80 MB allocated, freed, still resident
    assert held - trimmed > 30  # most of it given back
