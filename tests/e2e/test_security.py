"""Security over the broker: services in `auth_mode=jwt`, as the DML-only role under row-level
security, refusing bad tokens and surviving a hypothesis-driven fuzz of commands and acks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis
import jwt
import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from shared.contracts import format_instant
from shared.persistence.database import connect
from shared.settings import Settings
from tests.cli import run_chime
from tests.e2e.conftest import SERVICES, Bus, read_all
from tests.processes import Services

pytestmark = pytest.mark.e2e

SECRET = "chime-e2e-hs256-secret-0123456789abcdef"
TENANT = "acct-sec"
ALL_SCOPES = "schedules:write schedules:read actions:ack"
MAX_BYTES = 65_536  # CHIME_MAX_MESSAGE_BYTES for these services
ERROR_CODES = {
    "VALIDATION",
    "NOT_FOUND",
    "CONFLICT",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED",
    "INTERNAL",
}


def token(
    tenant: str = TENANT, scope: str | None = ALL_SCOPES, ttl: float = 3600, secret: str = SECRET
) -> str:
    claims: dict[str, Any] = {"tenant": tenant, "exp": time.time() + ttl, "sub": "e2e"}
    if scope is not None:
        claims["scope"] = scope
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(value: str) -> list[tuple[str, bytes]]:
    return [("authorization", f"Bearer {value}".encode())]


def create(name: str, at: datetime, tenant: str = TENANT) -> dict[str, Any]:
    return {
        "type": "schedule.create",
        "meta": {
            "commandId": str(uuid.uuid4()),
            "correlationId": str(uuid.uuid4()),
            "tenant": tenant,
        },
        "data": {
            "name": name,
            "trigger": {"kind": "once", "at": format_instant(at)},
            "action": {"type": "sec-check", "payload": {"n": 1}},
        },
    }


def ack_body(action_id: str, state: str = "SUCCEEDED", tenant: str = TENANT) -> dict[str, Any]:
    return {
        "type": "action.ack",
        "meta": {"tenant": tenant},
        "data": {"actionId": action_id, "attempt": 1, "state": state},
    }


@pytest.fixture
async def secured(settings: Settings) -> AsyncIterator[Services]:
    running = Services(
        settings,
        CHIME_AUTH_MODE="jwt",
        CHIME_AUTH_HS256_SECRET=SECRET,
        CHIME_MAX_MESSAGE_BYTES=str(MAX_BYTES),
    )
    await asyncio.wait_for(asyncio.gather(*(running.start(n) for n in SERVICES)), 90)
    yield running
    codes = await running.stop_all()
    assert codes == dict.fromkeys(SERVICES, 0), f"services did not stop cleanly: {codes}"


def _result(bus: Bus, correlation: str) -> Any:
    return bus.wait_for(
        bus.settings.topics.command_results,
        lambda r: r.value["meta"].get("correlationId") == correlation,
        timeout=60,
    )


async def _fire_and_ack(bus: Bus, name: str) -> None:
    """Valid traffic: create (full token) -> action.due -> ack -> SUCCEEDED."""
    topics = bus.settings.topics
    body = create(name, datetime.now(UTC) + timedelta(seconds=1))
    await bus.send(topics.commands, body, headers=bearer(token()))
    (created,) = await _result(bus, body["meta"]["correlationId"])
    assert created.value["type"] == "schedule.created", created.value
    schedule_id = created.value["data"]["id"]
    (due,) = await bus.wait_for(
        topics.actions_due, lambda r: r.value["data"]["scheduleId"] == schedule_id, timeout=60
    )
    action_id = due.value["data"]["actionId"]
    await bus.send(topics.actions_acks, ack_body(action_id), headers=bearer(token()))
    await bus.wait_for(
        topics.actions_events,
        lambda r: (
            r.value["data"]["actionId"] == action_id and r.value["data"].get("state") == "SUCCEEDED"
        ),
        timeout=60,
    )


async def test_token_failures_change_nothing_and_are_logged_without_the_token(
    secured: Services, bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    topics = settings.topics
    later = datetime.now(UTC) + timedelta(days=1)
    cases: list[tuple[str, list[tuple[str, bytes]], str, str]] = [
        ("no header", [], "UNAUTHORIZED", "authorization"),
        ("basic auth", [("authorization", b"Basic dXNlcjpwdw==")], "UNAUTHORIZED", "authorization"),
        ("garbage", bearer("a.b.c"), "UNAUTHORIZED", "authorization"),
        ("expired", bearer(token(ttl=-3600)), "UNAUTHORIZED", "authorization"),
        ("wrong key", bearer(token(secret="z" * 40)), "UNAUTHORIZED", "authorization"),
        (
            "alg none",
            bearer(jwt.encode({"tenant": TENANT, "exp": time.time() + 60}, None, algorithm="none")),
            "UNAUTHORIZED",
            "authorization",
        ),
        ("not utf-8", [("authorization", b"Bearer \xff\xfe\xfd")], "UNAUTHORIZED", "authorization"),
        ("other tenant", bearer(token(tenant="acct-other")), "FORBIDDEN", "meta.tenant"),
        ("read only", bearer(token(scope="schedules:read")), "FORBIDDEN", "authorization"),
        ("no scope", bearer(token(scope=None)), "FORBIDDEN", "authorization"),
    ]
    bodies = []
    for i, (_, headers, _, _) in enumerate(cases):
        body = create(f"denied-{i}", later)
        bodies.append(body)
        await bus.send(topics.commands, body, headers=headers)
    for (label, _, code, field), body in zip(cases, bodies, strict=True):
        (answer,) = await _result(bus, body["meta"]["correlationId"])
        assert answer.value["type"] == "command.rejected", (label, answer.value)
        error = answer.value["errors"][0]
        assert (error["code"], error["field"]) == (code, field), (label, error)
    # A read-only token may read; a full token may write.
    allowed = create("allowed", later)
    await bus.send(topics.commands, allowed, headers=bearer(token()))
    (made,) = await _result(bus, allowed["meta"]["correlationId"])
    assert made.value["type"] == "schedule.created"
    get = {
        "type": "schedule.get",
        "meta": {"commandId": "g1", "correlationId": "read-only-get", "tenant": TENANT},
        "data": {"id": made.value["data"]["id"]},
    }
    await bus.send(topics.commands, get, headers=bearer(token(scope="schedules:read")))
    (fetched,) = await _result(bus, "read-only-get")
    assert fetched.value["type"] == "schedule.fetched"

    # Acks need `actions:ack` for the action's tenant.
    soon = create("to-ack", datetime.now(UTC) + timedelta(seconds=1))
    await bus.send(topics.commands, soon, headers=bearer(token()))
    (soon_made,) = await _result(bus, soon["meta"]["correlationId"])
    (due,) = await bus.wait_for(
        topics.actions_due,
        lambda r: r.value["data"]["scheduleId"] == soon_made.value["data"]["id"],
        timeout=60,
    )
    action_id = due.value["data"]["actionId"]
    refusals = [
        ([], "UNAUTHORIZED"),
        (bearer(token(scope="schedules:write")), "FORBIDDEN"),
        (bearer(token(tenant="acct-other", scope="actions:ack")), "FORBIDDEN"),
    ]
    for headers, _ in refusals:
        await bus.send(topics.actions_acks, ack_body(action_id), headers=headers)
    ignored = await bus.wait_for(
        topics.actions_events,
        lambda r: (
            r.value["data"]["actionId"] == action_id and r.value["type"] == "action.ack-ignored"
        ),
        count=len(refusals),
        timeout=60,
    )
    assert sorted(r.value["data"]["reason"].split(":")[0] for r in ignored) == sorted(
        code for _, code in refusals
    )
    db = await connect(settings.database_url)
    try:
        state = await db.fetchval("SELECT state FROM actions WHERE id = $1", uuid.UUID(action_id))
        assert state == "DISPATCHED", "a refused ack changed the occurrence"
        names = await db.fetch("SELECT name FROM schedules ORDER BY name")
        assert [r["name"] for r in names] == ["allowed", "to-ack"], "a refused command wrote"
    finally:
        await db.close()
    await bus.send(topics.actions_acks, ack_body(action_id), headers=bearer(token()))
    await bus.wait_for(
        topics.actions_events,
        lambda r: (
            r.value["data"]["actionId"] == action_id and r.value["data"].get("state") == "SUCCEEDED"
        ),
        timeout=60,
    )
    # `chime publish` sends CHIME_AUTH_TOKEN as its bearer token: applied with it, refused without.
    for name, extra, code, answer in [
        ("by-cli", {"CHIME_AUTH_TOKEN": token()}, 0, '"type": "schedule.created"'),
        ("by-cli-without-token", {}, 1, '"code": "UNAUTHORIZED"'),
    ]:
        path = tmp_path / f"{name}.json"
        path.write_bytes(orjson.dumps(create(name, later)))
        exit_code, out, err = await run_chime({**settings.to_env(), **extra}, "publish", str(path))
        assert exit_code == code and answer in out, (name, exit_code, out, err)
    logs = "".join(secured.logs[n].read_text() for n in SERVICES)
    assert "UNAUTHORIZED" in logs or "expired" in logs  # the reasons are logged ...
    for _, headers, _, _ in cases:
        for _, value in headers:
            secret_part = value.decode("latin-1").removeprefix("Bearer ")
            if len(secret_part) > 20:
                assert secret_part not in logs  # ... the tokens are not


# --- fuzz ------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
FAR = datetime(2099, 1, 1, tzinfo=UTC)
DEEP = "<deeply nested object>"


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


def _set(value: Any, path: tuple, new: Any, delete: bool = False) -> None:
    for step in path[:-1]:
        value = value[step]
    if delete:
        del value[path[-1]]
    else:
        value[path[-1]] = new


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """A valid message, changed in one or two ways that a sender could get wrong."""
    body = orjson.loads(orjson.dumps(base))
    for _ in range(draw(st.integers(1, 2))):
        paths = _paths(body)
        operation = draw(
            st.sampled_from(["drop", "retype", "huge", "deep", "labels", "type", "meta"])
        )
        if operation in ("drop", "retype") and paths:
            path = draw(st.sampled_from(paths))
            _set(body, path, draw(JSON), delete=operation == "drop")
        elif operation == "huge":
            path = draw(st.sampled_from(paths)) if paths else ("x",)
            _set(body, path, "x" * draw(st.integers(1_000, 100_000)))
        elif operation == "deep":  # spliced in as text below: orjson writes 254 levels at most
            depth = draw(st.integers(30, 400))
            nested = DEEP
            if not isinstance(body.get("data"), dict):
                body["data"] = {}
            if body.get("type") == "action.ack":
                body["data"]["output"] = nested
            else:
                body["data"]["action"] = {"type": "deep", "payload": nested}
        elif operation == "labels" and isinstance(body.get("data"), dict):
            body["data"]["labels"] = {f"k{i}": "v" for i in range(draw(st.integers(60, 200)))}
        elif operation == "type":
            body["type"] = draw(
                st.text(max_size=30) | st.sampled_from(["schedule.delete", "action.ack"])
            )
        else:
            body["meta"] = draw(JSON)
    text = orjson.dumps(body)
    if DEEP.encode() in text:
        text = text.replace(f'"{DEEP}"'.encode(), b'{"a":' * depth + b"{}" + b"}" * depth, 1)
    if draw(st.booleans()) and len(text) > 10:  # sometimes cut short
        text = text[: draw(st.integers(1, len(text) - 1))]
    return text


RAW = st.one_of(
    st.binary(max_size=300),
    st.just(b'{"type": "schedule.create", "meta": {"tenant": "\xff\xfe"}}'),
    st.integers(2_000, 20_000).map(lambda n: b"[" * n + b"]" * n),  # nesting bomb
    st.integers(MAX_BYTES, 2 * MAX_BYTES).map(lambda n: b'{"a": "' + b"x" * n + b'"}'),
    st.integers(30, 600).map(lambda n: b"1" + b"0" * n),  # beyond 64-bit
    st.builds(lambda v: orjson.dumps(v), JSON),
)


def _headers(scope: str) -> st.SearchStrategy[list[tuple[str, bytes]]]:
    good = bearer(token(scope=scope))
    return st.one_of(
        st.just(good),
        st.just(good),
        st.just(good),
        st.just([]),
        st.just(bearer(token(tenant="acct-other", scope=scope))),
        st.just(bearer(token(ttl=-60, scope=scope))),
        st.binary(max_size=40).map(lambda b: [("authorization", b)]),
        st.binary(max_size=40).map(lambda b: [*good, ("x-junk", b)]),
    )


def _fuzz_messages(topics: Any, want: int) -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    command_base = create("fuzzed", FAR)
    ack_base = ack_body(str(uuid.uuid4()))
    item = st.one_of(
        st.tuples(
            st.just(topics.commands),
            mutated(command_base) | mutated(command_base) | RAW,
            _headers(ALL_SCOPES),
        ),
        st.tuples(
            st.just(topics.actions_acks),
            mutated(ack_base) | RAW | st.just(orjson.dumps(ack_body(str(uuid.uuid4())))),
            _headers("actions:ack"),
        ),
    )
    messages: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []

    @given(st.lists(item, min_size=50, max_size=50))
    @hypothesis.settings(
        max_examples=250,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def collect(batch: list) -> None:
        messages.extend(batch)

    for seed in range(100):
        if len(messages) >= want:
            break
        hypothesis.seed(seed)(collect)()
    return messages


@pytest.mark.slow
async def test_fuzz_every_message_is_answered_and_valid_traffic_still_flows(
    secured: Services, bus: Bus, settings: Settings
) -> None:
    topics = settings.topics
    messages = _fuzz_messages(topics, 10_000)
    assert len(messages) >= 10_000
    sent = {topics.commands: 0, topics.actions_acks: 0}
    await _fire_and_ack(bus, "valid-before")
    valid_rounds = 1
    pending: list[asyncio.Future] = []
    for index, (topic, value, headers) in enumerate(messages):
        pending.append(await bus.producer.send(topic, value, headers=headers or None))
        sent[topic] += 1
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending.clear()
        if index % 2_500 == 2_499:  # valid traffic in between: served while the fuzz flows
            await asyncio.gather(*pending)
            pending.clear()
            await _fire_and_ack(bus, f"valid-{index}")
            valid_rounds += 1
    await asyncio.gather(*pending)
    await _fire_and_ack(bus, "valid-after")
    valid_rounds += 1

    def dead(source: str) -> list:
        return [
            r for r in bus.received[topics.dlq] if r.headers.get("chime-source-topic") == source
        ]

    def ack_answers() -> list:
        return [
            r
            for r in bus.received[topics.actions_events]
            if r.value["type"] == "action.ack-ignored" and not r.value["data"].get("scheduleId")
        ]

    commands_total = sent[topics.commands] + valid_rounds
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        answered = len(bus.received[topics.command_results]) + len(dead(topics.commands))
        acked = len(ack_answers()) + len(dead(topics.actions_acks))
        if answered >= commands_total and acked >= sent[topics.actions_acks]:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(2)  # anything answered twice would show up now
    # The count that matters is what the topics hold: read them again from the start.
    results, events, dlq = await asyncio.gather(
        *(
            read_all(settings, t)
            for t in (topics.command_results, topics.actions_events, topics.dlq)
        )
    )
    bus.received[topics.command_results] = results
    bus.received[topics.actions_events] = events
    bus.received[topics.dlq] = dlq
    answered = len(results) + len(dead(topics.commands))
    acked = len(ack_answers()) + len(dead(topics.actions_acks))
    assert (answered, acked) == (commands_total, sent[topics.actions_acks]), (
        f"commands sent {commands_total}, answered {answered}; "
        f"acks sent {sent[topics.actions_acks]}, answered {acked}"
    )
    for record in bus.received[topics.command_results]:
        for error in record.value.get("errors") or []:
            assert error["code"] in ERROR_CODES and error["message"], error
    assert all(r.headers.get("chime-reason") for r in bus.received[topics.dlq])
    outcomes = {r.value["type"] for r in bus.received[topics.command_results]}
    assert "command.rejected" in outcomes
    codes = {
        e["code"] for r in bus.received[topics.command_results] for e in r.value.get("errors") or []
    }
    assert {"UNAUTHORIZED", "FORBIDDEN", "VALIDATION"} <= codes, codes
    assert all(proc.returncode is None for proc in secured.procs.values()), "a service died"
