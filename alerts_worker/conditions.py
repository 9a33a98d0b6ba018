"""Which events a subscription wants: a topic pattern and a CEL condition. Pure: no I/O.

The condition language is CEL (the Common Expression Language, github.com/google/cel-spec),
through ``cel-python``'s interpreter: a specified, side-effect-free, non-Turing-complete
language with a grammar, so a subscriber's text is parsed, never run as Python. The
CloudEvent's attributes are its variables: ``type``, ``subject``, ``source``, ``id``,
``time`` (strings) and ``data`` (the event's JSON), e.g.
``data.updated.status == "ABOUT_TO_EXPIRE" && data.updated.issuer == "factory-ca"``.

An expression that fails on an event (a field it names is absent) or yields anything
but ``true`` does not match. Interpreting CEL costs ~0.2 ms per evaluation here; with a
hundred subscriptions on one event type that would be most of a core at 200 events/s.
So the top-level conjuncts ``path == "literal"`` are also checked first with plain
dictionary look-ups, and CEL runs only when they all hold: exact, because ``a && b`` is
false (or an error: no match either) as soon as one conjunct is false (CEL spec,
"Logical Operators": commutative ``&&``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import celpy
import lark
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, celstr

__all__ = [
    "Condition",
    "InvalidCondition",
    "InvalidPattern",
    "activation",
    "matches_type",
    "pattern",
]

# The CloudEvents attributes a condition may name (CloudEvents 1.0 §3.1).
VARIABLES = ("id", "source", "type", "subject", "time", "data")
# Single-child wrappers the CEL grammar puts around an operand.
_WRAPPERS = {"expr", "conditionalor", "relation", "addition", "multiplication", "unary"}
_WORD = re.compile(r"^(#|\*|[a-z0-9][a-z0-9\-]*)$")


class InvalidCondition(ValueError):  # noqa: N818 - names the outcome, as runtime.errors does
    """The condition is not CEL; ``str()`` is one line for the subscriber."""


class InvalidPattern(ValueError):  # noqa: N818 - names the outcome, as runtime.errors does
    """The event type pattern is not a topic pattern."""


def pattern(text: str) -> tuple[str, ...]:
    """An event type pattern as its words; AMQP 0-9-1 topic syntax (``*``, ``#``)."""
    words = tuple(text.strip().split("."))
    bad = [w for w in words if not _WORD.match(w)]
    if not text.strip() or bad:
        raise InvalidPattern(
            f"event pattern {text!r} is not dot-separated words, '*' or '#'"
        )
    return words


def matches_type(words: tuple[str, ...], event_type: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""
    return _match(words, tuple(event_type.split(".")))


def _match(words: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not words:
        return not parts
    head, rest = words[0], words[1:]
    if head == "#":
        return any(_match(rest, parts[i:]) for i in range(len(parts) + 1))
    if not parts:
        return False
    return (head in {"*", parts[0]}) and _match(rest, parts[1:])


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled CEL condition and its ``path == "literal"`` conjuncts."""

    text: str
    program: celpy.Runner
    equalities: tuple[tuple[tuple[str, ...], str], ...]

    @classmethod
    def compile(cls, text: str) -> Condition:
        """Parse ``text``; raises InvalidCondition with the column of the mistake."""
        env = celpy.Environment()
        try:
            tree = env.compile(text)
        except CELParseError as exc:
            column = getattr(exc, "column", None)
            where = f" at column {column}" if column else ""
            raise InvalidCondition(
                f"condition is not valid CEL{where}: {text.strip()[:200]!r}"
            ) from None
        return cls(text, env.program(tree), tuple(_equalities(tree)))

    def holds(self, event: Mapping[str, Any], activation: Any) -> bool:
        """True when the condition is ``true`` for ``event`` (its JSON) and its
        ``activation`` (``activation(event)``, made once per event)."""
        for path, literal in self.equalities:
            if _lookup(event, path) != literal:
                return False
        try:
            result = self.program.evaluate(activation)
        except (CELEvalError, TypeError, ValueError, KeyError, ZeroDivisionError):
            return False
        # Anything but a boolean true (an error value, a number, a string) is no match.
        return isinstance(result, celpy.celtypes.BoolType) and bool(result)


def activation(event: Mapping[str, Any]) -> Any:
    """The CEL variables of an event, converted once for every subscription."""
    return {name: json_to_cel(event.get(name)) for name in VARIABLES}


def _lookup(event: Mapping[str, Any], path: tuple[str, ...]) -> object:
    value: object = event
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            return None
        value = value[name]
    return value


def _equalities(tree: lark.Tree[Any]) -> list[tuple[tuple[str, ...], str]]:
    """The top-level ``path == "string"`` conjuncts of a parsed condition."""
    node = _unwrap(tree, {"expr", "conditionalor"})
    found: list[tuple[tuple[str, ...], str]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, lark.Tree) and current.data == "conditionaland":
            stack.extend(current.children)
            continue
        equality = _equality(current)
        if equality is not None:
            found.append(equality)
    return found


def _unwrap(node: Any, kinds: set[str]) -> Any:
    while (
        isinstance(node, lark.Tree) and node.data in kinds and len(node.children) == 1
    ):
        node = node.children[0]
    return node


def _equality(node: Any) -> tuple[tuple[str, ...], str] | None:
    # relation: [relation_eq: [left operand], right operand]
    if not (isinstance(node, lark.Tree) and node.data == "relation"):
        return None
    if len(node.children) != 2:
        return None
    operator, right = node.children
    if not (isinstance(operator, lark.Tree) and operator.data == "relation_eq"):
        return None
    left = operator.children[0]
    for one, other in ((left, right), (right, left)):
        path, literal = _path(one), _string(other)
        if path is not None and literal is not None:
            return path, literal
    return None


def _path(node: Any) -> tuple[str, ...] | None:
    node = _unwrap(node, _WRAPPERS | {"member"})
    if not isinstance(node, lark.Tree):
        return None
    if node.data == "member_dot" and len(node.children) == 2:
        parent = _path(node.children[0])
        name = node.children[1]
        if parent is None or not isinstance(name, lark.Token):
            return None
        return (*parent, str(name))
    if node.data == "primary":
        ident = node.children[0]
        if isinstance(ident, lark.Tree) and ident.data == "ident":
            name = str(ident.children[0])
            return (name,) if name in VARIABLES else None
    return None


def _string(node: Any) -> str | None:
    node = _unwrap(node, _WRAPPERS | {"member", "primary"})
    if not (isinstance(node, lark.Tree) and node.data == "literal"):
        return None
    token = node.children[0]
    if not isinstance(token, lark.Token) or token.type != "STRING_LIT":
        return None
    return str(celstr(token))
