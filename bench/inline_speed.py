"""CSS inlining speed: Postwire's inliner beside css-inline alone, on the S_/M_/L_ corpus templates.

    scripts/uv run python bench/inline_speed.py [--repeat 30]

Postwire's inliner (``inline_html``) is css-inline for the selector matching plus a CSS pre-pass and a
cascade post-pass in Python (docs/inlining.md). Per template it prints the median milliseconds per
document of css-inline alone (configured as the transformer configured it before the cascade was added)
and of ``inline_html``, both warm (the template's CSS already parsed, as in a service sending the same
template again) and cold (every cache emptied before each call: a template seen for the first time), and
the ratios to css-inline. The two run interleaved, round by round, so the machine's drift hits both alike.
Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import css_inline

from postwire.testing.corpus import corpus_dir
from postwire.transformer import inline

TEMPLATES = corpus_dir() / "templates"


def css_inline_alone() -> Callable[[str], str]:
    inliner = css_inline.CSSInliner(
        inline_style_tags=True,
        keep_style_tags=False,
        keep_at_rules=True,
        keep_link_tags=False,
        load_remote_stylesheets=False,
    )
    return lambda html: str(inliner.inline(html))


def postwire_cold(html: str) -> str:
    inline.clear_caches()
    return inline.inline_html(html)


def timed(function: Callable[[str], str], html: str) -> float:
    started = time.perf_counter()
    function(html)
    return (time.perf_counter() - started) * 1000


def measure(path: Path, repeat: int) -> dict[str, float]:
    html = path.read_text(encoding="utf-8")
    runners = {"css-inline": css_inline_alone(), "postwire": inline.inline_html, "cold": postwire_cold}
    for run in runners.values():
        run(html)  # warm-up: imports, allocator, caches
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeat):
        for name, run in runners.items():
            samples[name].append(timed(run, html))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    print(
        f"{'template':44} {'KB':>6} {'css-inline':>10} {'postwire':>9} {'ratio':>6} {'cold':>8} {'ratio':>6}"
    )
    for path in sorted(TEMPLATES.glob("[SML]_*.html")):
        ms = measure(path, args.repeat)
        kb = path.stat().st_size / 1024
        base = ms["css-inline"]
        print(
            f"{path.name:44} {kb:6.1f} {base:8.2f}ms {ms['postwire']:7.2f}ms {ms['postwire'] / base:5.2f}x"
            f" {ms['cold']:6.2f}ms {ms['cold'] / base:5.2f}x"
        )


if __name__ == "__main__":
    main()
