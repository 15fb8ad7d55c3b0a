"""Schedule math: DST tables, windows, validation messages, and a brute-force property."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.contracts import ScheduleSpec
from shared.contracts.triggers import CronTrigger, DailyTrigger, IntervalTrigger, OnceTrigger
from shared.schedule import ScheduleError, Series, compile_series, compile_trigger, timezones
from shared.schedule.durations import format_duration, parse_duration
from shared.schedule.timezones import resolve_zone
from shared.schedule.wallclock import MEMO_SIZE, to_instants


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def fires(trigger, tz: str, after: str, count: int) -> list[str]:
    source, _ = compile_trigger(trigger, tz, utc(after))
    return [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in Series(source).preview(utc(after), count)]


# Fall back: 01:30 exists twice; a daily job fires once, at the first (summer-time) one.
# Spring forward: 01:30/02:30 do not exist; fire once at the first instant after the gap.
DST_TABLE = [
    # zone, daily hh:mm, after, expected UTC fires
    (
        "Europe/London",
        (1, 30),
        "2026-10-24T12:00:00Z",
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
    ),
    (
        "Europe/London",
        (1, 30),
        "2026-03-28T12:00:00Z",
        ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
    ),
    (
        "America/New_York",
        (1, 30),
        "2026-10-31T12:00:00Z",
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
    ),
    (
        "America/New_York",
        (2, 30),
        "2026-03-07T12:00:00Z",
        ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
    ),
    # Lord Howe shifts by 30 minutes: 01:30-02:00 repeats in April, 02:00-02:30 is skipped
    # in October.
    (
        "Australia/Lord_Howe",
        (1, 45),
        "2026-04-04T00:00:00Z",
        ["2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"],
    ),
    (
        "Australia/Lord_Howe",
        (2, 15),
        "2026-10-03T00:00:00Z",
        ["2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"],
    ),
]


@pytest.mark.parametrize(("zone", "hhmm", "after", "expected"), DST_TABLE)
def test_daily_across_dst(
    zone: str, hhmm: tuple[int, int], after: str, expected: list[str]
) -> None:
    trigger = DailyTrigger(kind="daily", hours=hhmm[0], minutes=hhmm[1])
    assert fires(trigger, zone, after, 2) == expected


@pytest.mark.parametrize(
    ("zone", "gap_start", "gap_minutes", "transition"),
    [
        ("Europe/London", (2026, 3, 29, 1), 60, "2026-03-29T01:00:00Z"),
        ("America/New_York", (2026, 3, 8, 2), 60, "2026-03-08T07:00:00Z"),
        ("Australia/Lord_Howe", (2026, 10, 4, 2), 30, "2026-10-03T15:30:00Z"),
    ],
)
def test_every_wall_time_in_a_gap_fires_at_the_transition(
    zone: str, gap_start: tuple[int, ...], gap_minutes: int, transition: str
) -> None:
    """Whatever second of the missing hour a schedule names, it fires at the very second the
    clocks jump: walls spread over the gap send the search for the transition down different
    paths."""
    tz = ZoneInfo(zone)
    start = datetime(*gap_start)  # naive wall time: the first second that does not exist
    walls = [start + timedelta(seconds=s) for s in range(0, gap_minutes * 60, 433)]
    walls.append(start + timedelta(minutes=gap_minutes, seconds=-1))
    for wall in walls:
        assert to_instants(wall, tz, real_time=False, later=False) == [utc(transition)], wall
        assert to_instants(wall, tz, real_time=True, later=False) == [], wall


def test_every_hour_follows_real_time_through_fall_back() -> None:
    trigger = CronTrigger(kind="cron", expression="30 * * * *")
    assert fires(trigger, "Europe/London", "2026-10-24T23:00:00Z", 3) == [
        "2026-10-24T23:30:00Z",  # 00:30 BST
        "2026-10-25T00:30:00Z",  # 01:30 BST
        "2026-10-25T01:30:00Z",  # 01:30 GMT: the repeated hour happens again in real time
    ]


def test_every_hour_skips_the_hour_that_does_not_exist() -> None:
    trigger = CronTrigger(kind="cron", expression="30 * * * *")
    assert fires(trigger, "Europe/London", "2026-03-29T00:00:00Z", 2) == [
        "2026-03-29T00:30:00Z",  # 00:30 GMT
        "2026-03-29T01:30:00Z",  # 02:30 BST; 01:30 never happened
    ]


def test_unix_day_fields_or_rule() -> None:
    # 13th of the month OR a Friday, at 09:00 UTC
    trigger = CronTrigger(kind="cron", expression="0 9 13 * 5")
    assert fires(trigger, "UTC", "2026-03-01T00:00:00Z", 4) == [
        "2026-03-06T09:00:00Z",
        "2026-03-13T09:00:00Z",
        "2026-03-20T09:00:00Z",
        "2026-03-27T09:00:00Z",
    ]


def test_month_end_and_leap_day() -> None:
    leap = CronTrigger(kind="cron", expression="0 0 29 2 *")
    assert fires(leap, "UTC", "2026-01-01T00:00:00Z", 2) == [
        "2028-02-29T00:00:00Z",
        "2032-02-29T00:00:00Z",
    ]
    day31 = CronTrigger(kind="cron", expression="0 0 31 * *")
    assert fires(day31, "UTC", "2026-01-31T00:00:00Z", 3) == [
        "2026-03-31T00:00:00Z",
        "2026-05-31T00:00:00Z",
        "2026-07-31T00:00:00Z",
    ]


def test_macros_and_names() -> None:
    assert fires(
        CronTrigger(kind="cron", expression="@daily"), "UTC", "2026-01-01T00:00:00Z", 1
    ) == ["2026-01-02T00:00:00Z"]
    assert fires(
        CronTrigger(kind="cron", expression="0 12 * JAN MON"), "UTC", "2026-01-01T00:00:00Z", 2
    ) == [
        "2026-01-05T12:00:00Z",
        "2026-01-12T12:00:00Z",
    ]


def test_short_zone_ids() -> None:
    assert str(resolve_zone("CST")) == "America/Chicago"
    assert str(resolve_zone("IST")) == "Asia/Kolkata"
    assert resolve_zone("EST").utcoffset(None) == timedelta(hours=-5)
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Base'"):
        resolve_zone("Mars/Base")


@pytest.mark.parametrize("name", ["/etc/localtime", "../../etc/localtime", "Europe/../UTC", ""])
def test_a_zone_name_is_never_a_path(name: str) -> None:
    """zoneinfo reads a zone from a file named by the zone: a name that climbs out of the
    zone database, or names a file outright, is refused, not opened."""
    with pytest.raises(ScheduleError, match="unknown time zone") as caught:
        resolve_zone(name)
    assert caught.value.field == "timezone"


def test_a_series_never_reaches_the_databases_infinity() -> None:
    """The last instant a datetime holds is stored by asyncpg as PostgreSQL's `infinity` and read
    back without a zone; an interval that lands on it ends before it."""
    every = IntervalTrigger(
        kind="interval", every="PT1S", anchor=utc("9999-12-31T23:59:57.999999Z")
    )
    source, _ = compile_trigger(every, "UTC", utc("2026-12-07T00:00:00Z"))
    assert Series(source).preview(utc("9999-12-31T23:59:56Z"), 5) == [
        utc("9999-12-31T23:59:57.999999Z"),
        utc("9999-12-31T23:59:58.999999Z"),
    ]


@pytest.mark.parametrize("name", ["localtime", "posixrules", "right/UTC", "posix/UTC"])
def test_a_zone_name_is_one_of_the_iana_database(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zone folder holds files beside the IANA database's zones that zoneinfo would read as
    zones: `localtime` (the host's own zone: a schedule in it would fire by whichever machine
    computed its instant), `posixrules`, and the `posix/` and `right/` copies (zoneinfo misreads
    the leap seconds of `right/` ones). Here a folder of such files, each a valid zone, is the only
    place zoneinfo looks, beside the `tzdata` package."""
    utc = (resources.files("tzdata") / "zoneinfo" / "UTC").read_bytes()
    for relative in ("localtime", "posixrules", "right/UTC", "posix/UTC", "Europe/London"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(utc)

    def fresh() -> None:
        zoneinfo.reset_tzpath()
        ZoneInfo.clear_cache()
        resolve_zone.cache_clear()
        timezones._zone_names.cache_clear()

    monkeypatch.setenv("PYTHONTZPATH", str(tmp_path))
    fresh()
    try:
        assert ZoneInfo(name).utcoffset(None) == timedelta(0)  # a zone to zoneinfo
        assert str(resolve_zone("Europe/London")) == "Europe/London"
        with pytest.raises(ScheduleError, match=f"unknown time zone '{name}'") as caught:
            resolve_zone(name)
        assert caught.value.field == "timezone"
    finally:
        monkeypatch.undo()
        fresh()


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 32 * *", "day-of-month 32 is out of range 1–31"),
        ("60 * * * *", "minute 60 is out of range 0–59"),
        ("0 24 * * *", "hour 24 is out of range 0–23"),
        ("0 0 * 13 *", "month 13 is out of range 1–12"),
        ("0 0 * * 8", "day-of-week 8 is out of range 0–7"),
        ("0 0 * *", "has 4 fields; expected 5"),
        ("0 0 * * FOO", "day-of-week value 'FOO'"),
        ("*/0 * * * *", "minute step in '*/0' must be at least 1"),
        ("0 5-1 * * *", "hour range '5-1'"),
        ("0 1-2-3 * * *", "hour '1-2-3' in '0 1-2-3 * * *' is not valid cron syntax"),
        ("@fortnightly", "unknown cron macro"),
        ("   ", "must be a non-empty string"),
    ],
)
def test_cron_errors_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        compile_trigger(
            CronTrigger(kind="cron", expression=expression), "UTC", utc("2026-01-01T00:00:00Z")
        )
    assert message in caught.value.message
    assert caught.value.field == "trigger.expression"


@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *"])
def test_a_cron_date_that_never_comes_has_no_first_fire(expression: str) -> None:
    """Each field valid, the date impossible (30 February): no fire, rather than an error
    from croniter's search; a create with it is refused as a trigger that never fires."""
    source, _ = compile_trigger(
        CronTrigger(kind="cron", expression=expression), "UTC", utc("2026-01-01T00:00:00Z")
    )
    assert Series(source).first(utc("2026-01-01T00:00:00Z")) is None


@pytest.mark.parametrize(
    ("trigger", "starts_at", "first"),
    [
        ({"kind": "daily", "hours": 1}, "9999-12-31T00:00:00Z", "9999-12-31T01:00:00Z"),
        ({"kind": "daily", "hours": 1}, "9999-12-31T02:00:00Z", None),
        ({"kind": "cron", "expression": "0 0 1 1 *"}, "9999-06-01T00:00:00Z", None),
        ({"kind": "cron", "expression": "0 0 29 2 *"}, "9996-03-01T00:00:00Z", None),
        ({"kind": "cron", "expression": "0 0 0 * * ?"}, "9999-12-31T00:00:01Z", None),
        (
            {
                "kind": "calendar",
                "type": "ANNUALLY",
                "hours": {"type": "LIST", "values": ["1"]},
                "days": {"type": "LIST", "values": ["--02-29"]},
            },
            "9996-03-01T00:00:00Z",
            None,
        ),
        ({"kind": "interval", "every": "P3000000D"}, None, None),
    ],
)
def test_a_series_ends_where_the_calendar_does(
    trigger: dict, starts_at: str | None, first: str | None
) -> None:
    """Past 9999-12-31 a datetime cannot go: a series whose next fire would fall there ends
    (a create with nothing before it is refused as never firing) instead of failing the
    command, which would be delivered again, and fail again, for ever."""
    created = utc("2026-12-07T00:00:00Z")
    window = {"startsAt": starts_at} if starts_at else {}
    spec = ScheduleSpec.model_validate(
        {"name": "n", "action": {"type": "t"}, "trigger": trigger, **window}
    )
    series, _ = compile_series(spec, created)
    found = series.first(created)
    assert found == (utc(first) if first else None)
    if found is not None:
        assert series.next_after(found, fired=1) is None


def test_interval_is_elapsed_time_across_dst() -> None:
    trigger = IntervalTrigger(kind="interval", every="PT1H", anchor=utc("2026-10-24T23:00:00Z"))
    assert fires(trigger, "Europe/London", "2026-10-24T23:00:00Z", 3) == [
        "2026-10-25T00:00:00Z",
        "2026-10-25T01:00:00Z",
        "2026-10-25T02:00:00Z",
    ]


def test_interval_strictly_after_creation_and_minimum() -> None:
    created = utc("2026-01-01T00:00:00Z")
    source, _ = compile_trigger(IntervalTrigger(kind="interval", every="PT10S"), "UTC", created)
    assert Series(source).first(created) == created + timedelta(seconds=10)
    shortest, _ = compile_trigger(IntervalTrigger(kind="interval", every="PT1S"), "UTC", created)
    assert Series(shortest).first(created) == created + timedelta(seconds=1)
    with pytest.raises(ScheduleError, match="at least 1 second"):
        compile_trigger(IntervalTrigger(kind="interval", every="PT0.5S"), "UTC", created)
    with pytest.raises(ScheduleError, match="no fixed length"):
        compile_trigger(IntervalTrigger(kind="interval", every="P1M"), "UTC", created)


def test_interval_anchored_later_starts_at_its_anchor() -> None:
    created, anchor = utc("2026-01-01T00:00:00Z"), utc("2026-03-01T06:00:00Z")
    trigger = IntervalTrigger(kind="interval", every="PT6H", anchor=anchor)
    assert fires(trigger, "UTC", "2026-01-01T00:00:00Z", 2) == [
        "2026-03-01T06:00:00Z",
        "2026-03-01T12:00:00Z",
    ]
    source, _ = compile_trigger(trigger, "UTC", created)
    assert Series(source).first(created) == anchor


def test_a_duration_that_is_not_text_names_its_field() -> None:
    with pytest.raises(ScheduleError, match="ISO-8601 duration string") as caught:
        parse_duration(300, "policy.ackTimeout")  # type: ignore[arg-type]
    assert caught.value.field == "policy.ackTimeout"


def test_window_and_max_occurrences() -> None:
    spec = ScheduleSpec.model_validate(
        {
            "name": "w",
            "action": {"type": "t"},
            "trigger": {"kind": "interval", "every": "PT1H", "anchor": "2026-01-01T00:00:00Z"},
            "startsAt": "2026-01-01T02:30:00Z",
            "endsAt": "2026-01-01T06:00:00Z",
        }
    )
    series, _ = compile_series(spec, utc("2026-01-01T00:00:00Z"))
    assert [t.hour for t in series.preview(utc("2026-01-01T00:00:00Z"), 10)] == [3, 4, 5, 6]
    limited = Series(series.source, max_occurrences=2)
    assert len(limited.preview(utc("2026-01-01T00:00:00Z"), 10)) == 2
    assert limited.next_after(utc("2026-01-01T00:00:00Z"), fired=2) is None


def test_past_once_still_fires_first() -> None:
    source, _ = compile_trigger(
        OnceTrigger(kind="once", at=utc("2026-01-01T00:00:00Z")), "UTC", utc("2026-02-01T00:00:00Z")
    )
    assert Series(source).first(utc("2026-02-01T00:00:00Z")) == utc("2026-01-01T00:00:00Z")
    assert Series(source).preview(utc("2026-02-01T00:00:00Z"), 3) == []


def test_once_fires_strictly_after() -> None:
    at = utc("2026-03-01T12:00:00Z")
    source, _ = compile_trigger(OnceTrigger(kind="once", at=at), "UTC", utc("2026-01-01T00:00:00Z"))
    assert source.next_after(at - timedelta(microseconds=1)) == at
    assert source.next_after(at) is None  # fired at `at`: no second time


def test_quartz_form_of_triggers() -> None:
    now = utc("2026-01-01T00:00:00Z")
    assert (
        compile_trigger(DailyTrigger(kind="daily", hours=10, minutes=30), "UTC", now)[1]
        == "0 30 10 ? * *"
    )
    assert (
        compile_trigger(CronTrigger(kind="cron", expression="30 0 * * *"), "UTC", now)[1]
        == "0 30 0 ? * *"
    )
    assert compile_trigger(CronTrigger(kind="cron", expression="0 9 * * 1-5"), "UTC", now)[1] == (
        "0 0 9 ? * MON,TUE,WED,THU,FRI"
    )
    assert compile_trigger(CronTrigger(kind="cron", expression="0 9 13 * 5"), "UTC", now)[1] is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT5M", 300), ("P1D", 86400), ("P2W", 1209600), ("PT1.5S", 1.5), ("P1DT1H", 90000)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(90, "PT1M30S"), (5, "PT5S"), (1.5, "PT1.5S"), (0.25, "PT0.25S"), (86400, "P1D"), (0, "PT0S")],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize("text", ["5M", "P", "PT", "P1H", "PT-5S", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ScheduleError):
        parse_duration(text)


# --- property: the engine agrees with a brute-force walk over wall-clock minutes -------------


def _brute_force(
    minutes: set[int], hours: set[int], tz: ZoneInfo, after: datetime, count: int
) -> list[datetime]:
    """Independent of the engine: walk every real minute, keep those whose local wall time
    matches, apply the DST rule (first occurrence of a repeated time; a skipped time fires at
    the first instant after the gap) by tracking which wall minutes already fired."""
    out: list[datetime] = []
    fired_walls: set[datetime] = set()
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    prev_local = (t - timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None)
    while len(out) < count:
        local = t.astimezone(tz).replace(tzinfo=None)
        jumped = local - prev_local > timedelta(minutes=1)
        candidates = [local]
        if jumped:  # wall minutes skipped by a gap fire at the first instant after it
            skipped = prev_local + timedelta(minutes=1)
            while skipped < local:
                candidates.append(skipped)
                skipped += timedelta(minutes=1)
        hit = False
        for wall in candidates:
            if wall.minute in minutes and wall.hour in hours and wall not in fired_walls:
                fired_walls.add(wall)
                hit = True
        if hit and t > after:
            out.append(t)
        prev_local = local
        t += timedelta(minutes=1)
    return out


@settings(max_examples=60, deadline=None)
@given(
    minutes=st.sets(st.integers(0, 59), min_size=1, max_size=3),
    hours=st.sets(st.integers(0, 23), min_size=1, max_size=3),
    zone=st.sampled_from(["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe"]),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)),
    near_dst=st.booleans(),
)
def test_cron_agrees_with_brute_force(minutes, hours, zone, start, near_dst) -> None:
    if near_dst:  # concentrate half the examples on the days DST changes
        start = datetime(2026, 3, 7) if zone == "America/New_York" else datetime(2026, 3, 28)
        if zone == "Australia/Lord_Howe":
            start = datetime(2026, 4, 4, 10)
    tz = ZoneInfo(zone)
    after = start.replace(tzinfo=UTC)
    expression = f"{','.join(map(str, sorted(minutes)))} {','.join(map(str, sorted(hours)))} * * *"
    source, _ = compile_trigger(CronTrigger(kind="cron", expression=expression), zone, after)
    got = Series(source).preview(after, 8)
    assert got == _brute_force(minutes, hours, tz, after, 8)
    assert all(b > a for a, b in zip([after, *got], got, strict=False))


@settings(max_examples=80, deadline=None)
@given(
    expression=st.sampled_from(
        ["*/7 * * * *", "0 */5 * * *", "15,45 1-3 * * 1-5", "0 0 0 L-1 * ?"]
    ),
    zone=st.sampled_from(["UTC", "Europe/London", "Australia/Lord_Howe"]),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 6, 1)),
    lead=st.integers(0, 72),
    span=st.integers(1, 24 * 90),
    limit=st.one_of(st.none(), st.integers(1, 6)),
)
def test_series_respects_its_window(expression, zone, start, lead, span, limit) -> None:
    after = start.replace(tzinfo=UTC)
    starts_at = after + timedelta(hours=lead)
    ends_at = starts_at + timedelta(hours=span)
    spec = ScheduleSpec.model_validate(
        {
            "name": "w",
            "action": {"type": "t"},
            "timezone": zone,
            "trigger": {"kind": "cron", "expression": expression},
            "startsAt": starts_at.isoformat(),
            "endsAt": ends_at.isoformat(),
            "maxOccurrences": limit,
        }
    )
    series, _ = compile_series(spec, after)
    times = series.preview(after, 10)
    assert all(starts_at <= t <= ends_at and t > after for t in times)
    assert times == sorted(set(times))
    if limit is not None:
        assert len(times) <= limit
    inside, t = [], after  # walk the bare trigger: nothing inside the window may be skipped
    while len(inside) < 10 and (t := series.source.next_after(t)) is not None and t <= ends_at:
        if t >= starts_at:
            inside.append(t)
    assert times == inside[: min(10, limit or 10)]


def _cron_field(high: int) -> st.SearchStrategy[str]:
    """Tokens of a minute (high 59) or hour (high 23) field: *, */n, lists, stepped ranges."""
    return st.one_of(
        st.just("*"),
        st.integers(1, high).map(lambda n: f"*/{n}"),
        st.lists(st.integers(0, high), min_size=1, max_size=4, unique=True).map(
            lambda v: ",".join(map(str, v))
        ),
        st.tuples(
            st.integers(0, high // 2), st.integers(high // 2 + 1, high), st.integers(1, 5)
        ).map(lambda t: f"{t[0]}-{t[1]}/{t[2]}"),
    )


@given(
    minute=_cron_field(59),
    hour=_cron_field(23),
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
)
def test_every_day_shortcut_agrees_with_croniter(minute: str, hour: str, start: datetime) -> None:
    from croniter import croniter

    from shared.schedule.cron.unix import _every_day, _next_in_day

    expression = f"{minute} {hour} * * *"
    every_day = _every_day(expression)
    assert every_day is not None
    assert _next_in_day(every_day, start) == croniter(expression, start).get_next(datetime)


def test_schedules_of_one_trigger_share_remembered_fire_times() -> None:
    """Schedules with the same trigger, zone and DST policy share one source, which remembers
    its answers: they equal answers computed afresh, across a DST change and after its memory
    filled up and started again."""
    trigger = DailyTrigger(kind="daily", hours=1, minutes=30)
    created = utc("2026-10-20T00:00:00Z")
    source, _ = compile_trigger(trigger, "Europe/London", created)
    assert compile_trigger(trigger, "Europe/London", created)[0] is source
    later, _ = compile_trigger(trigger, "Europe/London", created, "ONCE_LATER")
    assert later is not source
    afters = [created + timedelta(minutes=37 * i) for i in range(MEMO_SIZE + 50)]
    for after in afters + afters:  # the second pass is answered from memory (in part)
        assert source.next_after(after) == source._next_after(after)
        assert later.next_after(after) == later._next_after(after)
    assert len(source._answers) <= MEMO_SIZE
    # At the fall-back overlap the two policies differ, and neither took the other's answer.
    before = utc("2026-10-24T12:00:00Z")
    assert source.next_after(before) == utc("2026-10-25T00:30:00Z")
    assert later.next_after(before) == utc("2026-10-25T01:30:00Z")
