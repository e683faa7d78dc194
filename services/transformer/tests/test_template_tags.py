"""Templates (TransformOptions.template): CSS inlined once around the tags, which come back as written and
in place, so the result renders per recipient; a part whose tags cannot be kept stays as it was."""

from __future__ import annotations

import asyncio
import binascii
import re
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from postwire.core.tracking import placeholder
from postwire.personalisation import compile_template
from postwire.transformer.html_parts import transform_mime
from postwire.transformer.inline import CSS_INLINE, PREMAILER, inline_html
from postwire.transformer.link_tracking import TrackingOptions
from postwire.transformer.service import serve
from postwire.transformer.settings import TransformerSettings
from postwire.transformer.template_tags import (
    BadTemplateOptions,
    Protected,
    TemplateOptions,
    derive_nonce,
    protect,
    restore,
    token,
)
from postwire.transformer.worker_pool import WorkerPool
from postwire.v1 import transformer_pb2, transformer_pb2_grpc

NONCE = "0123456789abcdef"
CLICK = "https://t.example.com/t/c/"
CLICKS = TrackingOptions(NONCE, click_url_prefix=CLICK)
HEAD = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: template\r\nMIME-Version: 1.0\r\n"
ROWS = (
    "<html><head><style>td.x { color: red; padding: 4px } p { margin: 0 }</style></head><body>"
    '<table class="list">{foreach $rows as $r}<tr><td class="x">{$r.name|escape}</td></tr>{/foreach}</table>'
    '<p>Hi {$name|default:"friend"}</p></body></html>'
)
TD_STYLE = 'style="color: red;padding: 4px;"'


def message(html: str, charset: str = "utf-8") -> bytes:
    head = HEAD + f"Content-Type: text/html; charset={charset}\r\n\r\n".encode()
    return head + html.encode(charset) + b"\r\n"


def body(result_mime: bytes) -> str:
    """The HTML of a single-part message, its transfer encoding undone."""
    head, _, data = result_mime.partition(b"\r\n\r\n")
    if b"quoted-printable" in head.lower():
        data = binascii.a2b_qp(data)
    return data.decode("utf-8").rstrip("\r\n")


def template(html: str, engine: str = CSS_INLINE, tracking: TrackingOptions | None = None) -> str | None:
    """The HTML after transform_mime with template=True, or None when the part was left as it was."""
    raw = message(html)
    result = transform_mime(raw, engine, tracking=tracking, template=TemplateOptions(NONCE))
    if not result.changed:
        assert result.mime is raw
        return None
    return body(result.mime)


def test_a_foreach_between_rows_stays_and_renders_rows_with_the_inlined_style() -> None:
    out = template(ROWS)
    assert out is not None
    assert (
        '<table class="list"><tbody>{foreach $rows as $r}'
        f'<tr><td class="x" {TD_STYLE}>{{$r.name|escape}}</td></tr>{{/foreach}}</tbody></table>'
    ) in out
    assert '<p style="margin: 0;">Hi {$name|default:"friend"}</p>' in out
    assert "<style>" not in out
    # inlined once, rendered per recipient
    rendered = compile_template(out).render({"rows": [{"name": "Ann & Bob"}, {"name": "Cy"}]})
    assert rendered.count(f'<td class="x" {TD_STYLE}>') == 2
    assert f'<td class="x" {TD_STYLE}>Ann &amp; Bob</td></tr><tr><td class="x" {TD_STYLE}>Cy</td>' in rendered
    assert '<p style="margin: 0;">Hi friend</p>' in rendered


def test_premailer_keeps_the_tags_too() -> None:
    out = template(ROWS, engine=PREMAILER)
    assert out is not None
    assert re.search(
        r'\{foreach \$rows as \$r\}<tr><td class="x" style="color:red; padding:4px">'
        r"\{\$r\.name\|escape\}</td></tr>\s*\{/foreach\}",
        out,
    )
    rendered = compile_template(out).render({"rows": [{"name": "A"}, {"name": "B"}]})
    assert rendered.count('style="color:red; padding:4px">') == 2


def test_tags_in_attribute_values() -> None:
    html = (
        "<style>a { color: blue } td { padding: 0 }</style><table><tr><td>"
        '<a href="https://x.example/?u={$id}&amp;s=1" title={$title}>x</a>'
        '<span style="color: {$c}">y</span><a href="https://x.example/?a=1&{$key}=2">z</a></td></tr></table>'
    )
    out = template(html)
    assert out is not None
    assert '<a href="https://x.example/?u={$id}&amp;s=1" title="{$title}" style="color: blue;">x</a>' in out
    assert '<span style="color: {$c}">y</span>' in out
    assert '<a href="https://x.example/?a=1&{$key}=2" style="color: blue;">z</a>' in out  # "&" as written


def test_a_tag_whose_source_holds_ampersands_and_quotes_comes_back_unescaped() -> None:
    html = (
        "<style>p { margin: 0 }</style>"
        '<p title=\'{$a|default:"x & y"}\'>{$b|default:"<b>\\"q\\" &amp; z</b>"}</p>'
    )
    out = template(html)
    assert out is not None
    assert '<p title="{$a|default:"x & y"}" style="margin: 0;">' in out
    assert '>{$b|default:"<b>\\"q\\" &amp; z</b>"}</p>' in out
    assert '<p title="x & y" style="margin: 0;"><b>"q" &amp; z</b></p>' in compile_template(out).render({})


def test_a_tag_in_the_title() -> None:
    out = template("<html><head><title>News for {$name}</title><style>p{margin:0}</style></head><p>a</p>")
    assert out is not None and "<title>News for {$name}</title>" in out and '<p style="margin: 0;">' in out


def test_a_tag_in_an_mso_conditional_comment() -> None:
    html = (
        '<style>p{margin:0}</style><p>a</p><!--[if mso]><v:roundrect href="{$url}"><center>{$label}'
        "</center></v:roundrect><![endif]-->"
    )
    out = template(html)
    assert out is not None
    assert '<!--[if mso]><v:roundrect href="{$url}"><center>{$label}</center></v:roundrect>' in out


def test_a_literal_block_and_a_comment() -> None:
    html = (
        "<style>p{margin:0}</style><p>{* note *}a</p>"
        "{literal}<script>function(){return {x:1}}</script>{/literal}"
    )
    out = template(html)
    assert out is not None
    assert '<p style="margin: 0;">{* note *}a</p>' in out
    assert "{literal}<script>function(){return {x:1}}</script>{/literal}" in out


@pytest.mark.parametrize(
    "html",
    [
        '<style>td{color:red}</style><table><tr><td {if $x}class="a"{/if}>a</td></tr></table>',
        '<style>td{color:red}</style><table><tr><td class="a" {$attributes}>a</td></tr></table>',
        "<style>td{color:red}</style><{$tag}>a</{$tag}>",
        "<style>td{color:red}</style><table><tr><td>a</td {$x}></tr></table>",
    ],
)
def test_a_tag_inside_tag_markup_leaves_the_part_as_it_was(html: str) -> None:
    assert protect(html, NONCE) is None
    assert template(html) is None


@pytest.mark.parametrize(
    "html",
    [
        pytest.param(
            "<style>td { color: {$c} }</style><table><tr><td>a</td><td>b</td></tr></table>", id="copied"
        ),
        pytest.param("<style>.none { color: {$c} }</style><p>a</p>", id="dropped"),
        pytest.param(
            '<style>td { color: red }</style><table><tr><td style="{$s}">a</td></tr></table>',
            id="unreadable-style-attribute",
        ),
    ],
)
def test_a_tag_the_inliner_cannot_keep_leaves_the_part_as_it_was(html: str) -> None:
    assert protect(html, NONCE) is not None
    assert template(html) is None


@pytest.mark.parametrize(
    "html",
    [
        pytest.param("<style>p{margin:0}</style><p>&#123;$x} &lbrace;$y}</p>", id="decoded-reference"),
        pytest.param("<p>{<style>p{margin:0}</style>$x}</p>", id="joined"),
    ],
)
def test_text_the_inliner_would_turn_into_a_tag_leaves_the_part_as_it_was(html: str) -> None:
    assert template(html + "{$z}") is None
    assert template(html) is None  # with no tag of its own too


def test_a_tag_in_a_style_rule_copied_once_is_kept() -> None:
    out = template("<style>td { color: {$c} }</style><table><tr><td>a</td></tr></table>")
    assert out is not None and '<td style="color: {$c};">a</td>' in out


def test_a_tag_that_starts_a_fragment_is_text_of_its_body() -> None:
    """A comment there would go before the <html> the parser adds, and the space after it would be lost."""
    out = template("<style>p{margin:0}</style>{$greeting} friends,<p>news</p>")
    assert out is not None and '<body>{$greeting} friends,<p style="margin: 0;">news</p>' in out
    out = template("<!DOCTYPE html>{* note *}\n<html><body><style>p{margin:0}</style><p>a</p></body></html>")
    assert out is not None and out.startswith("<!DOCTYPE html>{* note *}<html>")  # a document: in place


def test_a_part_without_tags_is_inlined_as_without_template() -> None:
    html = "<style>p{color:red}</style><p>a { b } c</p>"
    raw = message(html)
    plain = transform_mime(raw)
    assert transform_mime(raw, template=TemplateOptions(NONCE)) == plain
    assert transform_mime(raw, template=TemplateOptions()) == plain


def test_a_part_with_nothing_to_do_is_not_protected_nor_counted() -> None:
    result = transform_mime(message("<table><tr><td {$x}>a</td></tr></table>"), template=TemplateOptions())
    assert not result.changed and result.unprotectable_parts == 0


def test_a_template_that_does_not_lex_is_left_as_it_was() -> None:
    html = "<style>p{color:red}</style><p>{unknown}</p>"
    result = transform_mime(message(html), template=TemplateOptions(NONCE))
    assert not result.changed and result.unprotectable_parts == 1


def test_text_already_holding_a_token_is_not_protected() -> None:
    assert protect(f"<p>{token(NONCE, 0)} {{$x}}</p>", NONCE) is None


def test_tracking_a_template_leaves_links_with_tags_alone() -> None:
    html = (
        "<style>a{color:blue}</style><body>"
        '<a href="https://shop.example/?u={$id}">personal</a>'
        '<a href="https://shop.example/sale">sale</a>'
        '<a href="{$unsubscribe}">unsubscribe</a>'
        '<a href="https://shop.example/{if $vip}vip{/if}">maybe</a>'
        "</body>"
    )
    result = transform_mime(message(html), tracking=CLICKS, template=TemplateOptions(NONCE))
    assert result.links == ("https://shop.example/sale",)
    out = body(result.mime)
    assert f'<a href="{CLICK}{placeholder(NONCE, 0)}" style="color: blue;">sale</a>' in out
    assert '<a href="https://shop.example/?u={$id}" style="color: blue;">personal</a>' in out
    assert '<a href="{$unsubscribe}" style="color: blue;">unsubscribe</a>' in out
    assert '<a href="https://shop.example/{if $vip}vip{/if}" style="color: blue;">maybe</a>' in out


def test_with_prevent_scam_a_link_whose_text_holds_a_tag_is_not_tracked() -> None:
    html = '<a href="https://shop.example/">{$shown_url}</a><a href="https://shop.example/b">Buy</a>'
    options = TrackingOptions(NONCE, click_url_prefix=CLICK, prevent_scam=True)
    result = transform_mime(
        message(html), inline_css=False, tracking=options, template=TemplateOptions(NONCE)
    )
    assert result.links == ("https://shop.example/b",)
    assert '<a href="https://shop.example/">{$shown_url}</a>' in body(result.mime)


def test_an_unprotectable_part_takes_no_link_index() -> None:
    good = '<a href="https://a.example/">a</a>'
    bad = '<td {$x}><a href="https://b.example/">b</a></td>'
    raw = (
        HEAD
        + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + b"".join(b"--b\r\nContent-Type: text/html\r\n\r\n" + p.encode() + b"\r\n" for p in (bad, good))
        + b"--b--\r\n"
    )
    result = transform_mime(raw, tracking=CLICKS, template=TemplateOptions(NONCE))
    assert result.links == ("https://a.example/",) and result.unprotectable_parts == 1
    assert bad.encode() in result.mime


def test_the_tbody_stays_outside_the_loop_only_when_implied() -> None:
    explicit = (
        "<style>td{color:red}</style>"
        "<table>{foreach $r as $x}<tbody><tr><td>{$x}</td></tr></tbody>{/foreach}</table>"
    )
    out = template(explicit)
    assert out is not None and "<table>{foreach $r as $x}<tbody><tr>" in out


def test_the_nonce_is_checked_or_derived() -> None:
    with pytest.raises(BadTemplateOptions):
        TemplateOptions("not-a-nonce")
    assert TemplateOptions().nonce_for("<p>x</p>") == derive_nonce("<p>x</p>")
    assert re.fullmatch("[0-9a-f]{16}", derive_nonce("<p>x</p>"))


def test_restore_refuses_a_token_out_of_order_or_in_another_form() -> None:
    protected = protect("<p>{$a}</p><p title={$b}>", NONCE)
    assert protected is not None
    t0, t1 = token(NONCE, 0), token(NONCE, 1)
    assert protected.html == f"<p><!--{t0}--></p><p title={t1}>"
    assert restore(protected.html, protected) == "<p>{$a}</p><p title={$b}>"
    assert restore(f"<p title={t1}><!--{t0}-->", protected) is None  # order
    assert restore(f"<p>{t0}</p><p title={t1}>", protected) is None  # text token lost its comment
    assert restore(f"<p><!--{t0}--></p><p title={t1}>{t1}", protected) is None  # copied
    assert restore(f"<p><!--{t0}--></p>", protected) is None  # dropped


def _identity_round_trip(protected: Protected | None, source: str) -> None:
    assert protected is not None
    assert restore(protected.html, protected) == source


# text that opens no tag of its own: "{" only where the lexer reads text (CSS, a "{" before a space)
TEXT = st.lists(
    st.sampled_from(
        [
            *"ab <>/&;=\"'}#-!\n",
            "{ ",
            "p{color:red}",
            "<!--",
            "-->",
            "&amp;",
            "<p>",
            "<td>",
            "<tr>",
            "<table>",
            "<title>",
            "</title>",
            "<a href=",
            "<b class='",
            "<style>",
            "</style>",
            "<![endif]>",
        ]
    ),
    max_size=8,
).map("".join)
VARIABLE = st.sampled_from(["{$a}", "{$b.c|upper}", '{$d|default:"x } & <y>"}', "{$e[0]}"])


@given(st.lists(st.tuples(TEXT, VARIABLE), max_size=8), TEXT)
def test_protect_then_restore_gives_back_the_input(pairs: list[tuple[str, str]], tail: str) -> None:
    """Random text with variables in text positions (the text's own markup escaped, so each variable sits
    in the text of a paragraph): protect, nothing changed, restore is the input."""
    escaped = [(text.replace("<", "&lt;"), tag) for text, tag in pairs]
    source = "<p>" + "".join(text + tag for text, tag in escaped) + tail.replace("<", "&lt;")
    protected = protect(source, NONCE)
    _identity_round_trip(protected, source)
    assert protected is not None and all(protected.commented)


@given(st.lists(st.tuples(TEXT, VARIABLE), max_size=8), TEXT)
def test_protect_then_restore_gives_back_any_protectable_input(
    pairs: list[tuple[str, str]], tail: str
) -> None:
    """The same with raw "<": wherever the tags land, a protected part restores to itself."""
    source = "".join(text + tag for text, tag in pairs) + tail
    protected = protect(source, NONCE)
    if protected is not None:
        _identity_round_trip(protected, source)


def test_inlining_changes_nothing_but_the_css() -> None:
    """css-inline on a template without a style sheet: only the document wrapper is added."""
    html = '<table><tr><td>{if $a}A{else}B{/if}</td></tr></table><p title="{$t}">{$p}</p>'
    protected = protect(html, NONCE)
    assert protected is not None
    out = restore(inline_html(protected.html), protected)
    wrapped = html.replace("<tr>", "<tbody><tr>").replace("</table>", "</tbody></table>")
    assert out == f"<html><head></head><body>{wrapped}</body></html>"


# the gRPC service


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def grpc_port() -> AsyncIterator[int]:
    settings = TransformerSettings(grpc_port=0, ops_port=0, transform_workers=1)
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, port.set_result))
    yield await port
    stop.set()
    await task


def parts(result: str) -> float:
    return REGISTRY.get_sample_value("postwire_transformer_template_parts_total", {"result": result}) or 0.0


async def test_a_template_through_the_service(grpc_port: int) -> None:
    before = parts("transformed"), parts("unprotectable")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = transformer_pb2_grpc.TransformerStub(channel)
        options = transformer_pb2.TransformOptions(inline_css=True, template=True)
        reply = await stub.Transform(transformer_pb2.TransformRequest(mime=message(ROWS), options=options))
        assert reply.changed and reply.html_parts_transformed == 1
        out = body(reply.mime)
        assert f'{{foreach $rows as $r}}<tr><td class="x" {TD_STYLE}>{{$r.name|escape}}</td></tr>' in out
        bad = message('<style>td{color:red}</style><table><tr><td {if $x}class="a"{/if}>a</td></tr></table>')
        reply = await stub.Transform(transformer_pb2.TransformRequest(mime=bad, options=options))
        assert not reply.changed and reply.mime == bad
        with pytest.raises(grpc.aio.AioRpcError) as info:
            options = transformer_pb2.TransformOptions(inline_css=True, template=True, nonce="xyz")
            await stub.Transform(transformer_pb2.TransformRequest(mime=message(ROWS), options=options))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "nonce" in (info.value.details() or "")
    assert (parts("transformed"), parts("unprotectable")) == (before[0] + 1, before[1] + 1)


async def test_a_template_over_the_stream(grpc_port: int) -> None:
    options = transformer_pb2.TransformOptions(inline_css=True, template=True, nonce=NONCE)
    item = transformer_pb2.TransformStreamItem(
        id=7, request=transformer_pb2.TransformRequest(mime=message(ROWS), options=options)
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        call = transformer_pb2_grpc.TransformerStub(channel).TransformStream()
        await call.write(transformer_pb2.TransformStreamRequest(items=[item]))
        reply: transformer_pb2.TransformStreamResponse = await call.read()
        await call.done_writing()
        [answer] = reply.answers
        assert answer.id == 7 and answer.code == 0 and answer.response.changed
        assert "{foreach $rows as $r}<tr>" in body(answer.response.mime)


async def test_a_template_in_a_worker_process() -> None:
    """The options reach a worker (pickled) as they reach the in-process path."""
    pool = WorkerPool(1, in_process=False)
    try:
        result = await pool.transform(message(ROWS), CSS_INLINE, template=TemplateOptions())
        assert result.changed and "{foreach $rows as $r}<tr>" in body(result.mime)
    finally:
        await pool.close()
