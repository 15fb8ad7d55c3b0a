"""Stored ids are UUIDv7 (RFC 9562): their time is the service clock's, their order follows it."""

from __future__ import annotations

import calendar
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.ids import new_id, new_ids, parse_id

NOW = datetime(2026, 3, 29, 0, 59, 59, 999_000, tzinfo=UTC)
NOW_MS = calendar.timegm(NOW.utctimetuple()) * 1000 + 999


def millis(value: uuid.UUID) -> int:
    return value.int >> 80


def test_an_id_is_a_version_7_uuid_carrying_its_instant() -> None:
    made = new_id(NOW)
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert millis(made) == NOW_MS
    assert uuid.UUID(str(made)) == made  # round-trips as text, as it is sent on the wire


def test_ids_follow_the_clock_and_do_not_collide_within_a_millisecond() -> None:
    batch = new_ids(50_000, NOW)
    assert len(set(batch)) == 50_000
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in batch)
    assert {millis(i) for i in batch} == {NOW_MS}
    later = new_ids(3, NOW + timedelta(milliseconds=1))
    assert max(batch) < min(later)  # a later millisecond sorts after, as the index sees it
    assert new_id(NOW - timedelta(days=400)) < min(batch)


def test_the_random_part_differs_between_calls() -> None:
    first, second = new_id(NOW), new_id(NOW)
    assert first != second and millis(first) == millis(second)


def test_an_id_is_the_uuid_type_asyncpg_returns_and_behaves_as_a_uuid() -> None:
    """Made as asyncpg's own UUID (what a uuid column reads back as), which stands in for a
    `uuid.UUID` everywhere: equal to one of the same value, same hash, same text."""
    made = new_id(NOW)
    plain = uuid.UUID(int=made.int)
    assert type(made) is not uuid.UUID and isinstance(made, uuid.UUID)
    assert made == plain and plain == made and hash(made) == hash(plain)
    assert str(made) == str(plain) and made.bytes == plain.bytes
    assert {plain: "found"}[made] == "found"


@pytest.mark.parametrize(
    "text",
    [
        "0195f2a4-8f00-7abc-8def-0123456789ab",
        "0195F2A4-8F00-7ABC-8DEF-0123456789AB",
        "0195f2a48f007abc8def0123456789ab",
        "{0195f2a4-8f00-7abc-8def-0123456789ab}",
        "urn:uuid:0195f2a4-8f00-7abc-8def-0123456789ab",
        "0195f2a4--8f00-7abc-8def-0123456789ab",
    ],
)
def test_an_id_is_read_from_every_form_uuid_reads(text: str) -> None:
    """The usual forms through asyncpg's parser, the rest through `uuid.UUID`: the same value,
    as the type the database returns."""
    read = parse_id(text)
    assert type(read) is type(new_id(NOW)) and read == uuid.UUID(text)


@pytest.mark.parametrize(
    "text",
    ["", "not-a-uuid", "0195f2a4-8f00-7abc-8def-0123456789a", " 0195f2a48f007abc8def0123456789ab"],
)
def test_a_text_that_is_no_uuid_is_refused_as_uuid_refuses_it(text: str) -> None:
    with pytest.raises(ValueError):
        uuid.UUID(text)
    with pytest.raises(ValueError):
        parse_id(text)
