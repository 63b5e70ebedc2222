"""Jinja2 templating for runbook arguments and conditions, always sandboxed.

Alert text and operator input flow into these templates, so only the immutable
sandbox is used and undefined names are errors, never silent blanks.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)

#: Names a template may use at the top level.
CONTEXT_NAMES = frozenset({"params", "incident", "level", "steps", "runbook"})

#: What evaluating a template on real data may raise: Jinja's own errors (an undefined name, a
#: sandbox refusal) and the built-in errors of the operations and filters it applies to the data
#: (`1 + "a"`, `x / 0`, `"%d" % "a"`, `items[9]`, a method the value does not have).
EVALUATION_ERRORS: tuple[type[Exception], ...] = (
    TemplateError, TypeError, ValueError, ArithmeticError, LookupError, AttributeError,
)

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)


# Compiling is the costly part (a millisecond or more each, on every alert routed and every
# step started); the compiled objects are immutable and safe to share between threads.
@lru_cache(maxsize=4096)
def _expression(source: str) -> Any:
    return ENV.compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _template(source: str) -> Any:
    return ENV.from_string(source)


def is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render every string inside `value`. A string that is one `{{ expression }}`
    keeps the expression's native type (a number stays a number)."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        match = _SINGLE_EXPRESSION.match(value)
        if match and "{{" not in match.group("expr") and "}}" not in match.group("expr"):
            return _expression(match.group("expr"))(**context)
        return _template(value).render(**context)
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    return value


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    return _expression(expression)(**context)


def parse(source: str, *, expression: bool) -> nodes.Template:
    """Parse a template (or a bare expression) for static checks; raises TemplateSyntaxError."""
    return ENV.parse("{{ " + source + " }}" if expression else source)


def references(tree: nodes.Template) -> tuple[set[str], set[tuple[str, str]]]:
    """Top-level names used, and (root, first attribute) pairs such as ('params', 'threshold')."""
    names: set[str] = set()
    assigned: set[str] = set()
    for node in tree.find_all(nodes.Name):
        if node.ctx == "load":
            names.add(node.name)
        else:
            assigned.add(node.name)
    attributes: set[tuple[str, str]] = set()
    for access in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if not isinstance(access, (nodes.Getattr, nodes.Getitem)):
            continue  # never: find_all yields only these; says so to the type checker
        if isinstance(access.node, nodes.Name) and access.node.ctx == "load":
            if isinstance(access, nodes.Getattr):
                attributes.add((access.node.name, access.attr))
            elif isinstance(access.arg, nodes.Const) and isinstance(access.arg.value, str):
                attributes.add((access.node.name, access.arg.value))
    return names - assigned, attributes
