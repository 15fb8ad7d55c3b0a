"""`chime migrate`: create the database if needed and apply numbered migrations once; and the
check that the schema is the one the code needs, made by every service as it starts and by the
CLI's commands that read the database (`chime status`, `chime import`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.persistence.queries import grants_sql, load_queries, migrations

__all__ = ["SchemaNotReady", "check_schema", "ensure_database", "migrate"]

log = logging.getLogger("chime.migrate")
_LOCK = 0x43484D45  # "CHME": one migrator at a time


async def ensure_database(url: str) -> None:
    """Create the database named in `url` when the server does not have it yet."""
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        parts = urlsplit(url)
        name = parts.path.lstrip("/")
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await admin.close()
    else:
        await conn.close()


async def migrate(
    url: str,
    progress: Callable[[int, str, float], None] | None = None,
    service_role: str | None = None,
) -> list[int]:
    """Apply every migration not yet applied; returns the versions applied now.

    `progress(version, name, seconds)` is told about each one as it lands. `service_role`, when
    given, is granted row access to every table (grants.sql), and nothing more.
    """
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    applied_now: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS chime_schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch(load_queries().applied_migrations)}
        for version, name, sql in migrations():
            if version in done:
                continue
            started = time.monotonic()
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO chime_schema_migrations (version, name) VALUES ($1, $2)",
                    version,
                    name,
                )
            log.info("applied migration %04d_%s", version, name)
            applied_now.append(version)
            if progress:
                progress(version, name, time.monotonic() - started)
        if service_role is not None:
            await conn.execute(grants_sql(service_role))
            log.info("granted row access to role %s", service_role)
    finally:
        await conn.close()
    return applied_now


class SchemaNotReady(ConnectionError):
    """The database is reachable but its schema is not (yet) the one this code needs: no
    Chime schema, or migrations missing. A ConnectionError, so that a service waits for it,
    with backoff, as for a database out of reach (`chime migrate` may still be running)."""


async def check_schema(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    """Raise SchemaNotReady unless every migration this code has is applied."""
    try:
        rows = await conn.fetch(load_queries().applied_migrations)
    except asyncpg.UndefinedTableError:
        rows = []
    done = {r["version"] for r in rows}
    missing = [f"{version:04d}" for version, _, _ in migrations() if version not in done]
    if not missing:
        return
    what = "has no Chime schema" if not done else f"lacks migrations {', '.join(missing)}"
    raise SchemaNotReady(f"the database {what}: run `chime migrate`")
