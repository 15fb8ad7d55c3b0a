"""The broker alone at a steady rate: what it adds to `steady_lateness`'s received figure.

    python -m bench.broker_lateness [--rate 5000] [--seconds 60] [--per-schedule 1000]
                                    [--step-ms 3] [--no-consumer]

Records the size of an `action.due` event go to the `actions.due` topic at a constant rate,
each carrying the instant it was due, sent as the ticker sends: every `RELEASE_STEP` (3 ms)
what fell due since the last release goes out through the ticker's `BatchSender` (a record
batch per partition), without waiting for the previous release's acknowledgement, up to
ROUNDS_IN_FLIGHT (3) unacknowledged (what falls due meanwhile goes out with the next release).
Records are keyed as `steady_lateness`'s load is: the i-th by schedule i // per_schedule, so
that a release fills as many partitions as one of that load does. The same plain consumer
as `steady_lateness` reads them: received - due, p50/p99/max and p99 per window. Per release,
`rtt_ms` is the broker's own round trip (sent -> acknowledged) and `ack_ms` the first record's
due -> acknowledged. When the broker runs here (the embedded one), `broker_cores_by_window` is
the CPU it used in each window, in cores: the embedded broker's delivery to a consumer costs
more with every batch it holds (bench/README.md, profile notes). `--no-consumer` measures the
produce path alone; `--step-ms` releases at another step than the ticker's (the same records in
fewer or more batches). No Chime service runs. One JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import orjson

from bench.common import (
    figures_ms,
    line,
    listening_pid,
    p99_by_window,
    receive,
    servers,
    watching_cores,
)
from services.ticker.engine import RELEASE_STEP, ROUNDS_IN_FLIGHT
from shared.messaging import BatchSender, Outgoing
from shared.settings import Settings

EVENT_BYTES = 700  # an action.due event with a small payload


async def produce(
    settings: Settings, rate: int, seconds: int, start: float, per_schedule: int, step: float
) -> list[tuple[float, float, float]]:
    """`rate` records per second from `start` (epoch seconds), released every `step` seconds;
    returns (first due, sent, acknowledged) of each release."""
    sender = BatchSender(settings)
    await sender.start()
    topic, pad = settings.topics.actions_due, "x" * EVENT_BYTES
    keys = [str(uuid.uuid4()).encode() for _ in range(rate * seconds // per_schedule + 1)]
    releases: list[tuple[float, float, float]] = []

    async def send(first: float, messages: list[Outgoing]) -> None:
        sent_at = time.time()
        await sender.send(messages)
        releases.append((first, sent_at, time.time()))

    sending: set[asyncio.Task[None]] = set()
    try:
        sent, total = 0, rate * seconds
        await asyncio.sleep(max(0.0, start - time.time()))
        while sent < total:
            if len(sending) >= ROUNDS_IN_FLIGHT:
                done, sending = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            due_now = min(total, int((time.time() - start) * rate) + 1)
            if due_now > sent:
                first, messages = start + sent / rate, []
                for i in range(sent, due_now):
                    body = orjson.dumps({"due": start + i / rate, "pad": pad})
                    messages.append(Outgoing(topic, body, keys[i // per_schedule]))
                sent = due_now
                sending.add(asyncio.create_task(send(first, messages)))
            await asyncio.sleep(step)
        await asyncio.gather(*sending)
    finally:
        for task in sending:
            task.cancel()  # only those still waiting: a send failed
        await sender.stop()
    return releases


async def scenario(
    rate: int,
    seconds: int,
    per_schedule: int = 1000,
    consume: bool = True,
    step: float = RELEASE_STEP,
) -> dict:
    async with servers("broker") as settings:
        topic = settings.topics.actions_due
        start = time.time() + 1
        total = rate * seconds
        window = 10 if seconds <= 300 else 60
        broker = listening_pid(settings.kafka_bootstrap_servers)
        async with watching_cores(broker, start, window) as broker_cores:
            load = produce(settings, rate, seconds, start, per_schedule, step)
            producing = asyncio.create_task(load)
            received = []
            if consume:
                received = await receive(settings, topic, total, seconds + 120, lambda v: v["due"])
            releases = await producing
    figures = {
        "scenario": "broker_lateness",
        "rate_per_s": rate,
        "seconds": seconds,
        "per_schedule": per_schedule,
        "step_ms": round(step * 1000, 3),
        "releases": len(releases),  # produce requests, a record batch per partition each
        "window_s": window,
        # per release: sent -> acknowledged (acks=all), and its first record's due -> acknowledged
        "rtt_ms": figures_ms([acked - sent for _, sent, acked in releases]),
        "rtt_p99_by_window_ms": p99_by_window(
            [(first, acked - sent) for first, sent, acked in releases], start, window
        ),
        "ack_ms": figures_ms([acked - first for first, _, acked in releases]),
    }
    if broker_cores is not None:
        figures["broker_cores_by_window"] = broker_cores
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
        "--per-schedule",
        type=int,
        default=1000,
        help="consecutive records per key (steady_lateness's occurrences per schedule)",
    )
    parser.add_argument(
        "--step-ms",
        type=float,
        default=RELEASE_STEP * 1000,
        help="milliseconds between releases (default: the ticker's RELEASE_STEP)",
    )
    parser.add_argument(
        "--no-consumer", action="store_true", help="only publish: the broker's produce path"
    )
    args = parser.parse_args()
    step = args.step_ms / 1000
    line(**await scenario(args.rate, args.seconds, args.per_schedule, not args.no_consumer, step))


if __name__ == "__main__":
    asyncio.run(main())
