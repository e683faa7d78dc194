"""What tracking costs: the transformer's link rewrite once per message, then per recipient the token
substitution and the DKIM signature the sender makes (docs/tracking.md), on real templates.

    scripts/uv run python bench/tracking.py [--runs 50]

Everything in-process, no network. Prints milliseconds (median) per step and template.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from email.message import EmailMessage

from postwire.core import tracking
from postwire.db.domains import generate_key
from postwire.dispatcher import dkim_rsa
from postwire.dispatcher.dkim import SigningKey, sign_message
from postwire.testing.corpus import corpus_dir
from postwire.transformer.html_parts import transform_mime
from postwire.transformer.link_tracking import TrackingOptions

TEMPLATES = corpus_dir() / "templates"
NAMES = ("S_leemunroe-email.html", "M_foundation-newsletter.html", "L_foundation-digest.html")
KEY = tracking.tracking_key(b"bench-verp-secret-0123456789abcdef")
GROUP = "01jdr4v5x0c4bq5ptq3rvzy8nd"


def token_for(link_index: int) -> str:
    return tracking.make_token(KEY, GROUP, 7, link_index)


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def message(html: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "News <news@bench.example>"
    msg["To"] = "reader@example.org"
    msg["Subject"] = "Tracking bench"
    msg.set_content("text part")
    msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    dkim_rsa.install()
    private, _ = generate_key("rsa-sha256")
    key = SigningKey("bench.example", "pw", "rsa-sha256", private.encode("ascii"))
    nonce = tracking.nonce_for(KEY, GROUP)
    opts = TrackingOptions(nonce=nonce, click_url_prefix="https://t.example/t/c/",
                           open_url_prefix="https://t.example/t/o/")
    print(f"{'template':32} {'KB':>5} {'links':>5} {'inline':>8} {'+track':>8} {'subst':>7} {'sign':>7}")
    for name in NAMES:
        raw = message((TEMPLATES / name).read_text())
        inline = median_ms(lambda r=raw: transform_mime(r), args.runs)
        tracked = transform_mime(raw, tracking=opts)
        both = median_ms(lambda r=raw: transform_mime(r, tracking=opts), args.runs)
        template = tracked.mime
        subst = median_ms(lambda t=template: tracking.personalise(t, nonce, token_for), args.runs)
        personal = tracking.personalise(template, nonce, token_for)
        sign = median_ms(lambda p=personal: sign_message(p, key), args.runs)
        print(f"{name:32} {len(raw) / 1024:5.0f} {len(tracked.links):5d} {inline:8.2f} {both:8.2f} "
              f"{subst:7.3f} {sign:7.2f}")
    print("inline: CSS inlining only; +track: inlining and link/pixel rewrite (once per message);")
    print("subst, sign: per recipient (token substitution; RSA-2048 DKIM signature of the result).")
    print("milliseconds, median")


if __name__ == "__main__":
    main()
