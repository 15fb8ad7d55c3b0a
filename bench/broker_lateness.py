"""The broker alone at a steady rate: what it adds to `steady_lateness`'s received figure.

    python -m bench.broker_lateness [--rate 5000] [--seconds 60]

A plain aiokafka producer publishes records the size of an `action.due` event to the
`actions.due` topic at a constant rate, each carrying the instant it was due; the same plain
consumer as `steady_lateness` reads them: received - due, p50/p99/max and p99 per window, and
how long the broker took to acknowledge each round of sends (`ack_ms`). `--no-consumer`
measures the produce path alone. No Chime service runs. One JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiokafka import AIOKafkaProducer

from bench.common import figures_ms, line, p99_by_window, receive, servers

EVENT_BYTES = 700  # an action.due event with a small payload


async def produce(
    bootstrap: str, topic: str, rate: int, seconds: int, start: float
) -> list[tuple[float, float]]:
    """`rate` records per second from `start` (epoch seconds), keyed like Chime's events;
    returns (due, seconds until the broker acknowledged it) of each round's first record."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    pad = "x" * EVENT_BYTES
    acked: list[tuple[float, float]] = []
    try:
        sent, total = 0, rate * seconds
        while sent < total:
            due_now = min(total, int((time.time() - start) * rate) + 1)
            pending, first = [], start + sent / rate
            while sent < due_now:
                body = orjson.dumps({"due": start + sent / rate, "pad": pad})
                pending.append(await producer.send(topic, body, key=str(sent % 997).encode()))
                sent += 1
            await asyncio.gather(*pending)
            acked.append((first, time.time() - first))
            await asyncio.sleep(0.001)
    finally:
        await producer.stop()
    return acked


async def scenario(rate: int, seconds: int, consume: bool = True) -> dict:
    async with servers("broker") as settings:
        topic = settings.topics.actions_due
        start = time.time() + 1
        total = rate * seconds
        producing = asyncio.create_task(
            produce(settings.kafka_bootstrap_servers, topic, rate, seconds, start)
        )
        received = []
        if consume:
            received = await receive(settings, topic, total, seconds + 120, lambda v: v["due"])
        acked = await producing
    window = 10 if seconds <= 300 else 60
    figures = {
        "scenario": "broker_lateness",
        "rate_per_s": rate,
        "seconds": seconds,
        "window_s": window,
        # due -> acknowledged by the broker (acks=all), per round of sends
        "ack_ms": figures_ms([seconds for _, seconds in acked]),
        "ack_p99_by_window_ms": p99_by_window(acked, start, window),
    }
    if consume:
        late = [(due, at - due) for at, due in received]
        figures |= {
            "received": len(received),
            "not_received": total - len(received),
            "lateness_ms": figures_ms([x for _, x in late]),  # due -> received
            "p99_by_window_ms": p99_by_window(late, start, window),
        }
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument(
        "--no-consumer", action="store_true", help="only publish: the broker's produce path"
    )
    args = parser.parse_args()
    line(**await scenario(args.rate, args.seconds, not args.no_consumer))


if __name__ == "__main__":
    asyncio.run(main())
