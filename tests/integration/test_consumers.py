"""The scheduler's and the acker's batch handlers (`CommandConsumer`, `AckConsumer`) on a batch
that mixes good records with bad ones, on the real database: what each record becomes, and
what the service counts in /metrics (dead letters once each; a refused ack as ignored, not as
a dead letter)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import orjson
import pytest
from aiokafka import ConsumerRecord

from services.acker.app import AckConsumer
from services.scheduler.app import CommandConsumer
from shared.clock import SystemClock
from shared.persistence.database import create_pool
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.integration.helpers import command, schedule

SECRET = "chime-consumers-hs256-secret-0123456789"


def record(topic: str, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> Any:
    return ConsumerRecord(topic, 0, 0, 0, 0, None, value, None, 0, len(value), headers or [])


def counted(runtime: ServiceRuntime, name: str, **labels: str) -> float:
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_the_scheduler_dead_letters_what_is_no_command_and_counts_each_once(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, database_pool_size=3)
    topics = settings.topics
    runtime = ServiceRuntime("scheduler", settings)
    pool = await create_pool(database_url, 3)
    consumer = CommandConsumer(pool, settings, SystemClock(), runtime)
    name = f"mixed-{uuid.uuid4().hex[:8]}"
    good = command("schedule.create", schedule(name, trigger={"kind": "daily", "hours": 1}))
    batch = [
        record(topics.commands, b"\xff not json"),
        record(topics.commands, orjson.dumps(good)),
        record(topics.commands, b"[1, 2, 3]"),  # JSON, but no command
        record(topics.commands, b"x" * (settings.max_message_bytes + 1)),
    ]
    try:
        out = await consumer.handle(batch)
    finally:
        await pool.close()
    assert [o.topic for o in out] == [topics.dlq] * 3 + [topics.command_results]
    assert orjson.loads(out[-1].value)["type"] == "schedule.created"
    assert counted(runtime, "chime_dlq_entries_total", service="scheduler") == 3
    created = {"type": "schedule.create", "outcome": "schedule.created"}
    assert counted(runtime, "chime_commands_total", **created) == 1


async def test_a_command_type_no_one_knows_is_counted_as_other(database_url: str) -> None:
    """`chime_commands_total` took its `type` label as sent: each distinct text a series kept
    for good, so a sender of random types grew the scheduler's memory and every scrape without
    bound. Types it does not know are counted as `other`."""
    settings = Settings(database_url=database_url, database_pool_size=3)
    runtime = ServiceRuntime("scheduler", settings)
    pool = await create_pool(database_url, 3)
    consumer = CommandConsumer(pool, settings, SystemClock(), runtime)
    kinds: list[Any] = [f"schedule.random-{i}" for i in range(50)] + [5, None, ["x"], {"a": 1}]
    unknown = [command("schedule.get", {"name": "x"}) | {"type": kind} for kind in kinds]
    known = command("schedule.get", {"name": "nothing-here"})
    try:
        out = await consumer.handle(
            [record(settings.topics.commands, orjson.dumps(c)) for c in [*unknown, known]]
        )
    finally:
        await pool.close()
    assert len(out) == len(kinds) + 1
    counts = {
        (s.labels["type"], s.labels["outcome"]): s.value
        for metric in runtime.metrics.registry.collect()
        if metric.name == "chime_commands"
        for s in metric.samples
        if s.name == "chime_commands_total"
    }
    assert counts == {
        ("other", "command.rejected"): len(kinds),
        ("schedule.get", "command.rejected"): 1,  # NOT_FOUND
    }


async def test_a_command_the_scheduler_fails_on_is_answered_and_the_batch_goes_on(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault of Chime's own on one command (an exception no rule expects) is answered
    INTERNAL, and the other commands of the batch are applied, in the bulk run of creates and
    one by one: the batch failing instead would be delivered again, and fail again, for ever."""
    from services.scheduler import creates, handlers

    def faulty(prepare: Any) -> Any:
        def prepare_or_fail(spec: Any, *args: Any, **kwargs: Any) -> Any:
            if spec.name.startswith("faulty"):
                raise RuntimeError("a fault")
            return prepare(spec, *args, **kwargs)

        return prepare_or_fail

    monkeypatch.setattr(creates, "prepare", faulty(creates.prepare))
    monkeypatch.setattr(handlers, "prepare", faulty(handlers.prepare))
    settings = Settings(database_url=database_url, database_pool_size=3)
    topics = settings.topics
    runtime = ServiceRuntime("scheduler", settings)
    pool = await create_pool(database_url, 3)
    consumer = CommandConsumer(pool, settings, SystemClock(), runtime)
    daily = {"kind": "daily", "hours": 1}
    commands = [
        command("schedule.create", schedule("before", trigger=daily)),
        command("schedule.create", schedule("faulty-1", trigger=daily)),
        command("schedule.create", schedule("after", trigger=daily)),
        command("schedule.replace", schedule("faulty-2", trigger=daily)),  # one by one
        command("schedule.replace", schedule("replaced", trigger=daily)),
    ]
    try:
        out = await consumer.handle([record(topics.commands, orjson.dumps(c)) for c in commands])
        stored = await pool.fetch("SELECT name FROM schedules ORDER BY name")
    finally:
        await pool.close()
    results = [orjson.loads(o.value) for o in out]
    assert [r["type"] for r in results] == [
        "schedule.created",
        "command.rejected",
        "schedule.created",
        "command.rejected",
        "schedule.replaced",
    ]
    for refused in (results[1], results[3]):
        [error] = refused["errors"]
        assert error["code"] == "INTERNAL"
        assert error["message"].startswith("the scheduler failed on this command (RuntimeError")
    assert [r["name"] for r in stored] == ["after", "before", "replaced"]


async def test_the_acker_counts_a_refused_ack_as_ignored_and_not_as_a_dead_letter(
    database_url: str,
) -> None:
    settings = Settings(
        database_url=database_url, database_pool_size=3, auth_mode="jwt", auth_hs256_secret=SECRET
    )
    topics = settings.topics
    runtime = ServiceRuntime("acker", settings)
    pool = await create_pool(database_url, 3)
    consumer = AckConsumer(pool, settings, SystemClock(), runtime)
    tenant = "acct-consumers"

    def ack() -> bytes:  # of an occurrence never stored: the acker ignores it, saying why
        data = {"actionId": str(uuid.uuid4()), "attempt": 1, "state": "SUCCEEDED"}
        return orjson.dumps({"type": "action.ack", "meta": {"tenant": tenant}, "data": data})

    claims = {"tenant": tenant, "scope": "actions:ack", "exp": time.time() + 60}
    signed = [("authorization", f"Bearer {jwt.encode(claims, SECRET)}".encode())]
    batch = [
        record(topics.actions_acks, b"not json"),
        record(topics.actions_acks, orjson.dumps({"type": "action.ack"})),  # no ack
        record(topics.actions_acks, ack()),  # no token: refused before the database
        record(topics.actions_acks, ack(), signed),  # applied: no such occurrence
    ]
    try:
        out = await consumer.handle(batch)
    finally:
        await pool.close()
    assert [o.topic for o in out] == [topics.dlq] * 2 + [topics.actions_events] * 2
    refused, unknown = (orjson.loads(o.value) for o in out[2:])
    assert refused["type"] == unknown["type"] == "action.ack-ignored"
    assert refused["data"]["reason"].startswith("UNAUTHORIZED"), refused
    assert not unknown["data"]["reason"].startswith("UNAUTHORIZED"), unknown
    assert counted(runtime, "chime_dlq_entries_total", service="acker") == 2
    ignored = {"state": "SUCCEEDED", "outcome": "action.ack-ignored"}
    assert counted(runtime, "chime_acks_total", **ignored) == 2


async def test_the_scheduler_refuses_text_with_a_nul_naming_where_it_is(database_url: str) -> None:
    """PostgreSQL cannot store a NUL character: a command carrying one anywhere was answered
    INTERNAL, and one with it in its tenant failed the whole batch, which was delivered
    again, and failed again, for ever. Each is now refused, naming where the NUL is."""
    settings = Settings(database_url=database_url, database_pool_size=3)
    runtime = ServiceRuntime("scheduler", settings)
    pool = await create_pool(database_url, 3)
    consumer = CommandConsumer(pool, settings, SystemClock(), runtime)
    daily = {"kind": "daily", "hours": 1}
    nul = "x\u0000"
    commands = [
        command("schedule.pause", {"name": "a"}, tenant=nul),
        command("schedule.create", schedule("b", trigger=daily), commandId=nul),
        command("schedule.get", {"name": nul}),
        command("schedule.create", schedule("c", trigger=daily, labels={nul: "v"})),
        command(
            "schedule.create",
            schedule("d", trigger=daily, action={"type": "t", "payload": {"k": ["a", nul]}}),
        ),
        command("schedule.create", schedule("fine", trigger=daily)),
    ]
    try:
        out = await consumer.handle(
            [record(settings.topics.commands, orjson.dumps(c)) for c in commands]
        )
        stored = await pool.fetch("SELECT name FROM schedules")
    finally:
        await pool.close()
    results = [orjson.loads(o.value) for o in out]
    assert [r["type"] for r in results] == ["command.rejected"] * 5 + ["schedule.created"]
    assert [(r["errors"][0]["code"], r["errors"][0]["field"]) for r in results[:5]] == [
        ("VALIDATION", "meta.tenant"),
        ("VALIDATION", "meta.commandId"),
        ("VALIDATION", "data.name"),
        ("VALIDATION", "data.labels"),
        ("VALIDATION", "data.action.payload.k[1]"),
    ]
    assert results[1]["errors"][0]["message"] == (
        "commandId must not contain the NUL character (\\u0000): PostgreSQL cannot store it"
    )
    assert [r["name"] for r in stored] == ["fine"]


def create_with_payload(name: str, payload: bytes) -> bytes:
    """A `schedule.create` record's bytes with `payload` written as it is (orjson could not
    write some of what is sent here)."""
    daily = {"kind": "daily", "hours": 1}
    body = orjson.dumps(command("schedule.create", schedule(name, trigger=daily)))
    return body.replace(b'{"k":1}', payload)


def ack_with_output(output: bytes) -> bytes:
    """An `action.ack` record's bytes with `output` written as it is."""
    ack = {
        "type": "action.ack",
        "meta": {"tenant": "t"},
        "data": {"actionId": str(uuid.uuid4()), "attempt": 1, "state": "SUCCEEDED"},
    }
    return orjson.dumps(ack)[:-2] + b',"output":' + output + b"}}"


async def through_both(
    database_url: str, commands: list[bytes], ack: bytes, query: str | None = None
) -> tuple[Settings, list[dict[str, Any]], list[Any], Any]:
    """The scheduler's answers to `commands`, what the acker makes of `ack`, and `query`'s
    value after."""
    settings = Settings(database_url=database_url, database_pool_size=3)
    pool = await create_pool(database_url, 3)
    scheduler = CommandConsumer(
        pool, settings, SystemClock(), ServiceRuntime("scheduler", settings)
    )
    acker = AckConsumer(pool, settings, SystemClock(), ServiceRuntime("acker", settings))
    try:
        out = await scheduler.handle([record(settings.topics.commands, c) for c in commands])
        dead = await acker.handle([record(settings.topics.actions_acks, ack)])
        value = await pool.fetchval(query) if query else None
    finally:
        await pool.close()
    return settings, [orjson.loads(o.value) for o in out], dead, value


async def test_a_whole_number_past_64_bits_is_refused_not_stored_rounded(
    database_url: str,
) -> None:
    """orjson reads a whole number outside -2^63..2^64-1 as a float: a payload's
    `123456789012345678901234567890` was stored and fired as `1.2345678901234568e+29`, and an
    ack's output kept so. Refused instead, naming where it is; what orjson reads exactly (the
    64-bit ends, a long number in a string) is kept as written."""
    big = b"123456789012345678901234567890"
    edges = b'{"low":-9223372036854775808,"high":18446744073709551615,"id":"' + big + b'"}'
    settings, results, dead, stored = await through_both(
        database_url,
        [
            create_with_payload("big", b'{"ids":[1,' + big + b"]}"),
            create_with_payload("below", b'{"n":-9223372036854775809}'),
            create_with_payload("edges", edges),
        ],
        ack_with_output(b'{"total":' + big + b"}"),
        "SELECT spec::text FROM schedules WHERE name = 'edges'",
    )
    assert [r["type"] for r in results] == ["command.rejected"] * 2 + ["schedule.created"]
    assert [(r["errors"][0]["code"], r["errors"][0]["field"]) for r in results[:2]] == [
        ("VALIDATION", "data.action.payload.ids[1]"),
        ("VALIDATION", "data.action.payload.n"),
    ]
    assert results[0]["errors"][0]["message"] == (
        "ids[1] is a whole number past 64 bits, which would be read rounded: send it as a string"
    )
    assert orjson.loads(stored)["action"]["payload"] == orjson.loads(edges)
    [dlq] = dead
    assert dlq.topic == settings.topics.dlq
    assert dict(dlq.headers)["chime-reason"] == (
        "not an action.ack: data.output.total is a whole number past 64 bits, which would be "
        "read rounded: send it as a string"
    )


async def test_what_chime_would_publish_of_a_command_or_an_ack_fits_a_message(
    database_url: str,
) -> None:
    """A record within the 1 MiB Chime reads can say `1e15` over and over: stored and written
    again it is `1000000000000000.0`, 4.5 times longer, and the result or event that carries it
    past the broker's 1 MB (it refuses the batch, which is answered again, refused again, for
    ever). The create is refused naming the definition's size, the ack dead-lettered naming its
    output's."""
    many = b"[" + b",".join([b"1e15"] * 40_000) + b"]"  # 200 KB read, 760 KB written
    create = create_with_payload("long-numbers", b'{"n":' + many + b"}")
    assert len(create) < 1024 * 1024
    _, results, dead, stored = await through_both(
        database_url,
        [create],
        ack_with_output(b'{"n":' + many + b"}"),
        "SELECT count(*) FROM schedules",
    )
    [result] = results
    assert (result["errors"][0]["code"], result["errors"][0]["field"]) == (
        "PAYLOAD_TOO_LARGE",
        "data.action.payload",
    )
    assert stored == 0
    [dlq] = dead
    assert dict(dlq.headers)["chime-reason"] == (
        "not an action.ack: data.output: output is 760007 bytes as JSON written out (numbers in "
        "full); at most 262144 (256 KiB): store large results elsewhere and pass a reference"
    )


async def test_a_record_nested_past_pythons_recursion_is_answered(database_url: str) -> None:
    """orjson reads a record 1,000 levels deep; the looks for a NUL or a number read rounded
    went down it recursively past Python's limit: RecursionError out of the batch, delivered
    again and failed again for ever. Now they stop at 100 levels, and validation refuses what
    is deeper than 32."""

    def deep(inner: bytes) -> bytes:
        return b'{"k":' + b"[" * 1000 + inner + b"]" * 1000 + b"}"

    settings, results, dead, _ = await through_both(
        database_url,
        [
            create_with_payload("nul", deep(b'"x\\u0000"')),
            create_with_payload("big", deep(b"123456789012345678901234567890")),
            create_with_payload("fine", b'{"k":1}'),
        ],
        ack_with_output(deep(b"1" * 30)),
    )
    assert [r["type"] for r in results] == ["command.rejected"] * 2 + ["schedule.created"]
    for refused in results[:2]:
        [error] = refused["errors"]
        assert (error["code"], error["field"]) == ("VALIDATION", "data")
        assert error["message"] == "data nests deeper than 32 levels: flatten it"
    [dlq] = dead
    assert dlq.topic == settings.topics.dlq
    assert "output nests deeper than 32 levels" in dict(dlq.headers)["chime-reason"]


async def test_the_acker_dead_letters_what_it_cannot_store_and_an_ack_it_fails_on(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ack the database cannot take (an attempt past int4, a NUL in its tenant, message or
    output) failed the whole batch, delivered again and failed again for ever: each is now
    refused by validation. An ack the acker's own code fails on goes to the DLQ on its own,
    after the batch is applied again one ack at a time."""
    from services.acker import acks as ack_rules

    settings = Settings(database_url=database_url, database_pool_size=3)
    topics = settings.topics
    runtime = ServiceRuntime("acker", settings)
    pool = await create_pool(database_url, 3)
    consumer = AckConsumer(pool, settings, SystemClock(), runtime)
    faulty_id = str(uuid.uuid4())
    decide = ack_rules._decide

    def decide_or_fail(ack: Any, *args: Any) -> Any:
        if ack.data.action_id == faulty_id:
            raise RuntimeError("a fault")
        return decide(ack, *args)

    monkeypatch.setattr(ack_rules, "_decide", decide_or_fail)

    def ack(tenant: str = "t", **data: Any) -> bytes:
        body = {"actionId": str(uuid.uuid4()), "attempt": 1, "state": "FAILED", **data}
        return orjson.dumps({"type": "action.ack", "meta": {"tenant": tenant}, "data": body})

    batch = [
        ack(attempt=2**31),
        ack(tenant="t\u0000"),
        ack(message="x\u0000"),
        ack(output={"k": "x\u0000"}),
        ack(),  # applied: no such occurrence
        ack(actionId=faulty_id),
        ack(),
    ]
    try:
        out = await consumer.handle([record(topics.actions_acks, value) for value in batch])
    finally:
        await pool.close()
    reasons = [dict(o.headers).get("chime-reason", "") for o in out]
    assert [o.topic for o in out] == [topics.dlq] * 4 + [topics.actions_events, topics.dlq] + [
        topics.actions_events
    ]
    assert "data.attempt" in reasons[0] and "less than or equal to 2147483647" in reasons[0]
    assert "meta.tenant" in reasons[1]
    assert "data.message" in reasons[2] and "NUL character" in reasons[2]
    assert "data.output" in reasons[3] and "NUL character" in reasons[3]
    assert reasons[5] == "the acker failed on it (RuntimeError: a fault in Chime, logged)"
    assert orjson.loads(out[5].value)["data"]["actionId"] == faulty_id  # the record as it came
    assert counted(runtime, "chime_dlq_entries_total", service="acker") == 5
