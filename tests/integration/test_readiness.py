"""A service's readiness (/health/ready): started, the work in hand reaching its dependencies,
and a background probe that tells the truth about PostgreSQL and Kafka while the service idles
(against the real servers, and addresses where nothing answers)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.persistence.database import create_pool
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from tests.integration.helpers import until

# The probe's period: a Kafka request may take half of it, a whole check twice (a slow machine's
# bootstrap is no outage).
EVERY = 2.0


def probe_logs(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "chime.probe"]


async def test_ready_once_started_and_while_the_work_and_both_servers_answer(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(settings.database_url, 2)
    runtime = ServiceRuntime("probe", settings)
    try:
        assert not runtime.ready()  # not consuming yet
        runtime.watch(pool, every=EVERY)
        await runtime.mark_started()
        assert runtime.ready()
        runtime.set_dependencies_ok(False)  # the work in hand is retrying a server
        assert not runtime.ready()
        runtime.set_dependencies_ok(True)
        assert runtime.ready()
        with caplog.at_level(logging.INFO, logger="chime.probe"):
            await pool.close()

            async def database_lost() -> bool:
                return not runtime.reachable["postgresql"]

            await until(database_lost, 10, every=0.05)
            assert not runtime.ready()
            assert runtime.reachable["kafka"]
        assert probe_logs(caplog) == [("ERROR", "postgresql is unreachable")]
    finally:
        await runtime.stop()


async def test_a_broker_that_does_not_answer_and_then_does(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(settings.database_url, 2)
    runtime = ServiceRuntime(
        "probe", settings.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    )
    try:
        await runtime.mark_started()
        before = asyncio.all_tasks()
        with caplog.at_level(logging.INFO, logger="chime.probe"):
            runtime.watch(pool, every=EVERY)

            async def broker_lost() -> bool:
                return not runtime.reachable["kafka"]

            await until(broker_lost, 10, every=0.05)
            assert not runtime.ready() and runtime.reachable["postgresql"]
            runtime.settings = settings  # the broker is back where the service looks for it

            async def ready() -> bool:
                return runtime.ready()

            await until(ready, 10, every=0.05)
        # once a change, and nothing about PostgreSQL, which answered all along
        assert probe_logs(caplog) == [
            ("ERROR", "kafka is unreachable"),
            ("INFO", "kafka is reachable again"),
        ]
        await runtime.stop()  # waits for the probe to end
        assert not [task for task in asyncio.all_tasks() - before if not task.done()]
    finally:
        await runtime.stop()
        await pool.close()


class Withholding:
    """A TCP relay to the real broker that passes the first answer on (the client's ApiVersions)
    and withholds every later one: a broker that stops answering in the middle of a probe."""

    def __init__(self, broker: str) -> None:
        host, port = broker.split(",")[0].rsplit(":", 1)
        self.broker = (host, int(port))
        self.opened = 0
        self.closed = asyncio.Event()  # the client closed its side
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.opened += 1
        broker_r, broker_w = await asyncio.open_connection(*self.broker)
        self.writers += [client_w, broker_w]

        async def requests() -> None:
            while data := await client_r.read(65536):
                broker_w.write(data)
            self.closed.set()

        async def answers() -> None:
            size = int.from_bytes(await broker_r.readexactly(4), "big")
            client_w.write(size.to_bytes(4, "big") + await broker_r.readexactly(size))
            while await broker_r.read(65536):
                pass  # withheld

        for work in (requests(), answers()):
            task = asyncio.create_task(work)
            self.tasks.add(task)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            writer.close()
            await writer.wait_closed()
        self.server.close()
        await self.server.wait_closed()


async def test_a_broker_that_stops_answering_is_unreachable_and_no_connection_stays_open(
    settings: Settings,
) -> None:
    relay = Withholding(settings.kafka_bootstrap_servers)
    address = await relay.start()
    pool = await create_pool(settings.database_url, 2)
    runtime = ServiceRuntime(
        "probe", settings.model_copy(update={"kafka_bootstrap_servers": address})
    )
    try:
        runtime.watch(pool, every=EVERY)

        async def closed() -> bool:
            return relay.closed.is_set()

        # the client gave up on its metadata request and closed the connection it opened
        await until(closed, 2 * EVERY, every=0.05)
        assert relay.opened == 1
        assert runtime.reachable == {"postgresql": True, "kafka": False}
    finally:
        await runtime.stop()
        await relay.stop()
        await pool.close()
