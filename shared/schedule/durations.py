"""ISO-8601 durations (`PT5M`, `P1DT2H`, `P2W`) as exact `timedelta`s."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

from shared.schedule.errors import ScheduleError

__all__ = ["format_duration", "parse_duration"]

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d{1,6})?)S)?)?$"
)


@lru_cache(maxsize=4096)  # the ticker reads a policy's durations for every occurrence
def parse_duration(text: str, field: str = "duration") -> timedelta:
    """Parse a fixed-length ISO-8601 duration. Years and months are rejected: they vary."""
    if not isinstance(text, str):
        raise ScheduleError(f"{field} must be an ISO-8601 duration string such as 'PT5M'", field)
    m = _DURATION.match(text.strip().upper())
    if m is None:
        hint = ""
        if re.match(r"^P(\d+Y|\d+M)", text.strip().upper()):
            hint = " (years and months have no fixed length: use a cron or calendar trigger)"
        raise ScheduleError(
            f"{field} {text!r} is not an ISO-8601 duration such as 'PT30S', 'PT5M' or 'P1D'{hint}",
            field,
        )
    parts = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    try:
        return timedelta(**parts)
    except OverflowError:  # more than a timedelta holds (2.7 million years)
        raise ScheduleError(f"{field} {text!r} is too long", field) from None


def format_duration(delta: timedelta) -> str:
    """Shortest ISO-8601 text of a timedelta (`PT5M`)."""
    total_us = delta // timedelta(microseconds=1)
    days, rem = divmod(total_us, 86_400_000_000)
    hours, rem = divmod(rem, 3_600_000_000)
    minutes, rem = divmod(rem, 60_000_000)
    seconds, micros = divmod(rem, 1_000_000)
    out = "P" + (f"{days}D" if days else "")
    time = ""
    if hours:
        time += f"{hours}H"
    if minutes:
        time += f"{minutes}M"
    if seconds or micros:
        time += f"{seconds}.{micros:06d}".rstrip("0").rstrip(".") + "S"
    if time:
        out += "T" + time
    return out if out != "P" else "PT0S"
