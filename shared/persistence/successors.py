"""Storing a series' next occurrence once one fires: by the ticker's claim, and by the acker
for an occurrence whose round was published and then rolled back (services/acker/acks.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from shared.ids import new_ids
from shared.persistence.queries import load_queries
from shared.schedule.durations import parse_duration
from shared.specs import Definition, Key, key_of

__all__ = ["store_successors"]

Q = load_queries()


async def store_successors(
    conn: asyncpg.Connection,
    rows: Sequence[Any],
    definitions: dict[Key, Definition],
    now: datetime,
    fired_by: Sequence[datetime] | None = None,
    faulty: dict[uuid.UUID, Exception] | None = None,
) -> list[uuid.UUID]:
    """Store the successor of each series occurrence in `rows` (first attempts; a retry's was
    stored with its first attempt), in the caller's transaction; returns the schedules whose
    occurrences ended with these rows (an explicit one, or the last of a series), for the caller
    to complete once they are recorded.

    A late occurrence is its series' only catch-up unless the misfire policy is FIRE_ALL: its
    successor is the first occurrence after the instant it fires, `fired_by` (one per row;
    `now` when not given), or after its due instant if that is later. FIRE_ALL stores every
    missed one, back to the catch-up window from `now`.

    With `faulty`, a row whose successor the schedule math fails on (a fault in Chime) gets
    none and is named there with the exception, instead of failing the whole batch."""
    new: list[tuple[Any, ...]] = []
    # A set: a round of 1,000 explicit actions of one schedule named it 1,000 times, and
    # from that array's length the planner expected that many schedules and chose to read
    # every pending occurrence (a sequential scan of actions per round, ~100 ms at 300,000
    # rows, whenever the column statistics were missing or stale).
    ended: set[uuid.UUID] = set()
    for index, row in enumerate(rows):
        if row["origin"] != "SERIES":
            ended.add(row["schedule_id"])
            continue
        if row["attempt"] > 1:
            continue  # a retry: its successor was stored with the first attempt
        spec, series = definitions[key_of(row)]
        try:
            if spec.policy.misfire == "FIRE_ALL":
                # every missed occurrence, oldest first, back to catchupWindow
                window = now - parse_duration(spec.policy.catchup_window)
                after = max(row["due_at"], window)
            else:  # FIRE_ONCE, SKIP: a late occurrence is the only catch-up
                after = max(row["due_at"], now if fired_by is None else fired_by[index])
            nxt = series.next_after(after, fired=row["seq"])
        except Exception as exc:
            if faulty is None:
                raise
            faulty[row["id"]] = exc
            continue
        if nxt is None:
            ended.add(row["schedule_id"])
        else:
            new.append((row["schedule_id"], row["tenant"], row["seq"] + 1, spec.action.type, nxt))
    if new:
        n = len(new)
        await conn.execute(
            Q.insert_actions,
            new_ids(n, now),
            [r[0] for r in new],
            [r[1] for r in new],
            [r[2] for r in new],
            ["SERIES"] * n,
            [None] * n,
            [r[3] for r in new],
            [r[4] for r in new],
            now,
            [None] * n,
        )
    return list(ended)
