"""inline_html: both engines inline, keep @media, and never fetch anything."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from postwire.transformer.inline import CSS_INLINE, ENGINES, PREMAILER, InlineError, inline_html

DOC = """<html><head><style>
p { color: red; }
@media (max-width: 600px) { p { color: blue !important; } }
</style></head><body><p>hi</p></body></html>"""


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request path (there should be none)."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/css")
            self.end_headers()
            self.wfile.write(b"p { color: green; }")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("engine", ENGINES)
def test_inlines_and_keeps_media_in_style(engine: str) -> None:
    out = inline_html(DOC, engine=engine)
    assert 'style="color: red' in out.replace("color:red", "color: red")
    head, _, body = out.partition("<body")
    assert "@media" in head and "<style" in head
    assert "@media" not in body


@pytest.mark.parametrize("engine", ENGINES)
def test_extra_css_is_inlined(engine: str) -> None:
    out = inline_html("<html><body><p>x</p></body></html>", "p { margin: 0 }", engine=engine)
    assert "margin: 0" in out.replace("margin:0", "margin: 0")


@pytest.mark.parametrize("engine", ENGINES)
def test_remote_stylesheets_are_never_fetched(engine: str, recording_server: tuple[str, list[str]]) -> None:
    base, hits = recording_server
    html = f"""<html><head>
<link rel="stylesheet" href="{base}/link.css">
<style>@import url({base}/import.css); @import "{base}/import2.css"; p {{ color: red; }}</style>
</head><body><p>x</p></body></html>"""
    out = inline_html(html, f"@import url({base}/extra.css);", engine=engine)
    assert hits == []
    assert "color: green" not in out and "color:green" not in out


def test_local_stylesheets_are_never_read(tmp_path: Path) -> None:
    sheet = tmp_path / "local.css"
    sheet.write_text("p { color: green; }")
    for href in (str(sheet), sheet.as_uri()):
        html = f'<html><head><link rel="stylesheet" href="{href}"></head><body><p>x</p></body></html>'
        for engine in ENGINES:
            assert "green" not in inline_html(html, engine=engine)


def test_css_inline_drops_link_tags() -> None:
    html = '<html><head><link rel="stylesheet" href="http://127.0.0.1:9/x.css"></head><body></body></html>'
    assert "<link" not in inline_html(html, engine=CSS_INLINE)


def test_premailer_keeps_important_and_media() -> None:
    out = inline_html(DOC.replace("color: red;", "color: red !important;"), engine=PREMAILER)
    assert "!important" in out.partition("<body")[2]
    assert "@media" in out


def test_unknown_engine_is_a_clear_error() -> None:
    with pytest.raises(InlineError, match="unknown CSS engine"):
        inline_html(DOC, engine="juice")


def test_non_ascii_text_survives() -> None:
    out = inline_html("<html><head><style>p{color:red}</style></head><body><p>café 日本語</p></body></html>")
    assert "café 日本語" in out
