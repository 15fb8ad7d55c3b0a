"""/api/dashboard: schedules and their next fire times, recent actions, fired vs acknowledged."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import asyncpg
import orjson

from shared.clock import Clock
from shared.contracts import format_instant
from shared.persistence.queries import load_queries

__all__ = ["dashboard_routes"]

Q = load_queries()
TIMELINE_MINUTES = 60
SCHEDULES = 100
RECENT_ACTIONS = 50
# How far each list looks: the first occurrences due (for the schedules firing soonest) and the
# newest history rows (for the recent actions). Each refresh reads about this much, whatever
# is stored.
DUE_LOOKAHEAD = 2_000
HISTORY_LOOKBACK = 5_000


def _instant(value: Any) -> str | None:
    return format_instant(value) if value is not None else None


async def overview(pool: asyncpg.Pool, clock: Clock) -> dict[str, Any]:
    now = clock.now()
    async with pool.acquire() as conn:
        schedules = await conn.fetch(Q.dashboard_schedules, SCHEDULES, DUE_LOOKAHEAD)
        last = await conn.fetchval(Q.history_last_id)
        actions = await conn.fetch(
            Q.dashboard_recent_actions, RECENT_ACTIONS, last - HISTORY_LOOKBACK
        )
        timeline = await conn.fetch(Q.dashboard_timeline, now, TIMELINE_MINUTES)
    return {
        "now": format_instant(now),
        "schedules": [
            {
                "id": str(r["id"]),
                "tenant": r["tenant"],
                "namespace": r["namespace"],
                "name": r["name"],
                "state": r["state"],
                "kind": r["kind"],
                "cronExpression": r["cron_expression"],
                "nextFire": _instant(r["next_fire"]),
            }
            for r in schedules
        ],
        "recentActions": [
            {
                "actionId": str(r["id"]),
                "schedule": r["name"],
                "type": r["type"],
                "dueAt": _instant(r["due_at"]),
                "firedAt": _instant(r["fired_at"]),
                "state": r["state"],
                "attempt": r["attempt"],
                "updatedAt": _instant(r["updated_at"]),
            }
            for r in actions
        ],
        "timeline": [
            {
                "minute": format_instant(r["minute"]),
                "fired": r["fired"],
                "acknowledged": r["acknowledged"],
            }
            for r in timeline
        ],
    }


def dashboard_routes(pool: asyncpg.Pool, clock: Clock) -> dict[str, Any]:
    """Extra routes for the HealthServer: path -> async () -> (status, body, content type)."""
    page = (files("services.dashboard") / "page.html").read_bytes()

    async def html() -> tuple[str, bytes, str]:
        return "200 OK", page, "text/html; charset=utf-8"

    async def api() -> tuple[str, bytes, str]:
        return "200 OK", orjson.dumps(await overview(pool, clock)), "application/json"

    return {"/dashboard": html, "/api/dashboard": api}
