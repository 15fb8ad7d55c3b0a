"""The benchmarks run, at a few hundred messages, so that they cannot rot. No figure is
asserted here: speed lives in `make bench`."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

pytestmark = pytest.mark.e2e


async def test_fire_throughput_smoke() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fire_throughput",
        "--total",
        "300",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()[-3000:]
    raw, chime = (json.loads(line) for line in out.decode().splitlines() if line.startswith("{"))
    assert raw["scenario"] == "raw_reference_claim_loop" and raw["rate_per_s"] > 0
    assert chime["scenario"] == "fire_throughput"
    assert (chime["received"], chime["duplicates"], chime["misses"]) == (300, 0, 0)
    assert chime["first_late_s"] >= 0  # never early
    assert set(chime["rss_mib"]) == {"ticker-0", "scheduler"}
