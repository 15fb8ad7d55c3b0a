"""Ack ingest: N occurrences fired, then N `action.ack` SUCCEEDED on chime.actions.acks, each
applied and announced on chime.actions.events.

    python -m bench.ack_ingest [--total 100000] [--ackers 1]

Set-up through the public surface: schedules created by commands, fired by the ticker, read
back from chime.actions.due. The acks are published before the acker(s) start; the figure is
acks applied per second from the first state change announced to the last (none when a small
run arrives in one read), and from the acker being ready to the last. One JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

import orjson

from bench.command_ingest import publish
from bench.common import (
    CpuMeter,
    ingest_rates,
    line,
    load_through_commands,
    receive,
    rss_mib,
    servers,
)
from tests.processes import Services

TARGET_PER_S = 30_000  # issue #8's ack target: what `cpu.cores_for_target` is reckoned at


async def scenario(total: int, ackers: int) -> dict:
    async with servers("acks") as settings:
        async with Services(settings, tidy=True, CHIME_LOG_LEVEL="WARNING") as running:
            await running.start("scheduler")
            due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
            await load_through_commands(settings, total, due)
            await running.start("ticker")
            fired = await receive(settings, settings.topics.actions_due, total, 600)
            acks = [
                orjson.dumps(
                    {
                        "type": "action.ack",
                        "meta": {"tenant": "bench"},
                        "data": {
                            "actionId": due_event["data"]["actionId"],
                            "attempt": due_event["data"]["attempt"],
                            "state": "SUCCEEDED",
                            "output": {"ok": True},
                        },
                    }
                )
                for _, due_event in fired
            ]
            # keyed by schedule, as README asks of workers: the acks spread over the partitions
            keys = [due_event["data"]["scheduleId"].encode() for _, due_event in fired]
            publish_s = await publish(settings, settings.topics.actions_acks, acks, keys)
            await asyncio.gather(*(running.start(f"acker-{i}") for i in range(ackers)))
            meter = await CpuMeter.of(settings, running.procs)
            meter.start()
            ready = time.time()
            events = await receive(
                settings, settings.topics.actions_events, len(acks), 900, at_last=meter.stop
            )
            rss = {label: round(rss_mib(p.pid), 1) for label, p in running.procs.items()}
    states = [v["data"].get("state") for _, v in events if v["type"] == "action.state-changed"]
    return {
        "scenario": "ack_ingest",
        "compression": settings.kafka_compression,
        "total": len(acks),
        "ackers": ackers,
        "applied": states.count("SUCCEEDED"),
        "ignored": sum(1 for _, v in events if v["type"] == "action.ack-ignored"),
        **ingest_rates(events, ready),
        "publish_s": round(publish_s, 2),
        "rss_mib": rss,
        "cpu": meter.per_operation(len(events), TARGET_PER_S),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=100_000)
    parser.add_argument("--ackers", type=int, default=1)
    args = parser.parse_args()
    line(**await scenario(args.total, args.ackers))


if __name__ == "__main__":
    asyncio.run(main())
