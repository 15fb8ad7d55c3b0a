"""Stored schedule definitions, parsed and compiled once per (schedule, version).

Hot paths (the ticker's claim) do not ship the definition with every occurrence: they carry
(schedule_id, schedule_version), and `load_definitions` returns the definitions of a batch's rows,
fetching the ones the cache lacks in one query. The batch keeps that mapping, so what it uses
does not depend on what the cache still holds.
The definitions read here have no explicit actions: occurrences carry their own.

Schedules of one shape share one parsed definition: what a definition says about firing
(trigger, window, action, policy, condition, labels...) is validated once for every schedule
that says the same, and only the series (anchored at each schedule's creation) is compiled per
schedule. A burst of 100,000 one-shot schedules made from one template validates one
definition, not 100,000 (bench/README.md's profile notes). What names a schedule is not part
of the shape: a shared definition's name and namespace are `SHARED`, and a schedule's own
come from its row (the claim reads them from `schedules`). The scheduler stores each
definition's shape digest (`shape_of`, migration 0015) and the claim reads it with the
schedule's creation: a schedule of a shape parsed already is compiled from its row, and only
the definitions of shapes not seen (or stored without a digest) are fetched.

The caches are small on purpose (at most CACHE_LIMIT + SHAPE_LIMIT parsed definitions between
them). An entry is about 18 objects the garbage collector tracks (the pydantic models, their
dicts and field sets, the compiled series), and each full collection walks every one of them
while the event loop stands still: with 11,000 entries a pause took 0.3 s on the benchmark
machine (bench/README.md). A miss whose row names a shape parsed lately costs its series
(~1.5 µs for a one-shot schedule); otherwise a row in the batch's one definitions query and
~18-20 µs of parsing and compiling a one-shot schedule's definition whose shape was not seen
lately, ~6-9 µs when it was (its shape's digest and its series; bench/README.md's profile
notes).
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import orjson

from shared.contracts import ScheduleSpec
from shared.persistence.queries import load_queries
from shared.schedule import Series, compile_series

__all__ = [
    "CACHE_LIMIT",
    "SHAPE_LIMIT",
    "SHARED",
    "Definition",
    "Key",
    "compiled",
    "key_of",
    "load_definitions",
    "shape_of",
    "why_unreadable",
]

Key = tuple[uuid.UUID, int]  # (schedule_id, schedule_version)
K = TypeVar("K")
V = TypeVar("V")
Definition = tuple[ScheduleSpec, Series]

CACHE_LIMIT = 4_096
_CACHE: OrderedDict[Key, Definition] = OrderedDict()

# A shared definition's name and namespace (and no display name or description): it is not any
# one schedule's.
SHARED = "shared-definition"
# Left out of a definition's shape: what names the schedule, and the explicit actions (each
# stored occurrence carries its own type, instant and payload: firing or acknowledging one never
# reads the list, which may hold a thousand entries; even one was ~4.5 of a definition's ~12 µs
# to validate).
_NOT_SHAPE = frozenset(("name", "namespace", "displayName", "description", "actions"))
_UNNAMED = {
    "name": SHARED,
    "namespace": SHARED,
    "displayName": None,
    "description": None,
    "actions": [],
}
# By the shape's digest (`shape_of`). Smaller than the schedules' cache: it is read only when that
# one misses, and many schedules share a shape (every entry lengthens a full collection, above).
SHAPE_LIMIT = 1_024
_SHAPES: OrderedDict[bytes, ScheduleSpec] = OrderedDict()


def _recent(cache: OrderedDict[K, V], key: K) -> V | None:
    """What `cache` holds under `key` (None if nothing), now its most recently used."""
    found = cache.get(key)
    if found is not None:
        cache.move_to_end(key)
    return found


def _keep(cache: OrderedDict[K, V], key: K, value: V, limit: int) -> V:
    """`value`, kept in `cache` under `key`; past `limit` the least recently used leaves."""
    cache[key] = value
    if len(cache) > limit:
        cache.popitem(last=False)
    return value


def shape_of(spec: dict[str, Any]) -> bytes:
    """The digest of a definition's shape (its JSON document as stored, all but what names the
    schedule and its explicit actions): the scheduler stores it with the definition
    (`schedules.shape`), the ticker computes it where none is stored. Equal digests are equal
    shapes (a cryptographic hash: no definition can be made to pass for another's); equal shapes
    written with their fields in another order have other digests, and are parsed once each."""
    document = orjson.dumps({k: v for k, v in spec.items() if k not in _NOT_SHAPE})
    return hashlib.blake2b(document, digest_size=16).digest()


def _parsed(spec: dict[str, Any], shape: bytes | None) -> ScheduleSpec:
    """The definition of this shape (`shape_of(spec)`; None: not known yet), validated the
    first time it is met."""
    shape = shape or shape_of(spec)
    parsed = _recent(_SHAPES, shape)
    if parsed is None:
        parsed = _keep(_SHAPES, shape, ScheduleSpec.stored({**spec, **_UNNAMED}), SHAPE_LIMIT)
    return parsed


def _remember(key: Key, parsed: ScheduleSpec, created_at: datetime) -> Definition:
    series, _ = compile_series(parsed, created_at)  # an interval's anchor may be created_at
    return _keep(_CACHE, key, (parsed, series), CACHE_LIMIT)


def why_unreadable(exc: Exception) -> str:
    """Why a stored definition cannot be read, in one line: for a skipped occurrence's reason
    and a failed attempt's."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def key_of(row: Any) -> Key:
    """The key of the definition a row (schedule_id, schedule_version) belongs to."""
    return row["schedule_id"], row["schedule_version"]


def compiled(row: Any) -> Definition:
    """The definition of the schedule a row (schedule_id, schedule_version, spec and
    schedule_created_at) belongs to."""
    key = key_of(row)
    return _recent(_CACHE, key) or _remember(
        key, _parsed(row["spec"], None), row["schedule_created_at"]
    )


async def load_definitions(
    conn: asyncpg.Connection, rows: Iterable[Any], unreadable: dict[Key, str] | None = None
) -> dict[Key, Definition]:
    """The definitions of these rows' schedules (rows carry schedule_id, schedule_version,
    shape and schedule_created_at): those cached, those of a shape parsed already (compiled from
    the row alone), and the others fetched in one query. With `unreadable`, a definition that
    cannot be read (parsed and compiled) is left out and named there with why, instead of
    failing the whole batch."""
    found: dict[Key, Definition] = {}
    missing: set[uuid.UUID] = set()

    def keep(key: Key, created_at: datetime, shape: bytes | None, spec: Any = None) -> None:
        """Compile `key`'s definition: of its shape, parsed already, or from `spec`."""
        try:
            parsed = _SHAPES[shape] if spec is None else _parsed(spec, shape)
            found[key] = _remember(key, parsed, created_at)
        except Exception as exc:
            if unreadable is None:
                raise
            unreadable[key] = why_unreadable(exc)

    for r in rows:
        key = key_of(r)
        if key in found:
            continue
        definition = _recent(_CACHE, key)
        if definition is not None:
            found[key] = definition
        elif _recent(_SHAPES, r["shape"]) is not None:
            keep(key, r["schedule_created_at"], r["shape"])
        else:
            missing.add(key[0])
    if missing:
        for r in await conn.fetch(load_queries().schedule_definitions, list(missing)):
            keep((r["id"], r["version"]), r["created_at"], r["shape"], r["spec"])
    return found
