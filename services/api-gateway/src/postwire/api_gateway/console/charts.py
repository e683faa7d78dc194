"""Charts as SVG written on the server: no script, no library, nothing fetched (the console's CSP
allows none of it), readable without JavaScript and by a screen reader (a title and a table beside)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Final

WIDTH: Final = 720
HEIGHT: Final = 220
PAD: Final = 32
# the series drawn and their colours (CSS classes in console.css would not reach SVG presentation
# attributes under a strict CSP as reliably: the colours are attributes)
SERIES: Final = (("accepted", "#64748b"), ("delivered", "#16a34a"), ("deferred", "#ca8a04"),
                 ("failed", "#dc2626"), ("bounced", "#9333ea"), ("opened", "#2563eb"),
                 ("clicked", "#0891b2"), ("complained", "#be123c"))


def volume(days: Sequence[Mapping[str, object]]) -> str:
    """A line per event type over the days of ``days`` (rows of postwire.db.events_query.daily_counts)."""
    top = max([int(str(d.get(name, 0))) for d in days for name, _ in SERIES] + [1])
    n = max(len(days), 1)
    step = (WIDTH - 2 * PAD) / max(n - 1, 1)

    def point(i: int, value: int) -> str:
        x = PAD + i * step
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * value / top
        return f"{x:.1f},{y:.1f}"

    lines = []
    for name, colour in SERIES:
        points = " ".join(point(i, int(str(d.get(name, 0)))) for i, d in enumerate(days))
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
                     f"<title>{escape(name)}</title></polyline>")
    labels = []
    for i, d in enumerate(days):
        if n <= 10 or i % max(1, n // 7) == 0:
            x = PAD + i * step
            labels.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" font-size="10" text-anchor="middle">'
                          f"{escape(str(d.get('day', ''))[5:])}</text>")
    axis = (f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#94a3b8"/>'
            f'<text x="4" y="{PAD}" font-size="10">{top:,}</text>')
    return (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="Events per day" '
            f'xmlns="http://www.w3.org/2000/svg"><title>Events per day</title>{axis}{"".join(lines)}'
            f'{"".join(labels)}</svg>')
