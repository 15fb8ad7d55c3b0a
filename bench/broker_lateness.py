"""The broker alone at a steady rate: what it adds to `steady_lateness`'s received figure.

    python -m bench.broker_lateness [--rate 5000] [--seconds 60]

A plain aiokafka producer publishes records the size of an `action.due` event to the
`actions.due` topic at a constant rate, each carrying the instant it was due; the same plain
consumer as `steady_lateness` reads them: received - due, p50/p99/max and p99 per window.
No Chime service runs. One JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiokafka import AIOKafkaProducer

from bench.common import line, percentile, receive, servers

EVENT_BYTES = 700  # an action.due event with a small payload


async def produce(bootstrap: str, topic: str, rate: int, seconds: int, start: float) -> None:
    """`rate` records per second from `start` (epoch seconds), keyed like Chime's events."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    pad = "x" * EVENT_BYTES
    try:
        sent, total = 0, rate * seconds
        while sent < total:
            due_now = min(total, int((time.time() - start) * rate) + 1)
            pending = []
            while sent < due_now:
                body = orjson.dumps({"due": start + sent / rate, "pad": pad})
                pending.append(await producer.send(topic, body, key=str(sent % 997).encode()))
                sent += 1
            await asyncio.gather(*pending)
            await asyncio.sleep(0.001)
    finally:
        await producer.stop()


async def scenario(rate: int, seconds: int) -> dict:
    async with servers("broker") as settings:
        topic = settings.topics.actions_due
        start = time.time() + 1
        total = rate * seconds
        producing = asyncio.create_task(
            produce(settings.kafka_bootstrap_servers, topic, rate, seconds, start)
        )
        received = await receive(settings, topic, total, seconds + 120, lambda v: v["due"])
        await producing
    late = [at - due for at, due in received]
    window = 10 if seconds <= 300 else 60
    by_window: dict[int, list[float]] = {}
    for at, due in received:
        by_window.setdefault(int((due - start) // window), []).append(at - due)
    ms = 1000
    return {
        "scenario": "broker_lateness",
        "rate_per_s": rate,
        "seconds": seconds,
        "received": len(received),
        "not_received": total - len(received),
        "lateness_ms": {
            "p50": round(percentile(late, 0.50) * ms, 1),
            "p99": round(percentile(late, 0.99) * ms, 1),
            "max": round(max(late) * ms, 1),
        },
        "window_s": window,
        "p99_by_window_ms": [
            round(percentile(v, 0.99) * ms, 1) for _, v in sorted(by_window.items())
        ],
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    line(**await scenario(args.rate, args.seconds))


if __name__ == "__main__":
    asyncio.run(main())
