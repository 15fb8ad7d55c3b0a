"""Firing lateness under a steady load: occurrences due at a constant rate (default 5,000/s for
60 s), each `action.due` timed as it is received: received - dueAt, p50/p99/max.

    python -m bench.steady_lateness [--rate 5000] [--seconds 60]

The occurrences are loaded through schedule.create commands before the first one is due; the
ticker then fires them as they fall due while a plain consumer reads them. The ticker's part
(firedAt - dueAt) is also read from the stored rows, and a churn probe samples the claim's read
cost, the table's dead rows, PostgreSQL's page reads and writes, what its sessions waited on
(sampled every second) and what the machine gave (stolen CPU, pressure stalls, page cache)
every window; the embedded broker's CPU is given per window of the run as well
(`broker_cores_by_window`, in cores: its delivery costs more with every batch it holds, and the
received figure with it; bench/README.md, profile notes), and so is how long the ticker's
rounds waited for the broker's acknowledgement after their last release
(`broker_ack_wait_ms_by_window`: rounds and their mean wait, from the ticker's
`chime_broker_ack_wait_seconds`; three rounds waiting hold back the next release, and the
ticker's part with it). `--seconds 1800 --no-consumer` is the soak: row churn must not slow
the claim over time (see `fired.p99_by_window_ms` and `churn`);
without the consumer the broker's own delivery cost stays out of it (see `broker_lateness`).
`--stored 10000000` first stores that many future schedules (with `chime import`'s code) and
vacuums and analyzes them, as a database that has held them for a while would be: the scale run,
to compare with the empty database. With `--keep-stored`, on a PostgreSQL server that outlives
the run (CHIME_DATABASE_URL), the stored backlog is kept as the database `bench_stored_<N>` and
later runs start from a copy of it instead of importing again.
One JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson

from bench.common import (
    by_window,
    figures_ms,
    keep_as_template,
    line,
    listening_pid,
    load_through_commands,
    machine_counters,
    machine_window,
    p99_by_window,
    receive,
    rss_mib,
    servers,
    watching,
    watching_cores,
)
from services.cli.bulk import bulk_import
from shared.contracts import format_instant
from shared.persistence.database import connect
from shared.persistence.queries import parse_queries
from tests.processes import Services

TENANT = "bench"  # load_through_commands' tenant
STORED_TENANT = "bench-stored"


async def store_future_schedules(settings, count: int) -> float:
    """`count` schedules due years from now, loaded with `chime import`'s code (a process per
    core): the stored backlog of the scale scenario. Returns the seconds it took."""
    far = datetime(2099, 1, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stored.jsonl"
        with path.open("wb") as out:
            for i in range(count):
                at = format_instant(far + timedelta(minutes=i))
                line = {
                    "name": f"stored-{i}",
                    "trigger": {"kind": "once", "at": at},
                    "action": {"type": "later"},
                }
                out.write(orjson.dumps(line) + b"\n")
        started = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):
            jobs = os.cpu_count() or 1
            code = await bulk_import(settings, path, STORED_TENANT, 5000, jobs=jobs)
        assert code == 0, "a stored schedule was rejected"
        return time.monotonic() - started


async def settle(url: str) -> float:
    """VACUUM (ANALYZE) the stored backlog: a database that has held its schedules for a while
    has been vacuumed, and the run measures the steady load on it, not the one-off vacuum that
    follows a bulk load. Returns the seconds it took."""
    conn = await connect(url)
    started = time.monotonic()
    try:
        await conn.execute("VACUUM (ANALYZE) schedules, actions, action_history")
    finally:
        await conn.close()
    return time.monotonic() - started


async def stored_backlog(settings, count: int, template: str | None) -> dict[str, float | bool]:
    """The scale run's stored schedules: imported and settled, or already there (a copy of the
    kept `template`); kept as `template` when asked. Returns the seconds each step took."""
    conn = await connect(settings.database_url)
    try:
        there = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM schedules WHERE tenant = $1 LIMIT $2) s",
            STORED_TENANT,
            count,
        )
    finally:
        await conn.close()
    if there == count:
        return {"stored_from_template": True}
    assert there == 0, f"the template holds {there} stored schedules, not {count}"
    figures = {
        "stored_import_s": round(await store_future_schedules(settings, count), 1),
        "stored_settle_s": round(await settle(settings.database_url), 1),
    }
    if template:
        figures["stored_kept_s"] = round(await keep_as_template(settings, template), 1)
    return figures


PROBES = parse_queries((Path(__file__).parent / "sql" / "steady.sql").read_text())
MS = 1000


ACK_WAIT = "chime_broker_ack_wait_seconds"


def _ack_wait(metrics_url: str) -> tuple[float, float]:
    """(rounds, seconds waited in all) so far, from a ticker's /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    found = {}
    for row in text.splitlines():
        name, _, value = row.partition(" ")
        if name in (f"{ACK_WAIT}_count", f"{ACK_WAIT}_sum"):
            found[name] = float(value)
    return found[f"{ACK_WAIT}_count"], found[f"{ACK_WAIT}_sum"]


async def ack_wait_by_window(
    metrics_url: str, start: float, window: float, out: list[dict]
) -> None:
    """Until cancelled: the ticker's rounds acknowledged in each `window` seconds from `start`
    (epoch seconds) and their mean wait for the broker after their last release, in ms;
    appended to `out` as each window ends, the window under way when cancelled too. A reading
    that failed (the ticker's HTTP server did not answer) leaves None for both in the two
    windows it ends and begins: the run's other figures are not lost to it."""

    async def read() -> tuple[float, float] | None:
        try:
            return await asyncio.to_thread(_ack_wait, metrics_url)
        except OSError:
            return None

    def part(
        before: tuple[float, float] | None, after: tuple[float, float] | None, _: float
    ) -> dict:
        if before is None or after is None:
            return {"rounds": None, "mean_ms": None}
        rounds = after[0] - before[0]
        mean = (after[1] - before[1]) / rounds * MS if rounds else None
        return {"rounds": round(rounds), "mean_ms": None if mean is None else round(mean, 1)}

    await by_window(read, part, start, window, out)


def _ms(value: timedelta | None) -> float | None:
    return None if value is None else round(value.total_seconds() * MS, 1)


async def watch_churn(url: str, every: int, out: list[dict], broker: int | None) -> None:
    """Every `every` seconds until cancelled: what reading the due occurrences costs (the
    claim's plan, run read-only), how the actions table churns (dead rows, vacuums, sizes);
    within the window, the checkpoints and the data pages written out and read in by each kind
    of process (on PostgreSQL 17 or later), what the client sessions running a statement were
    doing, sampled every second (`session_waits`: samples per wait event, "CPU" for none; the
    longest-running statement seen), what the machine gave (`machine_window`); the broker's
    RSS when it runs here (`broker`, its pid)."""
    conn = await connect(url)
    started = time.monotonic()
    before, machine_before = await _io(conn), machine_counters()
    try:
        while True:
            waits: Counter[str] = Counter()
            longest = 0.0
            for _ in range(every):
                await asyncio.sleep(1)
                for session in await conn.fetch(PROBES.session_waits):
                    waits[session["wait"]] += 1
                    longest = max(longest, float(session["running_s"] or 0))
            plan = (await conn.fetchval(PROBES.claim_probe, datetime.now(UTC)))[0]
            churn = await conn.fetchrow(PROBES.churn)
            sample = {
                "at_s": round(time.monotonic() - started),
                "claim_read_ms": round(plan["Execution Time"], 2),
                "claim_read_buffers": plan["Plan"].get("Shared Hit Blocks", 0)
                + plan["Plan"].get("Shared Read Blocks", 0),
                **dict(churn),
            }
            after, machine_after = await _io(conn), machine_counters()
            if before is not None and after is not None:
                sample["checkpoints"] = after["checkpoints"] - before["checkpoints"]
                for field, by in (("pages_written", "by_writer"), ("pages_read", "by_reader")):
                    sample[field] = {
                        kind: n - before[by].get(kind, 0)
                        for kind, n in after[by].items()
                        if n != before[by].get(kind, 0)
                    }
            sample["session_waits"] = dict(waits.most_common())
            sample["longest_statement_ms"] = round(longest * MS, 1)
            sample["machine"] = machine_window(machine_before, machine_after)
            if broker is not None:
                with contextlib.suppress(OSError):
                    sample["broker_rss_mib"] = round(rss_mib(broker))
            before, machine_before = after, machine_after
            out.append(sample)
    finally:
        await conn.close()


async def _io(conn: asyncpg.Connection) -> dict | None:
    """Cumulative checkpoints, pages written by writer and read by reader; None before
    PostgreSQL 17."""
    try:
        row = await conn.fetchrow(PROBES.io)
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
        return None
    return {
        "checkpoints": row["checkpoints"],
        "by_writer": row["by_writer"] or {},
        "by_reader": row["by_reader"] or {},
    }


async def fired_from_database(url: str, start: datetime, window: int) -> dict:
    """The ticker's part (firedAt - dueAt) of every occurrence of the run, from the stored
    rows: complete whatever the broker delivers."""
    conn = await connect(url)
    try:
        overall = await conn.fetchrow(PROBES.fired_overall, start, TENANT)
        windows = await conn.fetch(PROBES.fired_by_window, start, window, TENANT)
    finally:
        await conn.close()
    return {
        "due": overall["due"],
        "not_fired": overall["due"] - overall["fired"],
        "retried": overall["retried"],
        "early": sum(w["early"] for w in windows),
        "lateness_ms": {k: _ms(overall[k]) for k in ("p50", "p99", "max")},
        "p99_by_window_ms": [_ms(w["p99"]) for w in windows],
        "max_by_window_ms": [_ms(w["max"]) for w in windows],
    }


def _event(value: dict) -> tuple[str, float]:
    data = value["data"]
    return data["actionId"], datetime.fromisoformat(data["dueAt"]).timestamp()


async def scenario(
    rate: int,
    seconds: int,
    stored: int = 0,
    consume: bool = True,
    per_schedule: int = 1000,
    keep_stored: bool = False,
) -> dict:
    total = rate * seconds
    window = 10 if seconds <= 300 else 60  # seconds per bucket of the per-window figures
    churn: list[dict] = []
    template = f"bench_stored_{stored}" if stored and keep_stored else None
    async with servers("steady", template) as settings:
        url = settings.database_url
        backlog = await stored_backlog(settings, stored, template) if stored else {}
        async with Services(settings, tidy=True, CHIME_LOG_LEVEL="WARNING") as running:
            await running.start("scheduler")
            start = datetime.now(UTC) + timedelta(seconds=15 + total / 10_000)
            step = timedelta(seconds=1 / rate)
            # No worker acknowledges: the ack timeout outlasts the run, or every occurrence would
            # time out and be retried after five minutes (a different load, and firedAt moves on).
            ack_timeout = f"PT{seconds + 3600}S"
            load_s = await load_through_commands(
                settings, total, lambda i: start + i * step, per_schedule, ack_timeout
            )
            assert datetime.now(UTC) < start, "loading took longer than planned: raise the lead"
            await running.start("ticker")
            broker = listening_pid(settings.kafka_bootstrap_servers)
            ack_wait: list[dict] = []
            metrics = f"{running.urls['ticker']}/metrics"
            # the embedded broker's CPU and the ticker's waits in the received figures' windows
            async with (
                watching(watch_churn(url, window, churn, broker)),
                watching(ack_wait_by_window(metrics, start.timestamp(), window, ack_wait)),
                watching_cores(broker, start.timestamp(), window) as broker_cores,
            ):
                if consume:
                    topic = settings.topics.actions_due
                    received = await receive(settings, topic, total, seconds + 120, _event)
                else:
                    wait = (start - datetime.now(UTC)).total_seconds() + seconds + 5
                    await asyncio.sleep(wait)
                    received = []
                rss = {label: round(rss_mib(p.pid), 1) for label, p in running.procs.items()}
        fired = await fired_from_database(url, start, window)
    figures: dict = {
        "scenario": "steady_lateness",
        "compression": settings.kafka_compression,
        "rate_per_s": rate,
        "seconds": seconds,
        "per_schedule": per_schedule,
        "stored_schedules": stored,
        **backlog,
        "window_s": window,
        "fired": fired,  # firedAt - dueAt from the database: the ticker's part
    }
    if broker_cores is not None:
        figures["broker_cores_by_window"] = broker_cores
    figures["broker_ack_wait_ms_by_window"] = ack_wait  # the ticker's, from its /metrics
    if received:
        late = [at - due for at, (_, due) in received]
        ids = {action_id for _, (action_id, _) in received}
        figures |= {
            "received": len(received),
            "duplicates": len(received) - len(ids),
            "not_received": total - len(ids),
            "early": sum(1 for x in late if x < 0),
            "lateness_ms": figures_ms(late),  # received - dueAt: ticker, broker and consumer
            "p99_by_window_ms": p99_by_window(
                [(due, at - due) for at, (_, due) in received], start.timestamp(), window
            ),
        }
    return figures | {
        "churn": churn if seconds > 300 else churn[-1:],
        "load_commands_s": round(load_s, 2),
        "rss_mib": rss,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument(
        "--stored", type=int, default=0, help="future schedules stored first (the scale run)"
    )
    parser.add_argument(
        "--no-consumer",
        action="store_true",
        help="do not read the events (the broker's own cost stays out of a long soak); "
        "the ticker's figures come from the database",
    )
    parser.add_argument(
        "--per-schedule",
        type=int,
        default=1000,
        help="explicit actions per schedule of the load (fewer: more schedules a second)",
    )
    parser.add_argument(
        "--keep-stored",
        action="store_true",
        help="keep the stored backlog as database bench_stored_<N> and start from a copy of it "
        "when it is there (for a server that outlives the run: CHIME_DATABASE_URL)",
    )
    args = parser.parse_args()
    line(
        **await scenario(
            args.rate,
            args.seconds,
            args.stored,
            not args.no_consumer,
            args.per_schedule,
            args.keep_stored,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
