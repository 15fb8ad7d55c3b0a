"""`chime dev`: the README's first command, as a user runs it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import pytest

from shared.embedded import free_port
from shared.settings import Settings
from tests.integration.helpers import until
from tests.processes import alive, child_processes, ended

pytestmark = pytest.mark.e2e


async def start_dev(
    args: list[str], env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli.main",
        "dev",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    lines: list[str] = []
    assert proc.stdout is not None

    async def until_ready() -> None:
        async for raw in proc.stdout:  # type: ignore[union-attr]
            lines.append(raw.decode().rstrip())
            if lines[-1] in ("chime dev: ready", "chime dev: stopped"):
                return

    await asyncio.wait_for(until_ready(), 120)
    return proc, lines


async def stop_dev(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    rest, _ = await asyncio.wait_for(proc.communicate(), 90)
    return proc.returncode or 0, rest.decode()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CHIME_")}


async def test_dev_starts_everything_embedded_and_stops_cleanly(tmp_path: Path) -> None:
    kafka_port, pg_port = free_port(), free_port()
    proc, lines = await start_dev(
        [
            "--kafka-port",
            str(kafka_port),
            "--postgres-port",
            str(pg_port),
            "--data-dir",
            str(tmp_path),
        ],
        clean_env(),
    )
    try:
        assert lines[-1] == "chime dev: ready", lines
        assert f"CHIME_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{kafka_port}" in lines
        assert f"CHIME_DATABASE_URL=postgresql://postgres@127.0.0.1:{pg_port}/chime" in lines
        urls = {
            m[1]: m[2] for line in lines if (m := re.match(r"^chime (\w+): (http://\S+)$", line))
        }
        assert set(urls) == {"scheduler", "ticker", "acker", "dashboard"}
        assert urls["dashboard"] == urls["ticker"] + "/dashboard"
        with urllib.request.urlopen(urls["dashboard"], timeout=5) as page:
            assert b"<title>Chime</title>" in page.read()
        for url in (urls[name] for name in ("scheduler", "ticker", "acker")):
            with urllib.request.urlopen(f"{url}/health/ready", timeout=5) as response:
                assert response.status == 200
    finally:
        code, rest = await stop_dev(proc)
    assert code == 0
    assert "chime dev: stopped" in rest


async def test_dev_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli.main",
            "dev",
            "--postgres-port",
            str(port),
            "--data-dir",
            str(tmp_path),
            env=clean_env(),
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert f"port {port} is taken: pass --postgres-port" in err.decode()


def named_env(settings: Settings, database_url: str) -> dict[str, str]:
    """`chime dev` on the tests' servers, with topics of its own."""
    return {
        **clean_env(),
        "CHIME_DATABASE_URL": settings.database_url,  # the services' role: no DDL
        "CHIME_DATABASE_MIGRATION_URL": database_url,  # the owner migrates
        "CHIME_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CHIME_TOPIC_PREFIX": f"dev{uuid.uuid4().hex[:6]}.",
        "CHIME_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "CHIME_KAFKA_HEARTBEAT_INTERVAL_MS": str(settings.kafka_heartbeat_interval_ms),
    }


async def test_dev_uses_servers_named_in_the_environment(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    proc, lines = await start_dev(["--data-dir", str(tmp_path)], named_env(settings, database_url))
    try:
        assert lines[-1] == "chime dev: ready", lines
        shown = settings.database_url.replace(":chime_service@", ":***@")
        assert f"CHIME_DATABASE_URL={shown}" in lines  # never the password
        assert f"CHIME_KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}" in lines
        assert not any(tmp_path.iterdir())  # no embedded server was started
    finally:
        code, _ = await stop_dev(proc)
    assert code == 0


async def test_dev_stops_everything_when_a_service_dies(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    """A service that exits on its own is named, the others are stopped, and `chime dev`
    exits 1: a half-running system is not left behind."""
    proc, lines = await start_dev(["--data-dir", str(tmp_path)], named_env(settings, database_url))
    try:
        assert lines[-1] == "chime dev: ready", lines
        services = dev_services(proc)
        os.kill(services["acker"], signal.SIGKILL)
        rest, _ = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            await stop_dev(proc)
    assert proc.returncode == 1
    assert "chime dev: acker exited unexpectedly; stopping" in rest.decode().splitlines()
    assert rest.decode().rstrip().endswith("chime dev: stopped")
    for pid in (services["scheduler"], services["ticker"]):  # stopped and reaped
        assert not Path(f"/proc/{pid}").exists(), pid


async def test_dev_killed_outright_takes_its_services_and_servers_with_it(tmp_path: Path) -> None:
    """SIGKILL leaves `chime dev` no time to stop anything: its services get SIGTERM from the
    kernel when it dies (instead of running on, orphaned) and stop as they do on SIGTERM; so do
    its embedded broker (SIGTERM) and database (SIGINT: a fast shutdown), which frees their
    ports: the next `chime dev` starts on them, with the data kept."""
    args = ["--kafka-port", str(free_port()), "--postgres-port", str(free_port())]
    args += ["--data-dir", str(tmp_path)]
    proc, lines = await start_dev(args, clean_env())
    try:
        assert lines[-1] == "chime dev: ready", lines
        children = child_processes(proc.pid)
        services = dev_services(proc)
        servers = {
            pid: Path(cmdline[0]).name.split("-")[0]  # tansu-v0.6.0-...
            for pid, cmdline in children.items()
            if pid not in services.values()
        }
        assert sorted(servers.values()) == ["postgres", "tansu"], children
        # A client of the database (a user's psql) does not keep it up: a fast shutdown.
        client = await asyncpg.connect(re.sub(r"/chime$", "/postgres", database_url(lines)))
    finally:
        proc.kill()
        await proc.wait()

    try:
        await until(ended(*services.values(), *servers), timeout=30, every=0.2)
        assert client.is_closed()
    finally:
        client.terminate()
        for pid in [*services.values(), *servers]:
            if alive(pid):  # failed: left behind, not to run on after the test
                os.kill(pid, signal.SIGKILL)
    again, lines = await start_dev(args, clean_env())
    try:
        assert lines[-1] == "chime dev: ready", lines
        assert "chime dev: database ready (0 migration(s) applied)" in lines  # the same data
    finally:
        code, rest = await stop_dev(again)
    assert code == 0, rest


def database_url(lines: list[str]) -> str:
    """The database `chime dev` said it uses."""
    return next(line.split("=", 1)[1] for line in lines if line.startswith("CHIME_DATABASE_URL="))


def dev_services(proc: asyncio.subprocess.Process) -> dict[str, int]:
    """The pid of each service `chime dev` runs, by name."""
    services = {
        cmdline[-1]: pid
        for pid, cmdline in child_processes(proc.pid).items()
        if cmdline[-2:-1] == ["run"]
    }
    assert set(services) == {"scheduler", "ticker", "acker"}, services
    return services
