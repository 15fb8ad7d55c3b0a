"""Time-zone names: IANA ids plus the Java `ZoneId.SHORT_IDS` users send (`CST`)."""

from __future__ import annotations

from datetime import timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from shared.schedule.errors import ScheduleError

__all__ = ["SHORT_IDS", "resolve_zone"]

# java.time.ZoneId.SHORT_IDS, verbatim. Note BST is Asia/Dhaka there, not British Summer Time.
SHORT_IDS: dict[str, str] = {
    "ACT": "Australia/Darwin",
    "AET": "Australia/Sydney",
    "AGT": "America/Argentina/Buenos_Aires",
    "ART": "Africa/Cairo",
    "AST": "America/Anchorage",
    "BET": "America/Sao_Paulo",
    "BST": "Asia/Dhaka",
    "CAT": "Africa/Harare",
    "CNT": "America/St_Johns",
    "CST": "America/Chicago",
    "CTT": "Asia/Shanghai",
    "EAT": "Africa/Addis_Ababa",
    "ECT": "Europe/Paris",
    "IET": "America/Indiana/Indianapolis",
    "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo",
    "MIT": "Pacific/Apia",
    "NET": "Asia/Yerevan",
    "NST": "Pacific/Auckland",
    "PLT": "Asia/Karachi",
    "PNT": "America/Phoenix",
    "PRT": "America/Puerto_Rico",
    "PST": "America/Los_Angeles",
    "SST": "Pacific/Guadalcanal",
    "VST": "Asia/Ho_Chi_Minh",
}
_FIXED = {"EST": -5, "MST": -7, "HST": -10}


@lru_cache(maxsize=1024)
def resolve_zone(name: str) -> tzinfo:
    """The zone for an IANA name or a Java short id; `ScheduleError` for anything else."""
    if name in _FIXED:
        return timezone(timedelta(hours=_FIXED[name]), name)
    key = SHORT_IDS.get(name, name)
    try:  # zoneinfo refuses a key that is a path or climbs out of the zone database
        if key not in _zone_names():
            raise ZoneInfoNotFoundError(key)
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/London'", "timezone"
        ) from None


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    """The names of the IANA database's zones and links, from the host's zone folder and the
    `tzdata` package, as zoneinfo lists them: without the other files a zone folder holds
    (`posixrules`, the `posix/` and `right/` copies: zoneinfo misreads the leap seconds of the
    latter, `right/Europe/London` put 12:00 of a December day at 11:00Z), and without
    `localtime`, the host's own zone: a schedule in it would fire by the zone of whichever
    machine computed its instant."""
    return frozenset(available_timezones() - {"localtime"})
