"""pytest fixtures for browser tests: a headless Chromium driven by Playwright that reaches loopback only.

``browser`` is one Chromium for the session; ``page`` is a tab in a fresh context per test (its own
cookies and storage, so a login never leaks into the next test). Every request a page makes to a host
other than loopback (127.0.0.0/8, ::1, localhost) is aborted before it leaves the browser and its URL
recorded in ``blocked_requests``, so a test can assert that a page fetches nothing from the internet::

    async def test_login(page: Page, blocked_requests: list[str], console_url: str) -> None:
        await page.goto(f"{console_url}/login")
        await page.fill("input[name=email]", "a@example.com")
        await page.click("button[type=submit]")
        await expect(page.locator("h1")).to_have_text("Messages")
        assert blocked_requests == []

The browser is Debian's ``chromium`` package (``/usr/bin/chromium``, installed by ``scripts/browser-deps``
in ``make test``), else Playwright's own download; ``POSTWIRE_CHROMIUM`` names another executable. When
there is none, every test using these fixtures is skipped with the reason. The fixtures are async and
run on the session's event loop (the root config's loop scope), as the tests using them must.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

if TYPE_CHECKING:  # Playwright is imported when a test first needs a browser, not by every pytest run
    from playwright.async_api import Browser, BrowserContext, Page, Route, WebSocketRoute

ENV = "POSTWIRE_CHROMIUM"
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
# as root in a container Chromium's sandbox cannot start; a small /dev/shm there crashes renderers
LAUNCH_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]
INSTALL_HINT = "scripts/browser-deps installs one (make test runs it)"


def chromium_executable() -> str | None:
    """The Chromium to launch: ``POSTWIRE_CHROMIUM`` if set, else Debian's, else None (Playwright's own).
    Skips the calling test when ``POSTWIRE_CHROMIUM`` names no executable."""
    configured = os.environ.get(ENV)
    if configured:
        found = shutil.which(configured)
        if found is None:
            pytest.skip(
                f"no browser: {ENV}={configured} is not an executable; unset it to use "
                f"{DEBIAN_CHROMIUM} or Playwright's Chromium"
            )
        return found
    return str(DEBIAN_CHROMIUM) if os.access(DEBIAN_CHROMIUM, os.X_OK) else None


def is_loopback(url: str) -> bool:
    """Whether ``url`` stays on this machine: loopback hosts, and URLs with no host (data:, about:, blob:)."""
    host = urlsplit(url).hostname
    if not host:
        return True
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the session; skips its tests when there is no browser to launch."""
    from playwright.async_api import Error, async_playwright

    executable = chromium_executable()
    playwright = await async_playwright().start()
    try:
        try:
            launched = await playwright.chromium.launch(
                executable_path=executable, headless=True, args=LAUNCH_ARGS
            )
        except Error as e:
            if executable is not None:  # a browser is there and does not start: a failure, not a skip
                raise
            pytest.skip(
                f"no browser: neither {DEBIAN_CHROMIUM} nor Playwright's Chromium could be "
                f"launched ({str(e).strip().splitlines()[0]}); {INSTALL_HINT}"
            )
        yield launched
        await launched.close()
    finally:
        await playwright.stop()


@pytest.fixture
def blocked_requests() -> list[str]:
    """The URLs the test's pages tried to reach outside loopback, in order; each was aborted."""
    return []


async def confine_to_loopback(context: BrowserContext, blocked: list[str]) -> None:
    """Abort every request and WebSocket of ``context``'s pages to a host other than loopback, recording
    its URL in ``blocked``; loopback traffic is not intercepted at all."""

    async def abort(route: Route) -> None:
        blocked.append(route.request.url)
        await route.abort("blockedbyclient")

    async def close(ws: WebSocketRoute) -> None:
        blocked.append(ws.url)
        await ws.close(code=1008, reason="blocked: tests reach loopback only")

    await context.route(lambda url: not is_loopback(url), abort)
    await context.route_web_socket(lambda url: not is_loopback(url), close)


@pytest_asyncio.fixture(loop_scope="session")
async def browser_context(browser: Browser, blocked_requests: list[str]) -> AsyncIterator[BrowserContext]:
    """A fresh browser context (no cookies, no storage) confined to loopback, closed after the test.
    Service workers are blocked: their requests would not pass through the context's routes."""
    context = await browser.new_context(service_workers="block")
    await confine_to_loopback(context, blocked_requests)
    yield context
    await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser_context: BrowserContext) -> Page:
    """A tab in the test's own ``browser_context`` (closed with it)."""
    return await browser_context.new_page()
