"""Self-contained HTML pieces shared by the probe's reports: one page shell
(inline CSS, no external assets) and a horizontal bar chart (inline SVG)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

STYLE = (
    "body{font-family:sans-serif;max-width:64em;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
    "thead th{background:#f3f3f3}code{font-size:.9em}"
    "pre.answer{white-space:pre-wrap;margin:0;font-size:.9em;max-width:40em}"
    ".verdict{font-size:1.1em;font-weight:bold;padding:.5em;background:#f3f7ff}"
    "figure{margin:1em 0}figcaption{font-size:.9em;color:#444}"
)

PALETTE = ("#2b7bd9", "#d9822b", "#3a9d5d", "#9b59b6", "#c0392b", "#7f8c8d")


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
    esc = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + text_w}" '
        f'height="{height}" role="img" aria-label="{esc(title)}" '
        'font-family="sans-serif" font-size="12">',
        f'<text x="0" y="14" font-weight="bold">{esc(title)}</text>',
        f'<text x="0" y="30" fill="#444">{esc(direction)}</text>',
    ]
    y = top
    for bar in bars:
        v = min(1.0, max(0.0, bar.value))
        w = max(1, round(v * bar_w))
        color = PALETTE[bar.series % len(PALETTE)]
        parts.append(
            f'<text x="0" y="{y + row_h - 5}">{esc(bar.label)}</text>'
            f'<rect x="{label_w}" y="{y + 1}" width="{w}" height="{row_h - 4}" fill="{color}"/>'
            f'<text x="{label_w + w + 4}" y="{y + row_h - 5}">{esc(bar.text)}</text>'
        )
        y += row_h
    for i, name in enumerate(legend):  # one line each: labels can be long
        color = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<rect x="0" y="{y + 4}" width="10" height="10" fill="{color}"/>'
            f'<text x="14" y="{y + 13}">{esc(name)}</text>'
        )
        y += row_h
    parts.append("</svg>")
    return "".join(parts)


def page(title: str, body: str) -> str:
    """A complete HTML document around ``body``."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def table(head: Sequence[str], rows: Sequence[Sequence[str]], *, raw_cells: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw_cells`` (already HTML)."""
    esc = html.escape
    cell = (lambda c: c) if raw_cells else esc
    thead = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table>"
