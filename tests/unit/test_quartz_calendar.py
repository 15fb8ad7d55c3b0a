"""Quartz cron and seed-003 calendar triggers: tables, every seed example, rule enforcement,
DST policies, and brute-force properties written independently of the engine."""

from __future__ import annotations

import calendar as pycal
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from shared.contracts import Trigger
from shared.schedule import ScheduleError, Series, compile_trigger

TRIGGER = TypeAdapter(Trigger)


def fires(
    trigger: dict, after: str, count: int = 4, tz: str = "UTC", dst: str = "AUTO"
) -> list[str]:
    start = datetime.fromisoformat(after.replace("Z", "+00:00"))
    source, _ = compile_trigger(TRIGGER.validate_python(trigger), tz, start, dst)  # type: ignore[arg-type]
    return [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in Series(source).preview(start, count)]


def cron(expression: str) -> dict:
    return {"kind": "cron", "expression": expression}


QUARTZ = [
    ("0 15 10 L-2 * ?", ["2026-01-29T10:15:00Z", "2026-02-26T10:15:00Z", "2026-03-29T10:15:00Z"]),
    ("0 15 10 L * ?", ["2026-01-31T10:15:00Z", "2026-02-28T10:15:00Z", "2026-03-31T10:15:00Z"]),
    ("0 0 12 ? * 6L", ["2026-01-30T12:00:00Z", "2026-02-27T12:00:00Z", "2026-03-27T12:00:00Z"]),
    ("0 0 9 LW * ?", ["2026-01-30T09:00:00Z", "2026-02-27T09:00:00Z", "2026-03-31T09:00:00Z"]),
    ("0 0 9 15W * ?", ["2026-01-15T09:00:00Z", "2026-02-16T09:00:00Z", "2026-03-16T09:00:00Z"]),
    ("0 0 9 1W * ?", ["2026-01-01T09:00:00Z", "2026-02-02T09:00:00Z", "2026-03-02T09:00:00Z"]),
    ("0 0 9 ? * 2#1", ["2026-01-05T09:00:00Z", "2026-02-02T09:00:00Z", "2026-03-02T09:00:00Z"]),
    ("0 0 9 ? * MON#5", ["2026-03-30T09:00:00Z", "2026-06-29T09:00:00Z", "2026-08-31T09:00:00Z"]),
    ("*/20 * * * * ?", ["2026-01-01T00:00:20Z", "2026-01-01T00:00:40Z", "2026-01-01T00:01:00Z"]),
    ("0 30 10 ? * *", ["2026-01-01T10:30:00Z", "2026-01-02T10:30:00Z", "2026-01-03T10:30:00Z"]),
    ("0 30 10 * * *", ["2026-01-01T10:30:00Z", "2026-01-02T10:30:00Z", "2026-01-03T10:30:00Z"]),
    ("0 0 12 ? * SUN", ["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z", "2026-01-18T12:00:00Z"]),
    ("0 0 12 ? * 1", ["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z", "2026-01-18T12:00:00Z"]),
    ("0 0 12 ? * L", ["2026-01-03T12:00:00Z", "2026-01-10T12:00:00Z", "2026-01-17T12:00:00Z"]),
    ("0 0 0 29 2 ? 2027-2030", ["2028-02-29T00:00:00Z"]),  # a finite series: fewer than asked
]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # 1W when the 1st is a Saturday: Monday the 3rd (W never leaves the month)
        (
            "0 0 9 1W * ?",
            "2022-01-01T00:00:00Z",
            ["2022-01-03T09:00:00Z", "2022-02-01T09:00:00Z", "2022-03-01T09:00:00Z"],
        ),
        # 31W when the 31st is a Sunday: Friday the 29th (and in months without a 31st: none)
        (
            "0 0 9 31W * ?",
            "2023-12-01T00:00:00Z",
            ["2023-12-29T09:00:00Z", "2024-01-31T09:00:00Z", "2024-03-29T09:00:00Z"],
        ),
        # L-30: the 1st of 31-day months only
        (
            "0 0 9 L-30 * ?",
            "2026-01-01T00:00:00Z",
            ["2026-01-01T09:00:00Z", "2026-03-01T09:00:00Z", "2026-05-01T09:00:00Z"],
        ),
        # a single year after the start's: the years in between are walked, not skipped past
        ("0 0 12 1 1 ? 2027", "2026-01-01T00:00:00Z", ["2027-01-01T12:00:00Z"]),
    ],
)
def test_quartz_edges(expression: str, after: str, expected: list[str]) -> None:
    assert fires(cron(expression), after, 3) == expected


@pytest.mark.parametrize(("expression", "expected"), QUARTZ)
def test_quartz_forms(expression: str, expected: list[str]) -> None:
    assert fires(cron(expression), "2026-01-01T00:00:00Z", 3) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 12 15 * MON", "cannot restrict both day-of-month (15) and day-of-week (MON)"),
        ("0 0 12 ? * ?", "only one of day-of-month and day-of-week may be '?'"),
        ("60 0 12 * * ?", "second 60 is out of range 0–59"),
        ("0 0 12 32 * ?", "day-of-month 32 is out of range 1–31"),
        ("0 0 12 ? * 8", "day-of-week 8 is out of range 1–7"),
        ("0 0 12 ? * 2#6", "week number must be 1–5"),
        ("0 0 12 L-31 * ?", "offset in 'L-31' must be 0–30"),
        ("0 0 12 * * ? 1969", "year 1969 is out of range 1970–2099"),
        ("0 0 12 * * ? * *", "has 8 fields"),
    ],
)
def test_quartz_errors_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        fires(cron(expression), "2026-01-01T00:00:00Z")
    assert message in caught.value.message and caught.value.field == "trigger.expression"


def test_quartz_form_is_reported_for_quartz_input() -> None:
    trigger = TRIGGER.validate_python(cron("0 15 10 L-2 * ?"))
    assert compile_trigger(trigger, "UTC", datetime(2026, 1, 1, tzinfo=UTC))[1] == "0 15 10 L-2 * ?"


# --- seed 003: every example its text gives ---------------------------------------------------

LIST, RANGE = "LIST", "RANGE"


def sel(kind: str, *values: str, interval: int | None = None) -> dict:
    return {"type": kind, "values": list(values), **({"interval": interval} if interval else {})}


def cal(kind: str, **fields: dict) -> dict:
    return {"kind": "calendar", "type": kind, "hours": sel(LIST, "9"), **fields}


SEED_003 = [
    # months: "On February and March"
    (
        cal("ANNUALLY", months=sel(LIST, "2", "3"), days=sel(LIST, "1")),
        ["2026-02-01T09:00:00Z", "2026-03-01T09:00:00Z", "2027-02-01T09:00:00Z"],
    ),
    # months: "Every 3 months, starting in January (quarterly)"
    (
        cal("ANNUALLY", months=sel(LIST, "1", interval=3), days=sel(LIST, "1")),
        ["2026-01-01T09:00:00Z", "2026-04-01T09:00:00Z", "2026-07-01T09:00:00Z"],
    ),
    # months: "Every two months between July and December"
    (
        cal("ANNUALLY", months=sel(RANGE, "7", "12", interval=2), days=sel(LIST, "1")),
        ["2026-07-01T09:00:00Z", "2026-09-01T09:00:00Z", "2026-11-01T09:00:00Z"],
    ),
    # days: "On Sundays"
    (
        cal("WEEKLY", days=sel(LIST, "1")),
        ["2026-01-04T09:00:00Z", "2026-01-11T09:00:00Z", "2026-01-18T09:00:00Z"],
    ),
    # days: "The second to last day of the month"
    (
        cal("MONTHLY", days=sel(LIST, "L-1")),
        ["2026-01-30T09:00:00Z", "2026-02-27T09:00:00Z", "2026-03-30T09:00:00Z"],
    ),
    # days: "From the 20th to the last day of the month"
    (
        cal("MONTHLY", days=sel(RANGE, "20", "L")),
        ["2026-01-20T09:00:00Z", "2026-01-21T09:00:00Z", "2026-01-22T09:00:00Z"],
    ),
    # days: "Every March 2nd"
    (
        cal("ANNUALLY", days=sel(LIST, "--03-02")),
        ["2026-03-02T09:00:00Z", "2027-03-02T09:00:00Z", "2028-03-02T09:00:00Z"],
    ),
    # days: "On March 2nd, 2021" (in the past: nothing more to fire) and a future one
    (cal("CALENDAR", days=sel(LIST, "2021-03-02", "2026-03-02")), ["2026-03-02T09:00:00Z"]),
    # hours: "Every three hours starting from 8AM, inclusive"
    (
        cal("DAILY", hours=sel(LIST, "8", interval=3)),
        ["2026-01-01T08:00:00Z", "2026-01-01T11:00:00Z", "2026-01-01T14:00:00Z"],
    ),
    # hours: "At 5AM, noon, and 5PM"
    (
        cal("DAILY", hours=sel(LIST, "5", "12", "17")),
        ["2026-01-01T05:00:00Z", "2026-01-01T12:00:00Z", "2026-01-01T17:00:00Z"],
    ),
    # hours: "During business hours", written 9–17 (the seed's "9", "5" is refused, below)
    (
        cal("DAILY", hours=sel(RANGE, "9", "17")),
        ["2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z"],
    ),
]


@pytest.mark.parametrize(("trigger", "expected"), SEED_003)
def test_seed_003_examples(trigger: dict, expected: list[str]) -> None:
    assert fires(trigger, "2026-01-01T00:00:00Z", 3) == expected


def test_calendar_time_zone_short_id_and_expiration() -> None:
    trigger = cal("DAILY", hours=sel(LIST, "1"), expiration="2026-01-03T12:00:00Z")
    # 01:00 CST (America/Chicago, UTC-6 in winter) = 07:00Z; expiration ends the series
    assert fires(trigger, "2026-01-01T00:00:00Z", 5, tz="CST") == [
        "2026-01-01T07:00:00Z",
        "2026-01-02T07:00:00Z",
        "2026-01-03T07:00:00Z",
    ]


# Edges of the selectors, each the one value a slip in the bounds would get wrong.
EDGES = [
    # a RANGE includes both ends and nothing past them
    (
        cal("DAILY", hours=sel(RANGE, "22", "23")),
        ["2026-01-01T22:00:00Z", "2026-01-01T23:00:00Z", "2026-01-02T22:00:00Z"],
    ),
    (
        cal("DAILY", hours=sel(RANGE, "9", "10")),
        ["2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z", "2026-01-02T09:00:00Z"],
    ),
    # hours stepped from 0 by 4 up to 20, never an hour 24
    (
        cal("DAILY", hours=sel(LIST, "0", interval=4)),
        [
            "2026-01-01T04:00:00Z",
            "2026-01-01T08:00:00Z",
            "2026-01-01T12:00:00Z",
            "2026-01-01T16:00:00Z",
            "2026-01-01T20:00:00Z",
            "2026-01-02T00:00:00Z",
            "2026-01-02T04:00:00Z",
        ],
    ),
    # a RANGE of one value
    (
        cal("DAILY", hours=sel(RANGE, "7", "7")),
        ["2026-01-01T07:00:00Z", "2026-01-02T07:00:00Z", "2026-01-03T07:00:00Z"],
    ),
    (
        cal("MONTHLY", days=sel(RANGE, "5", "5")),
        ["2026-01-05T09:00:00Z", "2026-02-05T09:00:00Z", "2026-03-05T09:00:00Z"],
    ),
    # days of the month stepped from one LIST value: the 5th, 15th, 25th, never before the 5th
    (
        cal("MONTHLY", days=sel(LIST, "5", interval=10)),
        [
            "2026-01-05T09:00:00Z",
            "2026-01-15T09:00:00Z",
            "2026-01-25T09:00:00Z",
            "2026-02-05T09:00:00Z",
        ],
    ),
    # L-30, the furthest back: the 1st of a 31-day month, no day of a shorter one
    (
        cal("MONTHLY", days=sel(LIST, "L-30")),
        ["2026-01-01T09:00:00Z", "2026-03-01T09:00:00Z", "2026-05-01T09:00:00Z"],
    ),
]


@pytest.mark.parametrize(("trigger", "expected"), EDGES)
def test_calendar_edges(trigger: dict, expected: list[str]) -> None:
    assert fires(trigger, "2026-01-01T00:00:00Z", len(expected)) == expected


def test_calendar_expiration_includes_its_instant() -> None:
    trigger = cal("DAILY", expiration="2026-01-03T09:00:00Z")
    assert fires(trigger, "2026-01-01T00:00:00Z", 5) == [
        "2026-01-01T09:00:00Z",
        "2026-01-02T09:00:00Z",
        "2026-01-03T09:00:00Z",
    ]


@pytest.mark.parametrize(
    ("trigger", "field", "message"),
    [
        (cal("DAILY", days=sel(LIST, "1")), "trigger.days", "cannot be set on a DAILY"),
        (
            cal("WEEKLY", months=sel(LIST, "1"), days=sel(LIST, "1")),
            "trigger.months",
            "only be set on an ANNUALLY",
        ),
        (cal("MONTHLY"), "trigger.days", "days is required for a MONTHLY"),
        (
            cal("ANNUALLY", days=sel(RANGE, "--03-02", "--04-02")),
            "trigger.days.type",
            "RANGE is not supported",
        ),
        (
            cal("CALENDAR", days=sel(RANGE, "2026-01-01", "2026-02-01")),
            "trigger.days.type",
            "RANGE is not supported",
        ),
        (cal("CALENDAR", days=sel(LIST, "2026-02-30")), "trigger.days.values[0]", "is not a date"),
        (cal("WEEKLY", days=sel(LIST, "8")), "trigger.days.values[0]", "1–7"),
        # a digit to str.isdigit() but not to int(): it was a ValueError, answered INTERNAL
        (cal("WEEKLY", days=sel(LIST, "²")), "trigger.days.values[0]", "whole number 1–7"),
        (cal("DAILY", hours=sel(RANGE, "1", "²")), "trigger.hours.values[1]", "whole number"),
        (cal("MONTHLY", days=sel(LIST, "32")), "trigger.days.values[0]", "1–31"),
        (
            cal("MONTHLY", days=sel(LIST, "1", "last")),
            "trigger.days.values[1]",
            "days value 'last' must be 1–31, L or L-n",
        ),
        (cal("MONTHLY", days=sel(RANGE, "1", "2", "3")), "trigger.days.values", "exactly two"),
        (cal("MONTHLY", days=sel(RANGE, "20", "10")), "trigger.days.values", "runs backwards"),
        (
            cal("CALENDAR", days=sel(LIST, "2026/01/01")),
            "trigger.days.values[0]",
            "must look like '2020-12-31'",
        ),
        (
            cal("ANNUALLY", days=sel(LIST, "--12-25", "12-25")),
            "trigger.days.values[1]",
            "must look like '--12-31'",
        ),
        (
            cal("DAILY", hours=sel(RANGE, "9", "5")),
            "trigger.hours.values",
            "for 9 AM to 5 PM write 9–17",
        ),
        (
            cal("DAILY", hours=sel(LIST, "8", "9", interval=2)),
            "trigger.hours.interval",
            "one LIST value",
        ),
        (cal("DAILY", hours=sel(RANGE, "9")), "trigger.hours.values", "exactly two values"),
        (cal("MONTHLY", days=sel(LIST, "L-31")), "trigger.days.values[0]", "between 0 and 30"),
        (
            cal("MONTHLY", days=sel(LIST, "L", interval=2)),
            "trigger.days.interval",
            "one numeric LIST value",
        ),
    ],
)
def test_calendar_rules(trigger: dict, field: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        fires(trigger, "2026-01-01T00:00:00Z")
    assert caught.value.field == field and message in caught.value.message


# --- policy.dst ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dst", "expected"),
    [
        ("AUTO", ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]),
        ("ONCE_EARLIER", ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]),
        ("ONCE_LATER", ["2026-10-25T01:30:00Z", "2026-10-26T01:30:00Z"]),
        ("REAL_TIME", ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"]),
    ],
)
def test_dst_policy_fall_back(dst: str, expected: list[str]) -> None:
    daily = {"kind": "daily", "hours": 1, "minutes": 30}
    assert fires(daily, "2026-10-24T12:00:00Z", 2, "Europe/London", dst) == expected


@pytest.mark.parametrize(
    ("dst", "expected"),
    [
        ("AUTO", ["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"]),  # every hour: real time
        (
            "ONCE_EARLIER",
            ["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z"],
        ),  # 01:30 fires after the gap
        ("REAL_TIME", ["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"]),
    ],
)
def test_dst_policy_spring_forward_every_hour(dst: str, expected: list[str]) -> None:
    assert fires(cron("30 * * * *"), "2026-03-29T00:00:00Z", 2, "Europe/London", dst) == expected


def test_quartz_and_calendar_follow_the_dst_rule() -> None:
    assert fires(cron("0 30 1 * * ?"), "2026-10-24T12:00:00Z", 2, "Europe/London") == [
        "2026-10-25T00:30:00Z",
        "2026-10-26T01:30:00Z",
    ]
    assert fires(
        cal("DAILY", hours=sel(LIST, "1"), minutes=sel(LIST, "30")),
        "2026-03-28T12:00:00Z",
        2,
        "Europe/London",
    ) == ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]


# --- properties: agree with independent brute force -----------------------------------------


def _quartz_dow(day: date) -> int:
    return day.isoweekday() % 7 + 1  # Sunday = 1 … Saturday = 7, computed another way


def _brute_day(rule: tuple, day: date) -> bool:
    """Independent reading of one Quartz day rule."""
    kind, n = rule
    last = pycal.monthrange(day.year, day.month)[1]
    if kind == "L-":
        return day.day == last - n
    if kind == "nL":
        return _quartz_dow(day) == n and all(
            date(day.year, day.month, d) == day or _quartz_dow(date(day.year, day.month, d)) != n
            for d in range(day.day, last + 1)
        )
    if kind == "#":
        w, k = n
        same = [d for d in range(1, last + 1) if _quartz_dow(date(day.year, day.month, d)) == w]
        return len(same) >= k and same[k - 1] == day.day
    if kind == "W":
        weekdays = [d for d in range(1, last + 1) if date(day.year, day.month, d).weekday() < 5]
        if n > last:
            return False
        nearest = min(weekdays, key=lambda d: (abs(d - n), d))
        return day.day == nearest
    if kind == "LW":
        return day.day == max(
            d for d in range(1, last + 1) if date(day.year, day.month, d).weekday() < 5
        )
    raise AssertionError(kind)


def _expression(rule: tuple) -> str:
    kind, n = rule
    return {
        "L-": lambda: f"0 0 12 L-{n} * ?",
        "nL": lambda: f"0 0 12 ? * {n}L",
        "#": lambda: f"0 0 12 ? * {n[0]}#{n[1]}",
        "W": lambda: f"0 0 12 {n}W * ?",
        "LW": lambda: "0 0 12 LW * ?",
    }[kind]()


RULES = st.one_of(
    st.tuples(st.just("L-"), st.integers(0, 5)),
    st.tuples(st.just("nL"), st.integers(1, 7)),
    st.tuples(st.just("#"), st.tuples(st.integers(1, 7), st.integers(1, 5))),
    st.tuples(st.just("W"), st.integers(1, 31)),
    st.tuples(st.just("LW"), st.just(0)),
)


@settings(max_examples=60, deadline=None)
@given(rule=RULES, start=st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31)))
def test_quartz_day_rules_agree_with_brute_force(rule: tuple, start: date) -> None:
    after = datetime(start.year, start.month, start.day, 13, tzinfo=UTC)
    got = fires(cron(_expression(rule)), after.isoformat(), 4)
    expected, day = [], start + timedelta(days=1)
    while len(expected) < 4:
        if _brute_day(rule, day):
            expected.append(f"{day.isoformat()}T12:00:00Z")
        day += timedelta(days=1)
    assert got == expected


@settings(max_examples=40, deadline=None)
@given(
    seconds=st.sets(st.integers(0, 59), min_size=1, max_size=3),
    minutes=st.sets(st.integers(0, 59), min_size=1, max_size=4),
    zone=st.sampled_from(["UTC", "Europe/London", "America/New_York"]),
    offset=st.integers(0, 7200),
)
def test_quartz_seconds_agree_with_second_by_second_walk(seconds, minutes, zone, offset) -> None:
    # Hour field `*`: real time. Start near the London / New York fall-back to cover the repeat.
    base = (
        datetime(2026, 10, 25, 0, 0, tzinfo=UTC)
        if zone != "America/New_York"
        else datetime(2026, 11, 1, 5, 0, tzinfo=UTC)
    )
    after = base + timedelta(seconds=offset)
    expression = (
        f"{','.join(map(str, sorted(seconds)))} {','.join(map(str, sorted(minutes)))} * * * ?"
    )
    got = fires(cron(expression), after.isoformat(), 5, zone)
    tz, expected, t = ZoneInfo(zone), [], after + timedelta(seconds=1)
    while len(expected) < 5:
        local = t.astimezone(tz)
        if local.second in seconds and local.minute in minutes:
            expected.append(t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        t += timedelta(seconds=1)
    assert got == expected
