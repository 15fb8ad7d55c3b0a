"""asyncpg pools with Chime's codecs (json and jsonb <-> Python via orjson)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

__all__ = ["ALL_TENANTS", "connect", "create_pool", "init_connection", "redacted"]


# jsonb in PostgreSQL's binary format: a version byte (1), then the JSON text. Unlike the text
# format, neither side goes through a Python str (a decode, then an encode, of every document):
# a 1 KB document written and read back costs 50 instead of 60 µs of the client's CPU.
_JSONB_VERSION = b"\x01"


def _dumps(value: Any) -> bytes:
    return _JSONB_VERSION + orjson.dumps(value)


def _loads(data: bytes) -> Any:
    if data[:1] != _JSONB_VERSION:
        raise ValueError(f"unknown jsonb binary format version {data[:1]!r}")
    return orjson.loads(memoryview(data)[1:])


ALL_TENANTS = "*"


def redacted(url: str) -> str:
    """`url` with its password replaced by `***`, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", encoder=_dumps, decoder=_loads, schema="pg_catalog", format="binary"
    )
    # json's binary format is the JSON text itself (schedules.spec, processed_commands.result:
    # migration 0010)
    await conn.set_type_codec(
        "json", encoder=orjson.dumps, decoder=orjson.loads, schema="pg_catalog", format="binary"
    )


def _session(tenant: str | None) -> dict[str, str]:
    """The session's row-level-security scope (0004), sent at connection start-up so that the
    pool's RESET ALL on release returns to it."""
    return {} if tenant is None else {"chime.tenant": tenant}


async def create_pool(
    url: str, size: int, tenant: str | None = None, application: str | None = None
) -> asyncpg.Pool:
    """A pool; services that act for one tenant per transaction leave `tenant` unset.
    `application` names its sessions in pg_stat_activity (`application_name`)."""
    settings = _session(tenant)
    if application is not None:
        settings["application_name"] = application
    return await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=size,
        init=init_connection,
        command_timeout=60,
        server_settings=settings,
    )


async def connect(url: str, tenant: str | None = ALL_TENANTS) -> asyncpg.Connection:
    """One connection for tools (CLI, tests, ticker's listener): every tenant by default."""
    conn = await asyncpg.connect(url, server_settings=_session(tenant))
    await init_connection(conn)
    return conn
