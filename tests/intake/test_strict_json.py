"""intake.strict_json walks a document's values only when the parse may have met a problem. Generated
bodies, hostile ones included (NUL and lone-surrogate escapes, NaN, huge numbers, duplicate keys, deep
nesting, escaped backslashes and brackets inside strings), answer exactly as with the walk forced."""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intake import strict_json

ODD_TEXT = st.text(alphabet=st.sampled_from(["a", "é", "核", "\x00", "\ud800", "\udc00", "\\", '"', "[", "{", "}",
                                             "]", "u", "0", "d", "😀", "\n"]), max_size=8)
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | ODD_TEXT)


@st.composite
def json_text(draw: st.DrawFn, depth: int = 0) -> str:
    """A JSON text: containers nested up to 36 deep, keys sometimes repeated, strings escaped or raw."""
    kind = draw(st.sampled_from(["scalar", "list", "object"]) if depth < 36 else st.just("scalar"))
    if kind == "scalar":
        value = draw(SCALARS)
        return json.dumps(value, ensure_ascii=draw(st.booleans()))
    # Wide near the top, single chains below (deep nesting without huge documents).
    children = draw(st.lists(json_text(depth + 1), max_size=1 if depth > 3 else 4))  # type: ignore[call-arg]
    if kind == "list":
        return "[" + ",".join(children) + "]"
    keys = draw(st.lists(ODD_TEXT, min_size=len(children), max_size=len(children)))
    if keys and draw(st.booleans()):
        keys[-1] = keys[0]  # a key given twice
    return "{" + ",".join(json.dumps(k, ensure_ascii=draw(st.booleans())) + ":" + c
                          for k, c in zip(keys, children, strict=True)) + "}"


def answer(body: bytes, *, walk: bool) -> tuple[str, Any]:
    try:
        return ("accepted", strict_json.loads(body, walk=walk))
    except strict_json.JsonRefused as exc:
        return ("refused", [(p.field, p.reason) for p in exc.problems])
    except strict_json.NotJson as exc:
        return ("not json", str(exc))


@settings(max_examples=300, deadline=None)
@given(json_text(), st.integers(min_value=0, max_value=36))
def test_skipping_the_walk_never_changes_the_answer(text: str, wrapped: int) -> None:
    # Wrapped in lists around the limit of 32 levels, so deep nesting is met often, not by chance.
    body = ("[" * wrapped + text + "]" * wrapped).encode("utf-8", "surrogatepass")
    assert answer(body, walk=False) == answer(body, walk=True)


@pytest.mark.parametrize(("body", "field"), [
    (b'{"a": "x\\u0000"}', "a"),
    (b'{"a": ["\\ud800"]}', "a[0]"),
    (b'{"a": 1, "a": 2}', "a"),
    (b'{"n": NaN}', "n"),
    (b'{"n": 123456789012345678901}', "n"),
    (b'{"n": 1e400}', "n"),
    (b"[" * 33 + b"]" * 33, "[0]" * 32),
])
def test_each_problem_is_still_named(body: bytes, field: str) -> None:
    kind, problems = answer(body, walk=False)
    assert kind == "refused" and problems[0][0] == field, problems


def test_brackets_and_escapes_inside_strings_do_not_count_as_nesting() -> None:
    body = json.dumps({"summary": "[" * 100 + "{" * 100, "path": "C:\\\\u0000"}).encode()
    assert strict_json._depth(body.decode()) == 1
    assert answer(body, walk=False) == ("accepted", {"summary": "[" * 100 + "{" * 100, "path": "C:\\\\u0000"})
