"""Handing the heap a consumer freed back to the operating system.

A batch of large commands (1,000 explicit actions each, 52 KB) passes tens of MiB through the
heap: the decoded JSON, the rows, the results. glibc's malloc keeps what is freed for reuse and
gives back only the top of its heap when that is free, so one object still alive above the
freed space keeps all of it resident. After loading 6,000,000 occurrences through such
commands the scheduler rested at 184 MiB, 77 MiB of it heap; `malloc_trim` released 62 MiB of
that (bench/README.md, profile notes). A consumer therefore trims its heap every few seconds
when it has applied something since the last time: a millisecond or two of one call, never
while nothing happens.

On a C library without `malloc_trim` (musl, macOS) nothing is trimmed.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Awaitable, Callable

__all__ = ["TRIM_EVERY", "HeapTrimmer", "malloc_trim"]

TRIM_EVERY = 5.0  # seconds between trims, at most one per period and only after work


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own symbols: its C library's
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


malloc_trim = _find_malloc_trim()  # glibc's, or None


class HeapTrimmer:
    """Trims the heap once after work: `worked()` when a batch was applied, `trim_if_worked()`
    on a timer (`run`)."""

    def __init__(
        self,
        trim: Callable[[int], int] | None = malloc_trim,
        observe: Callable[[float], None] | None = None,
    ) -> None:
        self._trim = trim
        self._observe = observe  # given each trim's seconds (the event loop stands still)
        self._worked = False

    def worked(self) -> None:
        self._worked = True

    def trim_if_worked(self) -> bool:
        """Trim if anything was applied since the last trim; True if it did."""
        if not self._worked or self._trim is None:
            return False
        self._worked = False
        started = time.perf_counter()
        self._trim(0)  # 0: keep no free space at the top (what is free inside goes back too)
        if self._observe is not None:
            self._observe(time.perf_counter() - started)
        return True

    async def run(
        self,
        every: float = TRIM_EVERY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Trim after work, every `every` seconds, until cancelled."""
        if self._trim is None:
            logging.getLogger("chime.memory").debug("no malloc_trim here: the heap is not trimmed")
            return
        while True:
            await sleep(every)
            self.trim_if_worked()
