"""The ticker's definitions cache keeps the schedules used most recently, up to its limit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shared import specs

CREATED = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)


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
    monkeypatch.setattr(specs, "_CACHE", type(specs._CACHE)())
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
    one_shot = {
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
            "spec": one_shot,
            "schedule_created_at": CREATED,
        }
    )
    assert spec.actions == []
    assert (spec.action.topic, spec.policy.ack_timeout) == ("team.reminders", "PT2M")
    specs._CACHE.pop(key)
