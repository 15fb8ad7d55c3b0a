"""Schedule conditions (seed 001): JEXL expressions, checked on create, evaluated at fire time.

The context an expression sees: every entry of the schedule's `parameters` by name (seed 001
writes `Subscription.Status == _SUBSCRIPTION_STATUS`), plus `parameters`, `payload`, `dueAt`
(ISO-8601 text) and `attempt`. An expression is read by `shared.jexl` (the language of
pyjexl's grammar, ten times faster) and evaluated by pyjexl's evaluator.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from typing import Any

import pyjexl
from pyjexl.evaluator import Context, Evaluator
from pyjexl.parser import Node

from shared import jexl

__all__ = ["ConditionError", "check_condition", "evaluate_condition"]

# What one condition may build: it runs in the ticker's event loop, where `2 ^ 4000000000` or
# `"a" * 10000000000` would hold up every fire for seconds, or exhaust memory.
LONGEST = 100_000  # characters of a string, items of a list, made by `*`
LARGEST_BITS = 10_000  # of an integer made by `^`


def _times(a: Any, b: Any) -> Any:
    for sequence, count in ((a, b), (b, a)):
        if isinstance(sequence, str | list) and isinstance(count, int):
            if len(sequence) * count > LONGEST:
                raise ValueError(f"'*' would make {len(sequence) * count} items: at most {LONGEST}")
    return operator.mul(a, b)


def _power(a: Any, b: Any) -> Any:
    if (
        isinstance(a, int)
        and isinstance(b, int)
        and abs(a) > 1
        and b > 0
        and a.bit_length() * b > LARGEST_BITS
    ):
        raise ValueError(f"'^' would make an integer of about {a.bit_length() * b} bits")
    return operator.pow(a, b)


_JEXL = pyjexl.JEXL()
_JEXL.add_binary_operator("*", 40, _times)
_JEXL.add_binary_operator("^", 50, _power)


class ConditionError(ValueError):
    """A condition that cannot be parsed or evaluated."""


# Parsed conditions kept for their next evaluation, the least recently used dropped first, up
# to this many characters of expressions in all. pyjexl's `evaluate` parses its expression
# every time (with its own grammar, 2-15 us a character); `shared.jexl` reads one in 0.2-0.7
# us a character (10 us for seed 001's, 30-49 ms for 65,535 characters), still more than
# evaluating it (~5 us), in the ticker's event loop at every fire. A tree takes ~10-45 bytes a
# character, so the cache holds ~45 MB at most.
CACHED_CHARACTERS = 1_000_000


class _Trees:
    def __init__(self) -> None:
        self._trees: OrderedDict[str, Any] = OrderedDict()
        self._characters = 0

    def parsed(self, expression: str) -> Any:
        tree = self._trees.get(expression)
        if tree is not None:
            self._trees.move_to_end(expression)
            return tree
        tree = _parse(expression)
        if len(expression) <= CACHED_CHARACTERS:
            self._trees[expression] = tree
            self._characters += len(expression)
            while self._characters > CACHED_CHARACTERS:
                dropped, _ = self._trees.popitem(last=False)
                self._characters -= len(dropped)
        return tree


def _parse(expression: str) -> Any:
    try:
        return jexl.parse(expression, _JEXL.config)
    except jexl.JexlSyntaxError as exc:
        raise ConditionError(f"not valid JEXL: {exc}") from None
    except RecursionError:  # a caller already deep in its stack: refused, not raised
        raise ConditionError("not valid JEXL: nested too deeply to be read") from None


# How deep a condition's tree may be. pyjexl evaluates it recursively, ~5 Python frames a level,
# within Python's limit of 1,000 frames with the ticker's own: a chain of 200 `||` was read,
# stored, and failed every evaluation (RecursionError), so its schedule never fired.
DEEPEST = 100


def _depth(tree: Node) -> int:
    """The levels of a parsed condition (its root is level 1), walked without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        for name in node.fields:
            if name == "parent":  # pyjexl links a node to its parent: not a child
                continue
            value = getattr(node, name)
            if isinstance(value, dict):
                value = list(value.values())
            for child in value if isinstance(value, list) else (value,):
                if isinstance(child, Node):
                    stack.append((child, level + 1))
    return deepest


_TREES = _Trees()
_EVALUATOR = Evaluator(_JEXL.config)


def check_condition(expression: str) -> None:
    """ConditionError unless the condition parses (on create) into a tree evaluation can
    walk. Its tree is not kept: the scheduler never evaluates it."""
    levels = _depth(_parse(expression))
    if levels > DEEPEST:
        raise ConditionError(
            f"nests {levels} levels deep (operators chained or nested); at most {DEEPEST} can "
            "be evaluated: for many alternatives write `x in [1, 2, 3]`"
        )


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
    tree = _TREES.parsed(expression)
    try:
        result = _EVALUATOR.evaluate(tree, Context(context))
    except Exception as exc:
        raise ConditionError(f"{type(exc).__name__}: {exc}") from None
    return bool(result)
