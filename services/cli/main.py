"""`chime`: dev, migrate, import, run, docs, preview, publish, ack, tail, status."""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.settings import Settings

__all__ = ["main"]

SERVICES = ("scheduler", "ticker", "acker")
LAST_ATTEMPT = 2**31 - 1  # as an ack's attempt (shared.contracts.events), not imported at start
LONGEST_WAIT = 86_400.0  # seconds, for --timeout
MOST_FIRE_TIMES = 10_000  # chime preview --count


def _whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` (None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if high is None and value < low:
            raise argparse.ArgumentTypeError(f"{text} is less than {low}")
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {low} and {high:,}")
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a time to wait, in seconds (more than 0, at most a day)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= LONGEST_WAIT):
        raise argparse.ArgumentTypeError(
            f"{text} is not more than 0 and at most {LONGEST_WAIT:,.0f}"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chime", description="Event-driven scheduling on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the whole system locally (embedded PostgreSQL + Tansu)")
    dev.add_argument("--kafka-port", type=_whole(1, 65_535), default=9092)
    dev.add_argument("--postgres-port", type=_whole(1, 65_535), default=5432)
    dev.add_argument(
        "--data-dir", default=".chime/dev", help="where the embedded PostgreSQL keeps data"
    )

    sub.add_parser("migrate", help="create the database if needed and apply migrations")

    bulk = sub.add_parser("import", help="create schedules in bulk from a JSON Lines file")
    bulk.add_argument("file", help="one schedule.create data object per line")
    bulk.add_argument("--tenant", required=True)
    bulk.add_argument(
        "--batch", type=_whole(1, 100_000), default=500, help="lines per transaction (500)"
    )
    bulk.add_argument(
        "--jobs", type=_whole(1, 64), default=1, help="processes sharing the lines (one per core)"
    )

    docs = sub.add_parser("docs", help="write docs/asyncapi and docs/schemas from the code")
    docs.add_argument(
        "--check", action="store_true", help="exit 1 if the committed copies are stale"
    )

    run = sub.add_parser("run", help="run one service")
    run.add_argument("service", choices=SERVICES)

    preview = sub.add_parser("preview", help="print the next fire times of a trigger")
    preview.add_argument(
        "--trigger", required=True, help='trigger JSON, e.g. \'{"kind":"daily","hours":10}\''
    )
    preview.add_argument("--timezone", default="UTC")
    preview.add_argument(
        "--after", help="ISO-8601 instant with an offset, 1970 or later (default: now)"
    )
    preview.add_argument(
        "--count",
        type=_whole(1, MOST_FIRE_TIMES),
        default=5,
        help="fire times to print (default: 5)",
    )

    publish = sub.add_parser("publish", help="send a command file and print its result")
    publish.add_argument("file", help="JSON command; '-' reads standard input")
    publish.add_argument("--timeout", type=_seconds, default=30.0, help="seconds (30)")

    ack = sub.add_parser("ack", help="acknowledge an action and print the acker's answer")
    ack.add_argument("action_id")
    ack.add_argument("--state", required=True, choices=["RUNNING", "SUCCEEDED", "FAILED"])
    ack.add_argument("--attempt", type=_whole(1, LAST_ATTEMPT), default=1)
    ack.add_argument("--tenant", default="default")
    ack.add_argument("--message")
    ack.add_argument("--timeout", type=_seconds, default=30.0, help="seconds (30)")

    sub.add_parser("status", help="schedules by state, backlog, next due, consumer lag (JSON)")

    tail = sub.add_parser("tail", help="print messages of a topic as they arrive")
    tail.add_argument("topic", help="full topic name, or a short one such as actions.due")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=_whole(0), default=0, help="stop after this many (0: never)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _settings() -> Settings | None:
    """The environment's settings; None, after naming each bad one by its variable (without a
    traceback), when some are not valid."""
    from pydantic import ValidationError

    from shared.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            loc = "_".join(str(part) for part in error["loc"]).upper()
            name = f"CHIME_{loc}" if loc else "settings"
            print(f"chime: {name}: {error['msg']}", file=sys.stderr)
        return None
    except ValueError as exc:  # a CHIME_<NAME>_FILE that cannot be read (names itself)
        print(f"chime: {exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        # Before the imports below (a second or so): a stop request then still exits 0.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _exit_zero)
    if args.command == "preview":
        from services.cli.preview import preview

        return preview(args.trigger, args.timezone, args.after, args.count)
    if args.command == "docs":
        from services.cli.docs import docs

        return docs(Path.cwd(), args.check)
    if args.command == "dev":
        from services.cli.dev import dev

        if _settings() is None:  # refused before the embedded servers start
            return 2

        def explain(exc: Exception, settings: Settings) -> str | None:
            return _server_failure(exc, settings, "migrate")  # as `chime migrate` would

        return asyncio.run(dev(args.kafka_port, args.postgres_port, args.data_dir, explain))

    from shared.runtime import configure_logging

    settings = _settings()
    if settings is None:
        return 2
    configure_logging(settings.log_level)
    if args.command == "run":
        return _run_service(args.service, settings)  # waits for its servers by itself
    try:
        return _command(args, settings)
    except Exception as exc:
        failure = _server_failure(exc, settings, args.command)
        if failure is None:
            raise
        print(f"chime {args.command}: {failure}: {exc}", file=sys.stderr)
        return 2


def _server_failure(exc: Exception, settings: Settings, command: str) -> str | None:
    """Which server did not answer or refused the connection, as `exc` says (None: another
    error)."""
    import socket

    import asyncpg
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    from shared.persistence.database import redacted
    from shared.persistence.migrate import SchemaNotReady

    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError):
        return f"cannot reach Kafka at {settings.kafka_bootstrap_servers}"
    url = settings.database_url
    if command == "migrate":
        url = settings.database_migration_url or url
    if isinstance(exc, SchemaNotReady):  # before ConnectionError, which it is
        return f"PostgreSQL at {redacted(url)} is not ready"
    if isinstance(
        exc,
        ConnectionError
        | socket.gaierror
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError,
    ):
        return f"cannot reach PostgreSQL at {redacted(url)}"
    if isinstance(  # a wrong password or user, a database that does not exist
        exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidCatalogNameError
    ):
        return f"PostgreSQL at {redacted(url)} refused the connection"
    return None


def _command(args: argparse.Namespace, settings: Settings) -> int:
    """A command that talks to PostgreSQL or Kafka once and ends."""
    if args.command == "migrate":
        from shared.persistence.migrate import migrate

        def progress(version: int, name: str, seconds: float) -> None:
            print(f"chime migrate: applied {version:04d}_{name} in {seconds:.2f} s", flush=True)

        url = settings.database_migration_url or settings.database_url
        applied = asyncio.run(migrate(url, progress, settings.database_service_role))
        print(f"chime migrate: {len(applied)} migration(s) applied, schema current", flush=True)
        return 0
    if args.command == "import":
        from services.cli.bulk import ImportFailed, bulk_import

        try:
            return asyncio.run(
                bulk_import(settings, Path(args.file), args.tenant, args.batch, args.jobs)
            )
        except ImportFailed as exc:
            print(f"chime import: {exc}", file=sys.stderr)
            return 2
    from services.cli import client

    if args.command == "publish":
        try:
            text = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
        except OSError as exc:
            print(f"chime publish: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 2
        source = "standard input" if args.file == "-" else args.file
        return asyncio.run(client.publish(settings, text, source, args.timeout))
    if args.command == "ack":
        return asyncio.run(
            client.ack(
                settings,
                args.action_id,
                args.state,
                args.attempt,
                args.tenant,
                args.message,
                args.timeout,
            )
        )
    if args.command == "status":
        return asyncio.run(client.status(settings))
    return asyncio.run(client.tail(settings, args.topic, args.from_beginning, args.max, args.json))


def _run_service(name: str, settings) -> int:
    if name == "scheduler":
        from services.scheduler.app import build_app
    elif name == "ticker":
        from services.ticker.app import build_app
    else:
        from services.acker.app import build_app
    from shared.runtime import run_service

    return run_service(build_app(settings))


def _exit_zero(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
