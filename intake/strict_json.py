"""Strict JSON for the intake: what a monitor may send, read without surprises.

Python's json module accepts more than the stores and the code behind it can take:
`NaN` and `Infinity` (stored as null on SQLite, refused by PostgreSQL), integers of any
length (past 4,300 digits `int()` itself refuses them), `\\u0000` in strings (PostgreSQL
text cannot hold it), lone surrogates such as `\\ud800` (not encodable as UTF-8), duplicate
keys (the last one silently wins) and nesting deep enough to exhaust the recursion of
whatever walks the document next. `loads` refuses all of them, naming the field path
(`alerts[0].labels.team`) and why, so the answer is a 4xx naming the field and a refused
request stores nothing.

Core of the intake only: no FastAPI, no records, so it can be tested and fuzzed on its own.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from firebreak.errors import InputInvalid

#: Containers nested deeper than this are refused (the formats need 4; free-form fields get the rest).
MAX_DEPTH = 32
#: Integers must fit a signed 64-bit integer (-2^63 ≤ n < 2^63), as every store and client library reads them.
INT_BOUND = 2**63
#: Problems named in one answer; a hostile body could otherwise list thousands.
MAX_PROBLEMS = 20
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_@$-]{1,64}$")


@dataclass(frozen=True)
class Problem:
    field: str
    reason: str


class NotJson(InputInvalid, ValueError):
    """The body is not JSON at all (syntax, encoding): the whole body is refused (400)."""


class JsonRefused(InputInvalid, ValueError):
    """The body is JSON, but some of its values are not acceptable; `problems` names each field."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.reason}" for p in problems))


class _Bad:
    """A value the parser met and refused; the walk that follows reports it at its path."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


class _Object(dict[str, Any]):
    """A JSON object that remembers keys given more than once."""

    __slots__ = ("duplicates",)
    duplicates: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    obj.duplicates = [] if len(obj) == len(pairs) else _duplicates(pairs)
    return obj


def _duplicates(pairs: list[tuple[str, Any]]) -> list[str]:
    seen: set[str] = set()
    duplicates: list[str] = []
    for key, _value in pairs:
        if key in seen and key not in duplicates:
            duplicates.append(key)
        seen.add(key)
    return duplicates


def _integer(text: str) -> int | _Bad:
    digits = len(text) - text.startswith("-")
    if digits > 19:  # |n| >= 10^19 > 2^63: not worth converting
        return _Bad(f"integer with {digits} digits is out of range (signed 64-bit)")
    value = int(text)
    if not -INT_BOUND <= value < INT_BOUND:
        return _Bad("integer is out of range (signed 64-bit)")
    return value


def _float(text: str) -> float | _Bad:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        return _Bad("number is too large to be finite")
    return value


def _constant(name: str) -> _Bad:
    return _Bad(f"{name} is not a number JSON allows (non-finite numbers are refused)")


def path_part(key: str | int) -> str:
    """One step of a field path, as the answers show it: `[3]`, `.labels`, `["odd key"]` (ASCII, shortened)."""
    if isinstance(key, int):
        return f"[{key}]"
    if _SAFE_KEY.match(key):
        return f".{key}"
    shown = key if len(key) <= 64 else key[:64] + "…"
    return "[" + json.dumps(shown, ensure_ascii=True) + "]"


def join_path(parts: tuple[str | int, ...] | list[str | int]) -> str:
    return "".join(path_part(p) for p in parts).lstrip(".") or "(body)"


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (e.g. \\ud800), which is not Unicode text"
    return None


def loads(body: bytes, *, max_depth: int = MAX_DEPTH, walk: bool = False) -> Any:
    """The document in `body` (UTF-8 JSON), or NotJson / JsonRefused naming every refused field.

    Every value is walked for problems only if the parse may have met one (`walk` forces it; the
    tests compare both ways): a number or key the parser flagged, a `\\u` escape that can make a NUL
    or a lone surrogate (nothing else can: the parser refuses raw control characters, and UTF-8 text
    holds no surrogates), or brackets nested deeper than `max_depth`. Most bodies have none of them,
    and the walk cost as much as the parse."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotJson(f"body is not UTF-8 text (byte {exc.start})") from None
    flagged: list[bool] = []

    def pairs(items: list[tuple[str, Any]]) -> _Object:
        obj = _pairs(items)
        if obj.duplicates:
            flagged.append(True)
        return obj

    def flag(value: Any) -> Any:
        if isinstance(value, _Bad):
            flagged.append(True)
        return value

    try:
        document = json.loads(text, object_pairs_hook=pairs, parse_int=lambda t: flag(_integer(t)),
                              parse_float=lambda t: flag(_float(t)), parse_constant=lambda t: flag(_constant(t)))
    except json.JSONDecodeError as exc:
        raise NotJson(f"body is not JSON: {exc}") from None
    except RecursionError:
        # Deeper than the parser's own recursion: name where it first passed our limit.
        raise JsonRefused([Problem(_deep_path(text, max_depth), f"nested deeper than {max_depth} levels")]) from None
    if walk or flagged or _RISKY_ESCAPE.search(text) or _may_nest_deeper(text, max_depth):
        problems = _check(document, max_depth)
        if problems:
            raise JsonRefused(problems)
    return document


#: An escape that makes a NUL or a surrogate (`\\u0000`, `\\ud800`…); an escaped backslash before `u`
#: matches too, which only costs the walk.
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_STRING = re.compile(r'"(?:[^"\\]+|\\.)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")


def _may_nest_deeper(text: str, max_depth: int) -> bool:
    # Counting opening brackets is a bound that costs next to nothing (a one-alert body has about seven).
    return text.count("{") + text.count("[") > max_depth and _depth(text) > max_depth


def _depth(text: str) -> int:
    """How deeply containers nest in `text` (valid JSON): its brackets outside strings, counted."""
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for bracket in brackets:
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _check(document: Any, max_depth: int) -> list[Problem]:
    """Walk the document without recursion: every refused value, key and container, by path."""
    problems: list[Problem] = []
    # (value, path, depth of the containers around it)
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(document, (), 0)]
    while stack and len(problems) < MAX_PROBLEMS:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            reason = _string_problem(value)
            if reason:
                problems.append(Problem(join_path(path), reason))
        elif isinstance(value, _Bad):
            problems.append(Problem(join_path(path), value.reason))
        elif isinstance(value, dict | list):
            if depth >= max_depth:
                problems.append(Problem(join_path(path), f"nested deeper than {max_depth} levels"))
                continue
            if isinstance(value, dict):
                for key in getattr(value, "duplicates", ()):
                    problems.append(Problem(join_path(path + (key,)), "key given more than once"))
                items: list[tuple[str | int, Any]] = []
                for key, item in value.items():
                    reason = _string_problem(key)
                    if reason:
                        problems.append(Problem(join_path(path + (key,)), "key " + reason))
                        continue
                    items.append((key, item))
            else:
                items = list(enumerate(value))
            # Reversed so the walk, taking from the end, reports in document order.
            stack.extend((item, path + (key,), depth + 1) for key, item in reversed(items))
    return problems[:MAX_PROBLEMS]


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:,]', re.DOTALL)


def _deep_path(text: str, max_depth: int) -> str:
    """The path at which `text` first nests deeper than `max_depth` (it is known to be very deep).
    A token scan, not a parse: strings are skipped whole, and keys are the strings before `:`."""
    path: list[str | int] = []
    kinds: list[str] = []
    last_string: str | None = None
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            if len(kinds) >= max_depth:
                return join_path(path)
            kinds.append(token)
            path.append(0 if token == "[" else "")
        elif token in "]}":
            if kinds:
                kinds.pop()
                path.pop()
        elif token == ",":
            if kinds and kinds[-1] == "[" and isinstance(path[-1], int):
                path[-1] += 1
        elif token == ":":
            if kinds and kinds[-1] == "{" and last_string is not None:
                path[-1] = last_string
        else:
            try:
                last_string = json.loads(token)
            except (json.JSONDecodeError, RecursionError):
                last_string = "?"
            continue
        last_string = None
    return join_path(path)
