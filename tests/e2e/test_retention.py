"""A ticker started with CHIME_RETENTION_DAYS deletes what is past retention, as a process."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shared.settings import Settings
from tests.integration.helpers import add_actions, add_schedule
from tests.processes import Services

pytestmark = pytest.mark.e2e


async def test_a_ticker_with_retention_deletes_old_finished_occurrences(
    settings: Settings, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    sid = await add_schedule(db, now)
    old = [{"schedule": sid, "fire_at": now - timedelta(days=3), "state": "SUCCEEDED"}]
    recent = [{"schedule": sid, "fire_at": now - timedelta(days=1), "state": "FAILED"}]
    await add_actions(db, old * 5, now)
    kept = await add_actions(db, recent * 2, now)

    running = Services(settings, CHIME_RETENTION_DAYS="2")
    await running.start("ticker")
    try:
        for _ in range(100):  # the first pass runs as the ticker starts
            left = {r["id"] for r in await db.fetch("SELECT id FROM actions")}
            if left == set(kept):
                break
            await asyncio.sleep(0.1)
        assert left == set(kept)
        assert "chime_actions_pruned_total 5.0" in running.metrics("ticker")
    finally:
        assert await running.stop_all() == {"ticker": 0}
