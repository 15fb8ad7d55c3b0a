"""Long operations tell their progress: `chime migrate` and `chime import`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.contracts import format_instant
from shared.messaging import ensure_topics, kafka_client_options
from shared.persistence.migrate import SchemaNotReady, check_schema, ensure_database, migrate
from shared.persistence.queries import migrations
from shared.settings import Settings
from tests.batches import send_as_one_batch
from tests.cli import run_chime, start_chime
from tests.integration.helpers import add_actions, add_schedule, until
from tests.processes import child_processes
from tests.servers import PostgresHandle


async def chime(database_url: str, *args: str) -> tuple[int, str, str]:
    return await run_chime({"CHIME_DATABASE_URL": database_url}, *args)


async def test_migrate_reports_each_migration(postgres: PostgresHandle) -> None:
    url = postgres.database_url("chime_migrate_progress")
    code, out, _ = await chime(url, "migrate")
    assert code == 0
    assert "applied 0001_init in" in out and "applied 0003_attempts in" in out
    assert out.strip().endswith("schema current")
    code, out, _ = await chime(url, "migrate")
    assert code == 0 and "0 migration(s) applied" in out
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute("DROP DATABASE chime_migrate_progress WITH (FORCE)")
    finally:
        await admin.close()


async def test_bulk_import_with_progress_idempotent(database_url: str, tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "name": f"imported-{i}",
                "trigger": {"kind": "cron", "expression": f"{i % 60} * * * *"},
                "action": {"type": "import"},
            }
        )
        for i in range(1200)
    ]
    lines[700] = json.dumps(
        {"name": "broken", "trigger": {"kind": "daily", "hours": 99}, "action": {"type": "x"}}
    )
    lines[900] = "{not json"
    lines[1000] = json.dumps(  # orjson would read it rounded, as a float
        {
            "name": "big",
            "trigger": {"kind": "daily", "hours": 1},
            "action": {"type": "x", "payload": {"n": 10**30}},
        }
    )
    source = tmp_path / "schedules.jsonl"
    source.write_text("\n".join(lines) + "\n")
    code, out, err = await chime(
        database_url, "import", str(source), "--tenant", "acct-bulk", "--batch", "500"
    )
    summary = json.loads(out)
    assert code == 1  # some lines were rejected
    assert (summary["created"], summary["replayed"], summary["rejected"]) == (1197, 0, 3)
    assert [r["line"] for r in summary["firstRejections"]] == [701, 901, 1001]
    assert summary["firstRejections"][0]["errors"][0]["field"] == "data.trigger.hours"
    assert summary["firstRejections"][1]["errors"][0]["message"].startswith("the line is not JSON")
    assert summary["firstRejections"][2]["errors"][0]["message"].startswith(
        "data.action.payload.n is a whole number past 64 bits"
    )
    assert "chime import: 500 / 1,200 lines" in err and "chime import: 1,200 / 1,200 lines" in err
    code, out, _ = await chime(database_url, "import", str(source), "--tenant", "acct-bulk")
    again = json.loads(out)
    assert (again["created"], again["replayed"], again["rejected"]) == (0, 1197, 3)
    conn = await asyncpg.connect(database_url)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM schedules WHERE tenant = 'acct-bulk'") == 1197
        )
        assert await conn.fetchval("SELECT count(*) FROM actions WHERE state = 'PENDING'") == 1197
    finally:
        await conn.close()


async def test_bulk_import_shared_among_processes(database_url: str, tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "name": f"part-{i}",
                "trigger": {"kind": "daily", "hours": i % 24},
                "action": {"type": "x"},
            }
        )
        for i in range(900)
    ]
    lines[5] = lines[4]  # the same line twice: one schedule, the other line a replay
    lines[10] = json.dumps(
        {"name": "part-11", "trigger": {"kind": "daily", "hours": 1}, "action": {"type": "y"}}
    )
    lines[301] = json.dumps(
        {"name": "bad", "trigger": {"kind": "daily", "hours": 99}, "action": {"type": "x"}}
    )
    source = tmp_path / "schedules.jsonl"
    source.write_text("\n".join(lines) + "\n")
    code, out, err = await chime(
        database_url,
        "import",
        str(source),
        "--tenant",
        "acct-jobs",
        "--batch",
        "100",
        "--jobs",
        "3",
    )
    summary = json.loads(out)
    assert code == 1, err
    # line 6 repeats line 5 (a replay); lines 11 and 12 both name part-11 (one is a CONFLICT,
    # which one depends on the processes' timing); line 302 is invalid
    assert (summary["created"], summary["replayed"], summary["rejected"]) == (897, 1, 2), summary
    lines_rejected = [r["line"] for r in summary["firstRejections"]]
    assert lines_rejected in ([11, 302], [12, 302]), summary["firstRejections"]
    assert "chime import: 900 / 900 lines" in err
    conn = await asyncpg.connect(database_url)
    try:
        names = await conn.fetch("SELECT name FROM schedules WHERE tenant = 'acct-jobs'")
        assert len(names) == 897 and len({r["name"] for r in names}) == 897
    finally:
        await conn.close()


async def test_import_that_cannot_go_on_says_why(tmp_path: Path) -> None:
    source = tmp_path / "schedules.jsonl"
    line = {"name": "a", "trigger": {"kind": "daily", "hours": 1}, "action": {"type": "x"}}
    source.write_text(json.dumps(line) + "\n")
    unreachable = "postgresql://chime:chime@127.0.0.1:1/chime"
    for jobs in ("1", "2"):
        code, _, err = await chime(
            unreachable, "import", str(source), "--tenant", "t", "--jobs", jobs
        )
        assert code == 2 and "Traceback" not in err, err
        assert err.startswith("chime import: ") and "Connect call failed" in err
        assert "run the import again to finish" in err
        assert jobs == "1" or "part 2 of 2" in err
    code, _, err = await chime(
        unreachable, "import", str(tmp_path / "missing.jsonl"), "--tenant", "t"
    )
    assert (code, err.strip()) == (
        2,
        f"chime import: cannot read {tmp_path / 'missing.jsonl'}: No such file or directory",
    )


async def test_import_worker_killed_without_a_word_fails_the_import(tmp_path: Path) -> None:
    """A --jobs worker that dies before it can say so (SIGKILL) is noticed by its exit code:
    the import ends naming that part, instead of waiting for it forever."""
    source = tmp_path / "schedules.jsonl"
    line = {"name": "a", "trigger": {"kind": "daily", "hours": 1}, "action": {"type": "x"}}
    source.write_text(json.dumps(line) + "\n" + json.dumps({**line, "name": "b"}) + "\n")
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts each worker's connection and never answers it

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"postgresql://chime:chime@127.0.0.1:{port}/c"
    proc = await start_chime(
        {"CHIME_DATABASE_URL": url}, "import", str(source), "--tenant", "t", "--jobs", "2"
    )
    try:

        async def both_connected() -> bool:
            return len(held) == 2

        await until(both_connected, timeout=60, every=0.1)
        workers = [  # not its multiprocessing resource tracker
            pid
            for pid, cmdline in child_processes(proc.pid).items()
            if any("spawn_main" in arg for arg in cmdline)
        ]
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        for writer in held:  # the other worker's connection is cut: it fails and says so
            writer.close()
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.close()
        await server.wait_closed()
    message = err.decode().strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in err.decode(), err
    assert message.count("the process ended with exit code -9") == 1, message
    assert "part 1 of 2: " in message and "part 2 of 2: " in message, message
    assert "run the import again to finish" in message, message


async def test_a_database_that_refuses_the_connection_is_named_without_a_traceback(
    postgres: PostgresHandle,
) -> None:
    url = postgres.database_url("chime_no_such_database")
    code, _, err = await chime(url, "status")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"chime status: PostgreSQL at {url} refused the connection:"
        ' database "chime_no_such_database" does not exist'
    )


async def test_status_counts_what_is_due_in_flight_and_failed(
    db: asyncpg.Connection, settings: Settings
) -> None:
    """`chime status` against stored rows: held occurrences are neither due nor next."""
    now = datetime.now(UTC).replace(microsecond=0)
    active, paused = await add_schedule(db, now), await add_schedule(db, now, "PAUSED")
    hours = [timedelta(hours=n) for n in range(3)]
    await add_actions(
        db,
        [
            {"schedule": active, "fire_at": now - hours[2], "held": True},
            {"schedule": active, "fire_at": now - hours[1], "held": True},
            {"schedule": active, "fire_at": now - hours[1]},  # due: the backlog
            {"schedule": active, "fire_at": now + hours[1]},
            {"schedule": paused, "fire_at": now - hours[1], "state": "DISPATCHED"},
            {"schedule": paused, "fire_at": now - hours[2], "state": "RUNNING"},
            {"schedule": active, "fire_at": now - hours[2], "state": "FAILED"},
            {"schedule": active, "fire_at": now - hours[2], "state": "SUCCEEDED"},
        ],
        now,
    )
    code, out, err = await run_chime(settings.to_env(), "status")
    assert code == 0, err
    report = json.loads(out)
    del report["consumerLag"]
    assert report == {
        "schedules": {"ACTIVE": 1, "PAUSED": 1},
        "backlog": 1,
        "inFlight": 2,
        "failed": 1,
        "nextDue": format_instant(now - hours[1]),
    }


async def test_status_counts_what_each_group_has_not_committed(settings: Settings) -> None:
    """consumerLag: each consumed topic's records past the group's committed offsets, to the
    end of each partition, also where the newest records came as one batch (Tansu's end offset
    counts only the first record of a partition's newest batch)."""
    await ensure_topics(settings)
    commands = settings.topics.commands
    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await producer.start()
    try:
        for partition, sizes in ((0, [1, 1, 1, 40]), (1, [20])):
            for size in sizes:
                await send_as_one_batch(producer, commands, partition, [b"{}"] * size)
    finally:
        await producer.stop()
    scheduler, acker = settings.consumer_group("scheduler"), settings.consumer_group("acker")
    committer = AIOKafkaConsumer(
        **kafka_client_options(settings), group_id=scheduler, enable_auto_commit=False
    )
    await committer.start()
    try:
        first = TopicPartition(commands, 0)
        committer.assign([first])
        await committer.commit({first: 2})
    finally:
        await committer.stop()
    code, out, err = await run_chime(settings.to_env(), "status")
    assert code == 0, err
    assert json.loads(out)["consumerLag"] == {scheduler: 41 + 20, acker: 0}


async def _stream_until(stream: asyncio.StreamReader, text: str, timeout: float = 60) -> None:
    """Read `stream` line by line until one holds `text`."""

    async def find() -> None:
        while line := await stream.readline():
            if text in line.decode():
                return
        raise AssertionError(f"the stream ended before {text!r}")

    await asyncio.wait_for(find(), timeout)


async def test_a_database_without_the_schema_is_named_and_a_service_waits_for_it(
    postgres: PostgresHandle, settings: Settings, tmp_path: Path
) -> None:
    """The CLI said a traceback (chime status: UndefinedTableError) or rejected every line
    INTERNAL (chime import); a service started before `chime migrate` answered every command
    INTERNAL. Now the CLI names it, and a service waits, not ready, until the schema is there."""
    url = postgres.database_url(f"chime_unmigrated_{os.getpid()}")
    await ensure_database(url)
    try:
        conn = await asyncpg.connect(url)
        try:
            with pytest.raises(SchemaNotReady, match="the database has no Chime schema"):
                await check_schema(conn)
        finally:
            await conn.close()
        code, _, err = await chime(url, "status")
        assert (
            code == 2
            and "is not ready: the database has no Chime schema: run `chime migrate`" in err
        )
        source = tmp_path / "one.jsonl"
        line = {"name": "a", "trigger": {"kind": "daily", "hours": 1}, "action": {"type": "x"}}
        source.write_text(json.dumps(line) + "\n")
        code, _, err = await chime(url, "import", str(source), "--tenant", "t")
        assert (code, err.strip().splitlines()[-1]) == (
            2,
            "chime import: the database has no Chime schema: run `chime migrate`",
        )
        env = {**settings.to_env(), "CHIME_DATABASE_URL": url, "CHIME_HTTP_PORT": "0"}
        names = ("scheduler", "ticker")  # the acker starts as the scheduler does (runtime)
        services = [await start_chime(env, "run", name) for name in names]
        try:
            for service in services:
                assert service.stderr is not None
                await _stream_until(service.stderr, "the database has no Chime schema")
            await migrate(url)
            for name, service in zip(names, services, strict=True):
                assert service.stdout is not None
                await _stream_until(service.stdout, f"chime {name}: ready")
        finally:
            for service in services:
                service.terminate()
                await service.wait()
        conn = await asyncpg.connect(url)
        try:
            latest = migrations()[-1][0]
            await conn.execute("DELETE FROM chime_schema_migrations WHERE version = $1", latest)
            with pytest.raises(SchemaNotReady, match=f"the database lacks migrations {latest:04d}"):
                await check_schema(conn)
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(postgres.url)
        try:
            await admin.execute(
                f"DROP DATABASE IF EXISTS chime_unmigrated_{os.getpid()} WITH (FORCE)"
            )
        finally:
            await admin.close()
