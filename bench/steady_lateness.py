"""Firing lateness under a steady load: occurrences due at a constant rate (default 5,000/s for
60 s), each `action.due` timed as it is received: received - dueAt, p50/p99/max.

    python -m bench.steady_lateness [--rate 5000] [--seconds 60]

The occurrences are loaded through schedule.create commands before the first one is due; the
ticker then fires them as they fall due while a plain consumer reads them. `--seconds 1800`
is the soak: row churn must not slow the claim over time (see `p99_by_window_ms`).
`--stored 10000000` first stores that many future schedules (with `chime import`'s code): the
scale run, to compare with the empty database.
One JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from bench.common import line, load_through_commands, receive, rss_mib, servers
from services.cli.bulk import bulk_import
from shared.contracts import format_instant
from tests.processes import Services


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def store_future_schedules(settings, count: int) -> float:
    """`count` schedules due years from now, loaded with `chime import`'s code: the stored
    backlog of the scale scenario. Returns the seconds it took."""
    path = Path(tempfile.mkdtemp()) / "stored.jsonl"
    far = datetime(2099, 1, 1, tzinfo=UTC)
    with path.open("wb") as out:
        for i in range(count):
            at = format_instant(far + timedelta(minutes=i))
            line = {
                "name": f"stored-{i}",
                "trigger": {"kind": "once", "at": at},
                "action": {"type": "later"},
            }
            out.write(orjson.dumps(line) + b"\n")
    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        code = await bulk_import(settings, path, "bench-stored", 5000)
    assert code == 0, "a stored schedule was rejected"
    path.unlink()
    return time.monotonic() - started


async def scenario(rate: int, seconds: int, stored: int = 0) -> dict:
    total = rate * seconds
    async with servers("steady") as settings:
        stored_s = await store_future_schedules(settings, stored) if stored else 0.0
        running = Services(settings, CHIME_LOG_LEVEL="WARNING")
        await running.start("scheduler")
        start = datetime.now(UTC) + timedelta(seconds=15 + total / 10_000)
        step = timedelta(seconds=1 / rate)
        load_s = await load_through_commands(settings, total, lambda i: start + i * step)
        assert datetime.now(UTC) < start, "loading took longer than planned: raise the lead"
        await running.start("ticker")
        received = await receive(settings, settings.topics.actions_due, total, seconds + 120)
        rss = {label: round(rss_mib(p.pid), 1) for label, p in running.procs.items()}
        await running.stop_all()
    late, fired_late = [], []
    window = 10 if seconds <= 300 else 60  # seconds per bucket of p99_by_window_ms
    by_window: dict[int, list[float]] = {}
    for at, value in received:
        due = datetime.fromisoformat(value["data"]["dueAt"]).timestamp()
        late.append(at - due)
        fired_late.append(datetime.fromisoformat(value["data"]["firedAt"]).timestamp() - due)
        by_window.setdefault(int((due - start.timestamp()) // window), []).append(at - due)
    ids = [v["data"]["actionId"] for _, v in received]
    ms = 1000
    return {
        "scenario": "steady_lateness",
        "rate_per_s": rate,
        "seconds": seconds,
        "stored_schedules": stored,
        "stored_import_s": round(stored_s, 1),
        "received": len(received),
        "duplicates": len(ids) - len(set(ids)),
        "misses": total - len(set(ids)),
        "early": sum(1 for x in late if x < 0),
        "lateness_ms": {
            "p50": round(percentile(late, 0.50) * ms, 1),
            "p99": round(percentile(late, 0.99) * ms, 1),
            "max": round(max(late) * ms, 1),
        },
        "fired_lateness_ms": {  # firedAt - dueAt: the ticker's part of it
            "p50": round(percentile(fired_late, 0.50) * ms, 1),
            "p99": round(percentile(fired_late, 0.99) * ms, 1),
            "max": round(max(fired_late) * ms, 1),
        },
        "window_s": window,
        "p99_by_window_ms": [
            round(percentile(v, 0.99) * ms, 1) for _, v in sorted(by_window.items())
        ],
        "load_commands_s": round(load_s, 2),
        "rss_mib": rss,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument(
        "--stored", type=int, default=0, help="future schedules stored first (the scale run)"
    )
    args = parser.parse_args()
    line(**await scenario(args.rate, args.seconds, args.stored))


if __name__ == "__main__":
    asyncio.run(main())
