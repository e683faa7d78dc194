"""What personalisation costs: a template is compiled once, then rendered for N recipients, each with
their own data (docs/personalisation.md). Not a test.

    scripts/uv run python bench/personalisation.py [--recipients 10000]

Rows: a small built-in text template (a greeting, an {if}, a {foreach} over the recipient's orders, a
date), then each HTML template of the corpus (POSTWIRE_CORPUS_DIR, default ../shared/corpus,
folder templates/) with a few tags inserted: a greeting with modifiers after <body>, an {if} and a
{foreach} before </body>, and its Mustache-style {{name}} placeholders (Postmark's) as {$name}; one
that still is not this language (Mustache sections) is reported with its syntax error.
Prints the compile time, renders per second and microseconds per render; everything in-process.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Mapping
from typing import Any

from postwire.personalisation import TemplateSyntaxError, compile_template
from postwire.testing.corpus import corpus_dir

BUILT_IN = """Hi {$first-name|default:"there"|ucfirst},

{if $orders|count > 0}Your orders:
{foreach $orders as $o}- #{$o.id}: {$o.total} EUR{if $o.shipped} (shipped {$o.date|date_format:"%d %b"}){/if}
{/foreach}{else}You have no orders yet.{/if}
{$footer|default:"Thanks for shopping with us!"}
"""
GREETING = '<p>Hi {$first-name|default:"there"|escape}, your code is {$code|upper}.</p>'
CLOSING = ('{if $vip}<p>You have {$points} points.</p>{/if}'
           '<ul>{foreach $orders as $o}<li>#{$o.id}: {$o.total|default:0} EUR</li>{/foreach}</ul>')
MUSTACHE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def recipients(count: int) -> list[Mapping[str, Any]]:
    return [{"first-name": f"reader{i}", "code": f"c{i:06x}", "vip": i % 3 == 0, "points": i * 7,
             "name": f"Reader {i}", "action_url": f"https://example.org/r/{i}",
             "orders": [{"id": i * 10 + k, "total": 12.5 * k, "shipped": k % 2 == 1,
                         "date": 1_700_000_000 + 86_400 * k} for k in range(i % 4)]}
            for i in range(count)]


def with_tags(html: str) -> str:
    html = MUSTACHE.sub(r"{$\1}", html)
    html = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + GREETING, html, count=1, flags=re.IGNORECASE)
    return re.sub(r"(</body>)", lambda m: CLOSING + m.group(1), html, count=1, flags=re.IGNORECASE)


def measure(name: str, source: str, data: list[Mapping[str, Any]]) -> None:
    start = time.perf_counter()
    try:
        template = compile_template(source, part=name)
    except TemplateSyntaxError as error:  # e.g. Mustache sections ({{#each}}) are not this language
        print(f"{name:42} {len(source) / 1024:6.1f} not compiled: {error}")
        return
    compiled = time.perf_counter() - start
    template.render(data[0])  # warm up
    start = time.perf_counter()
    size = 0
    for recipient in data:
        size += len(template.render(recipient))
    took = time.perf_counter() - start
    print(f"{name:42} {len(source) / 1024:6.1f} {compiled * 1000:9.2f} {len(data) / took:10.0f} "
          f"{took / len(data) * 1e6:8.1f} {size / len(data) / 1024:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipients", type=int, default=10_000)
    args = parser.parse_args()
    data = recipients(args.recipients)
    print(f"{args.recipients} recipients, one compile per template")
    print(f"{'template':42} {'KB':>6} {'compile ms':>9} {'renders/s':>10} {'µs/render':>8} {'out KB':>7}")
    measure("built-in (text, if, foreach, date)", BUILT_IN, data)
    folder = corpus_dir() / "templates"
    if not folder.is_dir():
        print(f"corpus templates skipped: {folder} is absent (set POSTWIRE_CORPUS_DIR)")
        return
    for path in sorted(folder.glob("*.html")):
        measure(path.name, with_tags(path.read_text(encoding="utf-8")), data)


if __name__ == "__main__":
    main()
