"""track_html: which links get click placeholders, what the output keeps, the pixel; the QP encoder."""

from __future__ import annotations

import binascii
import random
import re

import pytest

from postwire.core.tracking import MAX_LINKS, OPEN, placeholder
from postwire.transformer import qp
from postwire.transformer.link_tracking import (
    NOTRACK_ATTRIBUTE,
    BadTrackingOptions,
    TrackingOptions,
    looks_like_url,
    track_html,
    unescape_attribute,
)

NONCE = "0123456789abcdef"
CLICK = "https://t.example.com/t/c/"
OPEN_PREFIX = "https://t.example.com/t/o/"
CLICKS = TrackingOptions(NONCE, click_url_prefix=CLICK)
PIXEL = (
    f'<img src="{OPEN_PREFIX}{placeholder(NONCE, OPEN)}" width="1" height="1" alt="" '
    'style="display:block;border:0;width:1px;height:1px" />'
)


def tracked_href(index: int) -> str:
    return CLICK + placeholder(NONCE, index)


def test_http_links_get_indexed_placeholders_and_urls_are_entity_decoded() -> None:
    doc = (
        '<p><a href="https://shop.example/a?x=1&amp;y=2">one</a>\n'
        "<A HREF=' HTTP://Shop.example/b&#47;c '>two</A>"
        '<a class="btn" href = "https://shop.example/a?x=1&amp;y=2" title="same url again">three</a></p>'
    )
    out = track_html(doc, CLICKS)
    assert out.links == ("https://shop.example/a?x=1&y=2", "HTTP://Shop.example/b/c", out.links[0])
    assert out.html == (
        f'<p><a href="{tracked_href(0)}">one</a>\n'
        f"<A HREF='{tracked_href(1)}'>two</A>"
        f'<a class="btn" href = "{tracked_href(2)}" title="same url again">three</a></p>'
    )
    assert not out.open_pixel


def test_an_unquoted_href_is_quoted_and_nothing_else_changes() -> None:
    doc = "<a href=https://x.example/p?q=1 target=_blank>x</a>"
    assert track_html(doc, CLICKS).html == f'<a href="{tracked_href(0)}" target=_blank>x</a>'


def test_only_http_links_are_tracked() -> None:
    doc = (
        '<a href="mailto:a@example.com">mail</a><a href="tel:+31201234567">call</a>'
        '<a href="#top">top</a><a href="/relative">rel</a><a href="page.html">page</a>'
        '<a href="ftp://files.example/x">ftp</a><a href="javascript:alert(1)">js</a><a href="">empty</a>'
        "<a name=anchor>named</a><a href>bare</a>"
    )
    out = track_html(doc, CLICKS)
    assert out.html == doc and out.links == ()


def test_opt_out_attribute() -> None:
    doc = f'<a {NOTRACK_ATTRIBUTE} href="https://a.example/">a</a><a href="https://b.example/">b</a>'
    out = track_html(doc, CLICKS)
    assert out.links == ("https://b.example/",)
    assert out.html == doc.replace('"https://b.example/"', f'"{tracked_href(0)}"')


def test_links_in_comments_scripts_and_styles_are_left_alone() -> None:
    doc = (
        '<!--[if mso]><v:roundrect href="https://vml.example/"></v:roundrect><![endif]-->'
        '<!-- <a href="https://comment.example/">c</a> -->'
        "<script>document.write('<a href=\"https://script.example/\">s</a>')</script>"
        '<style>a[href="https://style.example/"]{color:red}</style>'
        '<a href="https://real.example/">real</a>'
    )
    out = track_html(doc, CLICKS)
    assert out.links == ("https://real.example/",)
    assert out.html == doc.replace("https://real.example/", tracked_href(0))


def test_malformed_markup_does_not_stop_the_scan() -> None:
    doc = '<![foo[ x ]]><a href="https://a.example/">a</a><![if !mso]><a href="https://b.example/">b</a>'
    assert track_html(doc, CLICKS).links == ("https://a.example/", "https://b.example/")


@pytest.mark.parametrize(
    "text",
    [
        "https://bank.example",
        "HTTPS://BANK.EXAMPLE/login",
        "www.bank.example",
        "bank.example/login",
        "bank.example",
        "<b>secure.bank.example</b>",
        "  https://bank.example/account  ",
        "Log in at https://bank.example/",
        "http:&#47;/bank.example",
        "bank.ex\u200bample",
    ],
)
def test_prevent_scam_leaves_links_whose_text_is_an_address(text: str) -> None:
    doc = f'<a href="https://evil.example/">{text}</a><a href="https://shop.example/">Click <i>here</i></a>'
    out = track_html(doc, TrackingOptions(NONCE, CLICK, prevent_scam=True))
    assert out.links == ("https://shop.example/",)
    assert out.html == doc.replace('"https://shop.example/"', f'"{tracked_href(0)}"')
    assert track_html(doc, CLICKS).links == ("https://evil.example/", "https://shop.example/")


@pytest.mark.parametrize("text", ["Click here", "Read more", "Shop now!", "e.g. this", "", "50% off"])
def test_ordinary_link_text_is_not_an_address(text: str) -> None:
    assert not looks_like_url(text)


def test_open_pixel_goes_before_the_last_body_end_tag() -> None:
    doc = "<html><body><p>hi</p></BODY >\n</html>\n"
    out = track_html(doc, TrackingOptions(NONCE, open_url_prefix=OPEN_PREFIX))
    assert out.open_pixel and out.links == ()
    assert out.html == f"<html><body><p>hi</p>{PIXEL}</BODY >\n</html>\n"


def test_open_pixel_without_body_end_tag_goes_at_the_end() -> None:
    doc = "<p>hi</p><!-- </body> -->\n\n"
    out = track_html(doc, TrackingOptions(NONCE, open_url_prefix=OPEN_PREFIX))
    assert out.html == f"<p>hi</p><!-- </body> -->{PIXEL}\n\n"


def test_prefixes_are_html_escaped() -> None:
    options = TrackingOptions(NONCE, "https://t.example/c?a=1&b=", "https://t.example/o?a=1&b=")
    out = track_html('<body><a href="https://x.example/">x</a></body>', options)
    assert f'href="https://t.example/c?a=1&amp;b={placeholder(NONCE, 0)}"' in out.html
    assert f'src="https://t.example/o?a=1&amp;b={placeholder(NONCE, OPEN)}"' in out.html


def test_indexes_continue_from_first_index_and_stop_at_max_links() -> None:
    doc = "".join(f'<a href="https://x.example/{i}">{i}</a>' for i in range(3))
    out = track_html(doc, CLICKS, first_index=MAX_LINKS - 2)
    assert out.links == ("https://x.example/0", "https://x.example/1")
    assert tracked_href(MAX_LINKS - 1) in out.html and tracked_href(MAX_LINKS - 2) in out.html
    assert '<a href="https://x.example/2">2</a>' in out.html


def test_attribute_references_decode_like_a_browser() -> None:
    assert unescape_attribute("?a=1&amp;b=2&copy=3&copy;&ampx&#x41;&#66&lt") == "?a=1&b=2&copy=3©&ampxAB<"
    assert unescape_attribute("&notit;&notin;&bogus;") == "&notit;∉&bogus;"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nonce": "0123456789ABCDEF"}, "nonce"),
        ({"nonce": "0123456789abcdef\n"}, "nonce"),
        ({"nonce": ""}, "nonce"),
        ({"nonce": NONCE, "click_url_prefix": "ftp://t.example/"}, "click_url_prefix"),
        ({"nonce": NONCE, "click_url_prefix": "//t.example/"}, "click_url_prefix"),
        ({"nonce": NONCE, "open_url_prefix": 'https://t.example/"><script>'}, "open_url_prefix"),
        ({"nonce": NONCE, "open_url_prefix": "https://t.example/a b"}, "open_url_prefix"),
        ({"nonce": NONCE, "open_url_prefix": "https://tëst.example/"}, "open_url_prefix"),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(BadTrackingOptions, match=message):
        TrackingOptions(**kwargs)  # type: ignore[arg-type]


def test_random_markup_never_crashes() -> None:
    rng = random.Random(7)
    alphabet = [
        '<a href="https://x.example/">',
        "</a>",
        "<",
        ">",
        "<!--",
        "-->",
        "<![",
        "]]>",
        "&amp;",
        "'",
        '"',
        "=",
        " ",
        "\n",
        "<script>",
        "</script>",
        "</body>",
        "www.x.example",
        "<!",
        "</",
    ]
    for _ in range(300):
        doc = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        out = track_html(doc, TrackingOptions(NONCE, CLICK, OPEN_PREFIX, prevent_scam=True))
        assert out.html.count(CLICK) == len(out.links)


# --- quoted-printable with kept placeholders ------------------------------------------------------------

KEEP = re.compile(rb"PWT" + NONCE.encode() + rb"x(?:[0-9]{1,5}|o)Z")


@pytest.mark.parametrize("nl", [b"\r\n", b"\n"])
def test_qp_keeps_each_placeholder_on_its_own_line(nl: bytes) -> None:
    ph = [placeholder(NONCE, i).encode() for i in (0, 1, 12345, OPEN)]
    data = (
        b'<a href="'
        + b"x" * 70
        + ph[0]
        + b'">caf\xc3\xa9</a> \n'
        + ph[1]
        + ph[2]
        + b"=tail\t\n"
        + b"y" * 200
        + ph[3]
        + b"\n"
    )
    out = qp.encode(data, KEEP, nl)
    assert binascii.a2b_qp(out) == data.replace(b"\n", nl)
    lines = out.split(nl)
    for p in ph:
        assert sum(line in (p, p + b"=") for line in lines) == 1  # alone on its line, whole
    assert max(map(len, lines)) <= qp.MAX_LINE
    assert b"\r" not in out.replace(b"\r\n", b"") and (nl == b"\r\n" or b"\r" not in out)


def test_qp_lines_fit_after_tokens_replace_the_placeholders() -> None:
    rng = random.Random(3)
    for _ in range(200):
        pieces = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.3:
                pieces.append(placeholder(NONCE, rng.choice([0, 7, 99999, OPEN])).encode())
            else:
                pieces.append(bytes(rng.choice(b"ab =\t\n\r\xc3\xa9.") for _ in range(rng.randint(0, 120))))
        data = b"".join(pieces)
        out = qp.encode(data, KEEP)
        normalised = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        assert binascii.a2b_qp(out) == normalised
        personalised = KEEP.sub(b"T" * 46, out)
        assert binascii.a2b_qp(personalised) == KEEP.sub(b"T" * 46, normalised)
        for line in personalised.split(b"\r\n"):
            assert len(line) <= qp.MAX_LINE
            assert not line.endswith((b" ", b"\t"))


def test_qp_refuses_to_keep_what_it_cannot() -> None:
    with pytest.raises(ValueError):
        qp.encode(b"x" * 80, re.compile(rb"x{76}"))
