"""Reading a condition, timed alone: pyjexl's own grammar against `shared.jexl`.

    python -m bench.condition_parse [--repeat 3] [--longest 65535]

A create reads its condition in the scheduler's event loop, and the ticker reads each stored
one once before its first evaluation, in its own. For each shape of condition (seed 001's, a
realistic one, an `in` list of ids and a sum up to `--longest` characters: the seed allows
65,535; the longest chain of `||` a create takes), the best of `--repeat` timings of each
reader, in us and us a character, and what evaluating the tree takes once read (`null` for a
shape a create refuses, `refused_on_create` saying why: the sum is deeper than evaluation can
walk). No server. One JSON line per shape.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from pyjexl.evaluator import Context

from bench.common import line
from shared import conditions, jexl


def _fill(term: Callable[[int], str], separator: str, longest: int, head: str = "") -> str:
    """`head` + terms joined by `separator`, as many as fit in `longest` characters."""
    terms: list[str] = []
    size = len(head) + 1
    while size + len(term(len(terms))) + len(separator) <= longest:
        terms.append(term(len(terms)))
        size += len(terms[-1]) + len(separator)
    return head + separator.join(terms)


def shapes(longest: int) -> dict[str, str]:
    return {
        "seed_001": "Subscription.Status == _SUBSCRIPTION_STATUS",
        "realistic": "(Subscription.Status == 'Active' && payload.amount > 1000 && attempt <= 3)"
        " || (parameters.region in ['eu', 'us', 'apac'] && dueAt > '2026-01-01')"
        " || payload.items[.price > 10]|length > 0",
        "in_list_of_ids": _fill(lambda i: f"'id-{i:06d}'", ", ", longest, "payload.id in [") + "]",
        "or_chain_98": " || ".join(f"payload.n == {i}" for i in range(98)),  # 100 levels
        "sum": _fill(lambda i: "1", " + ", longest),
    }


def _best(read: Callable[[], Any], repeat: int, loops: int) -> float:
    """The best of `repeat` timings of `loops` calls, a call."""
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            read()
        timings.append((time.perf_counter() - start) / loops)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--longest", type=int, default=65_535)
    args = parser.parse_args()
    config = conditions._JEXL.config
    context = {
        "Subscription": {"Status": "Active"},
        "_SUBSCRIPTION_STATUS": "Active",
        "payload": {"id": "id-000007", "n": 98, "amount": 1200, "items": [{"price": 11}]},
        "parameters": {"region": "eu"},
        "dueAt": "2026-12-07T08:00:00Z",
        "attempt": 1,
    }
    for name, expression in shapes(args.longest).items():
        loops = max(1, 20_000 // len(expression))  # a short one timed over many calls
        ours = _best(lambda e=expression: jexl.parse(e, config), args.repeat, loops)
        pyjexls = _best(lambda e=expression: conditions._JEXL.parse(e), args.repeat, loops)
        try:
            conditions.check_condition(expression)
        except conditions.ConditionError as exc:
            refused: str | None = str(exc)
            evaluate = None
        else:
            refused = None
            tree = jexl.parse(expression, config)
            evaluate = _best(
                lambda t=tree: conditions._EVALUATOR.evaluate(t, Context(dict(context))),
                args.repeat,
                loops,
            )
        line(
            scenario="condition_parse",
            shape=name,
            characters=len(expression),
            us={"shared_jexl": round(ours * 1e6, 1), "pyjexl": round(pyjexls * 1e6, 1)},
            us_per_character={
                "shared_jexl": round(ours * 1e6 / len(expression), 3),
                "pyjexl": round(pyjexls * 1e6 / len(expression), 3),
            },
            times_faster=round(pyjexls / ours, 1),
            refused_on_create=refused,
            evaluate_us=None if evaluate is None else round(evaluate * 1e6, 1),
        )


if __name__ == "__main__":
    main()
