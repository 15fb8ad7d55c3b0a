"""Contracts: camelCase on the wire, UTC instants with Z, errors naming the wire field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import orjson
import pytest
from pydantic import ValidationError

from shared.contracts import (
    ActionAck,
    CommandEnvelope,
    ScheduleRef,
    ScheduleSpec,
    errors_from_validation,
    format_instant,
)
from shared.contracts.common import rounded_path

BASE = {"name": "nightly-billing", "action": {"type": "billing-run"}}
ONCE = {**BASE, "trigger": {"kind": "once", "at": "2030-01-01T00:00:00Z"}}


def errors_of(data: dict) -> list[tuple[str | None, str]]:
    with pytest.raises(ValidationError) as caught:
        ScheduleSpec.model_validate(data)
    return [(e.field, e.message) for e in errors_from_validation(caught.value, "data")]


def test_hours_out_of_range_names_the_field() -> None:
    errors = errors_of({**BASE, "trigger": {"kind": "daily", "hours": 24, "minutes": 30}})
    assert errors == [("data.trigger.hours", "hours must be between 0 and 23 (got 24)")]


DAILY = {**BASE, "trigger": {"kind": "daily", "hours": 2}}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({**BASE, "trigger": {"kind": "daily", "hours": True}}, "data.trigger.hours"),
        (
            {**BASE, "trigger": {"kind": "daily", "hours": 2, "minutes": False}},
            "data.trigger.minutes",
        ),
        ({**DAILY, "maxOccurrences": True}, "data.maxOccurrences"),
        ({**DAILY, "policy": {"retry": {"maxAttempts": True}}}, "data.policy.retry.maxAttempts"),
        ({**DAILY, "policy": {"retry": {"multiplier": True}}}, "data.policy.retry.multiplier"),
        (
            {
                **BASE,
                "trigger": {
                    "kind": "calendar",
                    "type": "DAILY",
                    "hours": {"type": "LIST", "values": ["1"], "interval": True},
                },
            },
            "data.trigger.hours.interval",
        ),
    ],
)
def test_a_boolean_is_no_number(spec: dict, field: str) -> None:
    """pydantic reads true as 1 and false as 0: `"hours": true` was a daily 01:00."""
    value = "true" if "True" in repr(spec) else "false"
    [(where, text)] = errors_of(spec)
    assert where == field and text.endswith(f"must be a number, not {value}")
    assert ScheduleSpec.model_validate({**BASE, "trigger": {"kind": "daily", "hours": "2"}})


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'"maxOccurrences": 100000000000000000000000000000', "data.maxOccurrences"),
        (b'"maxOccurrences": 1e30', "data.maxOccurrences"),
        (b'"maxOccurrences": 18446744073709551616', "data.maxOccurrences"),
        (
            b'"trigger": {"kind": "calendar", "type": "DAILY", "hours": {"type": "RANGE", '
            b'"values": ["0", "23"], "interval": 1e20}}',
            "data.trigger.hours.interval",
        ),
    ],
)
def test_a_whole_number_past_64_bits_is_refused_naming_the_field(raw: bytes, field: str) -> None:
    """orjson, which the services parse records with, reads such a number as a float, and
    pydantic made it a whole number again, one orjson cannot write: storing the definition
    failed, answered INTERNAL."""
    body = b'{"name": "n", "action": {"type": "t"}, "trigger": {"kind": "daily", "hours": 2}, '
    data = orjson.loads(body + raw + b"}")
    [(where, text)] = errors_of(data)
    assert where == field and text.endswith("must be at most 18446744073709551615")
    largest = {**DAILY, "maxOccurrences": orjson.loads(b"18446744073709551615")}
    assert orjson.dumps(ScheduleSpec.model_validate(largest).to_wire())  # stored as it is


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b'{"a": {"b": [0, 18446744073709551616]}}', "a.b[1]"),
        (b'{"a": -9223372036854775809}', "a"),
        (b'{"a": -9223372036854775808, "b": 18446744073709551615}', None),  # orjson reads both
        (b'{"a": "123456789012345678901234567890"}', None),  # text
        (b'{"a": 1.23456789012345678901234567890}', None),  # a float, read as a float
        (b'{"a": 123456789012345678901234567890', None),  # not JSON: refused as such elsewhere
    ],
)
def test_the_first_whole_number_orjson_would_read_rounded_is_named(
    raw: bytes, where: str | None
) -> None:
    assert rounded_path(raw, "data") == (None if where is None else f"data.{where}")


def test_a_boolean_is_no_number_in_a_command_or_an_ack() -> None:
    meta = {"commandId": "c", "correlationId": "r", "tenant": "t", "schemaVersion": True}
    command = {"type": "schedule.pause", "meta": meta, "data": {}}
    with pytest.raises(ValidationError) as caught:
        CommandEnvelope.model_validate(command)
    assert [e.field for e in errors_from_validation(caught.value)] == ["meta.schemaVersion"]
    with pytest.raises(ValidationError) as caught:
        ScheduleRef.model_validate({"name": "n", "expectedVersion": True})
    assert [e.field for e in errors_from_validation(caught.value, "data")] == [
        "data.expectedVersion"
    ]
    ack = {
        "type": "action.ack",
        "meta": {"tenant": "t", "schemaVersion": False},
        "data": {"actionId": "a", "attempt": True, "state": "SUCCEEDED"},
    }
    with pytest.raises(ValidationError) as caught:
        ActionAck.model_validate(ack)
    fields = [e.field for e in errors_from_validation(caught.value)]
    assert fields == ["meta.schemaVersion", "data.attempt"]


def test_unknown_trigger_kind_lists_the_kinds() -> None:
    [(field, message)] = errors_of({**BASE, "trigger": {"kind": "weekly"}})
    assert field == "data.trigger"
    assert "'weekly'" in message and "'cron'" in message


def test_unknown_fields_and_missing_fields() -> None:
    errors = dict(
        errors_of(
            {"name": "x", "trigger": {"kind": "once", "at": "2026-01-01T00:00:00Z"}, "colour": 1}
        )
    )
    assert errors["data.action"] == "action is required"
    assert "not a known field" in errors["data.colour"]


def test_name_pattern_and_lengths() -> None:
    errors = dict(
        errors_of(
            {
                **BASE,
                "name": "has space",
                "displayName": "",
                "trigger": {"kind": "daily", "hours": 1},
            }
        )
    )
    assert "must match" in errors["data.name"]
    assert "data.displayName" in errors


def test_nested_list_paths() -> None:
    errors = dict(
        errors_of(
            {
                **BASE,
                "actions": [
                    {"type": "START", "at": "2026-01-01T00:00:00Z"},
                    {"type": "STOP", "at": "soon"},
                ],
            }
        )
    )
    assert "data.actions[1].at" in errors


def test_naive_instants_are_rejected_and_offsets_normalised() -> None:
    errors = dict(errors_of({**BASE, "trigger": {"kind": "once", "at": "2026-03-15T08:00:00"}}))
    assert "UTC offset" in errors["data.trigger.at"]
    spec = ScheduleSpec.model_validate(
        {**BASE, "trigger": {"kind": "once", "at": "2026-03-15T09:00:00+01:00"}}
    )
    assert spec.to_wire()["trigger"]["at"] == "2026-03-15T08:00:00Z"


def test_wire_form_is_camel_case_and_round_trips() -> None:
    spec = ScheduleSpec.model_validate(
        {
            **BASE,
            "displayName": "Nightly",
            "externalRef": "abc",
            "maxOccurrences": 3,
            "trigger": {"kind": "cron", "expression": "30 0 * * *"},
        }
    )
    wire = spec.to_wire()
    assert {"displayName", "externalRef", "maxOccurrences", "startsAt"} <= wire.keys()
    assert wire["policy"]["retry"]["maxAttempts"] == 3
    assert ScheduleSpec.model_validate(wire) == spec


def test_a_schedule_needs_a_trigger_or_actions() -> None:
    [(field, message)] = errors_of(BASE)
    assert field == "data" and "trigger" in message


def test_contracts_are_frozen() -> None:
    spec = ScheduleSpec.model_validate({**BASE, "trigger": {"kind": "daily", "hours": 1}})
    with pytest.raises(ValidationError):
        spec.name = "other"  # type: ignore[misc]


def test_envelope_requires_meta_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        CommandEnvelope.model_validate(
            {"type": "schedule.create", "meta": {"tenant": "t"}, "data": {}}
        )
    fields = {e.field for e in errors_from_validation(caught.value)}
    assert fields == {"meta.commandId", "meta.correlationId"}


def test_ack_contract() -> None:
    ack = ActionAck.model_validate(
        {
            "type": "action.ack",
            "meta": {"tenant": "t"},
            "data": {"actionId": "a", "attempt": 1, "state": "SUCCEEDED"},
        }
    )
    assert ack.data.state == "SUCCEEDED"
    with pytest.raises(ValidationError):
        ActionAck.model_validate(
            {
                "type": "action.ack",
                "meta": {"tenant": "t"},
                "data": {"actionId": "a", "attempt": 1, "state": "DONE"},
            }
        )


def _nested(depth: int) -> dict:
    """A JSON object `depth` levels deep, itself the first; lists count as levels too."""
    value: dict | list = {"leaf": 1}
    for level in range(depth - 1):
        value = [value] if level % 2 else {"k": value}
    return value if isinstance(value, dict) else {"k": value[0]}


@pytest.mark.parametrize("depth", [1, 2, 31, 32])
def test_payload_nested_up_to_the_limit_is_accepted(depth: int) -> None:
    payload = _nested(depth)
    spec = ScheduleSpec.model_validate({**ONCE, "action": {"type": "x", "payload": payload}})
    assert spec.action.payload == payload


@pytest.mark.parametrize("depth", [33, 34, 500])
def test_payload_nested_deeper_is_refused_naming_the_field(depth: int) -> None:
    [(field, message)] = errors_of({**ONCE, "action": {"type": "x", "payload": _nested(depth)}})
    assert field == "data.action.payload"
    assert "nests deeper than 32 levels" in message


@pytest.mark.parametrize(
    ("policy", "field", "message"),
    [
        ({"ackTimeout": "P3651D"}, "data.policy.ackTimeout", "'P3651D' is longer than ten years"),
        ({"catchupWindow": "P99999999D"}, "data.policy.catchupWindow", "longer than ten years"),
        ({"retry": {"maxBackoff": "P522W"}}, "data.policy.retry.maxBackoff", "than ten years"),
        ({"misfireGrace": "PT99999999999999999999S"}, "data.policy.misfireGrace", "is too long"),
    ],
)
def test_a_policy_duration_is_at_most_ten_years(policy: dict, field: str, message: str) -> None:
    """An ack deadline, a backoff or a catch-up window is an instant plus or minus one: a
    longer one was accepted and then failed the ticker's round when it fired (out of the
    range of a timestamp, or of the int4 the ack timeout went to PostgreSQL in)."""
    assert ScheduleSpec.model_validate({**ONCE, "policy": {"ackTimeout": "P3650D"}})
    [(where, text)] = errors_of({**ONCE, "policy": policy})
    assert where == field and message in text


def test_a_policy_is_validated_once_for_each_text_and_context() -> None:
    """Schedules share a few policies: one validated already is reused for the same JSON text
    (the same instance), and only in the same context: a stored policy past a limit added
    since is read, and a command giving that text is still refused."""
    policy = {"ackTimeout": "PT7M", "retry": {"maxAttempts": 4}}
    first = ScheduleSpec.model_validate({**ONCE, "policy": policy}).policy
    again = ScheduleSpec.model_validate({**ONCE, "name": "other", "policy": dict(policy)}).policy
    assert again is first and first.retry.max_attempts == 4
    other = ScheduleSpec.model_validate({**ONCE, "policy": {**policy, "ackTimeout": "PT8M"}})
    assert other.policy.ack_timeout == "PT8M"  # another text: validated for itself
    long = {"ackTimeout": "P4000D"}
    assert ScheduleSpec.stored({**ONCE, "policy": long}).policy.ack_timeout == "P4000D"
    for _ in range(2):  # refused each time, never taken from the stored one
        [(where, text)] = errors_of({**ONCE, "policy": long})
        assert where == "data.policy.ackTimeout" and "longer than ten years" in text
    assert ScheduleSpec.stored({**ONCE, "policy": long}).policy.ack_timeout == "P4000D"


def test_a_schedule_without_a_trigger_or_actions_is_refused_but_read_back() -> None:
    """A definition as the ticker and the acker read it back has no explicit actions (each
    occurrence's row carries its own, `shared.specs`): what a command must give is not asked of
    it again."""
    [(where, text)] = errors_of(BASE)
    assert (where, text) == ("data", "give a trigger, an actions list, or both")
    assert ScheduleSpec.stored({**BASE, "actions": []}).trigger is None


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"trigger": {"kind": "once", "at": "0001-01-01T00:00:00Z"}}, "data.trigger.at"),
        ({"trigger": {"kind": "once", "at": "0001-01-01T00:00:00+01:00"}}, "data.trigger.at"),
        ({"trigger": {"kind": "once", "at": "1969-12-31T23:59:59Z"}}, "data.trigger.at"),
        ({"actions": [{"type": "t", "at": "1900-01-01T00:00:00Z"}]}, "data.actions[0].at"),
    ],
)
def test_an_instant_before_1970_is_refused_naming_its_field(spec: dict, field: str) -> None:
    """The first of them made the once trigger's first fire overflow (OverflowError: the
    command failed instead of being answered), the second its conversion to UTC."""
    [(where, text)] = errors_of({**ONCE, **spec})
    assert (where, text) == (field, "at must be 1970-01-01T00:00:00Z or later")
    epoch = ScheduleSpec.model_validate(
        {**ONCE, "trigger": {"kind": "once", "at": "1970-01-01T00:00:00Z"}}
    )
    assert epoch.trigger is not None and epoch.trigger.at == datetime(1970, 1, 1, tzinfo=UTC)
    stored = {**ONCE, "trigger": {"kind": "once", "at": "1960-01-01T00:00:00Z"}}
    assert ScheduleSpec.stored(stored).trigger is not None  # as it was checked when stored


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"trigger": {"kind": "once", "at": "9999-12-31T23:59:59.999999Z"}}, "data.trigger.at"),
        ({"trigger": {"kind": "once", "at": "9999-12-31T23:00:00-05:00"}}, "data.trigger.at"),
        ({"actions": [{"type": "t", "at": "9999-12-31T23:59:59.999999Z"}]}, "data.actions[0].at"),
        ({"endsAt": "9999-12-31T23:59:59.999999Z"}, "data.endsAt"),
    ],
)
def test_an_instant_at_the_databases_infinity_is_refused_naming_its_field(
    spec: dict, field: str
) -> None:
    """asyncpg stores the last instant a datetime holds as PostgreSQL's `infinity` and reads
    it back without a zone: a create of the first was answered INTERNAL (comparing it with an
    aware instant), and one through the bulk path stored an occurrence due at infinity. The
    second is in the year 10000 in UTC; it was refused as before 1970."""
    [(where, text)] = errors_of({**ONCE, **spec})
    assert (where, text) == (
        field,
        f"{field.rsplit('.', 1)[-1].split('[')[0]} must be before 9999-12-31T23:59:59.999999Z "
        "(the database's infinity)",
    )
    last = "9999-12-31T23:59:59.999998Z"
    spec = ScheduleSpec.model_validate({**ONCE, "trigger": {"kind": "once", "at": last}})
    assert spec.to_wire()["trigger"]["at"] == last
    stored = {**ONCE, "trigger": {"kind": "once", "at": "9999-12-31T23:59:59.999999Z"}}
    assert ScheduleSpec.stored(stored).trigger is not None  # as it was checked when stored


def test_a_stored_definition_is_read_without_the_checks_made_when_it_was_stored() -> None:
    """A payload's depth and the labels were checked on the way in; read back (the ticker, for
    every schedule it fires the first time) they are not walked again, nor refused by a
    limit added since."""
    deep = {**ONCE, "action": {"type": "x", "payload": _nested(40)}, "labels": {"-x": "y"}}
    assert len(errors_of(deep)) == 2
    spec = ScheduleSpec.stored(deep)
    assert spec.action.payload == _nested(40) and spec.labels == {"-x": "y"}


def test_labels_keys_and_values_are_bounded_naming_the_label() -> None:
    fine = {"team": "x", "a.b/c-d_e": "v" * 256, "k" * 63: ""}
    assert ScheduleSpec.model_validate({**ONCE, "labels": fine}).labels == fine
    for labels, message in [
        ({"-lead": "x"}, "key '-lead' must be 1-63 letters, digits, . _ / -"),
        ({"sp ace": "x"}, "key 'sp ace' must be 1-63 letters"),
        ({"k" * 64: "x"}, f"key {'k' * 64!r} must be 1-63 letters"),
        ({"team": "v" * 257}, "value of 'team' exceeds 256 characters"),
    ]:
        [(field, text)] = errors_of({**ONCE, "labels": labels})
        assert field == "data.labels" and message in text, (labels, field, text)


def test_a_window_may_open_and_close_at_one_instant_but_not_close_before_it() -> None:
    at = "2030-01-01T00:00:00Z"
    spec = ScheduleSpec.model_validate({**ONCE, "startsAt": at, "endsAt": at})
    assert spec.to_wire()["startsAt"] == spec.to_wire()["endsAt"] == at
    errors = errors_of({**ONCE, "startsAt": at, "endsAt": "2029-12-31T23:59:59Z"})
    assert errors == [("data", "endsAt must not be before startsAt")]


def test_an_instant_in_any_zone_is_written_in_utc_with_z() -> None:
    summer = datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # CEST, +02:00
    assert format_instant(summer) == "2026-03-29T01:30:00Z"
    behind = datetime(2026, 1, 1, 19, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=-5)))
    assert format_instant(behind) == "2026-01-02T00:00:00.250000Z"
