"""Small HTML/CSS/SVG helpers for self-contained pages (``seedlock report``).

No template engine, no charting library, no CDN: the page is one file that
opens offline and under a strict Content-Security-Policy. The charts are
inline SVG made here (see docs/report.md for why): a few hundred lines we
control, versus a vendored JavaScript library that would grow the wheel and
the page and need updates. Used by every page the package writes
(``seedlock report`` and the probe's ``--html``): nothing here knows about
stores or drift.

Rules the helpers enforce, learned from an earlier page: every number a chart
shows is also in a visible table (never only in a ``title=`` tooltip), every
chart says which direction is better, and every page says when it was made.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")

CSS = """
:root { color-scheme: light; --fg: #1b1b1b; --muted: #5a5a5a; --line: #d9d9d9; --bg2: #f5f6f8; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; max-width: 1100px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 6px; border-bottom: 1px solid var(--line);
     padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 4px; }
p.note, .muted { color: var(--muted); } p.note { margin: 4px 0 8px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; display: block;
        max-width: 100%; overflow-x: auto; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: left;
         vertical-align: top; }
th { background: var(--bg2); font-weight: 600; } td.num, th.num { text-align: right;
     font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
              font-size: 12px; }
.verdict { border-left: 6px solid; padding: 8px 14px; margin: 12px 0; background: var(--bg2); }
.verdict strong { font-size: 16px; }
.v-good { border-color: #009E73; } .v-bad { border-color: #D55E00; }
.v-unknown { border-color: #999; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 2px 0 6px; font-size: 13px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 5px;
          vertical-align: -1px; }
svg.chart { display: block; max-width: 100%; height: auto; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #333; }
svg.chart .grid { stroke: #e6e6e6; } svg.chart .axis { stroke: #888; }
.filters { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center; margin: 6px 0; }
.filters label { font-size: 13px; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 12px; margin: 6px 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
pre.answer { white-space: pre-wrap; margin: 0; font-size: 12px; max-width: 60em; }
figure { margin: 12px 0; }
"""


class Raw(str):
    """HTML that is already escaped (a cell or fragment built by these helpers)."""


def esc(value: object) -> str:
    """Text for HTML (a `Raw` value is left as it is)."""
    if isinstance(value, Raw):
        return value
    return html.escape("" if value is None else str(value), quote=True)


def iso(ts: float | None) -> str:
    """Epoch seconds as an ISO 8601 UTC time to the second (``-`` for None)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def percent(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f}%"


def attrs(values: Mapping[str, object]) -> str:
    """`` name="value"`` pairs, escaped; None values left out."""
    return "".join(f' {k}="{esc(v)}"' for k, v in values.items() if v is not None)


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Iterable[int] = (),
    row_attrs: Sequence[Mapping[str, object]] | None = None,
    table_id: str | None = None,
) -> str:
    """A table; the ``numeric`` columns (indexes) are right-aligned."""
    num = set(numeric)
    head = "".join(
        f'<th{" class=num" if i in num else ""} scope="col">{esc(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = []
    for r, row in enumerate(rows):
        cells = "".join(
            f"<td{' class=num' if i in num else ''}>{esc(c)}</td>" for i, c in enumerate(row)
        )
        extra = attrs(row_attrs[r]) if row_attrs is not None else ""
        body.append(f"<tr{extra}>{cells}</tr>")
    return (
        f"<table{attrs({'id': table_id})}><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def facts(items: Iterable[tuple[str, object]]) -> str:
    """A two-column list of labelled facts."""
    return (
        '<dl class="facts">'
        + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
        + "</dl>"
    )


def legend(labels: Sequence[str]) -> str:
    """The colour of each series, as visible text (series ``i`` is ``PALETTE[i]``)."""
    items = "".join(
        f'<span><span class="swatch" style="background:{color(i)}"></span>{esc(label)}</span>'
        for i, label in enumerate(labels)
    )
    return f'<div class="legend">{items}</div>'


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def page(title: str, body: str, *, generated_at: float, script: str = "") -> str:
    """A complete page. The Content-Security-Policy forbids every network
    fetch: the page cannot depend on anything it does not carry."""
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generated" content="{iso(generated_at)}">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
        + (f"<script>{script}</script>\n" if script else "")
        + "</body></html>\n"
    )


# -- charts --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float
    low: float | None = None
    """Lower end of an interval drawn around ``y`` (with ``high``)."""
    high: float | None = None
    label: str = ""
    """Shown on hover only as a convenience: the same data is in a table."""


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    points: Sequence[Point] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Frame:
    """The plot area of a chart and its scales."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = 760
    height: int = 240
    left: int = 56
    right: int = 36  # room for the last time label
    top: int = 12
    bottom: int = 40

    def sx(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (x - self.x0) / span * (self.width - self.left - self.right)

    def sy(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return (
            self.height
            - self.bottom
            - (y - self.y0) / span * (self.height - self.top - self.bottom)
        )


def time_ticks(lo: float, hi: float, count: int = 6) -> list[tuple[float, str]]:
    """About ``count`` round UTC times between ``lo`` and ``hi``, labelled."""
    steps = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
             7 * 86400, 30 * 86400, 365 * 86400)  # fmt: skip
    span = max(hi - lo, 1.0)
    step = next(
        (s for s in steps if span / s <= count), steps[-1] * math.ceil(span / steps[-1] / count)
    )
    fmt = "%H:%M:%S" if step < 60 else "%H:%M" if step < 86400 else "%Y-%m-%d"
    if step < 86400 and span >= 86400:
        fmt = "%m-%d %H:%M"
    first = math.ceil(lo / step) * step
    return [
        (t, datetime.fromtimestamp(t, UTC).strftime(fmt))
        for t in (first + i * step for i in range(int((hi - first) // step) + 1))
    ]


def _axes(frame: Frame, y_ticks: Sequence[tuple[float, str]], x_label: str, y_label: str) -> str:
    out = []
    for y, text in y_ticks:
        sy = frame.sy(y)
        out.append(
            f'<line class="grid" x1="{frame.left}" x2="{frame.width - frame.right}" '
            f'y1="{sy:.1f}" y2="{sy:.1f}"/>'
            f'<text x="{frame.left - 6}" y="{sy + 4:.1f}" text-anchor="end">{esc(text)}</text>'
        )
    base = frame.height - frame.bottom
    for t, text in time_ticks(frame.x0, frame.x1):
        sx = frame.sx(t)
        out.append(
            f'<line class="axis" x1="{sx:.1f}" x2="{sx:.1f}" y1="{base}" y2="{base + 4}"/>'
            f'<text x="{sx:.1f}" y="{base + 16}" text-anchor="middle">{esc(text)}</text>'
        )
    out.append(
        f'<line class="axis" x1="{frame.left}" x2="{frame.width - frame.right}" '
        f'y1="{base}" y2="{base}"/>'
        f'<text x="{(frame.left + frame.width - frame.right) / 2:.0f}" y="{frame.height - 4}" '
        f'text-anchor="middle">{esc(x_label)}</text>'
        f'<text transform="translate(12 {(frame.top + base) / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{esc(y_label)}</text>'
    )
    return "".join(out)


def _svg(frame: Frame, inner: str, label: str, kind: str) -> str:
    return (
        f'<svg class="chart" data-chart="{esc(kind)}" role="img" aria-label="{esc(label)}" '
        f'viewBox="0 0 {frame.width} {frame.height}" width="{frame.width}" '
        f'height="{frame.height}" xmlns="http://www.w3.org/2000/svg">{inner}</svg>'
    )


def rate_chart(series: Sequence[Series], *, x0: float, x1: float, label: str) -> str:
    """Rates in [0, 1] over time, higher is better, one line per series; each
    point is a ``circle.pt`` with its interval as a vertical bar."""
    frame = Frame(x0, x1, 0.0, 1.0)
    inner = [_axes(frame, [(v / 4, f"{v * 25}%") for v in range(5)], "time (UTC)",
                   "rate (higher is better)")]  # fmt: skip
    for i, s in enumerate(series):
        c = color(i)
        pts = sorted(s.points, key=lambda p: p.x)
        if len(pts) > 1:
            path = " ".join(f"{frame.sx(p.x):.1f},{frame.sy(p.y):.1f}" for p in pts)
            inner.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{path}"/>')
        for p in pts:
            sx, sy = frame.sx(p.x), frame.sy(p.y)
            if p.low is not None and p.high is not None:
                inner.append(
                    f'<line stroke="{c}" stroke-opacity="0.45" stroke-width="3" x1="{sx:.1f}" '
                    f'x2="{sx:.1f}" y1="{frame.sy(p.low):.1f}" y2="{frame.sy(p.high):.1f}"/>'
                )
            inner.append(
                f'<circle class="pt" data-series="{i}" cx="{sx:.1f}" cy="{sy:.1f}" r="3.5" '
                f'fill="{c}"><title>{esc(p.label)}</title></circle>'
            )
    return _svg(frame, "".join(inner), label, "rate")


def count_chart(
    series: Sequence[Series], *, x0: float, x1: float, width: float, label: str, y_label: str
) -> str:
    """Counts per time bucket as bars (series side by side within a bucket)."""
    top = max((p.y for s in series for p in s.points), default=0.0)
    ymax = _nice_ceiling(top)
    frame = Frame(x0, x1, 0.0, ymax, height=160)
    ticks = [(ymax * v / 4, f"{ymax * v / 4:g}") for v in range(5)]
    inner = [_axes(frame, ticks, "time (UTC)", y_label)]
    slot = (frame.sx(x0 + width) - frame.sx(x0)) * 0.8 / max(len(series), 1)
    for i, s in enumerate(series):
        for p in s.points:
            if p.y <= 0:
                continue
            sx = frame.sx(p.x) + i * slot
            top_y = frame.sy(p.y)
            inner.append(
                f'<rect class="bar" data-series="{i}" x="{sx:.1f}" y="{top_y:.1f}" '
                f'width="{max(slot, 1.5):.1f}" height="{frame.sy(0) - top_y:.1f}" '
                f'fill="{color(i)}"><title>{esc(p.label)}</title></rect>'
            )
    return _svg(frame, "".join(inner), label, "count")


def _nice_ceiling(value: float) -> float:
    """1, 2, 4, 5 or 10 times a power of ten, at least ``value`` (4 for 0)."""
    if value <= 4:
        return 4.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(m * power for m in (1, 2, 4, 5, 10) if m * power >= value))


@dataclass(frozen=True, slots=True)
class Lane:
    label: str
    start: float
    end: float


def lanes_chart(lanes: Sequence[Lane], *, x0: float, x1: float, label: str) -> str:
    """One horizontal bar per lane from its start to its end, labelled in
    visible text; a dashed line where each lane after the first begins."""
    row = 34
    frame = Frame(x0, x1, 0.0, 1.0, height=56 + row * len(lanes), left=40)
    inner = [_axes(frame, [], "time (UTC)", "")]
    for i, lane in enumerate(lanes):
        y = frame.top + i * row
        a, b = frame.sx(lane.start), frame.sx(lane.end)
        inner.append(
            f'<rect class="lane" x="{a:.1f}" y="{y + 2}" width="{max(b - a, 3):.1f}" '
            f'height="14" fill="{color(i)}" fill-opacity="0.8"/>'
        )
        # Labels run right from a lane in the left half, left from its end otherwise.
        if a < frame.width / 2:
            inner.append(f'<text x="{a:.1f}" y="{y + 29}">{esc(lane.label)}</text>')
        else:
            inner.append(
                f'<text x="{b:.1f}" y="{y + 29}" text-anchor="end">{esc(lane.label)}</text>'
            )
        if i:
            inner.append(
                f'<line stroke="#444" stroke-dasharray="3 3" x1="{a:.1f}" x2="{a:.1f}" '
                f'y1="{frame.top}" y2="{frame.height - frame.bottom}"/>'
            )
    return _svg(frame, "".join(inner), label, "lanes")


# -- horizontal bars (the probe's pages) ------------------------------------------
@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: ``value`` in [0, 1] sets its length; ``text`` is printed beside it."""

    label: str
    value: float
    text: str
    series: int = 0  # colour index: bars of one series share a colour


def bar_chart(title: str, direction: str, bars: Sequence[Bar], legend: Sequence[str] = ()) -> str:
    """A standalone SVG bar chart.

    ``direction`` says how to read it (e.g. "higher is better: 100% = every
    run identical") and is drawn in the chart itself, so a copied image keeps it.
    """
    label_w, bar_w, row_h, text_w = 230, 300, 18, 160
    top = 36
    height = top + (len(bars) + len(legend)) * row_h + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{label_w + bar_w + text_w}" '
        f'height="{height}" role="img" aria-label="{esc(title)}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="0" y="14" font-weight="bold">{esc(title)}</text>',
        f'<text x="0" y="30" fill="#444">{esc(direction)}</text>',
    ]
    y = top
    for bar in bars:
        v = min(1.0, max(0.0, bar.value))
        w = max(1, round(v * bar_w))
        fill = color(bar.series)
        parts.append(
            f'<text x="0" y="{y + row_h - 5}">{esc(bar.label)}</text>'
            f'<rect x="{label_w}" y="{y + 1}" width="{w}" height="{row_h - 4}" fill="{fill}"/>'
            f'<text x="{label_w + w + 4}" y="{y + row_h - 5}">{esc(bar.text)}</text>'
        )
        y += row_h
    for i, name in enumerate(legend):  # one line each: labels can be long
        parts.append(
            f'<rect x="0" y="{y + 4}" width="10" height="10" fill="{color(i)}"/>'
            f'<text x="14" y="{y + 13}">{esc(name)}</text>'
        )
        y += row_h
    parts.append("</svg>")
    return "".join(parts)
