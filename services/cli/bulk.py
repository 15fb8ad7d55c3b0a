"""`chime import FILE`: schedules in bulk, straight into PostgreSQL, through the scheduler's
bulk `schedule.create` path (validation, idempotency, first occurrences, ticker wake-up), a
chunk of lines per transaction and a few multi-row statements per chunk.

FILE has one `schedule.create` data object per line (JSON Lines). Each line's command id is
derived from its content, so importing a file again changes nothing: applied lines are
replayed. Progress goes to stderr; a summary (JSON) to stdout.

`--jobs N` shares the lines among N processes (line k to process k mod N), each with its own
connection: the work per line is mostly Python, so this is how an import uses several cores.
Lines are then applied in no particular order across processes; two lines with the same name
still store one schedule (the other is answered CONFLICT), but which one is not fixed.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import queue as queue_module
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from services.scheduler.commands import Context
from services.scheduler.creates import apply_creates
from shared.contracts import format_instant
from shared.contracts.common import ROUNDED, rounded_path
from shared.persistence.database import connect
from shared.persistence.migrate import SchemaNotReady, check_schema
from shared.settings import Settings

__all__ = ["ImportFailed", "bulk_import"]

FIRST_REJECTIONS = 20
AGAIN = "lines applied so far stay applied: run the import again to finish (they are replayed)"


class ImportFailed(Exception):
    """The import stopped (file unreadable, database unreachable or failing): why."""


def _commands(path: Path, tenant: str, part: int, parts: int) -> Iterator[tuple[int, Any]]:
    """(line number, command) of this part's lines, or (line number, why it is not one)."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if (number - 1) % parts != part or not line.strip():
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
            if (where := rounded_path(line, "data")) is not None:
                yield number, f"{where} {ROUNDED}"
                continue
            yield number, {"type": "schedule.create", "meta": meta, "data": data}


async def _import_part(
    settings: Settings,
    path: Path,
    tenant: str,
    batch: int,
    part: int,
    parts: int,
    report: Callable[[tuple[Any, ...]], None],
) -> None:
    """Apply this part's lines; report ("chunk", lines, counts, rejections) after each chunk."""
    conn = await connect(settings.database_url)
    context = Context(action_topics=settings.action_topic_allow_list)
    try:
        await check_schema(conn)
        commands = _commands(path, tenant, part, parts)
        while True:
            chunk = [c for _, c in zip(range(batch), commands, strict=False)]
            if not chunk:
                break
            now = datetime.now(UTC)
            parsed = [(n, b) for n, b in chunk if not isinstance(b, str)]
            async with conn.transaction():
                applied = await apply_creates(conn, [b for _, b in parsed], now, context)
            results = dict(zip((n for n, _ in parsed), applied, strict=True))
            counts = {"created": 0, "replayed": 0, "rejected": 0}
            rejected: list[dict[str, Any]] = []
            for number, body in chunk:
                if isinstance(body, str):
                    error = {"code": "VALIDATION", "message": body, "field": None}
                    result = {"type": "command.rejected", "errors": [error]}
                else:
                    result = results[number]
                if result["type"] == "command.rejected":
                    counts["rejected"] += 1
                    rejected.append({"line": number, "errors": result["errors"]})
                elif result["meta"]["timestamp"] != format_instant(now):  # an earlier result
                    counts["replayed"] += 1
                else:
                    counts["created"] += 1
            report(("chunk", len(chunk), counts, rejected[:FIRST_REJECTIONS]))
    finally:
        await conn.close()


def _run_part(
    settings: Settings, path: Path, tenant: str, batch: int, part: int, parts: int, queue: Any
) -> None:
    """A --jobs worker process: its part, reported through `queue`, then ("done", part) or
    ("failed", part, why)."""
    try:
        asyncio.run(_import_part(settings, path, tenant, batch, part, parts, queue.put))
    except BaseException as exc:  # told to the parent, which fails the import
        queue.put(("failed", part, f"{type(exc).__name__}: {exc}"))
    else:
        queue.put(("done", part))


class _Summary:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()
        self.counts = {"created": 0, "replayed": 0, "rejected": 0}
        self.rejected: list[dict[str, Any]] = []

    def add(self, message: tuple[Any, ...]) -> None:
        _, lines, counts, rejected = message
        for key, value in counts.items():
            self.counts[key] += value
        self.rejected = sorted(self.rejected + rejected, key=lambda r: r["line"])
        del self.rejected[FIRST_REJECTIONS:]
        self.done += lines
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        print(
            f"chime import: {self.done:,} / {self.total:,} lines ({rate:,.0f}/s)",
            file=sys.stderr,
            flush=True,
        )


async def bulk_import(
    settings: Settings, path: Path, tenant: str, batch: int, jobs: int = 1
) -> int:
    """Exit 0 when every line was applied (now or before), 1 when some were rejected; raises
    ImportFailed when it cannot go on."""
    try:
        with path.open("rb") as lines:
            summary = _Summary(sum(1 for line in lines if line.strip()))
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc.strerror}") from None
    if jobs <= 1:
        try:
            await _import_part(settings, path, tenant, batch, 0, 1, summary.add)
        except SchemaNotReady as exc:
            raise ImportFailed(str(exc)) from None
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,  # a connection cut mid-statement (is_transient)
        ) as exc:
            raise ImportFailed(f"{type(exc).__name__}: {exc}; {AGAIN}") from None
    else:
        await _import_parallel(settings, path, tenant, batch, jobs, summary)
    print(
        orjson.dumps(
            {**summary.counts, "total": summary.total, "firstRejections": summary.rejected},
            option=orjson.OPT_INDENT_2,
        ).decode()
    )
    return 1 if summary.counts["rejected"] else 0


async def _import_parallel(
    settings: Settings, path: Path, tenant: str, batch: int, jobs: int, summary: _Summary
) -> None:
    spawn = multiprocessing.get_context("spawn")  # not fork: this process runs an event loop
    queue = spawn.Queue()
    workers = [
        spawn.Process(target=_run_part, args=(settings, path, tenant, batch, part, jobs, queue))
        for part in range(jobs)
    ]
    for worker in workers:
        worker.start()
    failures: dict[int, str] = {}
    running = set(range(jobs))
    try:
        while running:
            try:
                message = await asyncio.to_thread(queue.get, timeout=1.0)
            except queue_module.Empty:
                for part in list(running):  # a worker that died without a word (killed)
                    code = workers[part].exitcode
                    if code is not None and code != 0:
                        running.discard(part)
                        failures[part] = f"the process ended with exit code {code}"
                continue
            if message[0] == "chunk":
                summary.add(message)
                continue
            running.discard(message[1])
            if message[0] == "failed":
                failures[message[1]] = message[2]
    finally:
        for worker in workers:
            worker.join()
    if failures:
        parts = "; ".join(f"part {p + 1} of {jobs}: {why}" for p, why in sorted(failures.items()))
        raise ImportFailed(f"{parts}; {AGAIN}")
