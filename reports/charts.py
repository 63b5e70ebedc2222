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
import re
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


#: The axis's unit words by report language (a Chinese chart says 秒, not s).
UNIT_WORDS = {"en": {"s": "s", "min": "min", "h": "h"}, "zh": {"s": "秒", "min": "分", "h": "小时"}}


def _tick_label(seconds: float, span: float | None = None, lang: str = "en") -> str:
    """`seconds` in the unit of the axis's span (of `seconds` itself where no span is given)."""
    unit, name = _unit(seconds if span is None else span)
    return f"{round(seconds / unit, 6):g} {UNIT_WORDS.get(lang, UNIT_WORDS['en'])[name]}"


class Axis:
    """Seconds since `origin` → x pixels."""

    def __init__(self, origin: datetime, end_seconds: float, lang: str = "en"):
        self.origin = origin
        self.span = max(end_seconds, 1.0)
        self.left, self.right = LABEL, WIDTH - RIGHT
        self.lang = lang

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
                         f'{_e(_tick_label(value, self.span, self.lang))}</text>')
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


def _width(text: str) -> int:
    """Rough width in Latin characters: a CJK character is about two."""
    return sum(2 if ord(ch) >= 0x2E80 else 1 for ch in text)


#: Widest label line in Latin characters at 11 px that surely fits the label column (LABEL px, ~6 px a character).
LABEL_CHARS = 40


def _label_lines(text: str, limit: int = LABEL_CHARS) -> list[str]:
    """A step title in at most two lines that fit the label column, broken between words (Chinese between
    characters) where the two lines come out most even, so no line is a lone word; only a title longer than
    two lines is cut, with an ellipsis (the full title is the bar's tooltip)."""
    if _width(text) <= limit:
        return [text]
    cjk = any(ord(ch) >= 0x2E80 for ch in text)
    tokens = list(text) if cjk else text.split(" ")
    glue = "" if cjk else " "
    splits: list[tuple[str, str]] = [(glue.join(tokens[:i]), glue.join(tokens[i:])) for i in range(1, len(tokens))]
    fitting = [pair for pair in splits if _width(pair[0]) <= limit and _width(pair[1]) <= limit]
    if fitting:
        line, rest = min(fitting, key=lambda pair: max(_width(pair[0]), _width(pair[1])))
        return [line, rest]
    # Too long for two lines: the first line as full as it goes, the rest cut.
    short = [pair for pair in splits if _width(pair[0]) <= limit]
    first = max(short, key=lambda pair: _width(pair[0])) if short else (text[:limit], text[limit:])
    rest = first[1]
    while _width(rest) > limit - 1:
        rest = rest[:-1]
    return [first[0], rest.rstrip() + "…"]


def gantt(*, origin: datetime, end: datetime, steps: list[dict[str, Any]], milestones: list[tuple[str, str, datetime]],
          pages: list[tuple[datetime, str, str]], acks: list[tuple[datetime, str]], labels: dict[str, str],
          lang: str = "en") -> str:
    """steps: {title, status, started, ended}; milestones: (key, label, at); pages: (sent, who, status);
    acks: (at, who); lang: the report's language (the typeface, FONTS)."""
    axis = Axis(origin, (end - origin).total_seconds(), lang)
    rows = [s for s in steps if s.get("started")]
    lines = [_label_lines(step["title"]) for step in rows]
    top = 36  # two rows of milestone labels above the plot, so labels of close milestones do not overlap
    heights = [ROW + 11 * (len(parts) - 1) for parts in lines]  # a title on two lines gets a taller row
    plot = sum(heights) + 2 * ROW
    height = top + plot + 40
    body: list[str] = []
    bottom = top + plot
    body += axis.ticks(top - 4, bottom, labels["seconds"])
    y = float(top)
    for step, parts, row_height in zip(rows, lines, heights, strict=True):
        x1 = axis.at(step["started"]) or axis.left
        x2 = axis.at(step.get("ended") or step["started"]) or x1
        colour = COLOURS.get(step["status"], "#9a6700")
        spans = "".join(f'<tspan x="{LABEL - 6}" dy="{0 if i == 0 else 11}">{_e(part)}</tspan>'
                        for i, part in enumerate(parts))
        body.append(f'<text x="{LABEL - 6}" y="{y + 12}" class="lbl" text-anchor="end">{spans}</text>')
        width = max(x2 - x1, 2.0)
        bar_y = y + 3 + (row_height - ROW) / 2
        body.append(f'<rect x="{x1:.1f}" y="{bar_y:.1f}" width="{width:.1f}" height="{ROW - 6}" rx="2" '
                    f'fill="{colour}"><title>{_e(step["title"])}: {_e(step["status_word"])}</title></rect>')
        y += row_height
    y_pages = top + sum(heights)
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
    placed: list[list[tuple[float, float]]] = [[], []]  # label extents already drawn, per label row
    for key, label, at in milestones:
        x = axis.at(at)
        if x is None:
            continue
        colour = MILESTONE_COLOURS.get(key, "#57606a")
        anchor = "end" if x > WIDTH - 120 else "start"
        extent = 6.5 * _width(label) + 4  # 10 px text
        span = (x - extent, x) if anchor == "end" else (x, x + extent)
        # The first label row where it overlaps no other label (close milestones: the second row).
        row = next((i for i, taken in enumerate(placed) if all(span[1] < a or span[0] > b for a, b in taken)), 1)
        placed[row].append(span)
        label_y = top - 20 + 12 * row
        body.append(f'<line x1="{x:.1f}" y1="{label_y + 2}" x2="{x:.1f}" y2="{bottom}" stroke="{colour}" '
                    f'stroke-dasharray="4 3" stroke-width="1.5"/>')
        body.append(f'<text x="{x + (-3 if anchor == "end" else 3):.1f}" y="{label_y}" '
                    f'class="ms" fill="{colour}" text-anchor="{anchor}">{_e(label)}</text>')
    return _svg(height + 6, body, labels["title"], lang)


#: A condition's operators as a reader writes them.
OPERATORS = {">=": "≥", "<=": "≤", "==": "=", "!=": "≠"}
#: Height of one figure's panel in the watch chart, and the gap between panels.
PANEL = 58
PANEL_GAP = 12


def watch_chart(*, origin: datetime, end: datetime, series: Any, labels: dict[str, str], lang: str = "en") -> str:
    """series: reports.metrics.Series. One panel per numeric figure the condition compares (and the queue),
    each on its own scale (its range printed beside it) so lines of different units never overlap, with the
    bound as a dashed line; under them a strip of whether the condition held at each check."""
    samples = [s for s in series.samples if s.get("at")]
    times: list[float | None] = []
    for sample in samples:
        try:
            times.append((datetime.fromisoformat(sample["at"]) - origin).total_seconds())
        except ValueError:
            times.append(None)
    axis = Axis(origin, max((end - origin).total_seconds(), max([t for t in times if t is not None], default=1)),
                lang)
    fields = list(dict.fromkeys([b["field"] for b in series.bounds]
                                + [k for s in samples for k in s.get("values", {})]))
    fields = [f for f in fields if any(f in s.get("values", {}) for s in samples)]
    bound_fields = {b.get("other_field") for b in series.bounds if b.get("other_field")}
    plotted = [f for f in fields if f not in bound_fields][:3]
    extra: list[dict[str, Any]] = []
    if not plotted and any(isinstance(s.get("status"), int) for s in samples):
        # A health check compares no figure (`status == 200 and json.status == 'ok'`): plot the HTTP status
        # each check got, so the chart shows what was watched rather than an empty plot.
        name = labels.get("http_status", "HTTP status")
        samples = [{**s, "values": {**s.get("values", {}), name: s["status"]}}
                   if isinstance(s.get("status"), int) else s for s in samples]
        plotted = [name]
        wanted = _HTTP_STATUS.search(series.condition)
        if wanted:
            extra.append({"field": name, "op": wanted.group(1), "value": float(wanted.group(2))})
    top = 10
    strip = top + max(1, len(plotted)) * (PANEL + PANEL_GAP)
    bottom = strip + 16
    body: list[str] = axis.ticks(top, bottom, labels["seconds"])
    for index, name in enumerate(plotted):
        panel_top = top + index * (PANEL + PANEL_GAP)
        panel_bottom = panel_top + PANEL
        values = [s["values"].get(name) for s in samples]
        bounds = [b for b in [*series.bounds, *extra] if b["field"] == name]
        refs: list[float] = []
        for bound in bounds:
            if bound.get("value") is not None:
                refs.append(float(bound["value"]))
            elif bound.get("other_field"):
                refs += [s["values"][bound["other_field"]] for s in samples
                         if s["values"].get(bound["other_field"]) is not None]
        known = [v for v in values if v is not None] + refs
        if not known:
            continue
        low, high = min(0.0, min(known)), max(known) * 1.1 or 1.0
        colour = LINE_COLOURS[index % len(LINE_COLOURS)]

        def y(value: float, low: float = low, high: float = high, panel_bottom: float = panel_bottom) -> float:
            return panel_bottom - PANEL * (value - low) / (high - low if high > low else 1.0)

        body.append(f'<line x1="{axis.left}" y1="{panel_bottom}" x2="{axis.right}" y2="{panel_bottom}" class="grid"/>')
        # The panel's scale, at its left edge.
        body.append(f'<text x="{axis.left - 4}" y="{panel_top + 8}" class="tick" text-anchor="end">{_e(_num(high))}</text>')
        body.append(f'<text x="{axis.left - 4}" y="{panel_bottom}" class="tick" text-anchor="end">{_e(_num(low))}</text>')
        shown = [v for v in values if v is not None]
        last = _num(shown[-1]) if shown else "—"
        body.append(f'<rect x="8" y="{panel_top + PANEL / 2 - 8:.1f}" width="10" height="10" fill="{colour}"/>')
        body.append(f'<text x="22" y="{panel_top + PANEL / 2 + 1:.1f}" class="lbl">{_e(_clip(name, 30))} '
                    f'(→ {_e(last)})</text>')
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
            body.append(f'<text x="{axis.left + 4}" y="{ry - 3:.1f}" class="tick">'
                        f'{_e(labels["threshold"])} {_e(OPERATORS.get(bound["op"], bound["op"]))} '
                        f'{_e(_num(float(ref)))}</text>')
        points = [(axis.x(t), y(v)) for t, v in zip(times, values, strict=True) if t is not None and v is not None]
        if points:
            path = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(points))
            body.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
            for px, py in points[:: max(1, len(points) // 60)]:
                body.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2" fill="{colour}"/>')
    body.append(f'<text x="{LABEL - 6}" y="{strip + 10}" class="lbl" text-anchor="end">{_e(labels["holds"])}</text>')
    for index, (t, sample) in enumerate(zip(times, samples, strict=True)):
        if t is None:
            continue
        x = axis.x(t)
        following = next((axis.x(u) for u in times[index + 1:] if u is not None), x + 4)
        colour = COLOURS["succeeded"] if sample.get("holds") else COLOURS["failed"]
        body.append(f'<rect x="{x:.1f}" y="{strip}" width="{max(following - x, 2):.1f}" height="12" fill="{colour}"/>')
    return _svg(bottom + 34, body, labels["title"], lang)


#: `status == 200` in a wait_until condition (the HTTP status, not `json.status`).
_HTTP_STATUS = re.compile(r"(?<![\w.])status\s*(==|!=|>=|<=|<|>)\s*(\d{3})\b")


def _num(value: float) -> str:
    if abs(value) < 1 and value != 0:
        return f"{value:.3g}"
    return f"{value:,.1f}".rstrip("0").rstrip(".")
