"""`chime preview`: the same code path the ticker and the scheduler use."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import orjson
from pydantic import TypeAdapter, ValidationError

from shared.contracts import Trigger, errors_from_validation, format_instant
from shared.schedule import ScheduleError, Series, compile_trigger

__all__ = ["preview", "preview_times"]

_TRIGGER = TypeAdapter(Trigger)


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
        if count < 1:
            raise ValueError("--count must be at least 1")
        after = datetime.now(UTC)
        if after_text:
            after = datetime.fromisoformat(after_text.replace("Z", "+00:00"))
            if after.tzinfo is None:
                raise ValueError("--after needs a UTC offset, e.g. 2026-03-10T12:00:00Z")
        times = preview_times(trigger_json, timezone, after.astimezone(UTC), count)
    except ValueError as exc:
        print(f"chime preview: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps([format_instant(t) for t in times]).decode())
    return 0
