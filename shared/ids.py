"""Identifiers of stored schedules and occurrences: UUIDv7 (RFC 9562), ordered by creation time.

They are the keys of B-tree indexes that grow with everything stored: the primary keys, the
history's index by occurrence, the indexes by schedule. Random (version 4) keys spread what one
minute creates, and later updates (a non-HOT update adds an index entry under the same key),
over every leaf page of such an index; with millions of rows stored those pages do not fit in
shared buffers, and each insert or mark reads and dirties a page of its own. A version 7 key
begins with its creation instant in milliseconds, so what was created lately sits together at
the right edge of each index, where it stays in memory.

The instant is the caller's `now` (the service's clock), the rest is random: 74 bits, so ids
made in the same millisecond do not collide.

They are made as asyncpg's UUID, the type asyncpg returns for every uuid column: a subclass of
`uuid.UUID` (equal to one of the same value, same hash and text) whose construction, text and
encoding as a statement's argument are done in C. As `uuid.UUID` an id took 0.93 us to make and
0.53 to print, against 0.36 and 0.06, and asyncpg encoded it through the Python `bytes`
property; a create makes two and prints one (bench/README.md, profile notes). Like the ids read
from the database, they are not serialised by orjson as they are: write `str(id)`.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

from asyncpg.pgproto.pgproto import UUID

__all__ = ["new_id", "new_ids", "parse_id"]

_RAND_B = (1 << 62) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _v7(ms: int, rand: int) -> uuid.UUID:
    rand_a = (rand >> 62) & 0xFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand & _RAND_B
    return UUID(value.to_bytes(16))


def new_id(now: datetime) -> uuid.UUID:
    """A new UUIDv7 whose time is `now` (timezone-aware)."""
    return _v7((now - _EPOCH) // _MS, int.from_bytes(os.urandom(10)))


def new_ids(count: int, now: datetime) -> list[uuid.UUID]:
    """`count` new UUIDv7 made at `now`."""
    ms = (now - _EPOCH) // _MS  # exact: a float timestamp may round the millisecond
    noise = os.urandom(10 * count)
    return [_v7(ms, int.from_bytes(noise[i : i + 10])) for i in range(0, 10 * count, 10)]


def parse_id(text: str) -> uuid.UUID:
    """The id a text names, as asyncpg's UUID; ValueError if `uuid.UUID` would not read it.

    Every form `uuid.UUID` reads is read (braces, `urn:uuid:`, hyphens anywhere): asyncpg's
    parser takes the usual ones in 0.14 us, against 1.1 for `uuid.UUID`, and the rest go through
    `uuid.UUID`. Every id a command or an ack names is read here; an acker reads one per ack,
    and compares and encodes it with the ids its statements return (bench/README.md, profile
    notes)."""
    try:
        return UUID(text)
    except ValueError:  # what asyncpg's parser refuses in a text (it raises nothing else)
        return UUID(uuid.UUID(text).bytes)
