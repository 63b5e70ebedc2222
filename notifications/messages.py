"""Render notification messages from the zh/en templates in notifications/templates/.

Templates are compiled by the project's immutable sandbox (runbooks.templating.ENV)
once, from files in the repository; what an alert or a runbook says reaches them
only as values, so a `{{ … }}` inside alert text is printed, never evaluated.
Channels that render HTML get the text HTML-escaped by notifications.delivery.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Template
from pydantic import BaseModel

from runbooks.templating import ENV

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
EVENTS = ("triggered", "escalated", "status_update", "approval_needed", "resolved", "customer_notice",
          "run_failed")
LOCALES = ("zh", "en")


class Message(BaseModel):
    title: str
    body: str


class _Compiled(BaseModel, arbitrary_types_allowed=True):
    events: dict[str, tuple[Template, Template]]
    footer: Template


@lru_cache(maxsize=4)
def _templates(locale: str) -> _Compiled:
    path = TEMPLATES_DIR / f"{locale}.yaml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    missing = [e for e in EVENTS if e not in spec.get("events", {})]
    if missing:
        raise RuntimeError(f"{path}: no template for event(s) {missing}")
    return _Compiled(events={name: (ENV.from_string(t["title"]), ENV.from_string(t["body"]))
                             for name, t in spec["events"].items()},
                     footer=ENV.from_string(spec["footer"]))


def render(event: str, locale: str, context: dict[str, Any]) -> Message:
    if event not in EVENTS:
        raise ValueError(f"unknown message event {event!r}; expected one of {', '.join(EVENTS)}")
    compiled = _templates(locale if locale in LOCALES else "en")
    title_template, body_template = compiled.events[event]
    context = {"details": {}, **context}  # structured facts of some events (run_failed's checklist); {} for the rest
    title = " ".join(title_template.render(**context).split())  # one line
    body = body_template.render(**context).strip() + "\n\n" + compiled.footer.render(**context).strip()
    return Message(title=title, body=body)
