"""Photograph every console page for docs/console.md (run by scripts/console-screenshots).

The local run as `make run` starts it, in a temporary folder, with its sandbox: a stored template sent
to three recipients with their own data, a plain message, a suppressed address, a webhook and a sending
domain, then each page in headless Chromium (1280 px wide) into docs/console/<page>.png.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import httpx
from playwright.async_api import Page, async_playwright

from postwire.testing.browser import LAUNCH_ARGS, chromium_executable
from postwire.testing.stack import LocalStack

OUT = Path(__file__).resolve().parent.parent / "docs" / "console"
HTML = ("<html><head><style>h1{color:#1d4ed8} td.item{padding:4px;border-bottom:1px solid #ccc}</style>"
        "</head><body><h1>Hello {$name}</h1><table>{foreach $items as $i}"
        "<tr><td class=\"item\">{$i}</td></tr>{/foreach}</table><p>Sent to {$recipient}</p></body></html>")


async def seed(api: str, key: str) -> str:
    """Some mail and settings to look at; the id of the first message."""
    async with httpx.AsyncClient(base_url=api, params={"access_token": key}, timeout=30,
                                 trust_env=False) as client:
        r = await client.post("/v1/template/json", json={
            "name": "weekly", "subject": "Your week, {$name}", "from": "News <news@shop.example>",
            "html": HTML, "text": "Hello {$name}"})
        r.raise_for_status()
        r = await client.post("/v1/send", json={
            "template": "weekly", "data": {"items": ["Boots", "Scarf"]}, "inlinecss": True,
            "tags": ["weekly"],
            "recipients": {"ann@customers.example": {"name": "Ann"}, "bob@customers.example": {"name": "Bob"},
                           "cy@customers.example": {"name": "Cy", "items": ["Gloves"]}}})
        r.raise_for_status()
        first = next(iter(r.json()))
        for i in range(3):
            await client.post("/v1/send", json={
                "recipient": f"order{i}@customers.example", "tags": ["orders"], "from": "shop@shop.example",
                "subject": f"Order {1040 + i} shipped",
                "html": f"<p>Your order {1040 + i} is on its way.</p>"})
        for rcpt in ("bounce@customers.example", "full@example.org", "blocked@example.net"):
            await client.post("/v1/send", json={
                "recipient": rcpt, "tags": ["orders"], "from": "shop@shop.example", "subject": "Your receipt",
                "text": "Thank you."})
        await client.post("/v1/suppressions", json={"address": "former@customers.example"},
                          headers={"Authorization": f"Bearer {key}"})
        hook = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hooks"},
                                 headers={"Authorization": f"Bearer {key}"})
        await client.post(f"/v1/webhooks/{hook.json()['id']}/test",
                          headers={"Authorization": f"Bearer {key}"})
        await client.post("/v1/domains", json={"name": "shop.example"},
                          headers={"Authorization": f"Bearer {key}"})
    await asyncio.sleep(6)  # delivered to the sandbox and recorded
    return str(first)


async def shoot(page: Page, tall: Page, url: str, out: Path) -> None:
    """The whole page; one with a sandboxed preview frame in a tall window instead (Chromium leaves
    such frames blank in full-page captures)."""
    await page.goto(url)
    if await page.locator("iframe").count():
        await tall.goto(url)
        await tall.wait_for_timeout(300)
        await tall.screenshot(path=out)
    else:
        await page.screenshot(path=out, full_page=True)


async def main() -> int:
    executable = chromium_executable()
    if executable is None:
        print("no Chromium (scripts/browser-deps)", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pwshots") as tmp:
        stack = LocalStack(Path(tmp), dns_nameserver="", mx_port=0, sandbox=True)
        await stack.start()
        try:
            demo = stack.demo()
            first = await seed(stack.api, demo["api_key"])
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                tall = await browser.new_page(viewport={"width": 1280, "height": 1500})
                await page.goto(f"{stack.api}/console/login")
                await page.screenshot(path=OUT / "login.png")
                await page.fill("input[name=username]", demo["console_user"])
                await page.fill("input[name=password]", demo["console_password"])
                await page.click("button[type=submit]")
                await tall.context.add_cookies(await page.context.cookies())
                caught = ""
                for name, path in (("overview", "/console/"), ("messages", "/console/messages"),
                                   ("message", f"/console/messages/{first}"), ("bounces", "/console/bounces"),
                                   ("suppressions", "/console/suppressions"), ("domains", "/console/domains"),
                                   ("webhooks", "/console/webhooks"), ("templates", "/console/templates"),
                                   ("template", "/console/templates/1"), ("access", "/console/access"),
                                   ("sandbox", "/console/sandbox")):
                    await shoot(page, tall, stack.api + path, OUT / f"{name}.png")
                    if name == "sandbox":
                        link = page.locator("[data-sandbox-message] a").first
                        caught = await link.get_attribute("href") or ""
                if caught:
                    await shoot(page, tall, stack.api + caught, OUT / "sandbox-message.png")
                await browser.close()
        finally:
            await stack.stop()
    print(f"screenshots in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
