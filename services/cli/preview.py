"""`chime preview`: the same code path the ticker and the scheduler use."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import orjson
from pydantic import TypeAdapter, ValidationError

from shared.contracts import Trigger, errors_from_validation, format_instant
from shared.contracts.common import UtcInstant
from shared.schedule import ScheduleError, Series, compile_trigger

__all__ = ["preview", "preview_times"]

_TRIGGER = TypeAdapter(Trigger)
_INSTANT = TypeAdapter(UtcInstant)


def preview_times(trigger_json: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    """Fire times strictly after `after`; raises ValueError with a one-line reason."""
    try:
        raw = orjson.loads(trigger_json)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"--trigger is not JSON: {exc}") from None
    try:
        trigger = _TRIGGER.validate_python(raw)
    except ValidationError as exc:
        first = errors_from_validation(exc, "trigger")[0]
        raise ValueError(f"{first.field}: {first.message}") from None
    try:
        source, _ = compile_trigger(trigger, timezone, after)
    except ScheduleError as err:
        raise ValueError(f"{err.field}: {err.message}" if err.field else err.message) from None
    return Series(source).preview(after, count)


def preview(trigger_json: str, timezone: str, after_text: str | None, count: int) -> int:
    try:
        after = datetime.now(UTC) if after_text is None else _after(after_text)
        times = preview_times(trigger_json, timezone, after, count)
    except ValueError as exc:
        print(f"chime preview: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps([format_instant(t) for t in times]).decode())
    return 0


def _after(text: str) -> datetime:
    """`--after` as an instant, checked as a command's instants are (a UTC offset, 1970 on)."""
    try:
        return _INSTANT.validate_python(text)
    except ValidationError as exc:
        message = errors_from_validation(exc, "--after")[0].message.removeprefix("--after: ")
        raise ValueError(f"--after {text[:64]!r}: {message}") from None
