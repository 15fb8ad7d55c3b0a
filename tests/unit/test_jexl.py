"""`shared.jexl` reads what pyjexl's own grammar reads, into the same trees, and refuses what
it refuses: side by side on its quirks and on generated expressions, valid and mangled."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyjexl.parser import Node

from shared import jexl
from shared.conditions import _JEXL

CONFIG = _JEXL.config  # with Chime's bounded `*` and `^`


def same(a: Any, b: Any) -> bool:
    """Equal trees: the same node types, fields (the parent links aside) and values of the
    same types (pyjexl's own `==` holds `Literal(True)` equal to `Literal(1)`)."""
    if isinstance(a, Node) or isinstance(b, Node):
        return type(a) is type(b) and all(
            same(getattr(a, field), getattr(b, field)) for field in a.fields if field != "parent"
        )
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        if type(a) is not type(b) or len(a) != len(b):
            return False
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
        return all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def pyjexls(expression: str) -> Node | None:
    """pyjexl's own tree, None where it refuses the expression."""
    try:
        return _JEXL.parse(expression)
    except RecursionError:
        pytest.skip("deeper than pyjexl's grammar can recurse")
    except Exception:  # parsimonious's errors, pyjexl's, and its visitors' (a bad escape)
        return None


def ours(expression: str) -> Node | None:
    try:
        return jexl.parse(expression, CONFIG)
    except jexl.JexlSyntaxError:
        return None


def assert_read_alike(expression: str) -> None:
    theirs, mine = pyjexls(expression), ours(expression)
    if theirs is None or mine is None:
        assert theirs is None and mine is None, (expression, theirs, mine)
    else:
        assert same(theirs, mine), (expression, theirs, mine)


QUIRKS = [
    "Subscription.Status == _SUBSCRIPTION_STATUS",  # seed 001
    "1 + 2 * 3 ^ 4 - 5 // 6 % 7 == 8 && 9 || 10 != 11",  # precedence
    "a - b - c",
    "a ^ b ^ c",
    "a >= b <= c > d < e",
    "x * (a + b) * c",
    "x + (a * b) * c",
    "!a == b",  # `!` binds to its operand
    "!!a",
    "! a",
    "a != b",
    "a !b",
    "a ? b : c ? d : e",  # alternates group to the right
    "a ? b ? c : d : e",
    "a ? b",
    "a?b:c",
    "a\n?\tb\r:\fc",
    "a\u00a0==\u2003b",  # Python's whitespace, Unicode's too
    "trueish",  # `true` is read as a prefix, and the rest is left
    "a == trueish",
    "falsey",
    "true.x",
    "a index",  # `in` as a prefix: a in dex
    "a in[1, 2]",
    "x in [1, 2, 3]",
    "x in [1, 2, ]",
    "[]",
    "[ ]",
    "{}",
    "{a: 1, a: 2}",
    "{a: 1, }",
    "{'a': 1}",
    "{true: 1}",
    "a|b",
    "a|b()",  # arguments need one value at least
    "a|b(1, 2)|c",
    "a|b (1)",
    "a | b",
    "a||b",
    "a|",
    "a.",
    "a.b.c|d(e.f[1])",
    "a [1]",  # no space before a filter
    "a[",
    "a[]",
    "a[.b > 1]",
    "a[.b > 1][0]",
    "a[b[c[.d]]]",
    "a|t[.x]",
    "[.a]",
    "a[[.x]]",  # an array literal hides its relative identifiers
    "a[{b: .c}]",
    "a[.b|t(.c)]",
    "a[(.b)]",
    "a[.b.c > 1]",  # not relative, for pyjexl: `c` is not
    "a[!.b]",
    ".a",
    "1.foo",
    "1.5.5",
    "-1.5",
    "-a",
    "a--1",
    "a-1",
    "1-2",
    "007",
    "'a\\'b'",
    '"x\\"y"',
    "'\\n'",
    "'\\u00e9'",
    "'a\\\nb'",
    "'abc",
    "'a\nb'",
    "'\\x'",
    "(a)",
    "((a + b) * c)",
    "(a",
    "a)",
    "",
    "   ",
    "1 +",
    "a b",
    "a = b",
    "a & b",
    "$a_1 + _b$",
    "a.$b",
    "é == 1",
    "1" * 4301,  # more digits than Python converts
]


@pytest.mark.parametrize("expression", QUIRKS)
def test_reads_what_pyjexl_reads_and_refuses_what_it_refuses(expression: str) -> None:
    assert_read_alike(expression)


SPACE = st.sampled_from(["", "", " ", "  ", "\t", "\n", "\u00a0"])
NAME = st.sampled_from(["a", "b", "_x", "$y", "Status", "true", "false", "trueish", "in", "index"])
LEAF = st.one_of(
    NAME,
    NAME.map(lambda name: "." + name),
    st.sampled_from(["0", "1", "-2", "3.5", "-0.25", "10", "1."]),
    st.sampled_from(["'a'", '"b"', "'it\\'s'", '"x\\"y"', "''", "'\\n'", "'{'"]),
)
OPERATOR = st.sampled_from([*sorted(CONFIG.binary_operators), "!", "|", "=", "&"])


def _joined(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map("".join)


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    listed = st.lists(_joined(SPACE, inner, SPACE), max_size=3).map(",".join)
    return st.one_of(
        _joined(inner, SPACE, OPERATOR, SPACE, inner),
        _joined(st.just("!"), SPACE, inner),
        _joined(inner, SPACE, st.just("?"), SPACE, inner, SPACE, st.just(":"), SPACE, inner),
        _joined(st.just("("), SPACE, inner, SPACE, st.just(")")),
        _joined(st.just("["), listed, st.just("]")),
        _joined(st.just("{"), _joined(NAME, SPACE, st.just(":"), SPACE, inner), st.just("}")),
        _joined(inner, st.just("."), NAME),
        _joined(inner, st.just("["), SPACE, inner, SPACE, st.just("]")),
        _joined(inner, st.just("|"), NAME, st.sampled_from(["", "()", "(1)", "(a, 'b')"])),
        _joined(inner, st.just("|"), NAME, st.just("("), listed, st.just(")")),
    )


EXPRESSIONS = st.recursive(LEAF, _extend, max_leaves=12)
MARKS = [*"()[]{}.,:?!|'\" -+*/=<>&01a_\t", ""]  # "" deletes a character
EDITS = st.lists(
    st.tuples(st.integers(0, 10_000), st.sampled_from(MARKS)),
    min_size=1,
    max_size=3,
)


def _edited(text: str, edits: list[tuple[int, str]]) -> str:
    for place, character in edits:
        at = place % (len(text) + 1)
        text = text[:at] + character + text[at + 1 :]
    return text


EXAMPLES = settings(
    max_examples=1500,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@EXAMPLES
@given(EXPRESSIONS)
def test_generated_expressions_are_read_alike(expression: str) -> None:
    assert_read_alike(expression)


@EXAMPLES
@given(EXPRESSIONS, EDITS)
def test_mangled_expressions_are_read_alike(expression: str, edits: list[tuple[int, str]]) -> None:
    assert_read_alike(_edited(expression, edits))


def test_its_patterns_are_pyjexls() -> None:
    grammar = _JEXL.grammar
    patterns = [(m.re.pattern, m.re.flags & 0xFF) for m in grammar["string"].members]
    assert patterns == [(p.pattern, p.flags & 0xFF) for p in jexl.STRINGS.values()]
    assert grammar["identifier"].re.pattern == jexl.IDENTIFIER.pattern
    assert grammar["_"].re.pattern == jexl.SPACE.pattern


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 +", r"it ends too soon \(after character 3\)"),
        ("a b", r"cannot read it from character 3: 'b'"),
        ("x in [1, 2, ]", r"from character 13: '\]'"),
        ("   ", r"it is empty"),
        ("'\\x'", r"the string at character 1 cannot be read"),
        ("1" * 4301, r"the number at character 1 has 4301 digits: at most 4300"),
    ],
)
def test_a_refusal_says_where_reading_stopped(expression: str, message: str) -> None:
    with pytest.raises(jexl.JexlSyntaxError, match=message):
        jexl.parse(expression, CONFIG)


def test_nesting_is_bounded_and_chains_are_read_in_a_loop() -> None:
    """Brackets inside brackets recurse, up to `NESTING` levels, then are refused however much
    of the stack the caller already holds; a chain of `!` or of alternates is read in a loop,
    however long (their depth is for the caller to bound: `shared.conditions` does)."""

    def deep(levels: int) -> str:  # a filter, an array and an object inside the parentheses
        return "(" * (levels - 3) + "a[[{b: 1}]]" + ")" * (levels - 3)

    def below(frames: int, expression: str) -> Node:
        if frames:
            return below(frames - 1, expression)
        return jexl.parse(expression, CONFIG)

    assert ours(deep(jexl.NESTING)) is not None
    assert below(300, deep(jexl.NESTING)) is not None
    with pytest.raises(jexl.JexlSyntaxError, match="nested too deeply to be read"):
        jexl.parse(deep(jexl.NESTING + 1), CONFIG)
    assert sys.getrecursionlimit() == 1000  # what the figures above were read against

    unary = jexl.parse("!" * 5000 + "a", CONFIG)
    alternates = jexl.parse("a ? 1 : " * 5000 + "2", CONFIG)
    for node, child in ((unary, "right"), (alternates, "alternate")):
        levels = 0
        while node is not None:
            node, levels = getattr(node, child, None), levels + 1
        assert levels == 5001
