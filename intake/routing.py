"""Routing: label matchers → runbook and response level, read like Alertmanager's `route:` tree.

    route:                      # the root route matches every alert: it is the default
      runbook: null             # null: unmatched alerts are recorded and nothing starts
      routes:
        - name: outage
          matchers: ['alertname =~ "ServiceDown|InstanceDown"']
          runbook: system-outage
          level: II
          parameters: {affected_service: '{{ labels.service | default("online_chat") }}'}
          routes:
            - matchers: ['severity = "critical"']
              level: I         # children inherit runbook, level and parameters, and may override them

As in Alertmanager, the first matching child wins and its own children are tried
in turn; a route with no matching child is the answer. `continue` is not
supported: an alert starts at most one runbook.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from firebreak.config_files import load_model
from firebreak.errors import ConfigInvalid
from runbooks.hosts import url_problem
from runbooks.schema import Level
from runbooks.templating import ENV, is_template, render_value
from tasks.catalog import load_runbook

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$')


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.label, "")  # Alertmanager: a missing label matches as ""
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f"{self.label}{self.op}{json.dumps(self.value)}"


def parse_matcher(text: str) -> Matcher:
    match = _MATCHER.match(text)
    if not match:
        raise ValueError(f"matcher {text!r} is not `label=value`, `label!=value`, `label=~regex` or `label!~regex`")
    label, op, raw = match.groups()
    value = raw
    if raw.startswith('"'):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"matcher {text!r}: the quoted value is not closed or has a bad escape") from None
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"matcher {text!r}: bad regular expression: {exc}") from None
    return Matcher(label, op, value, pattern)


class RouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=100)
    matchers: list[str] = Field(default_factory=list)
    match: dict[str, str] = Field(default_factory=dict, description="Alertmanager's older equality form")
    match_re: dict[str, str] = Field(default_factory=dict, description="Alertmanager's older regex form")
    runbook: str | None = None
    level: Level | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    routes: list[RouteSpec] = Field(default_factory=list)

    @field_validator("matchers")
    @classmethod
    def _parse(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_matcher(text)
        return value


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    route: RouteSpec


@dataclass
class Route:
    name: str
    matchers: list[Matcher]
    runbook: str | None
    level: Level | None
    parameters: dict[str, Any]
    children: list[Route] = field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True)
class Decision:
    route: str
    runbook: str | None
    level: Level | None
    parameters: dict[str, Any]


class RoutesInvalid(ConfigInvalid, ValueError):
    """The routes file has problems, or a route names a runbook or template that cannot work."""


def _build(spec: RouteSpec, parent: Route | None, path: str) -> Route:
    matchers = [parse_matcher(t) for t in spec.matchers]
    matchers += [Matcher(k, "=", v) for k, v in spec.match.items()]
    matchers += [parse_matcher(f"{k}=~{json.dumps(v)}") for k, v in spec.match_re.items()]
    route = Route(
        name=spec.name or (path if parent else "default"),
        matchers=matchers,
        runbook=spec.runbook if spec.runbook is not None or parent is None else parent.runbook,
        level=spec.level or (parent.level if parent else None),
        parameters={**(parent.parameters if parent else {}), **spec.parameters},
    )
    route.children = [_build(child, route, f"{path}.routes[{i}]") for i, child in enumerate(spec.routes)]
    return route


def load_routes(path: Path) -> Route:
    spec = load_model(path, RoutesFile, RoutesInvalid)[0].route
    root = _build(spec, None, "route")
    _check_runbooks(root, path)
    return root


def _check_runbooks(route: Route, path: Path) -> None:
    if route.runbook is not None:
        try:
            runbook = load_runbook(route.runbook).runbook
        except Exception as exc:
            raise RoutesInvalid(f"{path}: route {route.name!r}: runbook {route.runbook!r}: {exc}") from exc
        for name, value in route.parameters.items():
            declared = runbook.parameters.get(name)
            if declared is not None and declared.format == "url" and isinstance(value, str) and not is_template(value):
                problem = url_problem(value, runbook.allowed_hosts)
                if problem:  # a fixed URL: wrong for every alert, so said now rather than answered 422 each time
                    raise RoutesInvalid(f"{path}: route {route.name!r}: parameter {name}: URL {problem}")
    for template in _strings(route.parameters):
        try:
            ENV.parse(template)
        except Exception as exc:
            raise RoutesInvalid(f"{path}: route {route.name!r}: parameter template {template!r}: {exc}") from exc
    for child in route.children:
        _check_runbooks(child, path)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def decide(root: Route, labels: dict[str, str], annotations: dict[str, str] | None = None) -> Decision:
    """The deepest matching route, Alertmanager-style; its parameters rendered with the alert's labels."""
    route = root
    while True:
        child = next((c for c in route.children if c.matches(labels)), None)
        if child is None:
            break
        route = child
    parameters = render_value(route.parameters, {"labels": labels, "annotations": annotations or {}})
    return Decision(route=route.name, runbook=route.runbook, level=route.level, parameters=parameters)
