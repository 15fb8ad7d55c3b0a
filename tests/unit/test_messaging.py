"""What counts as a dependency being away (retry) versus a real error (answer or raise); what
is too large to read."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from typing import Any

import asyncpg
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)
from aiokafka.structs import ConsumerRecord

from shared.messaging import (
    Stopping,
    dead_letter,
    is_transient,
    publishing_may_heal,
    retry_forever,
    too_large,
)
from shared.runtime import collector_paused, runs_by_size


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (KafkaConnectionError(), True),
        (KafkaTimeoutError(), True),
        (MessageSizeTooLargeError(), False),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (asyncpg.CannotConnectNowError("starting up"), True),
        (asyncpg.ConnectionDoesNotExistError("gone"), True),
        # what a statement meets on a pooled connection whose server is shutting down
        (asyncpg.InternalClientError("cannot switch to state 12; another operation (2)"), True),
        (asyncpg.UniqueViolationError("dup"), False),
        (ValueError("bug"), False),
    ],
)
def test_transient_classification(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


async def test_retry_forever_logs_once_per_state_change(caplog: pytest.LogCaptureFixture) -> None:
    failures = iter([KafkaConnectionError(), KafkaConnectionError(), KafkaConnectionError()])
    states: list[bool] = []

    async def flaky() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "sent"

    with caplog.at_level(logging.WARNING, logger="chime.messaging"):
        result = await asyncio.wait_for(
            retry_forever("sending", flaky, states.append, first_delay=0.001), 5
        )
    assert result == "sent"
    assert states == [False, True]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "sending failed, retrying with backoff",
        "sending",
    ]


async def test_retry_forever_raises_real_errors() -> None:
    async def broken() -> None:
        raise ValueError("a bug, not an outage")

    states: list[bool] = []
    with pytest.raises(ValueError, match="a bug"):
        await retry_forever("working", broken, states.append)
    assert states == []  # never failed over: nothing to report as recovered


async def test_an_answer_after_an_outage_counts_as_recovered() -> None:
    errors = [KafkaConnectionError(), ValueError("not an outage")]
    states: list[bool] = []

    async def action() -> None:
        raise errors.pop(0)

    with pytest.raises(ValueError):
        await retry_forever("working", action, states.append, first_delay=0.001)
    assert states == [False, True]


async def test_a_stop_ends_a_failing_retry_but_not_a_working_action() -> None:
    stop = asyncio.Event()
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError("database down")

    asyncio.get_running_loop().call_later(0.2, stop.set)  # asked to stop while still down
    with pytest.raises(Stopping, match="applying: left as the service stops"):
        await asyncio.wait_for(retry_forever("applying", down, first_delay=60, stop=stop), 5)
    assert calls == 1  # the 60 s backoff was cut short by the stop, not waited out

    async def works() -> str:
        return "done"

    assert await retry_forever("applying", works, stop=stop) == "done"  # stopping: still runs


def test_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import Settings

    original = Settings(
        topic_prefix="x.", ticker_batch_size=7, action_topics="a,b", kafka_compression="zstd"
    )
    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def test_an_unknown_codec_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from shared.messaging import compression
    from shared.settings import Settings

    assert compression(Settings()) is None  # uncompressed by default
    assert compression(Settings(kafka_compression="lz4")) == "lz4"
    monkeypatch.setenv("CHIME_KAFKA_COMPRESSION", "brotli")
    with pytest.raises(ValidationError) as refused:
        Settings()
    [error] = refused.value.errors()
    assert error["loc"] == ("kafka_compression",) and "'zstd'" in error["msg"]


class _Record:
    def __init__(self, name: str, size: int | None) -> None:
        self.name, self.value = name, None if size is None else b"x" * size


def test_a_batch_is_cut_into_runs_of_at_most_the_limit_in_order() -> None:
    sizes = {"a": 40, "b": 50, "c": 10, "d": 150, "e": None, "f": 100, "g": 1}
    records = [_Record(name, size) for name, size in sizes.items()]
    runs = runs_by_size(records, 100)
    assert [[r.name for r in run] for run in runs] == [["a", "b", "c"], ["d"], ["e", "f"], ["g"]]
    assert runs_by_size([], 100) == []
    assert len(runs_by_size(records, 10_000)) == 1


def test_the_collector_is_paused_inside_and_left_as_it_was_found() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # already paused: stays paused when the inner one ends
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a run that fails")
    assert gc.isenabled()


class _Cyclic:
    def __init__(self) -> None:
        self.itself = self


async def test_a_retry_frees_what_the_failed_attempt_left_in_cycles_while_paused() -> None:
    left: list[weakref.ref[_Cyclic]] = []

    async def down_once() -> str:
        if not left:
            left.append(weakref.ref(_Cyclic()))  # garbage only the cycle collector frees
            raise ConnectionRefusedError("database down")
        return "done"

    with collector_paused():
        assert await retry_forever("applying", down_once, first_delay=0.001) == "done"
        assert left[0]() is None  # freed before the retry, with the collector still paused
        assert not gc.isenabled()


async def test_publishing_waits_for_the_broker_to_take_what_it_refused() -> None:
    """A broker refusing a message (larger than its limit) does not heal by itself, but raised,
    the consumer's batch would be rewound and applied again in a hot loop: publishing waits,
    backing off, the service not ready, until an operator mends it; a fault of Chime's is still
    raised at once."""
    refusals, states = [MessageSizeTooLargeError(), TopicAuthorizationFailedError()], []

    async def send() -> str:
        if refusals:
            raise refusals.pop(0)
        return "sent"

    sent = await retry_forever(
        "publishing", send, states.append, first_delay=0.001, may_heal=publishing_may_heal
    )
    assert (sent, states) == ("sent", [False, True])
    with pytest.raises(MessageSizeTooLargeError):  # elsewhere, not an outage: raised
        await retry_forever("applying", _raising(MessageSizeTooLargeError()), first_delay=0.001)
    with pytest.raises(ValueError, match="a fault"):
        await retry_forever(
            "publishing", _raising(ValueError("a fault")), may_heal=publishing_may_heal
        )


def _raising(error: Exception) -> Any:
    async def action() -> None:
        raise error

    return action


def _record(value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord("chime.commands", 2, 41, 0, 0, b"k", value, None, 1, 0, [])


def test_a_dead_letter_fits_a_message_of_the_brokers_default() -> None:
    """A record that came in just under Kafka's default batch of 1,048,588 bytes, dead-lettered
    whole with Chime's headers, would be refused on the way out: past 1,000,000 bytes a dead
    letter carries the first part and says how long the record was (it stays on its topic at
    the offset named); its reason at most 1,000 bytes however it is escaped."""
    whole = b"{" + b"x" * 1_048_000
    letter = dead_letter(_record(whole), "\U0001f600" * 5000, "chime.dlq")
    assert letter.value == whole[:1_000_000]
    assert letter.headers["chime-truncated-from"] == "1048001"
    assert letter.headers["chime-reason"] == ("\\U0001f600" * 100)[:1000]
    assert len(letter.headers["chime-reason"].encode()) == 1000
    at_limit = dead_letter(_record(whole[:1_000_000]), "not JSON", "chime.dlq")
    assert at_limit.value == whole[:1_000_000] and "chime-truncated-from" not in at_limit.headers


def test_a_record_over_the_limit_is_dead_lettered_as_it_came() -> None:
    assert too_large(_record(b"x" * 100), 100, "chime.dlq") is None  # at the limit: read
    assert too_large(_record(None), 0, "chime.dlq") is None  # a tombstone is no size
    letter = too_large(_record(b"x" * 101), 100, "chime.dlq")
    assert letter is not None
    assert (letter.topic, letter.value, letter.key) == ("chime.dlq", b"x" * 101, b"k")
    assert letter.headers is not None
    assert letter.headers["chime-reason"] == (
        "message of 101 bytes exceeds max_message_bytes (100)"
    )
    assert (letter.headers["chime-source-partition"], letter.headers["chime-source-offset"]) == (
        "2",
        "41",
    )
