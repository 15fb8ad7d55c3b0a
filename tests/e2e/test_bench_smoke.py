"""The benchmarks run, at a few hundred messages, so that they cannot rot. No figure is
asserted here: speed lives in `make bench`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from bench import common
from shared.messaging import ensure_topics
from shared.settings import Settings
from tests.servers import PostgresHandle, docker_available

pytestmark = pytest.mark.e2e


async def run(script: str, *args: str, env: dict[str, str] | None = None) -> list[dict]:
    """Run a benchmark script (with `env` added to the environment); its JSON lines."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"bench.{script}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()[-3000:]
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


def assert_cpu(cpu: dict, processes: set[str]) -> None:
    """A scenario's CPU per operation: the machine's, and each part's (PostgreSQL and the broker
    whenever they run on this machine: always when embedded), none negative; and the cores its
    target would take."""
    us = cpu["us_per_op"]
    parts = processes | {"machine", "bench", "other"}
    if not os.environ.get("CHIME_DATABASE_URL") and not docker_available():
        parts |= {"postgres"}
    if not os.environ.get("CHIME_KAFKA_BOOTSTRAP_SERVERS") and not docker_available():
        parts |= {"broker"}
    assert parts <= set(us) <= parts | {"postgres", "broker"}, us
    assert us["machine"] > 0 and all(v >= 0 for v in us.values()), us
    assert cpu["cores_for_target"] > 0 and cpu["cores"] == os.cpu_count()
    faults = cpu["faults_per_op"]  # the same parts' page faults (none is "other")
    assert set(faults) == set(us) - {"other"} and all(v >= 0 for v in faults.values()), faults
    assert faults["machine"] > 0, faults


async def test_fire_throughput_smoke() -> None:
    # the services take the environment's settings: here their batches compressed (zstd)
    raw, chime = await run(
        "fire_throughput",
        "--total",
        "300",
        "--raw-claimers",
        "2",
        env={"CHIME_KAFKA_COMPRESSION": "zstd"},
    )
    assert raw["scenario"] == "raw_reference_claim_loop" and raw["received"] == 300
    assert raw["published"]["rate_per_s"] > 0 and raw["all_within_s"] > 0
    assert raw["claimers"] == 2 and len(raw["published_by_each"]) == 2
    assert sum(raw["published_by_each"]) == 300  # what each claimer published, together
    assert chime["scenario"] == "fire_throughput" and chime["compression"] == "zstd"
    assert raw["reader"] == chime["reader"] == "beside"
    assert (chime["received"], chime["duplicates"], chime["misses"]) == (300, 0, 0)
    assert chime["first_late_s"] >= 0  # never early
    assert chime["fired"]["count"] == 300 and chime["fired"]["all_within_s"] >= 0
    assert set(chime["rss_mib"]) == {"ticker-0", "scheduler"}
    assert_cpu(raw["cpu"], {"claimer-0", "claimer-1"})
    assert_cpu(chime["cpu"], {"ticker-0", "scheduler"})


async def test_fire_throughput_of_guarded_schedules_smoke() -> None:
    args = ["--total", "300", "--no-raw", "--overlap", "SKIP", "--reader", "after"]
    (chime,) = await run("fire_throughput", *args)
    assert (chime["overlap"], chime["tickers"], chime["received"]) == ("SKIP", 1, 300)
    assert (chime["duplicates"], chime["misses"], chime["fired"]["count"]) == (0, 0, 300)


async def test_fire_throughput_with_the_reader_after_smoke() -> None:
    raw, chime = await run("fire_throughput", "--total", "300", "--reader", "after")
    assert raw["reader"] == chime["reader"] == "after"
    assert raw["received"] == 300 and sum(raw["published_by_each"]) == 300
    # the raw loop's rate is its claimers' own account of publishing
    assert raw["rate_per_s"] == raw["published"]["rate_per_s"] > 0
    assert (chime["received"], chime["duplicates"], chime["misses"]) == (300, 0, 0)
    # published and recorded no sooner than the ticker released the last of them
    assert chime["all_within_s"] >= chime["fired"]["all_within_s"] >= 0
    assert chime["rate_per_s"] > 0
    assert_cpu(raw["cpu"], {"claimer-0"})
    assert_cpu(chime["cpu"], {"ticker-0", "scheduler"})


async def test_command_ingest_smoke() -> None:
    (figures,) = await run("command_ingest", "--total", "300")
    assert figures["scenario"] == "command_ingest"
    assert figures["answered"] == 300 and figures["results"] == {"schedule.created": 300}
    assert figures["rate_per_s"] is None or figures["rate_per_s"] > 0
    assert figures["rate_from_ready_per_s"] > 0 and set(figures["rss_mib"]) == {"scheduler-0"}
    assert_cpu(figures["cpu"], {"scheduler-0"})


async def test_ack_ingest_smoke() -> None:
    (figures,) = await run("ack_ingest", "--total", "300")
    assert figures["scenario"] == "ack_ingest"
    assert (figures["applied"], figures["ignored"]) == (300, 0)
    # a batch's events go out together: 300 may arrive in one read, leaving no first-to-last span
    assert figures["rate_per_s"] is None or figures["rate_per_s"] > 0
    assert figures["rate_from_ready_per_s"] > 0 and "acker-0" in figures["rss_mib"]
    assert_cpu(figures["cpu"], {"scheduler", "ticker", "acker-0"})


async def test_steady_lateness_smoke() -> None:
    (figures,) = await run("steady_lateness", "--rate", "100", "--seconds", "3")
    assert figures["scenario"] == "steady_lateness"
    assert (figures["received"], figures["duplicates"], figures["not_received"]) == (300, 0, 0)
    assert figures["early"] == 0  # never before dueAt
    assert figures["lateness_ms"]["p50"] <= figures["lateness_ms"]["max"]
    fired = figures["fired"]  # the same run as the database saw it
    assert (fired["due"], fired["not_fired"], fired["early"], fired["retried"]) == (300, 0, 0, 0)
    # the ticker's rounds, read from its /metrics: each waited for the broker's acknowledgement
    waits = figures["broker_ack_wait_ms_by_window"]
    assert sum(w["rounds"] for w in waits) > 0, waits
    assert all((w["mean_ms"] is None) == (w["rounds"] == 0) for w in waits), waits
    assert all(w["mean_ms"] is None or w["mean_ms"] >= 0 for w in waits), waits
    assert 0 <= fired["lateness_ms"]["p50"] <= fired["lateness_ms"]["max"]
    assert max(fired["max_by_window_ms"]) == fired["lateness_ms"]["max"]  # per window, then all
    (churn,) = figures["churn"]
    assert churn["claim_read_ms"] >= 0 and churn["due_index_bytes"] > 0
    # the test servers are PostgreSQL 17 or later: the window's writes are counted
    assert churn["checkpoints"] >= 0
    assert all(isinstance(n, int) and n > 0 for n in churn["pages_written"].values())
    assert all(isinstance(n, int) and n > 0 for n in churn["pages_read"].values())
    # the client sessions sampled every second of the window: samples per wait event ("CPU":
    # running a statement, not waiting) and the longest statement seen
    assert churn["longest_statement_ms"] >= 0
    waits = churn["session_waits"]
    assert all(w == "CPU" or re.fullmatch(r"\w+:\w+", w) for w in waits), waits
    assert all(isinstance(n, int) and n > 0 for n in waits.values()), waits
    machine = churn["machine"]  # what the machine gave in the window, from /proc
    assert machine["steal_s"] >= 0 and machine["stall_cpu_ms"] >= 0 and machine["read_kib"] >= 0
    assert 0 < machine["available_mib"] and 0 <= machine["cached_mib"]
    if not os.environ.get("CHIME_KAFKA_BOOTSTRAP_SERVERS") and not docker_available():
        assert churn["broker_rss_mib"] > 0  # the embedded broker, found by its listener
        # its CPU in each 10 s from the first due instant: the run's one window, over its 3 s
        (cores,) = figures["broker_cores_by_window"]
        assert 0 < cores <= os.cpu_count()
    else:
        assert "broker_cores_by_window" not in figures  # a broker elsewhere is not measured


async def test_broker_lateness_smoke() -> None:
    args = ["--rate", "100", "--seconds", "2", "--per-schedule", "10", "--step-ms", "20"]
    (figures,) = await run("broker_lateness", *args)
    assert (figures["scenario"], figures["per_schedule"]) == ("broker_lateness", 10)
    # a release every 20 ms (and after each send's own wait): at most 100 in the 2 s, where the
    # ticker's 3 ms would make some 600
    assert figures["step_ms"] == 20 and 10 <= figures["releases"] <= 101, figures
    assert (figures["received"], figures["not_received"]) == (200, 0)
    assert 0 <= figures["lateness_ms"]["p50"] <= figures["lateness_ms"]["max"]
    # a release is sent once its first record is due: sent -> acknowledged lies within due ->
    # acknowledged
    assert 0 < figures["rtt_ms"]["max"] <= figures["ack_ms"]["max"]
    if not os.environ.get("CHIME_KAFKA_BOOTSTRAP_SERVERS") and not docker_available():
        # the embedded broker's CPU: the run's one window (10 s), over the 2 s it lasted
        (cores,) = figures["broker_cores_by_window"]
        assert 0 < cores <= os.cpu_count()
    else:
        assert "broker_cores_by_window" not in figures  # a broker elsewhere is not measured


async def test_condition_parse_smoke() -> None:
    lines = await run("condition_parse", "--longest", "500", "--repeat", "1")
    shapes = [figures["shape"] for figures in lines]
    assert shapes == ["seed_001", "realistic", "in_list_of_ids", "or_chain_98", "sum"]
    assert lines[2]["characters"] <= 500 and lines[4]["characters"] <= 500  # filled to it
    for figures in lines:
        assert set(figures["us"]) == {"shared_jexl", "pyjexl"} and min(figures["us"].values()) > 0
        refused = figures["refused_on_create"]
        assert (figures["evaluate_us"] is None) == (refused is not None), figures
    assert lines[-1]["refused_on_create"].startswith("nests")  # the sum: too deep to evaluate
    assert lines[3]["refused_on_create"] is None  # the longest chain a create takes


async def test_broker_gaps_smoke() -> None:
    args = ["--producers", "2", "--consumers", "1", "--seconds", "1", "--batch", "10"]
    (figures,) = await run("broker_gaps", *args)
    assert (figures["scenario"], figures["producers"], figures["batch"]) == ("broker_gaps", 2, 10)
    assert figures["records"] > 0 and figures["records"] % 10 == 0
    assert len(figures["plain"]) == len(figures["reading_again"]) == 1
    for follower in (*figures["plain"], *figures["reading_again"]):
        assert follower["missed"] >= 0
        assert follower["not_reached"] == 0  # a second of records is delivered within a minute
    # what the plain one steps over (if the broker's race came up) is read again: none missed
    assert figures["reading_again"][0]["missed"] == 0 <= figures["reading_again"][0]["jumps"]


async def test_soak_without_consumer_smoke(postgres: PostgresHandle) -> None:
    """The soak's mode: no live consumer, the ticker's figures from the database; with the
    scale run's stored backlog (imported by `chime import --jobs`, then vacuumed) in front of
    it. Kept on the server (--keep-stored), the next run starts from a copy of it."""
    args = ["--rate", "50", "--seconds", "2", "--no-consumer", "--stored", "300", "--keep-stored"]
    on_server = {"CHIME_DATABASE_URL": postgres.url}
    admin = await asyncpg.connect(postgres.url)
    try:
        (first,) = await run("steady_lateness", *args, env=on_server)
        assert "received" not in first
        assert first["stored_schedules"] == 300 and first["stored_import_s"] > 0
        assert first["stored_settle_s"] >= 0 and first["stored_kept_s"] >= 0
        assert (first["fired"]["due"], first["fired"]["not_fired"]) == (100, 0)
        kept = await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1", KEPT)
        assert kept, "the stored backlog was not kept"

        (second,) = await run("steady_lateness", *args, env=on_server)
        assert second["stored_from_template"] is True and "stored_import_s" not in second
        assert (second["fired"]["due"], second["fired"]["not_fired"]) == (100, 0)
        left = await admin.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'bench\\_steady\\_%'"
        )
        assert left == 0, "a run's database was left behind"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{KEPT}" WITH (FORCE)')
        await admin.close()


KEPT = "bench_stored_300"


async def test_receive_decodes_the_same_whether_it_defers_or_not(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instrument holds the values undecoded until the last one, or past its limit decodes
    what it holds on the way: either way each message is kept once, in the order received."""
    await ensure_topics(settings)
    topic = settings.topics.actions_due
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for i in range(120):
            await producer.send(topic, json.dumps({"n": i}).encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()

    deferred = await common.receive(settings, topic, 120, 60, lambda v: v["n"])
    monkeypatch.setattr(common, "UNDECODED_LIMIT", 0)
    on_the_way = await common.receive(settings, topic, 120, 60, lambda v: v["n"])
    assert [n for _, n in deferred] == [n for _, n in on_the_way] == list(range(120))
    assert all(at > 0 for at, _ in deferred + on_the_way)
