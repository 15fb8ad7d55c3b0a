"""Walk the foundation issue's points 2-5 against the services running as OS processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from shared.contracts import ActionDue, CommandResult, format_instant
from shared.memory import malloc_trim
from shared.persistence.database import connect
from tests.batches import CODECS, batch_codecs
from tests.cli import run_chime
from tests.e2e.conftest import Bus, Received

pytestmark = pytest.mark.e2e


def command(kind: str, data: dict, tenant: str = "acct-e2e") -> dict:
    return {
        "type": kind,
        "data": data,
        "meta": {
            "commandId": str(uuid.uuid4()),
            "correlationId": str(uuid.uuid4()),
            "tenant": tenant,
        },
    }


def iso(t: datetime) -> str:
    return format_instant(t.replace(microsecond=0))


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def answered(bus: Bus, kind: str, data: dict) -> dict:
    """Send a command; its result."""
    body = command(kind, data)
    await bus.send(bus.settings.topics.commands, body)
    [result] = await bus.wait_for(
        bus.settings.topics.command_results,
        lambda r: r.value["meta"]["correlationId"] == body["meta"]["correlationId"],
    )
    CommandResult.model_validate(result.value)
    # keyed by the schedule's id (its results stay in order on one partition); a rejected
    # command names none, and is keyed by its correlation id
    key = (result.value.get("data") or {}).get("id") or body["meta"]["correlationId"]
    assert result.key == key.encode()
    return result.value


async def create(bus: Bus, data: dict) -> dict:
    return await answered(bus, "schedule.create", data)


async def test_whole_flow(services, bus: Bus, settings) -> None:
    topics = settings.topics
    now = datetime.now(UTC)
    if now.second >= 40:
        # The services run on the real clock: the creates below must all land before the next
        # minute turns, or `* * * * *` rightly answers the minute after.
        await asyncio.sleep(61 - now.second)
        now = datetime.now(UTC)
    minute = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    action = {"type": "billing-run", "payload": {"run": 1}}

    # 2. create -> schedule.created with the same correlationId, id, scheduledFor, nextFireTimes
    once = await create(
        bus,
        {
            "name": "once",
            "trigger": {"kind": "once", "at": iso(now + timedelta(seconds=3))},
            "action": action,
        },
    )
    assert once["type"] == "schedule.created", once
    assert once["data"]["scheduledFor"] == iso(now + timedelta(seconds=3))
    interval = await create(
        bus,
        {
            "name": "every-second",
            "maxOccurrences": 3,
            "trigger": {"kind": "interval", "every": "PT1S"},
            "action": action,
        },
    )
    cron = await create(
        bus,
        {"name": "cron", "trigger": {"kind": "cron", "expression": "* * * * *"}, "action": action},
    )
    assert cron["data"]["scheduledFor"] == iso(minute) and len(cron["data"]["nextFireTimes"]) == 5
    daily = await create(
        bus,
        {
            "name": "daily",
            "timezone": "UTC",
            "action": action,
            "trigger": {"kind": "daily", "hours": minute.hour, "minutes": minute.minute},
        },
    )
    assert daily["data"]["cronExpression"] == f"0 {minute.minute} {minute.hour} ? * *"
    start, stop = now + timedelta(seconds=4), now + timedelta(seconds=5)
    window = await create(
        bus,
        {
            "name": "peak",
            "action": action,
            "startsAt": iso(now),
            "endsAt": iso(stop + timedelta(seconds=1)),
            "actions": [{"type": "START", "at": iso(start)}, {"type": "STOP", "at": iso(stop)}],
        },
    )

    # 5. bad input: a rejection naming the field, non-JSON bytes to the DLQ; nothing stalls
    bad = command(
        "schedule.create",
        {"name": "bad", "trigger": {"kind": "daily", "hours": 24, "minutes": 0}, "action": action},
    )
    await bus.send(topics.commands, bad)
    await bus.send(topics.commands, b"\xff\xfe not json {")
    [rejected] = await bus.wait_for(
        topics.command_results,
        lambda r: r.value["meta"]["correlationId"] == bad["meta"]["correlationId"],
    )
    assert rejected.value["type"] == "command.rejected"
    assert rejected.value["errors"][0]["field"] == "data.trigger.hours"
    assert rejected.key == bad["meta"]["correlationId"].encode()  # no schedule to key it by
    [dead] = await bus.wait_for(topics.dlq, lambda r: r.raw == b"\xff\xfe not json {")
    assert dead.headers["chime-reason"].startswith("not JSON")
    assert dead.headers["chime-source-topic"] == topics.commands
    after_bad = await create(
        bus, {"name": "after-bad", "trigger": {"kind": "daily", "hours": 3}, "action": action}
    )
    assert after_bad["type"] == "schedule.created"

    # 3. action.due within a second of dueAt, never early, for every kind
    def due_of(schedule: dict) -> Callable[[Received], bool]:
        return lambda r: r.value["data"]["scheduleId"] == schedule["data"]["id"]

    due = topics.actions_due
    [once_due] = await bus.wait_for(due, due_of(once), timeout=15)
    interval_due = await bus.wait_for(due, due_of(interval), count=3, timeout=15)
    window_due = await bus.wait_for(due, due_of(window), count=2, timeout=15)
    [cron_due] = await bus.wait_for(due, due_of(cron), timeout=75)
    [daily_due] = await bus.wait_for(due, due_of(daily), timeout=15)
    fired: list[Received] = [once_due, *interval_due, *window_due, cron_due, daily_due]
    for event in fired:
        ActionDue.model_validate(event.value)
        due_at = parse(event.value["data"]["dueAt"]).timestamp()
        assert event.at >= due_at, "fired early"
        assert event.at - due_at < 1.0, f"{event.at - due_at:.3f} s late"
    assert [e.value["data"]["type"] for e in window_due] == ["START", "STOP"]
    assert parse(cron_due.value["data"]["dueAt"]) == minute
    assert once_due.value["data"]["payload"] == {"run": 1}
    # Workers continue the trace with the correlation_id header; the key keeps a schedule's
    # events in order on one partition.
    for record in fired:
        data = record.value["data"]
        assert record.headers["correlation_id"] == data["actionId"]
        assert record.headers["content-type"] == "application/json"
        assert record.key == data["scheduleId"].encode()

    # maxOccurrences ends the series: no 4th interval occurrence, schedule completed
    db = await connect(settings.database_url)
    try:
        assert (
            await db.fetchval(
                "SELECT count(*) FROM actions WHERE schedule_id = $1",
                uuid.UUID(interval["data"]["id"]),
            )
            == 3
        )
        assert (
            await db.fetchval(
                "SELECT state FROM schedules WHERE id = $1", uuid.UUID(interval["data"]["id"])
            )
            == "COMPLETED"
        )

        # 4. acks: RUNNING then SUCCEEDED, stored and announced
        # Acks are keyed by schedule id, like everything else, so they stay in order.
        action_id = once_due.value["data"]["actionId"]
        key = once["data"]["id"].encode()
        for state in ("RUNNING", "SUCCEEDED"):
            await bus.send(
                topics.actions_acks,
                {
                    "type": "action.ack",
                    "meta": {"tenant": "acct-e2e"},
                    "data": {"actionId": action_id, "attempt": 1, "state": state},
                },
                key,
            )
        changes = await bus.wait_for(
            topics.actions_events,
            lambda r: (
                r.value["data"]["actionId"] == action_id
                and r.value["type"] == "action.state-changed"
            ),
            count=2,
        )
        assert [c.value["data"]["state"] for c in changes] == ["RUNNING", "SUCCEEDED"]
        assert (
            await db.fetchval("SELECT state FROM actions WHERE id = $1", uuid.UUID(action_id))
            == "SUCCEEDED"
        )
    finally:
        await db.close()

    # a malformed ack goes to the DLQ with its reason; the acker keeps serving
    await bus.send(topics.actions_acks, {"type": "action.ack", "data": {"state": "MAYBE"}})
    [bad_ack] = await bus.wait_for(
        topics.dlq, lambda r: r.headers.get("chime-source-topic") == topics.actions_acks
    )
    assert "not an action.ack" in bad_ack.headers["chime-reason"]
    await bus.send(
        topics.actions_acks,
        {
            "type": "action.ack",
            "meta": {"tenant": "acct-e2e"},
            "data": {"actionId": action_id, "attempt": 1, "state": "SUCCEEDED"},
        },
        key,
    )
    await bus.wait_for(topics.actions_events, lambda r: r.value["type"] == "action.ack-ignored")


async def test_chime_publish_prints_the_result_and_exit_code(services, settings, tmp_path) -> None:
    env = {
        **os.environ,
        "CHIME_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CHIME_TOPIC_PREFIX": settings.topic_prefix,
        "CHIME_KAFKA_COMPRESSION": "zstd",  # the CLI's producer compresses as the services do
    }
    example = Path(__file__).resolve().parents[2] / "examples" / "quickstart.json"

    async def publish(path: Path) -> tuple[int, str]:
        code, out, _ = await run_chime(env, "publish", str(path))
        return code, out

    code, out = await publish(example)
    assert code == 0 and '"type": "schedule.created"' in out
    code, out = await publish(example)  # same name again: rejected, exit 1
    assert code == 1 and '"code": "CONFLICT"' in out
    commands = await batch_codecs(settings.kafka_bootstrap_servers, settings.topics.commands)
    assert commands == [CODECS["zstd"]] * 2


async def test_idempotency_survives_a_scheduler_restart(services, bus: Bus, settings) -> None:
    topics = settings.topics
    body = command(
        "schedule.create",
        {
            "name": "restart-proof",
            "trigger": {"kind": "daily", "hours": 4},
            "action": {"type": "import"},
        },
    )
    await bus.send(topics.commands, body)
    [original] = await bus.wait_for(
        topics.command_results,
        lambda r: r.value["meta"]["correlationId"] == body["meta"]["correlationId"],
    )
    await services.kill("scheduler")  # SIGKILL: no goodbye
    await services.start("scheduler")
    again = {**body, "meta": {**body["meta"], "correlationId": "after-restart"}}
    await bus.send(topics.commands, again)
    [replayed] = await bus.wait_for(
        topics.command_results,
        lambda r: r.value["meta"]["correlationId"] == "after-restart",
        timeout=60,
    )
    assert replayed.value["data"] == original.value["data"]
    db = await connect(settings.database_url)
    try:
        assert await db.fetchval("SELECT count(*) FROM schedules WHERE name = 'restart-proof'") == 1
    finally:
        await db.close()


async def test_every_example_over_the_broker(services, bus: Bus, settings) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    expected = {
        "000-faas-scheduled-event.json": "schedule.created",
        "001-custom-scheduled-event.json": "schedule.created",
        "002-subscription-schedule.json": "schedule.created",
        "003-campaign-template-schedule.json": "schedule.replaced",
        "pause.json": "schedule.paused",
        "resume.json": "schedule.resumed",
        "update.json": "schedule.updated",
        "replace.json": "schedule.replaced",
        "trigger.json": "schedule.triggered",
        "get.json": "schedule.fetched",
        "delete.json": "schedule.deleted",
    }
    for name, result_type in expected.items():
        body = json.loads((examples / name).read_text())
        await bus.send(settings.topics.commands, body)
        [result] = await bus.wait_for(
            settings.topics.command_results,
            lambda r, b=body: r.value["meta"]["correlationId"] == b["meta"]["correlationId"],
        )
        assert result.value["type"] == result_type, (name, result.value)
    # the manual trigger of example 002 fires through the ticker
    await bus.wait_for(settings.topics.actions_due, lambda r: r.value["data"]["type"] == "tax-run")


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_commands_compressed_by_a_teams_producer_are_answered(
    services, bus: Bus, settings, codec: str
) -> None:
    """Chime reads every codec a Kafka producer may compress with (a consumer without the
    codec's library fails every fetch of that partition, and would stall on it)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", compression_type=codec
    )
    await producer.start()
    try:
        body = command(
            "schedule.create",
            {
                "name": f"compressed-{codec}",
                "trigger": {"kind": "cron", "expression": "0 9 * * *"},
                "action": {"type": "report"},
            },
        )
        await producer.send_and_wait(settings.topics.commands, orjson.dumps(body))
    finally:
        await producer.stop()
    [result] = await bus.wait_for(
        settings.topics.command_results,
        lambda r: r.value["meta"]["correlationId"] == body["meta"]["correlationId"],
    )
    assert result.value["type"] == "schedule.created", result.value


async def test_chime_ack_and_status(services, bus: Bus, settings) -> None:
    env = {
        **os.environ,
        "CHIME_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "CHIME_TOPIC_PREFIX": settings.topic_prefix,
        "CHIME_DATABASE_URL": settings.database_url,
    }

    async def chime(*args: str) -> tuple[int, str]:
        code, out, err = await run_chime(env, *args)
        assert code in (0, 1), err[-3000:]
        return code, out

    at = iso(datetime.now(UTC) + timedelta(seconds=1))
    created = await create(
        bus,
        {"name": "acked-by-hand", "trigger": {"kind": "once", "at": at}, "action": {"type": "x"}},
    )
    [due] = await bus.wait_for(
        settings.topics.actions_due,
        lambda r: r.value["data"]["scheduleId"] == created["data"]["id"],
        timeout=15,
    )
    action_id = due.value["data"]["actionId"]
    code, out = await chime("ack", action_id, "--state", "SUCCEEDED", "--tenant", "acct-e2e")
    assert code == 0 and '"state": "SUCCEEDED"' in out
    code, out = await chime("ack", action_id, "--state", "SUCCEEDED", "--tenant", "acct-e2e")
    assert code == 1 and "DUPLICATE" in out  # already applied: reported, exit 1
    code, out = await chime("status")
    report = json.loads(out)
    assert code == 0 and report["schedules"] == {"COMPLETED": 1}
    assert report["backlog"] == 0 and report["failed"] == 0
    assert set(report["consumerLag"]) == {
        settings.consumer_group("scheduler"),
        settings.consumer_group("acker"),
    }


async def test_the_due_backlog_gauge_counts_what_waits_past_its_instant(
    services, bus: Bus, settings
) -> None:
    """chime_due_backlog, as the ticker's /metrics shows it (refreshed at each scrape): an
    explicit action of a paused schedule past its instant waits (a pause keeps explicit
    actions), and counts; deleted, it does not."""
    at = datetime.now(UTC) + timedelta(seconds=2)
    name = f"backlog-{uuid.uuid4().hex[:8]}"
    actions = [{"type": "START", "at": iso(at + timedelta(seconds=1))}]
    window = {"startsAt": iso(at - timedelta(minutes=1)), "endsAt": iso(at + timedelta(hours=1))}
    created = await create(
        bus, {"name": name, **window, "actions": actions, "action": {"type": "START"}}
    )
    assert created["type"] == "schedule.created", created
    paused = await answered(bus, "schedule.pause", {"name": name})
    assert paused["type"] == "schedule.paused", paused
    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds() + 1.5))

    def backlog() -> str:
        [value] = re.findall(r"^chime_due_backlog (\S+)$", services.metrics("ticker"), re.M)
        return value

    assert backlog() == "1.0"
    deleted = await answered(bus, "schedule.delete", {"name": name})
    assert deleted["type"] == "schedule.deleted", deleted
    assert backlog() == "0.0"


async def test_metrics_and_health_endpoints(services, bus: Bus, settings) -> None:
    import urllib.request

    at = iso(datetime.now(UTC) + timedelta(seconds=1))
    created = await create(
        bus, {"name": "measured", "trigger": {"kind": "once", "at": at}, "action": {"type": "x"}}
    )
    [due] = await bus.wait_for(
        settings.topics.actions_due,
        lambda r: r.value["data"]["scheduleId"] == created["data"]["id"],
    )
    action_id = due.value["data"]["actionId"]
    await bus.send(
        settings.topics.actions_acks,
        {
            "type": "action.ack",
            "meta": {"tenant": created["meta"]["tenant"]},
            "data": {"actionId": action_id, "attempt": 1, "state": "SUCCEEDED"},
        },
        created["data"]["id"].encode(),
    )
    await bus.wait_for(
        settings.topics.actions_events, lambda r: r.value["data"]["actionId"] == action_id
    )

    def get(url: str) -> tuple[int, str]:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()

    for label, url in services.urls.items():
        assert get(f"{url}/health/live")[0] == 200, label
        assert get(f"{url}/health/ready")[0] == 200, label
        # What each service built while starting is kept out of collections (run_service).
        metrics = get(f"{url}/metrics")[1]
        [frozen] = re.findall(r"^chime_gc_frozen_objects (\S+)$", metrics, re.M)
        assert float(frozen) > 10_000, label
        assert 'chime_gc_pause_seconds_count{generation="2"}' in metrics, label
    ticker = get(f"{services.urls['ticker']}/metrics")[1]
    assert "chime_actions_fired_total 1.0" in ticker
    assert 'chime_firing_lateness_seconds_bucket{le="1.0"} 1.0' in ticker
    assert "chime_due_backlog 0.0" in ticker
    assert "chime_claim_batch_size_count 1.0" in ticker
    assert "chime_broker_ack_wait_seconds_count 1.0" in ticker  # the round, acknowledged
    scheduler = get(f"{services.urls['scheduler']}/metrics")[1]
    assert (
        'chime_commands_total{outcome="schedule.created",type="schedule.create"} 1.0' in scheduler
    )
    acker = get(f"{services.urls['acker']}/metrics")[1]
    assert 'chime_acks_total{outcome="action.state-changed",state="SUCCEEDED"} 1.0' in acker
    assert f'chime_consumer_lag{{topic="{settings.topics.commands}"}}' in scheduler

    if malloc_trim is not None:  # each trims within a period (5 s) of the batch it applied
        for label in ("scheduler", "acker"):
            for _ in range(75):
                metrics = get(f"{services.urls[label]}/metrics")[1]
                if "chime_heap_trim_seconds_count 0.0" not in metrics:
                    break
                await asyncio.sleep(0.2)
            [trims] = re.findall(r"^chime_heap_trim_seconds_count (\S+)$", metrics, re.M)
            assert float(trims) >= 1, label
