"""Session-wide real servers and per-test isolation (fresh databases, topic prefixes)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared.persistence.database import connect, create_pool
from shared.persistence.migrate import migrate
from shared.runtime import QUIETED_LOGGERS
from shared.settings import Settings
from tests.servers import PostgresHandle, kafka_server, postgres_server

TEMPLATE = "chime_test_template"
SERVICE_ROLE = "chime_service"  # what production services log in as (docs/security.md)


@pytest.fixture(autouse=True)
def logging_as_it_was() -> Iterator[None]:
    """The CLI run in-process (`main([...])`) configures logging as a process would: the
    root logger's handlers and level, and the levels of the loggers it quiets. Put back after
    each test, so that no test sees another's (a handler on a finished test's captured stderr,
    or INFO records a test's `caplog` did not ask for)."""
    root = logging.getLogger()
    quieted = [logging.getLogger(name) for name in QUIETED_LOGGERS]
    handlers, level, levels = root.handlers[:], root.level, [q.level for q in quieted]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for logger, was in zip(quieted, levels, strict=True):
        logger.setLevel(was)


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
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute(
            f"CREATE ROLE {SERVICE_ROLE} LOGIN PASSWORD '{SERVICE_ROLE}' "
            "NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"
        )
    except asyncpg.DuplicateObjectError:
        pass
    finally:
        await admin.close()
    await migrate(postgres.database_url(TEMPLATE), service_role=SERVICE_ROLE)
    return TEMPLATE


@asynccontextmanager
async def _fresh_database(postgres: PostgresHandle, template: str) -> AsyncIterator[str]:
    name = f"chime_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await admin.close()
    yield postgres.database_url(name)
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def database_url(postgres: PostgresHandle, migrated_template: str) -> AsyncIterator[str]:
    async with _fresh_database(postgres, migrated_template) as url:
        yield url


@pytest.fixture
async def twin_database_url(postgres: PostgresHandle, migrated_template: str) -> AsyncIterator[str]:
    """A second fresh database: to apply the same commands another way and compare."""
    async with _fresh_database(postgres, migrated_template) as url:
        yield url


@pytest.fixture
def service_database_url(database_url: str) -> str:
    """The test's database as the services' role: row access only, row-level security on."""
    parts = urlsplit(database_url)
    netloc = f"{SERVICE_ROLE}:{SERVICE_ROLE}@{parts.netloc.rsplit('@', 1)[-1]}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, 4)
    yield pool
    await pool.close()


@pytest.fixture
def settings(service_database_url: str, kafka: tuple[str, bool]) -> Settings:
    """Settings for one test: its own database (as the services' role), its own topics."""
    servers, is_tansu = kafka
    short = (
        {"kafka_session_timeout_ms": 3000, "kafka_heartbeat_interval_ms": 1000} if is_tansu else {}
    )
    return Settings(
        database_url=service_database_url,
        kafka_bootstrap_servers=servers,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.chime.",
        topic_partitions=2,
        **short,
    )
