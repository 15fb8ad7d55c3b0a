"""Conditions: evaluated from a tree parsed once, within a bounded cache."""

from __future__ import annotations

from typing import Any

import pytest

from shared import conditions, jexl
from shared.conditions import ConditionError, check_condition, evaluate_condition

DUE = "2026-12-07T08:00:00Z"


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The expressions parsed, in order, from a cache emptied for the test."""
    seen: list[str] = []
    parse = jexl.parse

    def counted(expression: str, config: Any) -> Any:
        seen.append(expression)
        return parse(expression, config)

    monkeypatch.setattr(jexl, "parse", counted)
    monkeypatch.setattr(conditions, "_TREES", conditions._Trees())
    return seen


def evaluate(expression: str, **parameters: Any) -> bool:
    return evaluate_condition(expression, parameters, {"amount": 1200}, DUE, 1)


def test_a_condition_is_parsed_once_however_often_it_is_evaluated(parses: list[str]) -> None:
    """pyjexl's own `evaluate` parses its expression every time: ~150 us a fire for a short
    condition, seconds for a long one, in the ticker's event loop."""
    condition = "Status == _ACTIVE && payload.amount > 1000"
    check_condition(condition)  # as the scheduler does on create: nothing kept
    results = [evaluate(condition, Status=s, _ACTIVE="Active") for s in ("Active", "Ended") * 3]
    assert results == [True, False] * 3
    assert parses == [condition, condition]


def test_the_cache_holds_a_bounded_number_of_characters(
    parses: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conditions, "CACHED_CHARACTERS", 20)
    first, second, third = "attempt == 1", "attempt >= 1", "attempt < 2"  # 12, 12, 11
    assert evaluate(first) and evaluate(second)  # 24 characters: the first is dropped
    assert evaluate(second) and evaluate(third)  # the second dropped in turn
    long = "attempt > 1 || attempt == 1"  # longer than the cache: not kept
    assert evaluate(long) and evaluate(third) and evaluate(first)
    assert parses == [first, second, third, long, first]


def test_evaluation_keeps_the_operators_limits_and_its_errors(parses: list[str]) -> None:
    assert evaluate("'ab' * 3 == 'ababab'") and evaluate("2 ^ 10 == 1024")
    with pytest.raises(ConditionError, match="'\\*' would make"):
        evaluate("'a' * 10000000000")
    with pytest.raises(ConditionError, match="not valid JEXL"):
        evaluate("1 +")
    with pytest.raises(ConditionError, match="not valid JEXL"):
        evaluate("1 +")  # a failed parse is not kept
    assert parses.count("1 +") == 2


def test_a_condition_deeper_than_evaluation_can_walk_is_refused_on_create() -> None:
    """pyjexl evaluates a tree recursively (~5 Python frames a level): a chain of 200 `||`
    parsed, was stored, and failed every evaluation with RecursionError, so its schedule never
    fired. The deepest accepted one evaluates with 150 frames already on the stack (the
    ticker's own are fewer)."""
    deepest = " || ".join(f"a == {i}" for i in range(99))  # 100 levels
    check_condition(deepest)

    def evaluated_below(frames: int) -> bool:
        if frames:
            return evaluated_below(frames - 1)
        return evaluate(deepest, a=98)

    assert evaluated_below(150)
    with pytest.raises(ConditionError, match=r"nests 101 levels deep .* at most 100 can be"):
        check_condition(deepest + " || a == 99")
    check_condition("a in [" + ",".join(str(i) for i in range(5000)) + "]")  # 3 levels
    with pytest.raises(ConditionError, match="nested too deeply to be read"):
        check_condition("(" * 150 + "1" + ")" * 150)
    with pytest.raises(ConditionError, match="RecursionError"):  # as it was stored before
        evaluate(" || ".join(f"a == {i}" for i in range(200)), a=199)
