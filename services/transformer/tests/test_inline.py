"""inline_html: both engines inline, keep @media, and never fetch anything; the default engine's cascade."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from postwire.transformer.inline import ENGINES, PREMAILER, InlineError, inline_html
from postwire.transformer.inline_options import InlineOptions

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


@pytest.mark.parametrize("engine", ENGINES)
def test_link_tags_stay_for_the_client_and_are_never_loaded(
        engine: str, recording_server: tuple[str, list[str]]) -> None:
    # as juice and premailer do: Apple Mail loads web fonts this way; the inliner itself never fetches
    base, hits = recording_server
    link = f'<link rel="stylesheet" href="{base}/fonts.css">'
    out = inline_html(f"<html><head>{link}</head><body><p>x</p></body></html>", engine=engine)
    assert link in out and hits == []


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


# --- what a reader of the mail notices: the cascade, kept rules and attributes (css-inline engine) ---


def _style_of(out: str, marker: str) -> str:
    """The style attribute of the first tag from ``marker`` on (a tag's start or one of its attributes)."""
    match = re.search(rf'{re.escape(marker)}[^>]*?\sstyle="([^"]*)"', out)
    assert match, f"no styled tag with {marker!r} in {out}"
    return match.group(1)


def _head(out: str) -> str:
    return out.partition("</head>")[0]


def test_hover_and_focus_rules_stay_in_style_and_before_after_go_as_in_juice() -> None:
    """State rules stay for the clients that apply them; ::before/::after rules are dropped, as juice
    drops them when it does not write them as spans (inlinePseudoElements)."""
    css = "a { color: blue } a:hover { color: red } input:focus { outline: none } p::before { content: 'x' }"
    out = inline_html(f"<style>{css}</style><a href='#'>x</a><input><p>y</p>")
    assert _style_of(out, "href") == "color: blue;"
    for rule in ("a:hover", "input:focus"):
        assert rule in _head(out)
    assert "color: red" not in out.partition("</head>")[2]
    assert "::before" not in out and "<p>y</p>" in out


def test_a_capitalised_property_is_its_own_fallback_as_in_juice() -> None:
    # Foundation's "Margin": Outlook.com drops margin but keeps Margin, so both must reach the element
    out = inline_html("<style>p { Margin: 0 } .a { margin: 10px }</style><p class=a>x</p>")
    assert _style_of(out, "class") == "Margin: 0;margin: 10px;"
    # an IE hack's marker is not part of the name (juice's parser drops it)
    out = inline_html("<style>p { *zoom: 1; _height: 1px }</style><p class=a>x</p>")
    assert _style_of(out, "class") == "zoom: 1;height: 1px;"


def test_fallback_declarations_are_kept_in_order() -> None:
    out = inline_html("<style>p { color: red; color: rgba(255, 0, 0, 0.5) }</style><p class=x>x</p>")
    assert _style_of(out, "class") == "color: red;color: rgba(255, 0, 0, 0.5);"


@pytest.mark.parametrize(
    ("css", "expected"),
    [  # the winning rule keeps every declaration of the property, even when two of its selectors match
        ("[class~=a], .a { margin: 1px; margin: 2px } p { margin: 3px; padding: 0 }",
         "padding: 0;margin: 1px;margin: 2px;"),
        (".a { color: red !important; color: blue } p.a { color: green }", "color: red;"),  # importance first
    ],
)  # fmt: skip
def test_repeated_declarations_follow_the_winning_rule(css: str, expected: str) -> None:
    assert _style_of(inline_html(f"<style>{css}</style><p class='a'>x</p>"), "class") == expected


@pytest.mark.parametrize(
    ("css", "expected"),
    [
        (".a { padding: 10px } .a.b { padding-top: 0 }", "padding: 10px;padding-top: 0;"),
        (".a.b { padding-top: 0 } .a { padding: 10px }", "padding: 10px;padding-top: 0;"),
        (".a { padding-top: 0; padding: 10px }", "padding-top: 0;padding: 10px;"),
    ],
)
def test_shorthand_and_longhand_are_written_in_cascade_order(css: str, expected: str) -> None:
    assert _style_of(inline_html(f"<style>{css}</style><div class='a b'>x</div>"), "class") == expected


def test_inline_important_is_dropped_so_media_rules_still_override() -> None:
    html = """<style>td { padding: 8px !important; color: red }
    @media (max-width: 600px) { td { padding: 4px !important } }</style>
    <table><tr><td style="color: blue">x</td></tr></table>"""
    out = inline_html(html)
    assert _style_of(out, "<td") == "color: blue;padding: 8px;"
    assert "padding: 4px !important" in _head(out)
    kept = inline_html(html, options=InlineOptions(preserve_important=True))
    assert _style_of(kept, "<td") == "color: blue;padding: 8px !important;"


def test_sizes_and_colours_become_attributes_for_clients_without_css() -> None:
    html = """<style>img { width: 120px } table { width: 100% }
    td { background-color: #eee; text-align: right }
    p { width: 50px }</style><table><tr><td><img src="a.png"></td></tr></table><p>x</p>"""
    out = inline_html(html)
    assert re.search(r'<img src="a.png" style="width: 120px;" width="120">', out)
    assert 'width="100%"' in out and 'bgcolor="#eee"' in out and 'align="right"' in out
    assert "<p style" in out and 'width="50"' not in out  # only on img, table, td, th
    plain = InlineOptions(
        apply_width_attributes=False, apply_height_attributes=False, apply_attributes_table_elements=False
    )
    assert "bgcolor" not in inline_html(html, options=plain) and 'width="120"' not in inline_html(
        html, options=plain
    )


def test_css_nesting_is_flattened() -> None:
    html = """<style>.card { color: #333; & .title { font-weight: bold } .body & { margin: 0 }
    @media (max-width: 600px) { color: red !important } }</style>
    <div class="body"><div class="card"><h1 class="title">x</h1></div></div>"""
    out = inline_html(html)
    assert _style_of(out, 'class="title"') == "font-weight: bold;"
    assert _style_of(out, 'class="card"') == "color: #333;margin: 0;"
    assert re.search(r"@media \(max-width: 600px\) \{\s*\.card \{ color: red !important; \}", _head(out))


def test_extra_css_keeps_its_at_rules_as_juice_does() -> None:
    """The extra CSS's @media stays in <style>; its a:hover and ::before rules are dropped, as juice's
    insertPreservedExtraCss does, while the same rules in the document's own <style> are kept."""
    extra = (
        "a { color: red } a:hover { color: blue } p::before { content: '>' }"
        " @media (max-width: 600px) { a { color: green !important } }"
    )
    html = "<html><head></head><body><p><a href='#'>x</a></p></body></html>"
    from_extra = inline_html(html, extra)
    from_style = inline_html(html.replace("<head>", f"<head><style>{extra}</style>"))
    assert "@media (max-width: 600px)" in _head(from_extra)
    assert ":hover" not in from_extra and "::before" not in from_extra
    for kept in ("a:hover { color: blue; }", "@media (max-width: 600px)"):
        assert kept in _head(from_style)
    assert "::before" not in from_style  # juice drops ::before/::after rules it does not inline
    assert _style_of(from_extra, "href") == _style_of(from_style, "href") == "color: red;"
    assert "<style>" not in inline_html(html, extra, options=InlineOptions(insert_preserved_extra_css=False))


def test_a_closing_style_tag_in_extra_css_cannot_end_the_style_block() -> None:
    out = inline_html("<p>x</p>", "@media print { p { content: '</style><script>alert(1)</script>' } }")
    assert out.count("</style>") == 1 and "</style><script>" not in out


def test_outlook_conditional_styles_and_data_embed_are_left_alone() -> None:
    html = """<head><style data-embed>.keep { color: red }</style></head><body>
    <!--[if mso]><style>.mso { color: blue }</style><![endif]--><p class="keep mso">x</p></body>"""
    out = inline_html(html)
    assert "<style>.keep { color: red }</style>" in out
    assert "<!--[if mso]><style>.mso { color: blue }</style><![endif]-->" in out
    assert 'class="keep mso">' in out  # neither block was inlined


def test_css_variables_are_resolved_for_clients_without_var() -> None:
    css = ":root { --brand: #f60 } p { --gap: 4px; color: var(--brand); margin: var(--gap) var(--x, 2px) }"
    html = f"<style>{css}</style><p>x</p>"
    out = inline_html(html)
    assert '<p style="color: #f60;margin: 4px 2px;">' in out
    assert "var(--brand)" in _style_of(
        inline_html(html, options=InlineOptions(resolve_css_variables=False)), "<p"
    )


def test_an_elements_own_custom_properties_resolve_its_var() -> None:
    """A browser sees ``--brand: red`` on the element and paints it red. A rule-styled element's style
    then says ``color: red`` without the custom property, as juice writes it (descendants' var() are
    resolved from it too); an element no rule styles keeps its style, only its var() resolved."""
    own = '<p style="--brand: red; color: var(--brand)">x</p>'
    matched = inline_html(f"<style>p {{ margin: 0 }}</style>{own}")
    assert _style_of(matched, "<p") == "margin: 0;color: red;"
    unmatched = inline_html(f"<style>td {{ margin: 0 }}</style>{own}<span style='color: red'>y</span>")
    assert _style_of(unmatched, "<p") == "--brand: red;color: red;"
    assert "<span style=\"color: red\">" in unmatched  # styles without var() are left as written
    assert _style_of(inline_html(own), "<p") == "--brand: red;color: red;"  # no CSS at all


def test_own_custom_properties_win_over_the_roots_and_rules_ones_are_left_out() -> None:
    css = ":root { --brand: blue } p { --gap: 4px; color: var(--brand); margin: var(--gap) }"
    out = inline_html(f"<style>{css}</style><p style='--brand: green'>x</p><p>y</p>")
    assert _style_of(out, "<p") == "color: green;margin: 4px;"
    assert _style_of(out, "</p><p") == "color: blue;margin: 4px;"  # juice: rules' custom properties go
    fallback = inline_html("<style>p { margin: var(--undefined, 2px) }</style><p>x</p>")
    assert _style_of(fallback, "<p") == "margin: 2px;"  # as a browser: --undefined has no value
    kept = inline_html(
        f"<style>{css}</style><p style='--brand: green'>x</p>",
        options=InlineOptions(resolve_css_variables=False),
    )
    assert "color: var(--brand)" in _style_of(kept, "<p") and "--gap: 4px" in _style_of(kept, "<p")


def test_juice_option_names_are_understood() -> None:
    options = InlineOptions.from_juice(
        {"preserveMediaQueries": False, "preserveImportant": True, "url": "./"}
    )
    assert options == InlineOptions(preserve_media_queries=False, preserve_important=True)
    out = inline_html(
        "<style>@media print { p { color: red } } p { margin: 0 }</style><p>x</p>", options=options
    )
    assert "@media" not in out


def test_a_customers_own_marker_like_properties_are_not_taken_for_rules() -> None:
    """The cascade finds css-inline's matches through marker properties; HTML that writes look-alikes
    (in a style attribute, a comment, a textarea) is inlined like any other, never an error."""
    forged = ('<html><head><style>p { color: red }</style></head><body>'
              '<p style="--pw-rule-99999: 1; --pw-rule-x: 2">a</p><!-- <p style="--pw-rule-0:1"> -->'
              '<textarea><p style="--pw-rule-0:1"></textarea></body></html>')
    out = inline_html(forged)
    assert '<p style="color: red;' in out
    assert '<!-- <p style="--pw-rule-0:1"> -->' in out and "&lt;p style=" in out


def test_elements_the_parser_implies_are_not_styled_as_in_juice() -> None:
    # juice's parser adds no <html>, <body> or <tbody>: rules reach only the elements that were written
    out = inline_html("<style>* { font-family: Arial } body { color: red }</style>"
                      "<table><tr><td>x</td></tr></table>")
    assert re.search(r"<(?:html|body|tbody)\b[^>]*style=", out) is None, out
    assert '<td style="font-family: Arial;"' in out and '<table style="font-family: Arial;"' in out
    written = inline_html("<style>body { color: red }</style><body><table><tbody><tr><td>x</td></tr></tbody>"
                          "</table></body>")
    assert '<body style="color: red;">' in written


def test_root_custom_properties_reach_a_fragment_without_an_html_element() -> None:
    out = inline_html("<style>:root { --c: red } p { color: var(--c) }</style><p>x</p>")
    assert '<p style="color: red;">' in out and "<html style=" not in out
