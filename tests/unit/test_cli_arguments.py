"""The CLI's numeric options are checked before anything runs: a value out of range is
refused naming the option (argparse: exit 2, usage and one error line)."""

from __future__ import annotations

import pytest

from services.cli.main import main

UUID = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        # imported nothing, exit 0: each chunk of zero lines ended the import at once
        (
            ["import", "f.jsonl", "--tenant", "t", "--batch", "0"],
            "argument --batch: 0 is not between",
        ),
        (
            ["import", "f.jsonl", "--tenant", "t", "--jobs", "1000"],
            "argument --jobs: 1000 is not between 1 and 64",
        ),
        (
            ["import", "f.jsonl", "--tenant", "t", "--jobs", "two"],
            "argument --jobs: 'two' is not a whole number",
        ),
        # a traceback (OverflowError) from the port check
        (
            ["dev", "--kafka-port", "99999"],
            "argument --kafka-port: 99999 is not between 1 and 65,535",
        ),
        # computed for as long as it was let, building the list
        (
            ["preview", "--trigger", "{}", "--count", "10001"],
            "argument --count: 10001 is not between 1 and 10,000",
        ),
        (["preview", "--trigger", "{}", "--count", "0"], "argument --count: 0 is not between"),
        # sent an ack the acker can only dead-letter, then waited for an answer
        (
            ["ack", UUID, "--state", "RUNNING", "--attempt", "0"],
            "argument --attempt: 0 is not between 1 and",
        ),
        (
            ["ack", UUID, "--state", "RUNNING", "--timeout", "nan"],
            "argument --timeout: nan is not more than 0",
        ),
        (["publish", "c.json", "--timeout", "-1"], "argument --timeout: -1 is not more than 0"),
        (["tail", "actions.due", "--max", "-3"], "argument --max: -3 is less than 0"),
    ],
)
def test_an_option_out_of_range_is_refused_naming_it(
    capsys: pytest.CaptureFixture[str], args: list[str], error: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert error in err.splitlines()[-1], err


def test_ack_takes_the_attempts_an_ack_may_name() -> None:
    """`chime ack --attempt` keeps its own copy of the contracts' bound (the CLI starts without
    importing them): an attempt the acker takes is never refused here, nor one sent that it
    would dead-letter."""
    from services.cli import main as cli
    from shared.contracts.events import LAST_ATTEMPT

    assert cli.LAST_ATTEMPT == LAST_ATTEMPT
