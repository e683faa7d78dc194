"""transform_mime: HTML parts inlined and tracked, every other byte unchanged, bad input handled."""

from __future__ import annotations

import base64
import contextlib
import html as html_lib
import quopri
import random
import re
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest

from postwire.core import tracking
from postwire.transformer import html_parts as mime
from postwire.transformer.html_parts import MimeError, transform_mime
from postwire.transformer.inline import PREMAILER, inline_html
from postwire.transformer.link_tracking import TrackingOptions

HTML = (
    "<html><head><style>p { color: red; } @media (max-width: 600px) { p { color: blue; } }</style>"
    "</head><body><p>Grüße</p></body></html>"
)
PDF = bytes(range(256)) * 40

HEADERS = (
    b"Return-Path: <a@example.com>\r\n"
    b'From:   "Ann Example" <a@example.com>\r\n'
    b"To: b@example.net\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a subject long enough to have been folded\r\n"
    b"\tby the sender's client onto a second line\r\n"
    b"X-Odd-Spacing:value-without-space   \r\n"
    b"MIME-Version: 1.0\r\n"
)


def _mixed_message() -> bytes:
    """multipart/mixed: alternative(text/plain, text/html QP) + a PDF attachment, CRLF, with preamble."""
    pdf = base64.encodebytes(PDF).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    html = HTML.encode("utf-8")
    qp_html = b"=".join([html[:40], b"\r\n" + html[40:]])  # a soft line break, as real encoders write
    return (
        HEADERS + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
        b"This is a multi-part message in MIME format.\r\n"
        b"--outer\r\n"
        b'Content-Type: multipart/alternative; boundary="inner"\r\n\r\n'
        b"--inner\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"plain <style> text\r\n"
        b"--inner\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        + qp_html.replace(b"\xc3\xbc", b"=C3=BC").replace(b"\xc3\x9f", b"=C3=9F")
        + b"\r\n"
        b"--inner--\r\n"
        b"--outer\r\n"
        b'Content-Type: application/pdf; name="a.pdf"\r\n'
        b'Content-Disposition: attachment; filename="a.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + pdf + b"\r\n"
        b"--outer--\r\n"
        b"epilogue stays\r\n"
    )


def _single(html: bytes, charset: str | None, cte: str | None, nl: bytes = b"\r\n") -> bytes:
    ctype = b"Content-Type: text/html" + (f"; charset={charset}".encode() if charset else b"")
    head = [b"From: a@example.com", b"Subject: t", ctype]
    if cte:
        head.append(f"Content-Transfer-Encoding: {cte}".encode())
    return nl.join([*head, b"", html]) + nl


def _html_of(mime: bytes) -> str:
    msg = message_from_bytes(mime, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def test_mixed_message_only_html_changes() -> None:
    raw = _mixed_message()
    result = transform_mime(raw)
    assert result.changed and result.html_parts_transformed == 1
    out = result.mime
    head_end = raw.index(b"\r\n\r\n") + 4
    assert out[:head_end] == raw[:head_end]  # top-level headers byte-for-byte, folding included
    attachment = raw[raw.index(b"--outer\r\nContent-Type: application/pdf") :]
    assert out.endswith(attachment)  # attachment part, close delimiter and epilogue untouched
    assert b"plain <style> text\r\n--inner\r\n" in out
    html = _html_of(out)
    assert 'style="color: red;"' in html and "Grüße" in html and "@media" in html
    msg = message_from_bytes(out, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    [pdf] = list(msg.iter_attachments())
    assert pdf.get_content() == PDF


def test_line_endings_stay_crlf() -> None:
    out = transform_mime(_mixed_message()).mime
    assert re.search(rb"(?<!\r)\n", out) is None


def test_lf_message_stays_lf() -> None:
    out = transform_mime(_single(HTML.encode(), "utf-8", "8bit", nl=b"\n")).mime
    assert b"\r" not in out and 'style="color: red;"' in _html_of(out)


def test_unchanged_message_is_returned_as_is() -> None:
    raw = _single(b"<html><body><p>no css here</p></body></html>", "utf-8", None)
    result = transform_mime(raw)
    assert result.mime is raw and not result.changed and result.html_parts_transformed == 0


def test_iso_8859_1_keeps_its_charset() -> None:
    raw = _single(HTML.encode("iso-8859-1"), "iso-8859-1", "8bit")
    out = transform_mime(raw).mime
    assert b"charset=iso-8859-1" in out and "Grüße".encode("iso-8859-1") in out
    assert 'style="color: red;"' in _html_of(out)


def test_utf8_base64_stays_base64() -> None:
    body = base64.encodebytes(HTML.replace("Grüße", "日本語").encode()).replace(b"\n", b"\r\n").rstrip()
    out = transform_mime(_single(body, "utf-8", "base64")).mime
    assert b"Content-Transfer-Encoding: base64" in out
    html = _html_of(out)
    assert "日本語" in html and 'style="color: red;"' in html


def test_characters_outside_the_charset_become_references() -> None:
    raw = _single(HTML.replace("Grüße", "&#8364; &euro;").encode("ascii"), "us-ascii", "7bit")
    out = transform_mime(raw).mime
    assert out.isascii() and "&#8364; &#8364;" in _html_of(out)  # html5ever writes € back as a reference


def test_long_lines_switch_7bit_to_quoted_printable() -> None:
    long_html = "<style>p{color:red;padding:0}</style>" + "<p>x</p>" * 300
    raw = _single(long_html.encode(), "utf-8", "7bit")
    out = transform_mime(raw).mime
    assert b"Content-Transfer-Encoding: quoted-printable" in out and b"7bit" not in out
    assert max(map(len, out.split(b"\r\n"))) <= 78
    assert _html_of(out).count('style="color: red;padding: 0;"') == 300


def test_an_ascii_part_stays_ascii_and_quoted_printable_becomes_7bit() -> None:
    # the parser decodes &copy; and &nbsp; and writes the characters; they go back as references, so the
    # part needs no encoding at all (the sender's quoted-printable was only ever carrying ASCII)
    html = "<style>p{color:red}</style><p>&copy; 2026 ACME&nbsp;Inc. a=b</p>"
    raw = _single(quopri.encodestring(html.encode()).replace(b"\n", b"\r\n"), "utf-8", "quoted-printable")
    out = transform_mime(raw).mime
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.endswith(b"Content-Transfer-Encoding: 7bit") and head.count(b"Content-Transfer-Encoding") == 1
    assert out.isascii() and b"=3D" not in body and b"&#169;" in body
    rendered = html_lib.unescape(_html_of(out))  # the text a client shows
    assert '<p style="color: red;">© 2026 ACME\xa0Inc. a=b</p>' in rendered


def test_characters_where_references_are_not_read_stay_characters() -> None:
    for raw_text in ('<style>p::after{content:"©"}</style><p>©</p>', "<svg><![CDATA[©]]></svg>",
                     '<STYLE type="text/css">p{font-family:"©"}'):  # closed or not, any case
        assert mime._encode_html(raw_text, "utf-8", ascii_source=True) == raw_text.encode()
    after_style = "<style>p{color:red}</style><p>©</p><script>x()</script>"
    expected = after_style.replace("©", "&#169;").encode()
    assert mime._encode_html(after_style, "utf-8", ascii_source=True) == expected
    assert mime._encode_html("<p>©</p>", "utf-8", ascii_source=True) == b"<p>&#169;</p>"
    assert mime._encode_html("<p>©</p>", "utf-8", ascii_source=False) == "<p>©</p>".encode()  # as sent


def test_quoted_printable_stays_when_the_part_is_not_7bit() -> None:
    for html in ("<style>p{color:red}</style><p>Grüße</p>", "<style>p{color:red}</style>" + "<p>x</p>" * 300):
        raw = _single(quopri.encodestring(html.encode()).replace(b"\n", b"\r\n"), "utf-8", "quoted-printable")
        out = transform_mime(raw).mime
        assert b"Content-Transfer-Encoding: quoted-printable\r\n" in out and b"7bit" not in out
        assert max(map(len, out.split(b"\r\n"))) <= 78 and 'style="color: red;"' in _html_of(out)


def test_missing_cte_header_is_added_when_needed() -> None:
    raw = _single(("<style>p{color:red}</style>" + "<p>é</p>" * 200).encode(), "utf-8", None)
    out = transform_mime(raw).mime
    assert b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" in out
    assert _html_of(out).count("é") == 200


def test_unknown_charset_is_left_alone() -> None:
    raw = _single(HTML.encode("utf-8"), "x-no-such-charset", "8bit")
    assert transform_mime(raw).mime is raw


def test_bytes_that_lie_about_their_charset_are_left_alone() -> None:
    raw = _single(HTML.encode("iso-8859-1"), "utf-8", "8bit")
    assert transform_mime(raw).mime is raw


def test_html_attachment_is_not_touched() -> None:
    raw = _single(HTML.encode(), "utf-8", "8bit").replace(
        b"Subject: t\r\n", b"Subject: t\r\nContent-Disposition: attachment; filename=page.html\r\n"
    )
    assert transform_mime(raw).mime is raw


def test_signed_multipart_is_not_touched() -> None:
    raw = (
        b'From: a@example.com\r\nContent-Type: multipart/signed; boundary="s"; protocol="x"\r\n\r\n'
        b"--s\r\nContent-Type: text/html\r\n\r\n" + HTML.encode() + b"\r\n"
        b"--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nsig\r\n--s--\r\n"
    )
    assert transform_mime(raw).mime is raw


def test_premailer_engine() -> None:
    out = transform_mime(_mixed_message(), engine=PREMAILER)
    assert out.html_parts_transformed == 1
    assert "color:red" in _html_of(out.mime).replace(" ", "")


@pytest.mark.parametrize("raw", [b"", b"not a message\r\n\r\nbody", b"\x00\x01\x02", b"From nobody Mon\n\nx"])
def test_not_a_message_is_a_typed_error(raw: bytes) -> None:
    with pytest.raises(MimeError):
        transform_mime(raw)


def test_truncated_multipart_still_works() -> None:
    raw = _mixed_message()
    raw = raw[: raw.index(b"--inner--")]
    result = transform_mime(raw)
    assert result.html_parts_transformed == 1 and result.mime.startswith(raw[:200])


def test_multipart_without_boundary_is_left_alone() -> None:
    raw = b"From: a@example.com\r\nContent-Type: multipart/mixed\r\n\r\n" + HTML.encode()
    assert transform_mime(raw).mime is raw


def test_broken_base64_does_not_crash() -> None:
    raw = _single(b"PHN0eWxlPnB7Y29sb3I6cmVkfTwvc3R5bGU+PHA+eDwvcD4=!!!@@@===x", "utf-8", "base64")
    transform_mime(raw)


def test_random_mutations_never_crash_unexpectedly() -> None:
    rng = random.Random(1234)
    base = _mixed_message()
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = rng.randrange(len(data) + 1)
        with contextlib.suppress(MimeError):
            transform_mime(bytes(data[:cut]))


# --- tracking ------------------------------------------------------------------------------------------

NONCE = "fedcba9876543210"
CLICK = "https://t.example.com/t/c/"
OPENS = "https://t.example.com/t/o/"
TRACK = TrackingOptions(NONCE, CLICK, OPENS, prevent_scam=True)
KEY = tracking.tracking_key(b"verp secret")
GROUP = "01JDQ3ZK4Q8Y5V7Q3M2W1X0ABC"
TRACKED_HTML = (
    "<html><head><style>p { color: red; } a[href^='https://shop'] { color: green; } "
    "img { border: 5px solid red; }</style></head><body>\n"
    '<p>Grüße, <a href="https://shop.example/sale?a=1&amp;b=2">Click here</a></p>\n'
    '<p><a href="https://bank.example/">https://bank.example/</a> <a href="mailto:x@example.com">mail</a>'
    ' <a href="#top">top</a></p>\n'
    '<p><a href="https://shop.example/sale?a=1&amp;b=2"><img src="cid:logo" alt=""></a></p>\n'
    "</body></html>"
)
TRACK_PIXEL = (
    f'<img src="{OPENS}{tracking.placeholder(NONCE, tracking.OPEN)}" width="1" height="1" alt="" '
    'style="display:block;border:0;width:1px;height:1px" />'
)
TRACKED_LINKS = ("https://shop.example/sale?a=1&b=2", "https://shop.example/sale?a=1&b=2")


def _alternative(html_part: bytes) -> bytes:
    return (
        b"From: a@example.com\r\nTo: b@example.net\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Click here: https://shop.example/sale?a=1&b=2 \r\n"
        b"--alt\r\n" + html_part + b"\r\n--alt--\r\n"
    )


def _qp_html_part(html: str) -> bytes:
    body = quopri.encodestring(html.encode(), quotetabs=False).replace(b"\n", b"\r\n")
    return (
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        + body.rstrip(b"\r\n")
    )


def _token(index: int) -> str:
    return tracking.make_token(KEY, GROUP, 7, index)


def _personalise(mime: bytes) -> bytes:
    return tracking.personalise(mime, NONCE, _token)


def test_tracking_rewrites_links_adds_the_pixel_and_keeps_the_text_part() -> None:
    raw = _alternative(_qp_html_part(TRACKED_HTML))
    result = transform_mime(raw, tracking=TRACK)
    assert result.changed and result.html_parts_transformed == 1
    assert result.links == TRACKED_LINKS and result.open_pixel
    text_part = raw[raw.index(b"--alt\r\n") : raw.index(b"--alt\r\nContent-Type: text/html")]
    assert text_part in result.mime  # byte for byte
    html = _html_of(result.mime)
    assert html.count(f'href="{CLICK}{tracking.placeholder(NONCE, 0)}"') == 1
    assert html.count(f'href="{CLICK}{tracking.placeholder(NONCE, 1)}"') == 1
    assert 'href="https://bank.example/"' in html and 'href="mailto:x@example.com"' in html
    assert 'href="#top"' in html and "Grüße" in html
    assert re.search(re.escape(TRACK_PIXEL) + r"\s*</body>", html)


def test_the_part_becomes_quoted_printable_with_each_placeholder_on_its_own_line() -> None:
    raw = _single(TRACKED_HTML.encode(), "utf-8", "8bit")
    out = transform_mime(raw, tracking=TRACK).mime
    head, body = out.split(b"\r\n\r\n", 1)
    assert head.count(b"Content-Transfer-Encoding") == 1 and head.endswith(b"quoted-printable")
    lines = body.split(b"\r\n")
    placeholders = re.compile(rb"PWT" + NONCE.encode() + rb"x(?:\d+|o)Z")
    assert len(placeholders.findall(body)) == 3
    assert [line for line in lines if placeholders.search(line)] == [
        tracking.placeholder(NONCE, i).encode() + b"=" for i in (0, 1, tracking.OPEN)
    ]
    assert max(map(len, lines)) <= 76


def test_personalised_message_parses_and_carries_the_tokens() -> None:
    raw = _alternative(_qp_html_part(TRACKED_HTML))
    sent = _personalise(transform_mime(raw, tracking=TRACK).mime)
    assert b"PWT" + NONCE.encode() not in sent
    html_start = sent.index(b"Content-Type: text/html")
    assert max(map(len, sent[html_start:].split(b"\r\n"))) <= 76
    html = _html_of(sent)
    for i in (0, 1):
        assert f'href="{CLICK}{_token(i)}"' in html
    assert f'src="{OPENS}{_token(tracking.OPEN)}"' in html
    token = tracking.read_token(KEY, _token(1))
    assert (token.group_id.upper(), token.recipient_index, token.link_index) == (GROUP, 7, 1)


def test_css_is_inlined_once_and_before_the_links_change(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting_inline(html: str, extra_css: str | None, engine: str) -> str:
        calls.append(html)
        return inline_html(html, extra_css, engine)

    monkeypatch.setattr(mime, "inline_html", counting_inline)
    html = _html_of(transform_mime(_single(TRACKED_HTML.encode(), "utf-8", "8bit"), tracking=TRACK).mime)
    assert calls == [TRACKED_HTML + "\r\n"]  # once, on the document as sent: no placeholder in it yet
    # the attribute selector matched the original URLs, so inlining saw them before they were replaced
    assert html.count('style="color: green;"') == 2
    # the pixel came after inlining: the img rule did not reach it
    assert 'width:1px;height:1px" />' in html and html.count("border: 5px solid red") == 1


def test_tracking_without_inlining_changes_only_links_and_pixel() -> None:
    raw = _single(TRACKED_HTML.encode(), "utf-8", "8bit")
    result = transform_mime(raw, inline_css=False, tracking=TRACK)
    expected = (
        TRACKED_HTML.replace('"https://shop.example/sale?a=1&amp;b=2"', f'"{CLICK}PLACEHOLDER"', 2)
        .replace("PLACEHOLDER", tracking.placeholder(NONCE, 0), 1)
        .replace("PLACEHOLDER", tracking.placeholder(NONCE, 1), 1)
        .replace("</body>", TRACK_PIXEL + "</body>")
    )
    assert _html_of(result.mime).replace("\r\n", "\n") == expected + "\n"  # QP writes CRLF line breaks


def test_both_off_is_exactly_as_before() -> None:
    raw = _alternative(_qp_html_part(TRACKED_HTML))
    assert transform_mime(raw, inline_css=False).mime is raw
    assert transform_mime(raw) == transform_mime(raw, tracking=None)
    assert transform_mime(raw).links == () and not transform_mime(raw).open_pixel


def test_base64_html_is_tracked_as_quoted_printable() -> None:
    body = base64.encodebytes(TRACKED_HTML.encode()).replace(b"\n", b"\r\n").rstrip()
    out = transform_mime(_single(body, "utf-8", "base64"), tracking=TRACK)
    assert out.links == TRACKED_LINKS
    assert b"Content-Transfer-Encoding: quoted-printable\r\n" in out.mime and b"base64" not in out.mime
    html = _html_of(_personalise(out.mime))
    assert f'href="{CLICK}{_token(0)}"' in html and "Grüße" in html


def test_lf_message_gets_lf_soft_breaks() -> None:
    out = transform_mime(_single(TRACKED_HTML.encode(), "utf-8", "8bit", nl=b"\n"), tracking=TRACK).mime
    assert b"\r" not in out and (tracking.placeholder(NONCE, 0).encode() + b"=\n") in out
    assert f'href="{CLICK}{_token(0)}"' in _html_of(_personalise(out))


def test_link_indexes_run_across_html_parts() -> None:
    part = _qp_html_part('<body><a href="https://a.example/">a</a><a href="https://b.example/">b</a></body>')
    raw = (
        b'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="m"\r\n\r\n'
        b"--m\r\n" + part + b"\r\n--m\r\n" + part.replace(b"a.example", b"c.example") + b"\r\n--m--\r\n"
    )
    result = transform_mime(raw, inline_css=False, tracking=TrackingOptions(NONCE, CLICK))
    assert result.html_parts_transformed == 2 and not result.open_pixel
    assert result.links == (
        "https://a.example/",
        "https://b.example/",
        "https://c.example/",
        "https://b.example/",
    )
    for i in range(4):
        assert result.mime.count(tracking.placeholder(NONCE, i).encode()) == 1


def test_nothing_to_track_leaves_the_message_alone() -> None:
    raw = _single(b'<p><a href="mailto:x@example.com">mail</a></p>', "utf-8", "7bit")
    result = transform_mime(raw, tracking=TrackingOptions(NONCE, CLICK))
    assert result.mime is raw and result.links == ()


def test_html_attachment_and_non_ascii_compatible_charset_are_not_tracked() -> None:
    attachment = _single(TRACKED_HTML.encode(), "utf-8", "8bit").replace(
        b"Subject: t\r\n", b"Subject: t\r\nContent-Disposition: attachment; filename=page.html\r\n"
    )
    assert transform_mime(attachment, tracking=TRACK).mime is attachment
    utf16_html = '<a href="https://a.example/">a</a>'.encode("utf-16")
    utf16 = _single(base64.b64encode(utf16_html), "utf-16", "base64")
    assert transform_mime(utf16, tracking=TRACK).mime is utf16


def test_random_mutations_with_tracking_never_crash_unexpectedly() -> None:
    rng = random.Random(99)
    base = _alternative(_qp_html_part(TRACKED_HTML))
    for _ in range(200):
        data = bytearray(base)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(MimeError):
            out = transform_mime(bytes(data), tracking=TRACK)
            assert len(out.links) == len(re.findall(rb"PWT" + NONCE.encode() + rb"x\d+Z", out.mime))
