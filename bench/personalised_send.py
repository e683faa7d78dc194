"""One send to 10,000 recipients, each with their own variables, through the whole system. Not a test.

Postwire as `make run` starts it (the same set-up as bench/throughput.py: loopback DNS, Postfix's
smtp-sink, shaping like Postfix's defaults), a stored template (the corpus's M_ template, 29 KB, with a
greeting, an {if} and a {foreach} over each recipient's orders; the built-in one without the corpus), and
one POST /v1/send naming it with `data` and `recipients` as an object of 10,000 addresses. Reported:
the request's size and time to 200, seconds until the sink had every copy, rendered recipients per
second (delivered copies over that time: rendering, signing and SMTP together), CPU per recipient by
component, and the peak memory (PSS) of each. For comparison the same HTML without tags to the same
recipients as one plain send (no per-recipient work: one body for all).

    scripts/uv run python bench/personalised_send.py [--recipients 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from measure import Meter, Usage, wait_until
from throughput import DOMAIN, TEMPLATE, PostwireUnderTest, _quiet

from postwire.testing.corpus import corpus_dir

GREETING = '<p>Hi {$first-name|default:"there"|escape}, your code is {$code|upper}.</p>'
CLOSING = ('{if $vip}<p>You have {$points} points.</p>{/if}'
           '<ul>{foreach $orders as $o}<li>#{$o.id}: {$o.total|default:0} EUR</li>{/foreach}</ul>')
BUILT_IN = ("<html><head><style>p { color: #333; } li { font-weight: bold; }</style></head><body>"
            + "<p>News of the week.</p>" * 200 + "</body></html>")


def template_html() -> str:
    path = corpus_dir() / "templates" / TEMPLATE
    html = path.read_text() if path.exists() else BUILT_IN
    body = html.lower().index("<body")
    body = html.index(">", body) + 1
    end = html.lower().rindex("</body>")
    return html[:body] + GREETING + html[body:end] + CLOSING + html[end:]


def recipients(n: int) -> dict[str, dict[str, Any]]:
    return {f"user{i}@{DOMAIN}": {"first-name": f"reader{i}", "code": f"c{i:06x}", "vip": i % 3 == 0,
                                  "points": i * 7,
                                  "orders": [{"id": i * 10 + k, "total": 12.5 * k} for k in range(i % 4)]}
            for i in range(n)}


async def one_send(pw: PostwireUnderTest, body: dict[str, Any], n: int) -> tuple[float, float, int, Usage]:
    """(seconds to 200, seconds until all delivered, request bytes, usage)."""
    await asyncio.to_thread(_quiet, Meter(pw.processes))
    data = json.dumps(body).encode()
    expected = pw.sink.received + n
    meter = Meter(pw.processes).start()
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=pw.stack.api, timeout=120) as client:
        r = await client.post("/v1/send", content=data, headers={"content-type": "application/json"},
                              params={"access_token": pw.stack.demo()["api_key"]})
    accepted = time.perf_counter() - started
    if r.status_code != 200:
        raise RuntimeError(f"/v1/send answered {r.status_code}: {r.text[:300]}")
    if not await asyncio.to_thread(wait_until, lambda: pw.sink.received >= expected, max(120.0, n / 20)):
        raise RuntimeError(f"{expected - pw.sink.received} of {n} copies never arrived")
    delivered = time.perf_counter() - started
    await asyncio.to_thread(_quiet, meter)
    return accepted, delivered, len(data), meter.stop()


def report(name: str, n: int, result: tuple[float, float, int, Usage]) -> None:
    accepted, delivered, size, usage = result
    print(f"\n{name}: {n} recipients, request {size / 2**20:.1f} MB")
    print(f"  accepted (200) after {accepted:.2f} s; all delivered after {delivered:.1f} s: "
          f"{n / delivered:,.0f} recipients/s")
    print(f"  CPU per recipient {1000 * usage.total_s / n:.2f} ms: " + ", ".join(
        f"{k} {v:.2f}" for k, v in usage.per_message_ms(n).items() if v >= 0.01))
    print("  peak PSS: " + ", ".join(f"{k} {v / 2**20:.0f} MB" for k, v in
                                     sorted(usage.peak_memory.items(), key=lambda kv: -kv[1])))


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipients", type=int, default=10_000)
    args = p.parse_args()
    n = args.recipients
    html = template_html()
    work = Path(tempfile.mkdtemp(prefix="pwpers"))
    pw = await PostwireUnderTest.start(work)
    try:
        async with httpx.AsyncClient(base_url=pw.stack.api,
                                     params={"access_token": pw.stack.demo()["api_key"]}) as client:
            r = await client.post("/v1/template/json", json={
                "name": "bench", "subject": "Your week, {$first-name}", "from": "news@example.test",
                "html": html, "text": "Hi {$first-name}, your code is {$code|upper}."})
            if r.status_code != 201:
                sys.exit(f"template: {r.status_code} {r.text[:300]}")
            template_id = r.json()["id"]
        rcpts = recipients(n)
        warm = {f"warm{i}@{DOMAIN}": v for i, v in enumerate(list(rcpts.values())[:200])}
        await one_send(pw, {"template": template_id, "recipients": warm, "inlinecss": True,
                            "trackclicks": False}, len(warm))
        personal = await one_send(pw, {"template": template_id, "data": {"footer": "Thanks"},
                                       "recipients": rcpts, "inlinecss": True, "trackclicks": False}, n)
        plain_html = html.replace(GREETING, "").replace(CLOSING, "")
        plain = await one_send(pw, {"from": "news@example.test", "subject": "Your week", "html": plain_html,
                                    "recipients": list(rcpts), "inlinecss": True, "trackclicks": False}, n)
        print(f"template: {len(html) / 1024:.0f} KB of HTML, CSS inlined (css-inline), DKIM not configured")
        report("personalised (template + data per recipient)", n, personal)
        report("plain (the same HTML without tags, one body)", n, plain)
    finally:
        await pw.stop()


if __name__ == "__main__":
    asyncio.run(main())
