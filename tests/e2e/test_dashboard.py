"""The dashboard, looked at as a person would: headless Chromium renders it, its DOM shows the
schedules and action states, and the screenshot is a real picture of the expected size."""

from __future__ import annotations

import asyncio
import shutil
import struct
import tempfile
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.e2e.conftest import Bus
from tests.e2e.test_flow import create, iso

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,800",
    "--virtual-time-budget=5000",
]


async def chromium(*args: str) -> bytes:
    with tempfile.TemporaryDirectory() as profile:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0
    return out


def png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the pixels): enough to tell a blank page."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it: .ci/run)")
async def test_dashboard_in_headless_chromium(services, bus: Bus, settings, tmp_path: Path) -> None:
    soon = iso(datetime.now(UTC) + timedelta(seconds=1))
    fired = await create(
        bus,
        {
            "name": "nightly-billing",
            "trigger": {"kind": "once", "at": soon},
            "action": {"type": "billing-run"},
        },
    )
    await create(
        bus,
        {
            "name": "quarterly-tax",
            "trigger": {"kind": "cron", "expression": "0 0 1 */3 *"},
            "action": {"type": "tax-run"},
        },
    )
    [due] = await bus.wait_for(
        settings.topics.actions_due,
        lambda r: r.value["data"]["scheduleId"] == fired["data"]["id"],
        timeout=15,
    )
    await bus.send(
        settings.topics.actions_acks,
        {
            "type": "action.ack",
            "meta": {"tenant": "acct-e2e"},
            "data": {"actionId": due.value["data"]["actionId"], "attempt": 1, "state": "SUCCEEDED"},
        },
        fired["data"]["id"].encode(),
    )
    await bus.wait_for(
        settings.topics.actions_events, lambda r: r.value["data"].get("state") == "SUCCEEDED"
    )

    url = f"{services.urls['ticker']}/dashboard"
    dom = (await chromium("--dump-dom", url)).decode()
    assert "nightly-billing" in dom and "quarterly-tax" in dom  # rendered by the page's script
    assert "0 0 0 1 */3 ?" in dom  # the cron schedule's Quartz form
    assert '<span class="state SUCCEEDED">SUCCEEDED</span>' in dom
    assert "2 schedules" in dom
    assert dom.count("<rect") >= 2  # the timeline has fired and acknowledged bars

    shot = tmp_path / "dashboard.png"
    await chromium(f"--screenshot={shot}", url)
    width, height, colours = png_facts(shot.read_bytes())
    assert (width, height) == (1280, 800)
    assert colours > 20, "the screenshot is blank"
