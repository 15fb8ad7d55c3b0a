"""JEXL read by hand into pyjexl's own trees, as pyjexl's grammar reads it.

pyjexl parses with a parsimonious grammar (a packrat parser in pure Python): 2-15 us a
character (84 us for seed 001's condition, 0.35 s for an `in` list of 65 KB, ~1 s for a sum as
long: a condition may have 65,535 characters), in the scheduler's event loop on create and in
the ticker's at a condition's first evaluation. This reads the same language in one pass,
without backtracking past a single construct, into the nodes pyjexl's evaluator walks: the
same tree for every expression pyjexl reads, the same refusal for every one it does not
(`tests/unit/test_jexl.py` holds the two side by side, on generated expressions).

What pyjexl's grammar does, and so this: an expression is a conditional (`test ? a : b`), a
chain of binary operators (precedence decides the tree, equal precedence groups from the left),
a unary `!`, or a value followed, with no space between, by any number of `|transform(args)`,
`.attribute` and `[filter]`. A value is `true`/`false` (matched as a prefix: `trueish` reads
`true` and stops there), a quoted string (read as a Python literal), a number (`-`, digits, an
optional fraction), a parenthesised expression, an object `{key: expression}`, an array, an
identifier, or `.identifier` (relative, inside a filter). An operator is matched as a prefix,
the symbols tried in reverse order (`a index` reads `a in dex`).

Nothing here recurses past `NESTING` levels of brackets, braces, filters, transforms'
arguments and consequents (`a ? (consequent) : b`); chains of `!` and of alternates
(`a ? b : c ? d : e`) are read in a loop. Parsimonious recursed ~18 Python frames a bracket and
gave up (RecursionError) at 45-55.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from typing import Any

from pyjexl.jexl import JEXLConfig
from pyjexl.operators import Operator
from pyjexl.parser import (
    ArrayLiteral,
    BinaryExpression,
    ConditionalExpression,
    FilterExpression,
    Identifier,
    Literal,
    Node,
    ObjectLiteral,
    Transform,
    UnaryExpression,
)

__all__ = ["NESTING", "JexlSyntaxError", "parse"]

NESTING = 100  # brackets, braces and consequents inside one another: 3-6 Python frames each

# pyjexl's grammar's own expressions (`tests/unit/test_jexl.py` compares them with it)
SPACE = re.compile(r"\s*")
IDENTIFIER = re.compile(r"[a-zA-Z_\$][a-zA-Z0-9_\$]*")
NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
STRINGS = {
    '"': re.compile(r'"[^"\\\n\r]*(?:\\.[^"\\\n\r]*)*"', re.IGNORECASE | re.DOTALL),
    "'": re.compile(r"'[^'\\\n\r]*(?:\\.[^'\\\n\r]*)*'", re.IGNORECASE | re.DOTALL),
}


class JexlSyntaxError(ValueError):
    """An expression pyjexl's grammar does not read, or one nested past `NESTING`."""


class _TooDeep(Exception):
    pass


@functools.lru_cache(maxsize=16)  # one entry a set of operators: 3 us a parse saved
def _by_first_character(operators: tuple[Operator, ...]) -> dict[str, list[Operator]]:
    """Operators by their symbol's first character, each list in the order the grammar tries
    them (symbols in reverse order, so that `<=` is tried before `<`)."""
    ordered: dict[str, list[Operator]] = {}
    for operator in sorted(operators, key=lambda op: op.symbol, reverse=True):
        ordered.setdefault(operator.symbol[0], []).append(operator)
    return ordered


def parse(expression: str, config: JEXLConfig) -> Node:
    """The tree pyjexl's `JEXL.parse` gives for `expression` under `config` (its operators),
    or JexlSyntaxError naming where reading stopped."""
    reader = _Reader(expression, config)
    try:
        tree = reader.expression(0, 0)
    except _TooDeep:
        raise JexlSyntaxError(
            f"nested too deeply to be read (more than {NESTING} brackets, braces or "
            "conditionals inside one another)"
        ) from None
    if tree is None or tree[1] != len(expression):
        raise JexlSyntaxError(reader.stuck())
    return tree[0]


class _Reader:
    """One expression's text, read by recursive descent. Each method takes a position and
    returns (node, position after it), or None where the grammar's rule fails there; `furthest`
    is the furthest position a rule failed at, where the error is reported."""

    def __init__(self, text: str, config: JEXLConfig) -> None:
        self.text = text
        self.binary = _by_first_character(tuple(config.binary_operators.values()))
        self.unary = _by_first_character(tuple(config.unary_operators.values()))
        self.furthest = 0

    def stuck(self) -> str:
        at = self.furthest
        if not self.text.strip():
            return "it is empty"
        if at >= len(self.text):
            return f"it ends too soon (after character {len(self.text)})"
        return f"cannot read it from character {at + 1}: {self.text[at : at + 30]!r}"

    def fail(self, at: int) -> None:
        if at > self.furthest:
            self.furthest = at

    def space(self, at: int) -> int:
        text = self.text
        if at < len(text) and text[at].isspace():
            return SPACE.match(text, at).end()  # type: ignore[union-attr]
        return at

    def expression(self, at: int, depth: int) -> tuple[Node, int] | None:
        """`_ (conditional / binary / unary / complex_value) _`; the alternates of a chain of
        conditionals read in a loop."""
        if depth > NESTING:
            raise _TooDeep
        text = self.text
        first = self.operation(self.space(at), depth)
        if first is None:
            return None
        test, at = first
        branches: list[tuple[Node, Node]] = []
        while True:
            question = self.space(at)
            if not text.startswith("?", question):
                self.fail(question)
                break
            consequent = self.expression(question + 1, depth + 1)
            if consequent is None:
                break
            colon = consequent[1]
            if not text.startswith(":", colon):
                self.fail(colon)
                break
            alternate = self.operation(self.space(colon + 1), depth)
            if alternate is None:
                break
            branches.append((test, consequent[0]))
            test, at = alternate
        for condition, consequent_node in reversed(branches):
            test = ConditionalExpression(test=condition, consequent=consequent_node, alternate=test)
        return test, self.space(at)

    def operation(self, at: int, depth: int) -> tuple[Node, int] | None:
        """`binary_operand (_ binary_operator _ binary_operand)*`, built into a tree as
        pyjexl's `visit_binary_expression` builds it."""
        first = self.operand(at, depth)
        if first is None:
            return None
        pieces: list[Any] = [first[0]]
        at = first[1]
        while True:
            start = self.space(at)
            operator = self.operator(self.binary, start)
            if operator is None:
                break
            right = self.operand(self.space(start + len(operator.symbol)), depth)
            if right is None:
                break
            pieces += (operator, right[0])
            at = right[1]
        if len(pieces) == 1:
            return first
        cursor = pieces[0]
        for piece in pieces[1:]:
            if not isinstance(piece, Operator):
                cursor.right = piece
                piece.parent = cursor
                cursor = piece
                continue
            parent = cursor.parent
            while parent is not None and parent.operator.precedence >= piece.precedence:
                cursor = parent
                parent = cursor.parent
            node = BinaryExpression(operator=piece, left=cursor, parent=parent)
            cursor.parent = node
            if parent is not None:
                parent.right = node
            cursor = node
        while cursor.parent is not None:
            cursor = cursor.parent
        return cursor, at

    def operator(self, operators: dict[str, list[Operator]], at: int) -> Operator | None:
        text = self.text
        if at < len(text):
            for operator in operators.get(text[at], ()):
                if text.startswith(operator.symbol, at):
                    return operator
        self.fail(at)
        return None

    def operand(self, at: int, depth: int) -> tuple[Node, int] | None:
        """`unary_operator _ unary_operand` (a chain of them read in a loop) or
        `complex_value`: a value and its transforms, attributes and filters."""
        unary: list[Operator] = []
        while (operator := self.operator(self.unary, at)) is not None:
            unary.append(operator)
            at = self.space(at + len(operator.symbol))
        value = self.value(at, depth)
        if value is None:
            return None
        node, at = value
        text = self.text
        while at < len(text):
            mark = text[at]
            if mark == ".":
                name = IDENTIFIER.match(text, at + 1)
                if name is None:
                    self.fail(at + 1)
                    break
                node = Identifier(value=name.group(), relative=False, subject=node)
                at = name.end()
            elif mark == "|":
                name = IDENTIFIER.match(text, at + 1)
                if name is None:
                    self.fail(at + 1)
                    break
                transform = Transform(name=name.group(), args=[], subject=node)
                at = name.end()
                if text.startswith("(", at):
                    arguments = self.values(self.space(at + 1), depth + 1)
                    if arguments is not None:
                        close = self.space(arguments[1])
                        if text.startswith(")", close):
                            transform.args = arguments[0]
                            at = close + 1
                        else:
                            self.fail(close)
                node = transform
            elif mark == "[":
                inner = self.expression(at + 1, depth + 1)
                if inner is None:
                    break
                close = self.space(inner[1])
                if not text.startswith("]", close):
                    self.fail(close)
                    break
                node = FilterExpression(
                    expression=inner[0], relative=_relative(inner[0]), subject=node
                )
                at = close + 1
            else:
                break
        for operator in reversed(unary):
            node = UnaryExpression(operator=operator, right=node)
        return node, at

    def value(self, at: int, depth: int) -> tuple[Node, int] | None:
        text = self.text
        if at >= len(text):
            self.fail(at)
            return None
        mark = text[at]
        if text.startswith("true", at):
            return Literal(True), at + 4
        if text.startswith("false", at):
            return Literal(False), at + 5
        if mark in STRINGS:
            found = STRINGS[mark].match(text, at)
            if found is None:
                self.fail(at)
                return None
            try:
                return Literal(ast.literal_eval(found.group())), found.end()
            except Exception as exc:  # a bad escape: what Python's literal_eval says of it
                raise JexlSyntaxError(
                    f"the string at character {at + 1} cannot be read: {exc}"
                ) from None
        if mark == "-" or "0" <= mark <= "9":
            found = NUMBER.match(text, at)
            if found is None:
                self.fail(at)
                return None
            number = found.group()
            try:
                return Literal(float(number) if "." in number else int(number)), found.end()
            except ValueError:  # more digits than Python converts
                raise JexlSyntaxError(
                    f"the number at character {at + 1} has {len(number.lstrip('-'))} digits: "
                    f"at most {sys.get_int_max_str_digits()} can be read"
                ) from None
        if mark == "(":
            inner = self.expression(at + 1, depth + 1)
            if inner is None:
                return None
            close = self.space(inner[1])
            if not text.startswith(")", close):
                self.fail(close)
                return None
            return inner[0], close + 1
        if mark == "{":
            return self.object(at, depth + 1)
        if mark == "[":
            start = self.space(at + 1)
            items = self.values(start, depth + 1)
            close = self.space(items[1]) if items is not None else start
            if not text.startswith("]", close):
                self.fail(close)
                return None
            return ArrayLiteral(value=items[0] if items is not None else []), close + 1
        relative = mark == "."
        name = IDENTIFIER.match(text, at + 1 if relative else at)
        if name is None:
            self.fail(at + 1 if relative else at)
            return None
        return Identifier(value=name.group(), relative=relative), name.end()

    def values(self, at: int, depth: int) -> tuple[list[Node], int] | None:
        """`expression (_ "," _ expression)*`."""
        first = self.expression(at, depth)
        if first is None:
            return None
        items, at = [first[0]], first[1]
        while True:
            comma = self.space(at)
            if not self.text.startswith(",", comma):
                self.fail(comma)
                return items, at
            item = self.expression(comma + 1, depth)
            if item is None:
                return items, at
            items.append(item[0])
            at = item[1]

    def object(self, at: int, depth: int) -> tuple[Node, int] | None:
        """`"{" _ (key _ ":" _ expression (_ "," _ key _ ":" _ expression)*)? _ "}"`."""
        if depth > NESTING:
            raise _TooDeep
        text = self.text
        entries: dict[str, Node] = {}
        start = self.space(at + 1)
        end = start
        entry = self.entry(start, depth)
        while entry is not None:
            key, value, end = entry
            entries[key] = value
            comma = self.space(end)
            if not text.startswith(",", comma):
                self.fail(comma)
                break
            entry = self.entry(self.space(comma + 1), depth)
        close = self.space(end)
        if not text.startswith("}", close):
            self.fail(close)
            return None
        return ObjectLiteral(value=entries), close + 1

    def entry(self, at: int, depth: int) -> tuple[str, Node, int] | None:
        key = IDENTIFIER.match(self.text, at)
        if key is None:
            self.fail(at)
            return None
        colon = self.space(key.end())
        if not self.text.startswith(":", colon):
            self.fail(colon)
            return None
        value = self.expression(colon + 1, depth)
        if value is None:
            return None
        return key.group(), value[0], value[1]


def _relative(tree: Node) -> bool:
    """pyjexl's `contains_relative()` of a filter's expression, walked without recursion: an
    identifier says whether it is relative (`.b.c` is not: `c` is not), a filter asks its
    subject, any other node is when one of its children is (literals, arrays and objects have
    none, for pyjexl)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Identifier):
            if node.relative:
                return True
        elif isinstance(node, FilterExpression):
            stack.append(node.subject)
        else:
            stack.extend(child for child in node.children if child is not None)
    return False
