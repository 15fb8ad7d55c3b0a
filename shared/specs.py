"""Stored schedule definitions, parsed and compiled once per (schedule, version)."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from shared.contracts import ScheduleSpec
from shared.schedule import Series, compile_series

__all__ = ["compiled"]


@lru_cache(maxsize=65_536)
def _compiled(
    schedule_id: uuid.UUID, version: int, created_at: datetime, spec_json: bytes
) -> tuple[ScheduleSpec, Series]:
    spec = ScheduleSpec.model_validate_json(spec_json)
    series, _ = compile_series(spec, created_at)
    return spec, series


def compiled(row: Any) -> tuple[ScheduleSpec, Series]:
    """The definition of the schedule a joined row (schedule_id, schedule_version, spec,
    schedule_created_at) belongs to."""
    return _compiled(
        row["schedule_id"],
        row["schedule_version"],
        row["schedule_created_at"],
        orjson.dumps(row["spec"]),
    )
