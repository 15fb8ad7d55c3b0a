"""Session-wide real servers and per-test isolation (fresh databases, topic prefixes)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from shared.persistence.database import connect
from shared.persistence.migrate import migrate
from shared.settings import Settings
from tests.servers import PostgresHandle, kafka_server, postgres_server

TEMPLATE = "chime_test_template"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresHandle]:
    with postgres_server() as handle:
        yield handle


@pytest.fixture(scope="session")
def kafka() -> Iterator[tuple[str, bool]]:
    with kafka_server() as servers:
        yield servers


@pytest.fixture(scope="session")
async def migrated_template(postgres: PostgresHandle) -> str:
    """A migrated database that each test's database is copied from (fast, isolated)."""
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
    finally:
        await admin.close()
    await migrate(postgres.database_url(TEMPLATE))
    return TEMPLATE


@pytest.fixture
async def database_url(postgres: PostgresHandle, migrated_template: str) -> AsyncIterator[str]:
    name = f"chime_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {migrated_template}")
    finally:
        await admin.close()
    yield postgres.database_url(name)
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def settings(database_url: str, kafka: tuple[str, bool]) -> Settings:
    """Settings for one test: its own database and its own topic prefix."""
    servers, is_tansu = kafka
    short = (
        {"kafka_session_timeout_ms": 3000, "kafka_heartbeat_interval_ms": 1000} if is_tansu else {}
    )
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=servers,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.chime.",
        topic_partitions=2,
        **short,
    )
