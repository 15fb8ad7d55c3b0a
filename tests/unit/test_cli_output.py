"""What people read: `chime tail` lines and the JSON log lines."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from services.cli.client import pretty
from services.cli.main import main
from shared.runtime import JsonFormatter


def test_tail_pretty_lines() -> None:
    due = {
        "type": "action.due",
        "data": {
            "namespace": "default",
            "name": "nightly",
            "type": "billing-run",
            "dueAt": "2026-03-11T10:30:00Z",
            "attempt": 2,
            "actionId": "a-1",
            "misfired": True,
        },
    }
    assert pretty("chime.actions.due", due, {}) == (
        "action.due  default/nightly  billing-run  due 2026-03-11T10:30:00Z  attempt 2  a-1"
        "  misfired"
    )
    changed = {
        "type": "action.state-changed",
        "data": {"actionId": "a-1", "attempt": 1, "previousState": "RUNNING", "state": "SUCCEEDED"},
    }
    assert (
        pretty("chime.actions.events", changed, {})
        == "action.state-changed  a-1  attempt 1  RUNNING -> SUCCEEDED"
    )
    rejected = {
        "type": "command.rejected",
        "meta": {"correlationId": "c-9"},
        "errors": [
            {"field": "data.trigger.hours", "message": "hours must be between 0 and 23 (got 24)"}
        ],
    }
    assert pretty("chime.command-results", rejected, {}) == (
        "command.rejected  c-9  data.trigger.hours: hours must be between 0 and 23 (got 24)"
    )
    assert pretty("chime.dlq", "garbage", {"chime-reason": "not JSON"}).endswith("not JSON")
    created = {
        "type": "schedule.created",
        "meta": {"correlationId": "c-1"},
        "data": {
            "namespace": "default",
            "name": "nightly",
            "state": "ACTIVE",
            "version": 1,
            "scheduledFor": "2026-03-11T10:30:00Z",
        },
    }
    assert pretty("chime.command-results", created, {}) == (
        "schedule.created  default/nightly  ACTIVE  v1  next 2026-03-11T10:30:00Z  c-1"
    )
    other = {"type": "team.custom", "data": {"note": "x" * 200}}
    line = pretty("chime.actions.due", other, {})
    assert line.startswith('team.custom  {"note":"xxx') and len(line) == len("team.custom  ") + 120


def test_log_lines_are_json_with_the_fields_given() -> None:
    record = logging.LogRecord(
        "chime.scheduler", logging.INFO, __file__, 1, "command rejected: %s", ("x",), None
    )
    record.correlationId, record.commandId, record.ignored = "c-1", "k-1", "not a log field"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "command rejected: x" and line["level"] == "INFO"
    assert (line["correlationId"], line["commandId"]) == ("c-1", "k-1")
    assert "ignored" not in line


def test_a_bad_setting_is_named_by_its_variable_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHIME_KAFKA_COMPRESSION", "brotli")
    monkeypatch.setenv("CHIME_TOPIC_PARTITIONS", "0")
    for command in (["migrate"], ["dev"]):  # before anything connects or starts
        assert main(command) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines == [
            "chime: CHIME_TOPIC_PARTITIONS: Input should be greater than or equal to 1",
            "chime: CHIME_KAFKA_COMPRESSION: Input should be 'none', 'gzip', 'snappy', 'lz4' or"
            " 'zstd'",
        ]


@pytest.mark.parametrize(
    ("variable", "value", "error"),
    [
        # each of these passed, and failed the service as it started (or later)
        ("CHIME_TICKER_LEASE_SECONDS", "inf", "Input should be a finite number"),  # OverflowError
        ("CHIME_RETENTION_DAYS", "1e300", "Input should be less than or equal to 36500"),
        ("CHIME_LOG_LEVEL", "LOUD", "Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("CHIME_TOPIC_PREFIX", "chime/", "String should match pattern"),  # no such topic name
        ("CHIME_KAFKA_SESSION_TIMEOUT_MS", "-5", "Input should be greater than or equal to 1"),
        (
            "CHIME_KAFKA_HEARTBEAT_INTERVAL_MS",
            "20000",
            "Value error, must be less than CHIME_KAFKA_SESSION_TIMEOUT_MS (10000)",
        ),
    ],
)
def test_a_setting_out_of_its_range_is_named_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    error: str,
) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["migrate"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"chime: {variable}: {error}"), line


def test_a_log_level_is_read_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import Settings

    monkeypatch.setenv("CHIME_LOG_LEVEL", "warning")
    assert Settings().log_level == "WARNING"


def test_a_settings_file_that_cannot_be_read_is_named_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    missing = tmp_path / "absent"
    monkeypatch.setenv("CHIME_DATABASE_URL_FILE", str(missing))
    assert main(["migrate"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"chime: CHIME_DATABASE_URL_FILE: cannot read {missing}: No such file or directory"
    ]


@pytest.mark.parametrize(
    ("command", "server"),
    [
        (["migrate"], "PostgreSQL at postgresql://chime:***@127.0.0.1:1/chime"),
        (["status"], "PostgreSQL at postgresql://chime:***@127.0.0.1:1/chime"),
        (["publish", "examples/quickstart.json"], "Kafka at 127.0.0.1:1"),
        (["ack", "0190f5c2-0000-7000-8000-000000000000", "--state", "SUCCEEDED"], "Kafka at"),
        (["tail", "commands", "--max", "1"], "Kafka at 127.0.0.1:1"),
    ],
)
def test_a_server_that_does_not_answer_is_named_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    server: str,
) -> None:
    # nothing listens on port 1: refused at once
    monkeypatch.setenv("CHIME_DATABASE_URL", "postgresql://chime:secret@127.0.0.1:1/chime")
    monkeypatch.setenv("CHIME_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert main(command) == 2
    err = capsys.readouterr().err  # before the last line, the Kafka client's own log lines
    line = err.splitlines()[-1]
    assert line.startswith(f"chime {command[0]}: cannot reach {server}"), line
    assert "Traceback" not in err and "secret" not in err


def test_chime_dev_names_what_it_cannot_start_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A data folder that cannot be made, or servers of one's own that do not answer: both
    were a traceback (NotADirectoryError, ConnectionRefusedError)."""
    monkeypatch.setenv("CHIME_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # no embedded broker
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with socket.socket() as probe:  # a port nothing listens on, for the embedded PostgreSQL
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["dev", "--data-dir", str(not_a_folder), "--postgres-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "chime dev: the embedded PostgreSQL did not start: [Errno 20] Not a directory" in err
    assert "Traceback" not in err

    monkeypatch.setenv("CHIME_DATABASE_URL", "postgresql://chime:secret@127.0.0.1:1/chime")
    assert main(["dev"]) == 2
    err = capsys.readouterr().err
    assert "chime dev: cannot reach PostgreSQL at postgresql://chime:***@127.0.0.1:1/chime" in err
    assert "Traceback" not in err and "secret" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "is not JSON: invalid literal"),
        (b'{"type": "schedule.get", "data": {\xff}}', "is not JSON: str is not valid UTF-8"),
        (b"[1, 2]", "must hold one JSON object, not a list"),
        (b'"schedule.get"', "must hold one JSON object, not a str"),
        (b'{"type": "schedule.get", "meta": "x", "data": {}}', ": meta must be a JSON object"),
    ],
)
def test_publish_refuses_a_file_that_is_not_one_command_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    content: bytes,
    message: str,
) -> None:
    """Refused before anything connects (nothing listens on port 1)."""
    monkeypatch.setenv("CHIME_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    path = tmp_path / "command.json"
    path.write_bytes(content)
    assert main(["publish", str(path)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"chime publish: {path}") and message in line
