"""The browser fixtures: a real headless Chromium fills and submits a form served on loopback, starts each
test with no cookies, and reaches nothing outside loopback (each attempt aborted and recorded)."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from playwright.async_api import Page, expect

from postwire.testing.browser import is_loopback

# the image, the fetch and the WebSocket go to the internet: the fixtures must stop all three
FORM = b"""<!doctype html>
<title>Form</title>
<img src="https://example.com/x.png" alt="">
<form method="post" action="/submit">
  <input name="name"> <button type="submit">Send</button>
</form>
<p id="cookie">%(cookie)s</p>
<script>
  fetch("http://93.184.215.14/beacon").catch(() => { document.body.dataset.fetch = "failed"; });
  const ws = new WebSocket("wss://example.com/socket");
  ws.onclose = () => { document.body.dataset.ws = "closed"; };
</script>
"""
BLOCKED = ["https://example.com/x.png", "http://93.184.215.14/beacon", "wss://example.com/socket"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        cookie = html.escape(self.headers.get("Cookie") or "no cookie")
        self._send(FORM % {b"cookie": cookie.encode()})

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        name = html.escape(form["name"][0])
        self._send(f"<!doctype html><h1>Hello, {name}</h1>".encode(), cookie="seen=yes")

    def _send(self, body: bytes, cookie: str | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if cookie:
            self.send_header("Set-Cookie", f"{cookie}; Path=/; HttpOnly")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


# twice: the second run starts without the cookie the first one was given
@pytest.mark.parametrize("run", [1, 2])
async def test_a_form_is_filled_and_submitted_with_no_request_leaving_loopback(
    page: Page, blocked_requests: list[str], site: str, run: int
) -> None:
    await page.goto(site)
    await expect(page.locator("#cookie")).to_have_text("no cookie")
    await expect(page.locator("body")).to_have_attribute("data-fetch", "failed")
    await expect(page.locator("body")).to_have_attribute("data-ws", "closed")

    await page.fill("input[name=name]", f"Ada <{run}>")
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_have_text(f"Hello, Ada <{run}>")
    await page.goto(site)
    await expect(page.locator("#cookie")).to_have_text("seen=yes")

    assert sorted(blocked_requests) == sorted(BLOCKED * 2)  # once per visit of the form


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080/console/", True),
        ("http://127.1.2.3/", True),
        ("http://[::1]:9000/x", True),
        ("http://localhost/", True),
        ("http://console.localhost/", True),
        ("data:text/plain,hi", True),
        ("about:blank", True),
        ("https://example.com/x.png", False),
        ("http://93.184.215.14/", False),
        ("http://127.0.0.1.example.com/", False),
        ("ws://[2001:db8::1]/", False),
    ],
)
def test_loopback_is_told_from_the_internet(url: str, loopback: bool) -> None:
    assert is_loopback(url) is loopback
