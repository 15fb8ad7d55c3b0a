"""asyncpg pools with Chime's codecs (jsonb <-> Python via orjson)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

__all__ = ["connect", "create_pool", "init_connection"]


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


async def create_pool(url: str, size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url, min_size=1, max_size=size, init=init_connection, command_timeout=60
    )


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    await init_connection(conn)
    return conn
