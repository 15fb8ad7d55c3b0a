"""Stored schedule definitions, parsed and compiled once per (schedule, version).

Hot paths (the ticker's claim) do not ship the definition with every occurrence: they carry
(schedule_id, schedule_version), and `preload` fetches the definitions the cache lacks, once.
The cached definition keeps one explicit action of a long list: occurrences carry their own.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg

from shared.contracts import ScheduleSpec
from shared.persistence.queries import load_queries
from shared.schedule import Series, compile_series

__all__ = ["compiled", "preload"]

_CACHE: OrderedDict[tuple[uuid.UUID, int], tuple[ScheduleSpec, Series]] = OrderedDict()
_LIMIT = 65_536


def _remember(
    key: tuple[uuid.UUID, int], spec: Any, created_at: datetime
) -> tuple[ScheduleSpec, Series]:
    if len(spec.get("actions") or ()) > 1:
        # Each stored occurrence carries its own type, instant and payload: firing one never
        # reads the explicit list, which may hold a thousand entries (memory, validation time).
        spec = {**spec, "actions": spec["actions"][:1]}
    parsed = ScheduleSpec.model_validate(spec)
    series, _ = compile_series(parsed, created_at)
    _CACHE[key] = (parsed, series)
    if len(_CACHE) > _LIMIT:
        _CACHE.popitem(last=False)
    return parsed, series


def compiled(row: Any) -> tuple[ScheduleSpec, Series]:
    """The definition of the schedule a row (schedule_id, schedule_version, and `spec` +
    `schedule_created_at` unless preloaded) belongs to."""
    key = (row["schedule_id"], row["schedule_version"])
    found = _CACHE.get(key)
    if found is not None:
        _CACHE.move_to_end(key)
        return found
    return _remember(key, row["spec"], row["schedule_created_at"])


async def preload(conn: asyncpg.Connection, rows: Iterable[Any]) -> None:
    """Fetch, in one query, the definitions of these rows' schedules that are not cached."""
    missing = {(r["schedule_id"], r["schedule_version"]) for r in rows} - _CACHE.keys()
    if not missing:
        return
    fetched = await conn.fetch(
        load_queries().schedule_definitions, list({schedule_id for schedule_id, _ in missing})
    )
    for r in fetched:
        _remember((r["id"], r["version"]), r["spec"], r["created_at"])
