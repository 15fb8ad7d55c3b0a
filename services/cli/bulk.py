"""`chime import FILE`: schedules in bulk, straight into PostgreSQL, through the scheduler's
bulk `schedule.create` path (validation, idempotency, first occurrences, ticker wake-up), a
chunk of lines per transaction and a few multi-row statements per chunk.

FILE has one `schedule.create` data object per line (JSON Lines). Each line's command id is
derived from its content, so importing a file again changes nothing: applied lines are
replayed. Progress goes to stderr; a summary (JSON) to stdout.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from services.scheduler.commands import Context
from services.scheduler.creates import apply_creates
from shared.contracts import format_instant
from shared.persistence.database import connect
from shared.settings import Settings

__all__ = ["bulk_import"]


def _commands(path: Path, tenant: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, command), or (line number, why the line is not one)."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            digest = hashlib.sha256(line.strip()).hexdigest()[:32]
            meta = {
                "commandId": f"import:{digest}",
                "correlationId": f"import:{path.name}:{number}",
                "tenant": tenant,
            }
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield number, f"the line is not JSON: {exc}"
                continue
            yield number, {"type": "schedule.create", "meta": meta, "data": data}


async def bulk_import(settings: Settings, path: Path, tenant: str, batch: int) -> int:
    """Exit 0 when every line was applied (now or before), 1 when some were rejected."""
    total = sum(1 for line in path.open("rb") if line.strip())
    conn = await connect(settings.database_url)
    context = Context(action_topics=settings.action_topic_allow_list)
    counts = {"created": 0, "replayed": 0, "rejected": 0}
    rejected: list[dict[str, Any]] = []
    started, done = time.monotonic(), 0
    try:
        commands = _commands(path, tenant)
        while True:
            chunk = [c for _, c in zip(range(batch), commands, strict=False)]
            if not chunk:
                break
            now = datetime.now(UTC)
            parsed = [(n, b) for n, b in chunk if not isinstance(b, str)]
            async with conn.transaction():
                applied = await apply_creates(conn, [b for _, b in parsed], now, context)
            results = dict(zip((n for n, _ in parsed), applied, strict=True))
            for number, body in chunk:
                if isinstance(body, str):
                    error = {"code": "VALIDATION", "message": body, "field": None}
                    result = {"type": "command.rejected", "errors": [error]}
                else:
                    result = results[number]
                if result["type"] == "command.rejected":
                    counts["rejected"] += 1
                    if len(rejected) < 20:
                        rejected.append({"line": number, "errors": result["errors"]})
                elif result["meta"]["timestamp"] != format_instant(now):  # an earlier result
                    counts["replayed"] += 1
                else:
                    counts["created"] += 1
            done += len(chunk)
            rate = done / max(time.monotonic() - started, 1e-9)
            print(
                f"chime import: {done:,} / {total:,} lines ({rate:,.0f}/s)",
                file=sys.stderr,
                flush=True,
            )
    finally:
        await conn.close()
    print(
        orjson.dumps(
            {**counts, "total": total, "firstRejections": rejected}, option=orjson.OPT_INDENT_2
        ).decode()
    )
    return 1 if counts["rejected"] else 0
