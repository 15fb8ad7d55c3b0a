"""The definitions the ticker and the acker read: parsed once per shape, compiled once per
schedule, the most recently used kept up to each cache's limit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared import specs

CREATED = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def empty_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(specs, "_CACHE", type(specs._CACHE)())
    monkeypatch.setattr(specs, "_SHAPES", type(specs._SHAPES)())


def row(n: int) -> dict:
    spec = {
        "name": f"s{n}",
        "trigger": {"kind": "interval", "every": "PT1M"},
        "action": {"type": f"t{n}"},
    }
    return {
        "schedule_id": uuid.UUID(int=n),
        "schedule_version": 1,
        "spec": spec,
        "schedule_created_at": CREATED,
    }


def test_the_least_recently_used_definition_leaves_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(specs, "CACHE_LIMIT", 3)
    for n in range(3):
        specs.compiled(row(n))
    first = specs.compiled(row(0))  # used again: now the most recent
    assert specs.compiled(row(0)) is first  # from the cache, not parsed again
    specs.compiled(row(3))  # over the limit: 1, the least recently used, leaves
    assert [key[0].int for key in specs._CACHE] == [2, 0, 3]
    spec, _ = specs.compiled(row(1))  # parsed again, as it was defined
    assert spec.action.type == "t1"
    assert [key[0].int for key in specs._CACHE] == [0, 3, 1]


def test_a_definition_is_read_without_its_explicit_actions() -> None:
    """Each occurrence's row carries its own type, instant and payload: the definition the
    ticker and the acker read leaves the explicit list out, unvalidated (even one entry was a
    third of the time a definition takes), so an entry it could not read fails nothing."""
    definition = {
        "name": "reminder",
        "actions": [{"type": "remind", "at": "not an instant"}, {"type": "remind", "at": 7}],
        "action": {"type": "remind", "topic": "team.reminders"},
        "policy": {"ackTimeout": "PT2M"},
    }
    key = (uuid.UUID(int=99), 1)
    spec, _ = specs.compiled(
        {
            "schedule_id": key[0],
            "schedule_version": 1,
            "spec": definition,
            "schedule_created_at": CREATED,
        }
    )
    assert spec.actions == []
    assert (spec.action.topic, spec.policy.ack_timeout) == ("team.reminders", "PT2M")


def one_shot(n: int, **fields: object) -> dict:
    spec = {
        "name": f"reminder-{n}",
        "namespace": f"team-{n}",
        "displayName": f"Reminder {n}",
        "description": f"the {n}th",
        "actions": [{"type": "remind", "at": f"2026-12-0{n % 9 + 1}T08:00:00Z"}],
        "action": {"type": "remind", "payload": {"channel": "mail"}},
        "policy": {"ackTimeout": "PT2M"},
    }
    return {
        "schedule_id": uuid.UUID(int=1_000 + n),
        "schedule_version": 1,
        "spec": {**spec, **fields},
        "schedule_created_at": CREATED,
    }


def firing(spec: specs.ScheduleSpec) -> dict:
    """What a definition says about firing: all but what names its schedule."""
    names = ("name", "namespace", "displayName", "description")
    return {k: v for k, v in spec.to_wire().items() if k not in names}


def test_schedules_of_one_shape_share_one_parsed_definition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Schedules that differ only in what names them (and in their explicit actions, which
    their occurrences carry) are validated once: a burst of distinct one-shot schedules made
    from one template validates one definition. The shared one names no schedule."""
    validated = []
    stored = specs.ScheduleSpec.stored
    monkeypatch.setattr(
        specs.ScheduleSpec, "stored", lambda value: validated.append(value) or stored(value)
    )
    first, _ = specs.compiled(one_shot(1))
    for n in range(2, 6):
        spec, _ = specs.compiled(one_shot(n))
        assert spec is first
    assert len(validated) == 1
    assert (first.name, first.namespace, first.actions) == (specs.SHARED, specs.SHARED, [])
    assert (first.display_name, first.description) == (None, None)


def test_a_shape_leaves_out_what_names_the_schedule_and_its_explicit_actions() -> None:
    """The digest the scheduler stores and the ticker computes where none is stored."""
    shapes = {specs.shape_of(one_shot(n)["spec"]) for n in range(1, 6)}
    assert len(shapes) == 1
    assert len(next(iter(shapes))) == 16


@pytest.mark.parametrize(
    "fields",
    [
        {"labels": {"team": "billing"}},
        {"externalRef": "order-7"},
        {"action": {"type": "remind", "payload": {"channel": "sms"}}},
        {"action": {"type": "remind", "payload": {"channel": "mail"}, "topic": "team.due"}},
        {"policy": {"ackTimeout": "PT9M"}},
        {"condition": "payload.channel == 'mail'"},
        {"timezone": "Europe/London"},
        {"endsAt": "2027-01-01T00:00:00Z"},
    ],
)
def test_a_definition_that_fires_otherwise_is_a_shape_of_its_own(fields: dict) -> None:
    assert specs.shape_of(one_shot(2, **fields)["spec"]) != specs.shape_of(one_shot(1)["spec"])
    plain, _ = specs.compiled(one_shot(1))
    other, _ = specs.compiled(one_shot(2, **fields))
    assert other is not plain
    expected = specs.ScheduleSpec.stored({**one_shot(2, **fields)["spec"], "actions": []})
    assert firing(other) == firing(expected)
    again, _ = specs.compiled(one_shot(3))  # and the first shape is still its own
    assert again is plain


def test_each_schedule_of_a_shape_has_its_own_series() -> None:
    """An interval without an anchor counts from its schedule's creation: the definition is
    shared, the series is not."""
    early, late = row(1), {**row(2), "spec": {**row(1)["spec"], "name": "s2"}}
    late["schedule_created_at"] = CREATED + timedelta(seconds=20)
    spec_early, series_early = specs.compiled(early)
    spec_late, series_late = specs.compiled(late)
    assert spec_early is spec_late
    assert series_early.next_after(CREATED) == CREATED + timedelta(minutes=1)
    assert series_late.next_after(CREATED) == CREATED + timedelta(seconds=20)
    assert series_late.next_after(CREATED + timedelta(seconds=20)) == CREATED + timedelta(
        seconds=80
    )


def test_the_least_recently_used_shape_leaves_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(specs, "SHAPE_LIMIT", 2)
    kinds = [specs.compiled(row(n))[0].action.type for n in (0, 1, 2)]
    assert kinds == ["t0", "t1", "t2"]
    assert [s.action.type for s in specs._SHAPES.values()] == ["t1", "t2"]
    specs.compiled({**row(3), "spec": {**row(1)["spec"], "name": "s3"}})  # t1's shape, used
    assert [s.action.type for s in specs._SHAPES.values()] == ["t2", "t1"]
