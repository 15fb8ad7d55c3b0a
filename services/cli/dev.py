"""`chime dev`: embedded PostgreSQL + Tansu + migrations + the three services, one command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from shared.embedded import EmbeddedPostgres, Tansu, die_with_parent, port_in_use
from shared.messaging import ensure_topics
from shared.persistence.database import redacted
from shared.persistence.migrate import migrate
from shared.settings import Settings

__all__ = ["dev"]

SERVICES = ("scheduler", "ticker", "acker")


def _started(server: EmbeddedPostgres | Tansu, name: str) -> bool:
    """Start an embedded server; False, having said why, when it does not start (a data
    folder that cannot be made, initdb failing, a missing binary, nothing listening)."""
    try:
        server.start()
    except (OSError, RuntimeError) as exc:  # TimeoutError is an OSError
        _fail(f"chime dev: the embedded {name} did not start: {exc}")
        return False
    return True


def _say(line: str) -> None:
    print(line, flush=True)


def _fail(line: str) -> None:
    """Why `chime dev` cannot start, on stderr like every command's failures."""
    print(line, file=sys.stderr, flush=True)


async def _supervise(env: dict[str, str], stop: asyncio.Event) -> int:
    procs: dict[str, asyncio.subprocess.Process] = {}
    ready: set[str] = set()
    all_ready = asyncio.Event()

    async def follow(name: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line == f"chime {name}: ready":
                ready.add(name)
                if len(ready) == len(SERVICES):
                    all_ready.set()
            elif line:
                _say(line)
                if line.startswith("chime ticker: http://"):
                    _say(f"chime dashboard: {line.split(': ', 1)[1]}/dashboard")

    followers = []
    for name in SERVICES:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli.main",
            "run",
            name,
            env={**env, "CHIME_HTTP_PORT": env.get("CHIME_HTTP_PORT", "0")},
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,  # a `chime dev` killed outright takes them with it
        )
        procs[name] = proc
        followers.append(asyncio.create_task(follow(name, proc)))

    async def announce() -> None:
        await all_ready.wait()
        _say("chime dev: ready")

    announcer = asyncio.create_task(announce())
    died = [asyncio.create_task(p.wait()) for p in procs.values()]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *died], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if stopper not in done:
        dead = [n for n, p in procs.items() if p.returncode is not None]
        _say(f"chime dev: {', '.join(dead)} exited unexpectedly; stopping")
        code = 1
    announcer.cancel()
    for proc in procs.values():
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc in procs.items():
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            _say(f"chime dev: {name} did not stop in 30 s; killing it")
            proc.kill()
            await proc.wait()
    for task in (*followers, stopper):
        task.cancel()
    return code


async def dev(
    kafka_port: int,
    postgres_port: int,
    data_dir: str,
    explain: Callable[[Exception, Settings], str | None] | None = None,
) -> int:
    """Run the whole system until told to stop; 2 when it cannot start: an embedded server
    that does not start, or a server that `explain` names (one line, no traceback)."""
    env = dict(os.environ)
    postgres: EmbeddedPostgres | None = None
    broker: Tansu | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if "CHIME_DATABASE_URL" not in env:
            if port_in_use(postgres_port):
                _fail(
                    f"chime dev: port {postgres_port} is taken: pass --postgres-port, "
                    "or set CHIME_DATABASE_URL to use that server"
                )
                return 2
            # Started from this (the main) thread, tied to it: a `chime dev` killed outright
            # takes its servers with it, as it does its services.
            postgres = EmbeddedPostgres(Path(data_dir) / "postgres", postgres_port, tied=True)
            if not _started(postgres, "PostgreSQL"):
                return 2
            env["CHIME_DATABASE_URL"] = postgres.url("chime")
        if "CHIME_KAFKA_BOOTSTRAP_SERVERS" not in env:
            if port_in_use(kafka_port):
                _fail(
                    f"chime dev: port {kafka_port} is taken: pass --kafka-port, "
                    "or set CHIME_KAFKA_BOOTSTRAP_SERVERS to use that broker"
                )
                return 2
            broker = Tansu(kafka_port, tied=True)
            if not _started(broker, "broker (Tansu)"):
                return 2
            env["CHIME_KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        _say(f"CHIME_KAFKA_BOOTSTRAP_SERVERS={env['CHIME_KAFKA_BOOTSTRAP_SERVERS']}")
        _say(f"CHIME_DATABASE_URL={redacted(env['CHIME_DATABASE_URL'])}")
        settings = Settings(
            database_url=env["CHIME_DATABASE_URL"],
            kafka_bootstrap_servers=env["CHIME_KAFKA_BOOTSTRAP_SERVERS"],
        )
        try:
            applied = await migrate(
                settings.database_migration_url or settings.database_url,
                service_role=settings.database_service_role,
            )
            _say(f"chime dev: database ready ({len(applied)} migration(s) applied)")
            await ensure_topics(settings)
        except Exception as exc:
            failure = explain(exc, settings) if explain is not None else None
            if failure is None:
                raise
            _fail(f"chime dev: {failure}: {exc}")
            return 2
        if broker is not None:  # Tansu: short sessions keep group joins quick
            env.setdefault("CHIME_KAFKA_SESSION_TIMEOUT_MS", "3000")
            env.setdefault("CHIME_KAFKA_HEARTBEAT_INTERVAL_MS", "1000")
        return await _supervise(env, stop)
    finally:
        if broker is not None:
            broker.stop()
        if postgres is not None:
            postgres.stop()
        _say("chime dev: stopped")
