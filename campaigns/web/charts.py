"""Charts drawn on the server as SVG: no script, nothing fetched, allowed by the staff pages'
Content-Security-Policy (colours come from classes in staff.css, never style attributes).

Each chart is an image to assistive technology (`role="img"`, a title and a description that
says what it shows) and sits beside the table of the same figures, which is what a screen
reader reads. Each bar carries its own title (a tooltip with the exact figure).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

#: The drawing's own units (the SVG scales to its box).
WIDTH = 720
COLUMNS_HEIGHT = 240
ROW = 24
LABEL = 230


@dataclass(frozen=True)
class Series:
    name: str
    css: str  # a class of staff.css (s1 to s6) that colours it
    values: Sequence[float]


def legend(series: Sequence[Series]) -> Markup:
    items = "".join(
        f'<li><span class="key {escape(s.css)}" aria-hidden="true"></span>{escape(s.name)}</li>'
        for s in series
    )
    return Markup(f'<ul class="legend">{items}</ul>')  # noqa: S704 - every part escaped


def _open(ident: str, title: str, description: str, height: float) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        f'aria-labelledby="{escape(ident)}-t {escape(ident)}-d" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{escape(ident)}-t">{escape(title)}</title>'
        f'<desc id="{escape(ident)}-d">{escape(description)}</desc>'
    )


def _scale(top: float) -> float:
    """A round number at or above `top` for the axis (1, 2 or 5 times a power of ten)."""
    if top <= 0:
        return 1.0
    power = 1.0
    while power * 10 <= top:
        power *= 10
    for step in (1, 2, 5, 10):
        if step * power >= top:
            return step * power
    return 10 * power


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def columns(
    ident: str, title: str, description: str, labels: Sequence[str], series: Sequence[Series]
) -> Markup:
    """Stacked columns, one a label (a day, week or month), series stacked bottom up."""
    left, bottom, top_pad = 56.0, 34.0, 8.0
    plot_w, plot_h = WIDTH - left - 8, COLUMNS_HEIGHT - bottom - top_pad
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = _scale(max(totals, default=0))
    parts = [_open(ident, title, description, COLUMNS_HEIGHT)]
    for tick in (0.0, top / 2, top):
        y = top_pad + plot_h - plot_h * tick / top
        parts.append(
            f'<line class="grid" x1="{left}" x2="{WIDTH - 8}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_number(tick)}</text>"
        )
    slot = plot_w / max(len(labels), 1)
    every = max(1, -(-len(labels) // 8))  # at most about eight labels under the axis
    for i, label in enumerate(labels):
        x, y = left + i * slot, top_pad + plot_h
        for s in series:
            h = plot_h * s.values[i] / top
            if h > 0:
                parts.append(
                    f'<rect class="{escape(s.css)}" x="{x + slot * 0.1:.1f}" y="{y - h:.1f}" '
                    f'width="{slot * 0.8:.1f}" height="{h:.1f}"><title>{escape(label)}, '
                    f"{escape(s.name)}: {_number(s.values[i])}</title></rect>"
                )
            y -= h
        if i % every == 0:
            parts.append(
                f'<text class="tick" x="{x + slot / 2:.1f}" y="{COLUMNS_HEIGHT - 12}" '
                f'text-anchor="middle">{escape(_short(label, 14))}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value escaped above


def bars(
    ident: str, title: str, description: str, labels: Sequence[str], series: Sequence[Series]
) -> Markup:
    """Horizontal bars, one a label (a step, a route, an intent), series stacked left to right."""
    height = ROW * max(len(labels), 1) + 12
    plot_w = WIDTH - LABEL - 70
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = max(totals, default=0) or 1
    parts = [_open(ident, title, description, height)]
    for i, label in enumerate(labels):
        y = 6 + i * ROW
        parts.append(
            f'<text class="tick" x="{LABEL - 8}" y="{y + ROW * 0.62:.1f}" text-anchor="end">'
            f"{escape(_short(label, 34))}</text>"
        )
        x = float(LABEL)
        for s in series:
            w = plot_w * s.values[i] / top
            if w > 0:
                parts.append(
                    f'<rect class="{escape(s.css)}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" '
                    f'height="{ROW - 6}"><title>{escape(label)}, {escape(s.name)}: '
                    f"{_number(s.values[i])}</title></rect>"
                )
            x += w
        parts.append(
            f'<text class="value" x="{x + 6:.1f}" y="{y + ROW * 0.62:.1f}">'
            f"{_number(totals[i])}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value escaped above


def _short(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"
