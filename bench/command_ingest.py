"""Command ingest: N `schedule.create` commands on chime.commands, each answered on
chime.command-results.

    python -m bench.command_ingest [--total 100000] [--schedulers 1]

The commands are published first (as fast as the producer goes), then the scheduler(s) start:
the figure is commands applied and answered per second from the first result to the last, so
that it measures Chime rather than the load generator (`rate_from_ready_per_s` also counts the
time from the scheduler being ready, joining its consumer group included). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import orjson
from aiokafka import AIOKafkaProducer

from bench.common import CpuMeter, ingest_rates, line, receive, rss_mib, servers
from tests.processes import Services

TARGET_PER_S = 30_000  # issue #8's command target: what `cpu.cores_for_target` is reckoned at


def create_command(i: int) -> bytes:
    cid = str(uuid.uuid4())
    return orjson.dumps(
        {
            "type": "schedule.create",
            "meta": {"commandId": cid, "correlationId": cid, "tenant": f"bench-{i % 10}"},
            "data": {
                "name": f"ingest-{i}",
                "timezone": "Europe/London",
                "trigger": {"kind": "daily", "hours": 9 + i % 8, "minutes": i % 60},
                "action": {"type": "billing-run", "payload": {"account": i}},
                "labels": {"team": "bench"},
            },
        }
    )


async def publish(
    settings, topic: str, bodies: list[bytes], keys: list[bytes] | None = None
) -> float:
    """Send every body with pipelined acks, keyed by `keys` (default: the body's last 40 bytes,
    which differ between these commands); returns the seconds it took."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        linger_ms=5,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for i, body in enumerate(bodies):
            key = body[-40:] if keys is None else keys[i]
            pending.append(await producer.send(topic, body, key=key))
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def scenario(total: int, schedulers: int) -> dict:
    async with servers("ingest") as settings:
        bodies = [create_command(i) for i in range(total)]
        publish_s = await publish(settings, settings.topics.commands, bodies)
        async with Services(settings, tidy=True, CHIME_LOG_LEVEL="WARNING") as running:
            await asyncio.gather(*(running.start(f"scheduler-{i}") for i in range(schedulers)))
            meter = await CpuMeter.of(settings, running.procs)
            meter.start()
            ready = time.time()
            results = await receive(
                settings, settings.topics.command_results, total, 900, at_last=meter.stop
            )
            rss = {label: round(rss_mib(p.pid), 1) for label, p in running.procs.items()}
    kinds: dict[str, int] = {}
    for _, value in results:
        kinds[value["type"]] = kinds.get(value["type"], 0) + 1
    return {
        "scenario": "command_ingest",
        "compression": settings.kafka_compression,
        "total": total,
        "schedulers": schedulers,
        "answered": len(results),
        "results": kinds,
        **ingest_rates(results, ready),
        "publish_s": round(publish_s, 2),
        "rss_mib": rss,
        "cpu": meter.per_operation(len(results), TARGET_PER_S),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=100_000)
    parser.add_argument("--schedulers", type=int, default=1)
    args = parser.parse_args()
    line(**await scenario(args.total, args.schedulers))


if __name__ == "__main__":
    asyncio.run(main())
