"""The grammar both cron dialects share: values, names, `a-b` ranges, `/n` steps, lists."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from shared.schedule.errors import ScheduleError

__all__ = ["DAY_NAMES", "MONTH_NAMES", "TOKEN", "Field", "expand"]

MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAY_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
TOKEN = re.compile(r"^(?P<base>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>\d+))?$")


@dataclass(frozen=True)
class Field:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)

    def value(self, text: str, expr: str) -> int:
        upper = text.upper()
        if upper in self.names:
            return self.names[upper]
        if not text.isdigit():
            raise ScheduleError(f"{self.name} value {text!r} in {expr!r} is not a number or name")
        number = int(text)
        if not self.low <= number <= self.high:
            raise ScheduleError(
                f"{self.name} {number} is out of range {self.low}–{self.high} in {expr!r}"
            )
        return number


def expand(text: str, spec: Field, expr: str) -> set[int]:
    """Every value a field matches; `ScheduleError` names the field, the token and the rule."""
    values: set[int] = set()
    for token in text.split(","):
        m = TOKEN.match(token)
        if m is None:
            raise ScheduleError(f"{spec.name} {token!r} in {expr!r} is not valid cron syntax")
        step = int(m["step"]) if m["step"] is not None else 1
        if step == 0:
            raise ScheduleError(f"{spec.name} step in {token!r} must be at least 1")
        if m["base"] == "*":
            first, last = spec.low, spec.high
        else:
            low, _, high = m["base"].partition("-")
            first = spec.value(low, expr)
            last = spec.value(high, expr) if high else (spec.high if m["step"] else first)
            if last < first:
                raise ScheduleError(
                    f"{spec.name} range {token!r} in {expr!r} runs backwards ({first} > {last})"
                )
        values.update(range(first, last + 1, step))
    return values
