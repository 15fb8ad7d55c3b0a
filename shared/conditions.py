"""Schedule conditions (seed 001): JEXL expressions, checked on create, evaluated at fire time.

The context an expression sees: every entry of the schedule's `parameters` by name (seed 001
writes `Subscription.Status == _SUBSCRIPTION_STATUS`), plus `parameters`, `payload`, `dueAt`
(ISO-8601 text) and `attempt`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pyjexl

__all__ = ["ConditionError", "check_condition", "evaluate_condition"]

_JEXL = pyjexl.JEXL()


class ConditionError(ValueError):
    """A condition that cannot be parsed or evaluated."""


@lru_cache(maxsize=4096)
def _parsed(expression: str) -> Any:
    try:
        return _JEXL.parse(expression)
    except Exception as exc:  # pyjexl raises parsimonious errors of several kinds
        raise ConditionError(f"not valid JEXL: {str(exc).splitlines()[0]}") from None


def check_condition(expression: str) -> None:
    _parsed(expression)


def evaluate_condition(
    expression: str, parameters: dict[str, Any], payload: dict[str, Any], due_at: str, attempt: int
) -> bool:
    """True when the occurrence should fire; ConditionError when it cannot be evaluated."""
    context = {
        **parameters,
        "parameters": parameters,
        "payload": payload,
        "dueAt": due_at,
        "attempt": attempt,
    }
    try:
        result = _JEXL.evaluate(expression, context)
    except Exception as exc:
        raise ConditionError(f"{type(exc).__name__}: {exc}") from None
    return bool(result)
