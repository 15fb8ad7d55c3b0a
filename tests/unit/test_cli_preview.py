"""`chime preview`: JSON list on stdout, or a one-line reason on stderr and a non-zero exit."""

from __future__ import annotations

import json

import pytest

from services.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["preview", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_utc_instants_strictly_after(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "--trigger",
        '{"kind":"cron","expression":"0 9 * * MON-FRI"}',
        "--timezone",
        "CST",
        "--after",
        "2026-10-26T14:00:00Z",
        "--count",
        "3",
    )
    assert code == 0 and err == ""
    assert json.loads(out) == [
        "2026-10-27T14:00:00Z",
        "2026-10-28T14:00:00Z",
        "2026-10-29T14:00:00Z",
    ]


def test_finite_series_returns_fewer_than_count(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "--trigger",
        '{"kind":"once","at":"2030-01-01T00:00:00+02:00"}',
        "--after",
        "2026-01-01T00:00:00Z",
        "--count",
        "5",
    )
    assert code == 0 and json.loads(out) == ["2029-12-31T22:00:00Z"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (
            ["--trigger", '{"kind":"daily","hours":24}'],
            "trigger.hours: hours must be between 0 and 23 (got 24)",
        ),
        (
            ["--trigger", '{"kind":"cron","expression":"0 0 32 * *"}'],
            "day-of-month 32 is out of range 1–31",
        ),
        (
            ["--trigger", '{"kind":"daily","hours":1}', "--timezone", "Nowhere/City"],
            "unknown time zone",
        ),
        (["--trigger", "{not json"], "--trigger is not JSON"),
        (
            ["--trigger", '{"kind":"daily","hours":1}', "--after", "2026-01-01T00:00:00"],
            "--after '2026-01-01T00:00:00': must carry a UTC offset",
        ),
        (  # it printed [], as if the trigger never fired
            ["--trigger", '{"kind":"daily","hours":1}', "--after", "0001-01-01T00:00:00Z"],
            "--after '0001-01-01T00:00:00Z': must be 1970-01-01T00:00:00Z or later",
        ),
        (
            ["--trigger", '{"kind":"daily","hours":1}', "--after", "tomorrow"],
            "--after 'tomorrow': input should be a valid datetime",
        ),
    ],
)
def test_invalid_input_exits_non_zero_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], reason: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code != 0 and out == ""
    assert reason in err and err.count("\n") == 1
