"""Time-zone names: IANA ids plus the Java `ZoneId.SHORT_IDS` users send (`CST`)."""

from __future__ import annotations

from datetime import timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    try:  # zoneinfo refuses a key that is a path or climbs out of the zone database
        return ZoneInfo(SHORT_IDS.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/London'", "timezone"
        ) from None
