"""Fire throughput: N occurrences due at the same instant, published by the ticker(s) and read
back with a plain consumer; and, in the same run, the raw reference: a plain asyncpg claim loop
publishing with aiokafka on the same database and broker, read back by the same consumer.

    python -m bench.fire_throughput [--total 100000] [--tickers 1] [--batch B] [--no-raw]
                                    [--raw-claimers K] [--reader after] [--overlap SKIP]
                                    [--per-schedule N]

Prints one JSON line per scenario. Drives Chime only through its public surface: commands on
chime.commands (answered by the scheduler), action.due read back from the broker. Both
scenarios are measured alike, as received by a consumer running beside them: messages per
second from the first received to the last, and the last one's delay. `fraction_of_raw`
compares those. The raw loop runs as many claimers as Chime runs tickers (or
`--raw-claimers`), each a process of its own, as a ticker is; this process only reads. Each
also reports its own pace before the broker's delivery: the raw loop's publishing
(acknowledged by the broker), Chime's releases (firedAt of the stored rows), so that a slow
delivery by the broker shows as such.

`--reader after` measures both as published instead: nothing reads the topic until the last
event is published and recorded (the workers are elsewhere, as in production, and the broker
serves no fetches meanwhile): the rate is the total over the time from the due instant (the
raw loop's "go") to the last round's mark, which commits after the broker acknowledged the
round (Chime: its stored fire counters, polled every 10 ms; the raw loop: its claimers' own
account), and the CPU window ends there. The consumer then reads every event, for the
duplicates and misses. Each line names its reader (`beside` or `after`).

`--overlap SKIP` (or BUFFER_ONE) loads N guarded schedules of one action each instead of
schedules of 1,000 (a guarded schedule fires one occurrence at a time): what deciding overlap
costs a burst (a round takes a lock on each guarded schedule it decides and reads which are
busy). `--per-schedule N`: N actions a schedule (`--per-schedule 1` without an overlap policy
is the same burst unguarded). Each line names its `overlap` and `per_schedule`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from bench.common import CpuMeter, line, load_through_commands, receive, rss_mib, servers
from shared.persistence.database import connect
from shared.persistence.queries import parse_queries
from shared.settings import Settings
from tests.processes import Services

PROBES = parse_queries((Path(__file__).parent / "sql" / "fire.sql").read_text())
TENANT = "bench"  # load_through_commands' tenant
TARGET_PER_S = 50_000  # issue #8's fire target: what `cpu.cores_for_target` is reckoned at


async def _recorded(url: str, total: int, since: datetime, meter: CpuMeter) -> float:
    """When the stored fires reached `total` (each round's mark commits after the broker
    acknowledged the round), polled every 10 ms; stops the meter there."""
    conn = await connect(url)
    try:
        deadline = time.monotonic() + 600
        while await conn.fetchval(PROBES.recorded_fires, since) < total:
            assert time.monotonic() < deadline, f"fewer than {total} fires recorded in 600 s"
            await asyncio.sleep(0.01)
        meter.stop()
        return time.time()
    finally:
        await conn.close()


def _published(total: int, start: float, last: float) -> dict:
    """Published from `start` to `last` (the reader after): the rate over that span."""
    return {
        "rate_per_s": round(total / (last - start)),
        "all_within_s": round(last - start, 3),
        "first_late_s": None,
    }


def _received(received: list[tuple[float, dict]], start: float) -> dict:
    """Rate from the first received to the last, and how long after `start` the first and the
    last arrived."""
    times = sorted(t for t, _ in received)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "rate_per_s": round(len(times) / span) if span else None,
        "all_within_s": round(times[-1] - start, 3) if times else None,
        "first_late_s": round(times[0] - start, 3) if times else None,
    }


async def _fired(url: str, due: datetime) -> dict:
    conn = await connect(url)
    try:
        row = await conn.fetchrow(PROBES.fired_span, TENANT)
    finally:
        await conn.close()
    span = (row["last"] - row["first"]).total_seconds() if row["fired"] > 1 else 0.0
    return {
        "count": row["fired"],
        "rate_per_s": round(row["fired"] / span) if span else None,
        "all_within_s": round((row["last"] - due).total_seconds(), 3) if row["fired"] else None,
    }


async def chime_scenario(
    total: int,
    tickers: int,
    batch: int | None = None,
    after: bool = False,
    overlap: str = "ALLOW",
    per_schedule: int | None = None,
) -> dict:
    async with servers("fire") as settings:
        tuning = {"CHIME_TICKER_BATCH_SIZE": str(batch)} if batch else {}
        async with Services(settings, tidy=True, CHIME_LOG_LEVEL="WARNING", **tuning) as running:
            await running.start("scheduler")
            lead = timedelta(seconds=max(20, total / 2000))
            due = (datetime.now(UTC) + lead).replace(microsecond=0)
            # A guarded schedule fires one occurrence at a time: one each, all due at once.
            per_schedule = per_schedule or (1000 if overlap == "ALLOW" else 1)
            load_seconds = await load_through_commands(
                settings, total, due, per_schedule, overlap=overlap
            )
            for i in range(tickers):
                await running.start(f"ticker-{i}")
            assert datetime.now(UTC) < due, "loading took longer than planned: raise the lead"
            meter = await CpuMeter.of(settings, running.procs)
            topic = settings.topics.actions_due
            reading = asyncio.create_task(
                _recorded(settings.database_url, total, due, meter)
                if after
                else receive(settings, topic, total, 600, at_last=meter.stop)
            )
            # from just before the first claim (the lookahead is 50 ms) to the last event
            await asyncio.sleep(max(0.0, due.timestamp() - 0.2 - time.time()))
            meter.start()
            if after:
                last = await reading
                received = await receive(settings, topic, total, 600)
            else:
                received = await reading
            rss = {label: round(rss_mib(p.pid), 1) for label, p in running.procs.items()}
        fired = await _fired(settings.database_url, due)
    ids = [v["data"]["actionId"] for _, v in received]
    rates = (
        _published(total, due.timestamp(), last) if after else _received(received, due.timestamp())
    )
    return {
        "scenario": "fire_throughput",
        "compression": settings.kafka_compression,
        "reader": "after" if after else "beside",
        "total": total,
        "tickers": tickers,
        "overlap": overlap,
        "per_schedule": per_schedule,
        "batch": batch or Settings().ticker_batch_size,
        "received": len(received),
        "duplicates": len(ids) - len(set(ids)),
        "misses": total - len(set(ids)),
        **rates,
        "fired": fired,
        "load_commands_s": round(load_seconds, 2),
        "rss_mib": rss,
        "cpu": meter.per_operation(len(received), TARGET_PER_S),
    }


async def raw_reference(
    total: int, claimers: int = 1, batch: int = 5000, after: bool = False
) -> dict:
    """The plain claim loop: one statement claims a batch, aiokafka publishes it, one marks it;
    `claimers` of them at once, each a process of its own (as Chime's tickers are), while
    this process only reads the events back."""
    async with servers("raw") as settings:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute(
                "CREATE TABLE raw_jobs (id bigserial PRIMARY KEY, due_at timestamptz NOT NULL, "
                "state text NOT NULL DEFAULT 'PENDING', payload jsonb NOT NULL DEFAULT '{}')"
            )
            await conn.execute(
                "CREATE INDEX raw_jobs_due ON raw_jobs (due_at) WHERE state = 'PENDING'"
            )
            now = datetime.now(UTC)
            await conn.copy_records_to_table(
                "raw_jobs", records=[(now,)] * total, columns=["due_at"]
            )
        finally:
            await conn.close()
        topic = settings.topics.actions_due
        meter = await CpuMeter.of(settings, {})
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.fire_throughput",
                "--raw-claimer",
                settings.database_url,
                settings.kafka_bootstrap_servers,
                topic,
                str(batch),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(claimers)
        ]
        for proc in procs:  # each says "ready" once connected, and starts on "go"
            assert proc.stdout and await proc.stdout.readline() == b"ready\n", "a claimer failed"
        meter.services = {f"claimer-{i}": proc.pid for i, proc in enumerate(procs)}
        if not after:
            reading = asyncio.create_task(receive(settings, topic, total, 600, at_last=meter.stop))
            await asyncio.sleep(1.0)  # the reader is running too (from the topic's start)
        meter.start()
        start = time.time()
        for proc in procs:
            assert proc.stdin
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        # each claimer's count and seconds from "go" to its last mark; it then waits for the
        # end of its input, so that the meter's last reading (the last event) still finds it
        outputs = []
        for proc in procs:
            assert proc.stdout
            outputs.append((await proc.stdout.readline()).split())
        assert all(len(out) == 2 for out in outputs), "a claimer failed"
        if after:
            meter.stop()
            received = await receive(settings, topic, total, 600)
        else:
            received = await reading
        for proc in procs:
            assert proc.stdin
            proc.stdin.close()
        assert all([await proc.wait() == 0 for proc in procs]), "a claimer failed"
        sent, seconds = zip(*outputs, strict=True)
        elapsed = max(float(s) for s in seconds)
    return {
        "scenario": "raw_reference_claim_loop",
        "reader": "after" if after else "beside",
        "total": total,
        "claimers": claimers,
        "batch": batch,
        "received": len(received),
        "published_by_each": [int(n) for n in sent],
        **(_published(total, 0.0, elapsed) if after else _received(received, start)),
        "published": {"rate_per_s": round(total / elapsed), "all_within_s": round(elapsed, 3)},
        "cpu": meter.per_operation(len(received), TARGET_PER_S),
    }


async def raw_claimer(url: str, bootstrap: str, topic: str, batch: int) -> tuple[int, float]:
    """One raw claimer (a process of its own): claim, publish, mark, until nothing is left;
    returns how many it published, and in how many seconds."""
    conn = await asyncpg.connect(url)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    started = time.monotonic()
    sent = 0
    try:
        while rows := await conn.fetch(
            "UPDATE raw_jobs SET state = 'CLAIMED' WHERE id IN (SELECT id FROM raw_jobs "
            "WHERE state = 'PENDING' AND due_at <= $1 ORDER BY due_at LIMIT $2 "
            "FOR UPDATE SKIP LOCKED) RETURNING id, due_at",
            datetime.now(UTC),
            batch,
        ):
            futures = [
                await producer.send(
                    topic, orjson.dumps({"id": r["id"], "dueAt": r["due_at"].isoformat()})
                )
                for r in rows
            ]
            await asyncio.gather(*futures)
            await conn.execute(
                "UPDATE raw_jobs SET state = 'DONE' WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
            )
            sent += len(rows)
        return sent, time.monotonic() - started
    finally:
        await producer.stop()
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=100_000)
    parser.add_argument("--tickers", type=int, default=1)
    parser.add_argument("--batch", type=int, help="CHIME_TICKER_BATCH_SIZE (default: settings)")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw reference")
    parser.add_argument(
        "--raw-claimers", type=int, help="the raw reference's claimers (default: --tickers)"
    )
    parser.add_argument(
        "--reader",
        choices=["beside", "after"],
        default="beside",
        help="read the events while they are published (beside) or once all are (after)",
    )
    parser.add_argument(
        "--overlap",
        choices=["ALLOW", "SKIP", "BUFFER_ONE"],
        default="ALLOW",
        help="the schedules' policy.overlap; other than ALLOW, N schedules of one action each",
    )
    parser.add_argument(
        "--per-schedule",
        type=int,
        help="explicit actions a schedule (default 1,000; 1 with an overlap policy)",
    )
    parser.add_argument("--raw-claimer", nargs=4, help=argparse.SUPPRESS)  # one, as a process
    args = parser.parse_args()
    if args.raw_claimer:
        url, bootstrap, topic, batch = args.raw_claimer
        sent, seconds = await raw_claimer(url, bootstrap, topic, int(batch))
        print(sent, seconds, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # to its end
        return
    claimers = args.raw_claimers or args.tickers
    after = args.reader == "after"
    raw = (
        {"rate_per_s": None}
        if args.no_raw
        else await raw_reference(args.total, claimers, after=after)
    )
    if not args.no_raw:
        line(**raw)
    chime = await chime_scenario(
        args.total, args.tickers, args.batch, after, args.overlap, args.per_schedule
    )
    if chime["rate_per_s"] and raw["rate_per_s"]:
        chime["fraction_of_raw"] = round(chime["rate_per_s"] / raw["rate_per_s"], 3)
    line(**chime)


if __name__ == "__main__":
    asyncio.run(main())
