"""Building blocks of every message: camelCase frozen models, UTC instants, the error item."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "LATEST",
    "MAX_JSON_DEPTH",
    "NUL_REFUSED",
    "PAYLOAD_LIMIT",
    "ROUNDED",
    "SCHEMA_VERSION",
    "STORED",
    "TENANT_PATTERN",
    "ContractModel",
    "ErrorItem",
    "JsonObject",
    "Number",
    "Positive",
    "UtcInstant",
    "Whole",
    "format_instant",
    "from_storage",
    "has_nul",
    "nul_path",
    "reused",
    "rounded_path",
    "value_path",
]

SCHEMA_VERSION = 1
# A tenant id, in commands and in acks: what PostgreSQL's row-level security compares.
TENANT_PATTERN = r"^[\w.\-:@]+$"
NUL_REFUSED = "must not contain the NUL character (\\u0000): PostgreSQL cannot store it"
# A whole number outside 64 bits (`rounded_path`).
ROUNDED = "is a whole number past 64 bits, which would be read rounded: send it as a string"
# Bytes of JSON, as Chime writes it (numbers in full), of what an event carries from its sender:
# an action's payload (action.due) and an ack's output (the action events).
PAYLOAD_LIMIT = 256 * 1024


def has_nul(value: Any) -> bool:
    """Whether a NUL character is in any key or string of a JSON value. orjson writes NUL as
    `\\u0000`; text without that sequence has no NUL, so only the rare rest is walked."""
    return b"\\u0000" in orjson.dumps(value) and nul_path(value) is not None


def nul_path(value: Any) -> str | None:
    """Where the first NUL character of a JSON value is (`data.actions[0].id`; the object's
    path for a key holding one), or None."""
    return value_path(value, lambda v: isinstance(v, str) and "\x00" in v)


def rounded_path(raw: bytes, path: str = "") -> str | None:
    """Where, in the JSON text `raw`, the first whole number is that orjson (which Chime reads
    records with) cannot read as it is written: one outside -2^63..2^64-1, which it reads as a
    float, rounded (`123456789012345678901234567890` as `1.2345678901234568e+29`); or None. A
    text without a run of 19 digits holds none and is not read again."""
    if _DIGIT_RUN not in raw.translate(_DIGITS):
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested past what validation takes
        return None
    return value_path(value, _outside_64_bits, path)


# Digits as "1", the rest as " ": a run of 19 digits (-2^63 - 1 has 19) is a substring search,
# 0.4 us for a command of 500 bytes where a regular expression took 3.8.
_DIGITS = bytes(0x31 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_DIGIT_RUN = b"1" * 19


def _outside_64_bits(value: Any) -> bool:
    return isinstance(value, int) and not -(2**63) <= value <= LARGEST_WHOLE


def value_path(
    value: Any, found: Callable[[Any], bool], path: str = "", levels: int = 100
) -> str | None:
    """Where in a JSON value the first value or key `found` holds for is (`data.actions[0].id`;
    the object's path for a key), or None. Nothing deeper than `levels` is looked at: what is
    checked here is a record not validated yet, which orjson reads 1,024 levels deep, past
    Python's recursion limit; validation refuses it (MAX_JSON_DEPTH)."""
    if levels < 0:
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if found(key):
                return path
            where = f"{path}.{key}" if path else key
            if (hit := value_path(item, found, where, levels - 1)) is not None:
                return hit
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (hit := value_path(item, found, f"{path}[{i}]", levels - 1)) is not None:
                return hit
        return None
    return path if found(value) else None


@lru_cache(maxsize=16384)
def format_instant(value: datetime) -> str:
    """UTC ISO-8601 with `Z`, milliseconds kept only when present. Cached: a batch's results
    carry the same few instants many times (equal aware instants share one UTC text)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat()[:-6] + "Z"  # drops "+00:00"


# The validation context of what is read back from the database (`ScheduleSpec.stored`): it
# was checked when it was stored, and a limit added since must not make it unreadable.
STORED = {"stored": True}
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def from_storage(info: ValidationInfo) -> bool:
    """Whether what is validated is read back from the database (validated with STORED)."""
    return bool((info.context or {}).get("stored"))


REUSED_LIMIT = 1_024  # entries of each `reused` cache; emptied when full


def reused(
    cache: dict[tuple[bool, bytes], Any],
    value: Any,
    handler: ValidatorFunctionWrapHandler,
    info: ValidationInfo,
) -> Any:
    """A nested model validated once for each JSON text it is given as (a wrap validator's
    body): most schedules share a few policies, and a policy's validation (five durations, a
    retry) was half of a stored definition's, 8.5 of 17.3 us, in every create giving one and
    in every ticker round that reads a schedule's definition for the first time
    (bench/README.md, profile notes). The same text validates the same way in the same
    context (stored or not), and models are frozen, so the instance is shared; what is not
    JSON (a Python caller's objects) is validated as usual."""
    if not isinstance(value, dict):
        return handler(value)
    try:
        key = (from_storage(info), orjson.dumps(value))
    except TypeError:
        return handler(value)
    found = cache.get(key)
    if found is None:
        found = handler(value)
        if len(cache) >= REUSED_LIMIT:
            cache.clear()
        cache[key] = found
    return found


def _aware_utc(value: datetime, info: ValidationInfo) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a UTC offset, e.g. '2026-03-15T08:00:00Z'")
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is in the year 0 in UTC, and
        # 9999-12-31T23:00:00-05:00 in the year 10000
        raise ValueError(_TOO_EARLY if value.year < 5000 else _TOO_LATE) from None
    if from_storage(info):
        return value
    if value < EARLIEST:
        raise ValueError(_TOO_EARLY)
    if value >= LATEST:
        raise ValueError(_TOO_LATE)
    return value


# The last instant a datetime holds is the one asyncpg stores as PostgreSQL's `infinity`, and
# reads back as a datetime without a zone, which no instant of Chime's compares with.
LATEST = datetime.max.replace(tzinfo=UTC)
_TOO_EARLY = "must be 1970-01-01T00:00:00Z or later"
_TOO_LATE = "must be before 9999-12-31T23:59:59.999999Z (the database's infinity)"


UtcInstant = Annotated[
    datetime,
    AfterValidator(_aware_utc),
    PlainSerializer(format_instant, return_type=str, when_used="json"),
]
"""An aware instant; any offset is accepted and normalised to UTC; written with `Z`."""


MAX_JSON_DEPTH = 32


_CONTAINERS = (dict, list)


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic reads true as 1 and false as 0
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


def _whole_in_64_bits(value: Any) -> Any:
    value = _not_a_boolean(value)
    if isinstance(value, int | float) and value > LARGEST_WHOLE:
        raise ValueError(f"must be at most {LARGEST_WHOLE}")
    return value


# The numbers of what senders write. pydantic takes a JSON boolean for a number, so that
# `"hours": true` would fire at 01:00; and a whole number past 64 bits (which orjson reads as a
# float, 1e30, and pydantic makes an int again) is one orjson cannot write, so that storing the
# definition failed. Both are refused naming the field.
LARGEST_WHOLE = 2**64 - 1
Whole = Annotated[int, BeforeValidator(_whole_in_64_bits)]
Number = Annotated[float, BeforeValidator(_not_a_boolean)]
# 1 or more, for an optional field (`Positive | None`): the bound inside the type, before the
# validator, so that the JSON schema gives it as `minimum`.
Positive = Annotated[int, Field(ge=1), BeforeValidator(_whole_in_64_bits)]


def _within(value: dict[str, Any] | list[Any], levels: int) -> bool:
    """Whether no container in `value` nests more than `levels` levels below it (the recursion
    is bounded by `levels`)."""
    for child in value.values() if isinstance(value, dict) else value:
        if isinstance(child, _CONTAINERS) and (levels == 0 or not _within(child, levels - 1)):
            return False
    return True


def _shallow(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH. Depth-first, stopping at the limit: every
    command's data and every payload pass here, and a walk level by level, listing each
    level, took 3.8 us for a benchmark create's data against 2.0 this way. What is read back
    from the database was checked when it was stored: not walked again."""
    if not from_storage(info) and not _within(value, MAX_JSON_DEPTH - 1):
        raise ValueError(f"nests deeper than {MAX_JSON_DEPTH} levels: flatten it")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_shallow)]
"""A JSON object of any content, nested at most MAX_JSON_DEPTH levels."""


class ContractModel(BaseModel):
    """Frozen, strict about unknown fields, camelCase on the wire."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class ErrorItem(ContractModel):
    """One reason a command was rejected."""

    code: str = Field(
        description="VALIDATION, NOT_FOUND, CONFLICT, UNAUTHORIZED, FORBIDDEN, "
        "PAYLOAD_TOO_LARGE, UNSUPPORTED or INTERNAL.",
        examples=["VALIDATION"],
    )
    message: str = Field(
        description="What is wrong and what to change.",
        examples=["hours must be between 0 and 23 (got 24)"],
    )
    field: str | None = Field(
        None, description="Dotted path of the offending field.", examples=["data.trigger.hours"]
    )
    detail: Any = Field(None, description="Extra machine-readable context.", examples=[None])
