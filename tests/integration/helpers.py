"""Building commands and driving service functions in tests."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.scheduler.commands import apply_command


def command(kind: str, data: dict[str, Any], tenant: str = "acct-1", **meta: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "meta": {
            "commandId": str(uuid.uuid4()),
            "correlationId": str(uuid.uuid4()),
            "tenant": tenant,
            **meta,
        },
        "data": data,
    }


async def run(conn: asyncpg.Connection, body: dict[str, Any], now: datetime) -> dict[str, Any]:
    async with conn.transaction():
        return await apply_command(conn, body, now)


def schedule(name: str = "nightly", **fields: Any) -> dict[str, Any]:
    return {"name": name, "action": {"type": "billing-run", "payload": {"k": 1}}, **fields}
