"""Inline SVG charts for the HTML report: no JavaScript, no external assets, printable.

- `gantt`: every step that ran as a bar from its first attempt to its outcome, coloured by result;
  the incident's milestones as vertical lines; pages and acknowledgements as marks on rows of their own.
- `watch_chart`: what one `wait_until` step watched (service level, queue, request rate …), each figure
  over the incident beside the bound its condition compares it with, and whether the condition held.

Both share one time axis: seconds (or minutes, hours) since detection. Every text drawn comes from
the record and is escaped here (this is markup the report marks safe).
"""
from __future__ import annotations

import html
import math
from datetime import datetime
from typing import Any

WIDTH = 960
LABEL = 270  # left column for step names
RIGHT = 20
ROW = 18
COLOURS = {"succeeded": "#1a7f37", "reused": "#4c9a5f", "failed": "#cf222e", "skipped": "#afb8c1",
           "started": "#9a6700", "approved": "#1a7f37", "rejected": "#cf222e"}
MILESTONE_COLOURS = {"acknowledged": "#8250df", "mitigated": "#0969da", "resolved": "#1a7f37", "closed": "#57606a"}
LINE_COLOURS = ["#0969da", "#bf3989", "#9a6700", "#1a7f37"]


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _unit(span: float) -> tuple[float, str]:
    """The axis's unit for a span of seconds: hours from 2 h, minutes from 2 min, else seconds."""
    if span >= 7200:
        return 3600.0, "h"
    if span >= 120:
        return 60.0, "min"
    return 1.0, "s"


def _nice_step(span: float, ticks: int = 8) -> float:
    """A tick step of 1, 2 or 5 × a power of ten in the span's own unit (so 5.5 h gets hourly ticks, not
    every 5,000 s printed as 83.3333 min), in seconds."""
    unit, _ = _unit(span)
    raw = max(span / unit, 1e-6) / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude * unit
    return 10 * magnitude * unit


def _tick_label(seconds: float, span: float | None = None) -> str:
    """`seconds` in the unit of the axis's span (of `seconds` itself where no span is given)."""
    unit, name = _unit(seconds if span is None else span)
    return f"{round(seconds / unit, 6):g} {name}"


class Axis:
    """Seconds since `origin` → x pixels."""

    def __init__(self, origin: datetime, end_seconds: float):
        self.origin = origin
        self.span = max(end_seconds, 1.0)
        self.left, self.right = LABEL, WIDTH - RIGHT

    def x(self, seconds: float) -> float:
        return self.left + (self.right - self.left) * max(0.0, min(seconds, self.span)) / self.span

    def at(self, moment: datetime | None) -> float | None:
        return None if moment is None else self.x((moment - self.origin).total_seconds())

    def ticks(self, top: float, bottom: float, label: str) -> list[str]:
        step = _nice_step(self.span)
        parts = []
        value = 0.0
        while value <= self.span + 1e-9:
            x = self.x(value)
            parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" class="grid"/>')
            parts.append(f'<text x="{x:.1f}" y="{bottom + 12}" class="tick" text-anchor="middle">'
                         f'{_e(_tick_label(value, self.span))}</text>')
            value += step
        parts.append(f'<text x="{self.right}" y="{bottom + 26}" class="tick" text-anchor="end">{_e(label)}</text>')
        return parts


#: The charts' typeface by report language. A Chinese chart names a Simplified Chinese font first: WeasyPrint
#: (reports.pdf) draws SVG text in the first family named, or else in fontconfig's default CJK font, whose
#: glyph forms may be Japanese.
FONTS = {"en": "sans-serif",
         "zh": '"Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei", sans-serif'}
STYLE = ('<style>.grid{{stroke:#eaeef2;stroke-width:1}}.tick{{font:10px {font};fill:#57606a}}'
         '.lbl{{font:11px {font};fill:#1b1f24}}.ms{{font:10px {font}}}</style>')


def _svg(height: float, body: list[str], title: str, lang: str = "en") -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {WIDTH} {height:.0f}" '
            f'width="100%" preserveAspectRatio="xMinYMin meet" aria-label="{_e(title)}"><title>{_e(title)}</title>'
            + STYLE.format(font=FONTS.get(lang, FONTS["en"])) + "".join(body) + "</svg>")


def _clip(text: str, limit: int = 42) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def gantt(*, origin: datetime, end: datetime, steps: list[dict[str, Any]], milestones: list[tuple[str, str, datetime]],
          pages: list[tuple[datetime, str, str]], acks: list[tuple[datetime, str]], labels: dict[str, str],
          lang: str = "en") -> str:
    """steps: {title, status, started, ended}; milestones: (key, label, at); pages: (sent, who, status);
    acks: (at, who); lang: the report's language (the typeface, FONTS)."""
    axis = Axis(origin, (end - origin).total_seconds())
    rows = [s for s in steps if s.get("started")]
    top = 22
    height = top + ROW * (len(rows) + 2) + 40
    body: list[str] = []
    bottom = top + ROW * (len(rows) + 2)
    body += axis.ticks(top - 4, bottom, labels["seconds"])
    for index, step in enumerate(rows):
        y = top + ROW * index
        x1 = axis.at(step["started"]) or axis.left
        x2 = axis.at(step.get("ended") or step["started"]) or x1
        colour = COLOURS.get(step["status"], "#9a6700")
        body.append(f'<text x="{LABEL - 6}" y="{y + 12}" class="lbl" text-anchor="end">{_e(_clip(step["title"]))}</text>')
        width = max(x2 - x1, 2.0)
        body.append(f'<rect x="{x1:.1f}" y="{y + 3}" width="{width:.1f}" height="{ROW - 6}" rx="2" fill="{colour}">'
                    f'<title>{_e(step["title"])}: {_e(step["status_word"])}</title></rect>')
    y_pages = top + ROW * len(rows)
    body.append(f'<text x="{LABEL - 6}" y="{y_pages + 12}" class="lbl" text-anchor="end">{_e(labels["pages"])}</text>')
    for sent, who, status in pages:
        x = axis.at(sent)
        if x is None:
            continue
        colour = COLOURS["succeeded"] if status == "delivered" else COLOURS["failed"]
        body.append(f'<path d="M{x:.1f},{y_pages + 4} l4,8 l-8,0 z" fill="{colour}"><title>{_e(who)}: '
                    f'{_e(status)}</title></path>')
    y_acks = y_pages + ROW
    body.append(f'<text x="{LABEL - 6}" y="{y_acks + 12}" class="lbl" text-anchor="end">{_e(labels["acks"])}</text>')
    for at, who in acks:
        x = axis.at(at)
        if x is not None:
            body.append(f'<path d="M{x:.1f},{y_acks + 3} l5,6 l-5,6 l-5,-6 z" fill="#8250df"><title>{_e(who)}</title></path>')
    for index, (key, label, at) in enumerate(milestones):
        x = axis.at(at)
        if x is None:
            continue
        colour = MILESTONE_COLOURS.get(key, "#57606a")
        body.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{bottom}" stroke="{colour}" '
                    f'stroke-dasharray="4 3" stroke-width="1.5"/>')
        anchor = "end" if x > WIDTH - 120 else "start"
        body.append(f'<text x="{x + (-3 if anchor == "end" else 3):.1f}" y="{top - 8 + (index % 2) * 0}" '
                    f'class="ms" fill="{colour}" text-anchor="{anchor}">{_e(label)}</text>')
    return _svg(height + 6, body, labels["title"], lang)


def watch_chart(*, origin: datetime, end: datetime, series: Any, labels: dict[str, str], height: int = 170,
                lang: str = "en") -> str:
    """series: reports.metrics.Series. One line per numeric figure the condition compares (and the queue),
    the bound as a dashed line, and a strip of whether the condition held at each check."""
    samples = [s for s in series.samples if s.get("at")]
    times: list[float | None] = []
    for sample in samples:
        try:
            times.append((datetime.fromisoformat(sample["at"]) - origin).total_seconds())
        except ValueError:
            times.append(None)
    axis = Axis(origin, max((end - origin).total_seconds(), max([t for t in times if t is not None], default=1)))
    top, plot_h = 16, height - 70
    bottom = top + plot_h
    body: list[str] = axis.ticks(top, bottom + 22, labels["seconds"])
    fields = list(dict.fromkeys([b["field"] for b in series.bounds]
                                + [k for s in samples for k in s.get("values", {})]))
    fields = [f for f in fields if any(f in s.get("values", {}) for s in samples)]
    bound_fields = {b.get("other_field") for b in series.bounds if b.get("other_field")}
    plotted = [f for f in fields if f not in bound_fields][:3]
    legend_y = top + 2
    for index, name in enumerate(plotted):
        values = [s["values"].get(name) for s in samples]
        bounds = [b for b in series.bounds if b["field"] == name]
        refs = [b["value"] for b in bounds if b.get("value") is not None]
        refs += [s["values"].get(b["other_field"]) for b in bounds if b.get("other_field") for s in samples
                 if s["values"].get(b["other_field"]) is not None]
        known = [v for v in values if v is not None] + [r for r in refs if r is not None]
        if not known:
            continue
        low, high = min(0.0, min(known)), max(known) * 1.1 or 1.0
        colour = LINE_COLOURS[index % len(LINE_COLOURS)]

        def y(value: float, low: float = low, high: float = high) -> float:
            return bottom - plot_h * (value - low) / (high - low if high > low else 1.0)

        points = [(axis.x(t), y(v)) for t, v in zip(times, values, strict=True) if t is not None and v is not None]
        if points:
            path = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(points))
            body.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for px, py in points[:: max(1, len(points) // 60)]:
                body.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2" fill="{colour}"/>')
        for bound in bounds:
            ref = bound.get("value")
            if ref is None and bound.get("other_field"):
                others = [s["values"].get(bound["other_field"]) for s in samples]
                ref = next((v for v in others if v is not None), None)
            if ref is None:
                continue
            ry = y(float(ref))
            body.append(f'<line x1="{axis.left}" y1="{ry:.1f}" x2="{axis.right}" y2="{ry:.1f}" stroke="{colour}" '
                        f'stroke-dasharray="6 4" stroke-width="1"/>')
            body.append(f'<text x="{axis.right - 2}" y="{ry - 3:.1f}" class="tick" text-anchor="end">'
                        f'{_e(labels["threshold"])} {_e(bound["op"])} {_e(_num(ref))}</text>')
        shown = [v for v in values if v is not None]
        last = _num(shown[-1]) if shown else "—"
        body.append(f'<rect x="{8}" y="{legend_y + 16 * index}" width="10" height="10" fill="{colour}"/>')
        body.append(f'<text x="{22}" y="{legend_y + 9 + 16 * index}" class="lbl">{_e(_clip(name, 30))} '
                    f'(→ {_e(last)})</text>')
    strip = bottom + 4
    body.append(f'<text x="{LABEL - 6}" y="{strip + 10}" class="lbl" text-anchor="end">{_e(labels["holds"])}</text>')
    for index, (t, sample) in enumerate(zip(times, samples, strict=True)):
        if t is None:
            continue
        x = axis.x(t)
        following = next((axis.x(u) for u in times[index + 1:] if u is not None), x + 4)
        colour = COLOURS["succeeded"] if sample.get("holds") else COLOURS["failed"]
        body.append(f'<rect x="{x:.1f}" y="{strip}" width="{max(following - x, 2):.1f}" height="12" fill="{colour}"/>')
    return _svg(height + 8, body, labels["title"], lang)


def _num(value: float) -> str:
    if abs(value) < 1 and value != 0:
        return f"{value:.3g}"
    return f"{value:,.1f}".rstrip("0").rstrip(".")
