"""Benchmark: css-inline vs premailer on the S_/M_/L_ templates of ../shared/corpus/templates.

Run from the repo root: ``scripts/uv run python services/transformer/bench_inline.py [--repeat N]``.
Prints the median milliseconds per document for each engine and premailer/css-inline as the speedup.
Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

from postwire.testing.corpus import corpus_dir
from postwire.transformer.inline import CSS_INLINE, PREMAILER, inline_html

TEMPLATES = corpus_dir() / "templates"


def median_ms(html: str, engine: str, repeat: int) -> float:
    inline_html(html, engine=engine)  # warm caches (parsed CSS, imports) as a running service would be
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        inline_html(html, engine=engine)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"{'template':48} {'KB':>6} {'css-inline ms':>14} {'premailer ms':>13} {'speedup':>8}")
    for path in sorted(p for p in TEMPLATES.glob("[SML]_*.html")):
        html = path.read_text(encoding="utf-8")
        fast = median_ms(html, CSS_INLINE, args.repeat)
        slow = median_ms(html, PREMAILER, args.repeat)
        kb = len(html.encode()) / 1024
        print(f"{path.name:48} {kb:6.1f} {fast:14.2f} {slow:13.2f} {slow / fast:7.1f}x")


if __name__ == "__main__":
    main()
