"""Hostile MIME and HTML against the real gRPC server: each call answers, unchanged, changed or with a clear
RESOURCE_EXHAUSTED / INVALID_ARGUMENT, and the service and its workers keep working afterwards.

docs/reliability.md has one row per case here. The gRPC deadline on every call is only a hang
guard; nothing here asserts how long anything takes. Inputs are built with bytes repetition and joins.
"""

from __future__ import annotations

import asyncio
import binascii
import multiprocessing
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from postwire.core.tracking import MAX_LINKS
from postwire.transformer.html_parts import MAX_PARTS
from postwire.transformer.inline import MAX_HTML_TAGS
from postwire.transformer.service import serve
from postwire.transformer.settings import TransformerSettings
from postwire.transformer.worker_pool import TransformFailed, WorkerPool
from postwire.v1 import transformer_pb2, transformer_pb2_grpc

HANG_GUARD_S = 240  # gRPC deadline of every call: a hang fails the test instead of blocking the run
OK = grpc.StatusCode.OK
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
HEAD = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: hostile\r\nMIME-Version: 1.0\r\n"
STYLE = b"<style>p{color:red}</style>"
HTML_PART = b"Content-Type: text/html; charset=utf-8\r\n\r\n" + STYLE + b"<p>hi</p>"
NONCE = "00112233aabbccdd"
TRACKING = {
    "track_clicks": True,
    "track_opens": True,
    "click_url_prefix": "https://t.example.com/t/c/",
    "open_url_prefix": "https://t.example.com/t/o/",
    "nonce": NONCE,
}


def html(body: bytes, content_type: bytes = b"text/html; charset=utf-8") -> bytes:
    return HEAD + b"Content-Type: " + content_type + b"\r\n\r\n" + body + b"\r\n"


def body_of(mime: bytes) -> bytes:
    """The decoded body of a single-part reply (quoted-printable when the transformer re-encoded it)."""
    head, _, body = mime.partition(b"\r\n\r\n")
    return binascii.a2b_qp(body) if b"quoted-printable" in head else body


def multipart(head: bytes, body: bytes) -> bytes:
    return HEAD + head + b"\r\n\r\n" + body


def nested(levels: int) -> bytes:
    """``levels`` multiparts inside each other, each with its own boundary, the HTML at the bottom."""
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(levels)
    )
    closing = b"".join(b"\r\n--b%d--" % i for i in reversed(range(levels)))
    return HEAD + opening + HTML_PART + closing + b"\r\n"


@asynccontextmanager
async def running(settings: TransformerSettings) -> AsyncIterator[grpc.aio.Channel]:
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, port.set_result))
    options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{await port}", options=options) as channel:
            yield channel
    finally:
        stop.set()
        await task


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    """The service as deployed, except a time limit long enough never to decide a case on a slow machine
    (the time limit has its own test below)."""
    settings = TransformerSettings(grpc_port=0, transform_workers=2, transform_timeout_s=HANG_GUARD_S / 2)
    async with running(settings) as ch:
        yield ch


async def call(
    channel: grpc.aio.Channel,
    mime: bytes,
    **options: object,
) -> tuple[grpc.StatusCode, str, transformer_pb2.TransformResponse]:
    """(status, details, reply) of one Transform; the reply is empty unless the status is OK."""
    stub = transformer_pb2_grpc.TransformerStub(channel)
    request = transformer_pb2.TransformRequest(mime=mime)
    if options:
        request.options.CopyFrom(transformer_pb2.TransformOptions(**options))  # type: ignore[arg-type]
    try:
        reply: transformer_pb2.TransformResponse = await stub.Transform(request, timeout=HANG_GUARD_S)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or "", transformer_pb2.TransformResponse()
    return OK, "", reply


async def assert_serving(channel: grpc.aio.Channel) -> None:
    """Health says SERVING and an ordinary message is still inlined."""
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    code, _, reply = await call(channel, html(STYLE + b"<p>fine</p>"))
    assert code == OK and reply.changed and b'<p style="color: red;">fine</p>' in reply.mime


# --- malformed multipart ------------------------------------------------------------------------------

UNCHANGED_MIME = {
    "multipart without a boundary parameter": multipart(
        b"Content-Type: multipart/alternative", b"--b\r\n" + HTML_PART + b"\r\n--b--\r\n"
    ),
    "boundary parameter that never occurs": multipart(
        b'Content-Type: multipart/alternative; boundary="zzz"', b"--b\r\n" + HTML_PART + b"\r\n--b--\r\n"
    ),
    "empty boundary": multipart(
        b'Content-Type: multipart/mixed; boundary=""', b"--\r\n" + HTML_PART + b"\r\n----\r\n"
    ),
    "10 000 nested multiparts": nested(10_000),
    "declared utf-8, invalid bytes": html(STYLE + b"<p>\xff\xfe\xc3</p>"),
    "unknown charset name": html(STYLE + b"<p>x</p>", b"text/html; charset=x-klingon"),
    "charset name of 8-bit bytes": html(STYLE + b"<p>x</p>", b'text/html; charset="\xff\xfe"'),
    "utf-16 declared, odd byte count": html(STYLE + b"<p>x</p>\x00", b"text/html; charset=utf-16"),
    "base64 that is not base64": HEAD
    + b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n",
    "Content-Type of 200 000 parameters (1 MB)": html(STYLE + b"<p>x</p>", b"text/html" + b"; a=b" * 200_000),
    "Content-Type of 50 000 RFC 2231 continuations": html(
        STYLE + b"<p>x</p>",
        b"text/html; a*0*=utf-8''x" + b"".join(b"; a*%d*=%%41" % i for i in range(1, 50_000)),
    ),
}


@pytest.mark.parametrize("case", UNCHANGED_MIME)
async def test_unreadable_structure_is_delivered_unchanged(channel: grpc.aio.Channel, case: str) -> None:
    mime = UNCHANGED_MIME[case]
    code, details, reply = await call(channel, mime)
    assert code == OK, details
    assert not reply.changed and reply.mime == mime


CHANGED_MIME = {
    "no close delimiter": multipart(
        b'Content-Type: multipart/alternative; boundary="b"', b"--b\r\n" + HTML_PART
    ),
    "inner multipart reusing the outer boundary": multipart(
        b'Content-Type: multipart/mixed; boundary="b"',
        b'--b\r\nContent-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
        + HTML_PART
        + b"\r\n--b--\r\n--b--\r\n",
    ),
    "inner boundary extending the outer one": multipart(
        b'Content-Type: multipart/mixed; boundary="b"',
        b'--b\r\nContent-Type: multipart/alternative; boundary="bb"\r\n\r\n--bb\r\n'
        + HTML_PART
        + b"\r\n--bb--\r\n--b--\r\n",
    ),
    "a 5 MB header field on one line": HEAD + b"X-Big: " + b"a" * (5 << 20) + b"\r\n" + HTML_PART + b"\r\n",
    "a 5 MB header field folded over 1.3 M lines": HEAD
    + b"X-Big: a"
    + b"\r\n a" * (5 << 20 >> 2)
    + b"\r\n"
    + HTML_PART
    + b"\r\n",
    "100 000 header fields": HEAD
    + b"".join(b"X-F%d: v\r\n" % i for i in range(100_000))
    + HTML_PART
    + b"\r\n",
    "100 000 Content-Type fields": HEAD
    + b"Content-Type: text/html\r\n" * 100_000
    + b"\r\n"
    + STYLE
    + b"<p>hi</p>\r\n",
    "100 000 header fields in a body part": multipart(
        b'Content-Type: multipart/mixed; boundary="b"',
        b"--b\r\n" + b"".join(b"X-F%d: v\r\n" % i for i in range(100_000)) + HTML_PART + b"\r\n--b--\r\n",
    ),
    "Content-Type of 1 600 parameters (just under the field limit)": html(
        STYLE + b"<p>x</p>", b"text/html; charset=utf-8" + b"; a=b" * 1_600
    ),
    "1 000 000 encoded words in a header": HEAD
    + b"Subject2: "
    + b"=?utf-8?q?a?= " * 1_000_000
    + b"\r\n"
    + HTML_PART
    + b"\r\n",
    "utf-7 HTML": html(STYLE + b"<p>+AGEAYgBj-</p>", b"text/html; charset=utf-7"),
    "quoted-printable with invalid escapes": HEAD + b"Content-Type: text/html\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + STYLE + b"<p>=ZZ=\r\n",
}


@pytest.mark.parametrize("case", CHANGED_MIME)
async def test_odd_but_readable_structure_is_transformed(channel: grpc.aio.Channel, case: str) -> None:
    mime = CHANGED_MIME[case]
    code, details, reply = await call(channel, mime)
    assert code == OK, details
    assert reply.changed and reply.html_parts_transformed == 1
    head_end = mime.index(b"Content-Type")
    assert reply.mime[:head_end] == mime[:head_end]  # everything before the first MIME field, byte for byte


REFUSED_MIME = {
    "100 000 body parts": multipart(
        b'Content-Type: multipart/mixed; boundary="b"',
        b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 100_000 + b"--b--\r\n",
    ),
    "1 000 000 delimiter lines": multipart(
        b'Content-Type: multipart/mixed; boundary="b"', b"--b\r\n" * 1_000_000
    ),
    "10 000 nested multiparts, one boundary": HEAD
    + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n' * 10_000
    + HTML_PART
    + b"\r\n--b--\r\n",
}


@pytest.mark.parametrize("case", REFUSED_MIME)
async def test_too_many_parts_is_resource_exhausted(channel: grpc.aio.Channel, case: str) -> None:
    code, details, _ = await call(channel, REFUSED_MIME[case])
    assert code == EXHAUSTED and details == f"the message has more than {MAX_PARTS} MIME parts"


# --- HTML bombs ---------------------------------------------------------------------------------------

TOO_MANY_TAGS = {
    "1 000 000 nested <div>s": html(STYLE + b"<div>" * 1_000_000 + b"x" + b"</div>" * 1_000_000),
    "1 000 000 unclosed <div>s": html(STYLE + b"<div>" * 1_000_000),
    "100 000 nested <table><tr><td>": html(STYLE + b"<table><tr><td>" * 100_000),
    "20 MB of <p>a</p> on one line": html(STYLE + b"<p>a</p>" * (20 << 20 >> 3)),
}


@pytest.mark.parametrize(
    "engine", [transformer_pb2.CSS_ENGINE_CSS_INLINE, transformer_pb2.CSS_ENGINE_PREMAILER]
)
@pytest.mark.parametrize("case", TOO_MANY_TAGS)
async def test_too_many_tags_is_refused_before_parsing(
    channel: grpc.aio.Channel, case: str, engine: int
) -> None:
    code, details, _ = await call(channel, TOO_MANY_TAGS[case], inline_css=True, css_engine=engine)
    assert code == EXHAUSTED and details == f"the HTML has more than {MAX_HTML_TAGS} tags"


DEEP_WITHIN_LIMITS = {
    # css-inline overflows a default 8 MB stack at about 30 000 levels; workers give it 256 MB
    "110 000 unclosed <b>s": html(b"<style>b{color:red}</style>" + b"<b>" * 110_000 + b"x"),
    "50 000 nested <table><td> (200 000 elements)": html(
        b"<style>td{color:red}</style>" + b"<table><td>" * 50_000
    ),
}


@pytest.mark.parametrize("case", DEEP_WITHIN_LIMITS)
async def test_deep_nesting_within_the_tag_limit_is_inlined(channel: grpc.aio.Channel, case: str) -> None:
    code, details, reply = await call(channel, DEEP_WITHIN_LIMITS[case])
    assert code == OK, details
    assert reply.changed and b'style="color: red;"' in body_of(reply.mime)


async def test_premailer_refuses_what_its_parser_would_cut(channel: grpc.aio.Channel) -> None:
    """libxml2 drops everything past 256 levels or 10 MB of text and reports it only in its error log;
    before the check, premailer returned such documents cut short (a 20 MB paragraph came back empty)."""
    premailer = {"inline_css": True, "css_engine": transformer_pb2.CSS_ENGINE_PREMAILER}
    deep = html(STYLE + b"<div>" * 300 + b"<p>deep</p>" + b"</div>" * 300)
    code, details, _ = await call(channel, deep, **premailer)
    assert code == EXHAUSTED and "libxml2: Excessive depth in document: 256" in details
    long_line = html(STYLE + b"<p>" + b"a" * (20 << 20) + b"</p>")
    code, details, _ = await call(channel, long_line, **premailer)
    assert code == EXHAUSTED and "libxml2: Resource limit exceeded" in details
    code, _, reply = await call(
        channel, html(STYLE + b"<div>" * 200 + b"<p>deep</p>" + b"</div>" * 200), **premailer
    )
    assert code == OK and b'<p style="color:red">deep</p>' in body_of(reply.mime)


async def test_a_20_mb_single_line_html_part(channel: grpc.aio.Channel) -> None:
    mime = html(STYLE + b"<p>" + b"a" * (20 << 20) + b"</p>")
    code, details, reply = await call(channel, mime)
    assert code == OK, details
    assert reply.changed and body_of(reply.mime).count(b"a" * 1000) >= 20_000  # the text is all there
    # re-encoded as quoted-printable: the 7bit line was over 998 octets, now every line is within 76
    assert b"Content-Transfer-Encoding: quoted-printable" in reply.mime
    assert max(map(len, reply.mime.split(b"\r\n\r\n", 1)[1].split(b"\r\n"))) <= 76


async def test_100_000_links_with_tracking(channel: grpc.aio.Channel) -> None:
    links = b"".join(b'<a href="https://shop.example/%d">item</a>' % i for i in range(100_000))
    code, details, reply = await call(
        channel, html(b"<style>a{color:red}</style>" + links), inline_css=True, **TRACKING
    )
    assert code == OK, details
    assert len(reply.links) == MAX_LINKS and reply.links[-1] == f"https://shop.example/{MAX_LINKS - 1}"
    assert reply.open_pixel and b"https://shop.example/99999" in reply.mime  # past MAX_LINKS: left as is


ENTITIES = (
    b'<!DOCTYPE html [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    + STYLE
    + b"<p>&d;&d;&d;&d;</p>"
    + b"&amp;&lt;&#x10FFFF;&#99999999;&NotARealEntity;" * 50_000
)


@pytest.mark.parametrize(
    "engine", [transformer_pb2.CSS_ENGINE_CSS_INLINE, transformer_pb2.CSS_ENGINE_PREMAILER]
)
async def test_entity_expansion_payload_is_not_expanded(channel: grpc.aio.Channel, engine: int) -> None:
    mime = html(ENTITIES)
    code, details, reply = await call(channel, mime, inline_css=True, css_engine=engine, **TRACKING)
    assert code == OK, details
    assert reply.changed and len(reply.mime) < 3 * len(mime)  # the DTD's entities stay unexpanded
    assert b"a" * 100 not in reply.mime


STYLE_BOMBS = {
    "<style> with 100 000 rules": html(
        b"<style>"
        + b"".join(b".c%d{color:red}" % i for i in range(100_000))
        + b"</style>"
        + b"<p class=c5>x</p>" * 100
    ),
    "pathological selectors (1 000 descendant steps, 1 000 nested :not())": html(
        b"<style>"
        + b"div " * 1000
        + b"p{color:red} "
        + b":not(" * 1000
        + b"p"
        + b")" * 1000
        + b"{color:blue} *:nth-child(2n+1) * * * * * *{x:y}</style>"
        + b"<div>" * 2000
        + b"<p>x</p>"
    ),
    "100 000 nested @media blocks": html(
        b"<style>" + b"@media screen{" * 100_000 + b"p{color:red}" + b"}" * 100_000 + b"</style><p>x</p>"
    ),
    "100 000 unclosed rule blocks": html(b"<style>" + b"p{" * 100_000 + b"</style><p>x</p>"),
}


@pytest.mark.parametrize("case", STYLE_BOMBS)
async def test_style_bombs_with_css_inline(channel: grpc.aio.Channel, case: str) -> None:
    code, details, reply = await call(channel, STYLE_BOMBS[case])
    assert code == OK, details
    assert reply.changed


async def test_pathological_selectors_with_premailer(channel: grpc.aio.Channel) -> None:
    """cssutils/cssselect recurse per selector step: RecursionError, answered as a limit."""
    selectors = b"<style>" + b"div " * 1000 + b"p{color:red} " + b":not(" * 1000 + b"p" + b")" * 1000
    mime = html(selectors + b"{color:blue}</style><div><p>x</p></div>")
    premailer = {"inline_css": True, "css_engine": transformer_pb2.CSS_ENGINE_PREMAILER}
    code, details, _ = await call(channel, mime, **premailer)
    assert code == EXHAUSTED and details == "premailer failed: the CSS or HTML is nested too deeply"


async def test_inlining_that_multiplies_the_size_is_refused(channel: grpc.aio.Channel) -> None:
    """One rule, 100 000 elements: the output would be ~40 MB from a 0.7 MB input."""
    declarations = b";".join(b"x-property-%d:%s" % (i, b"v" * 8) for i in range(20))
    mime = html(b"<style>i{" + declarations + b"}</style>" + b"<i></i>" * 100_000)
    code, details, _ = await call(channel, mime)
    assert code == EXHAUSTED and details.startswith("the transformed message would be ")


# --- nothing is fetched, even from a bomb ---------------------------------------------------------------


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every request path (there must be none)."""
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


@pytest.mark.parametrize(
    "engine", [transformer_pb2.CSS_ENGINE_CSS_INLINE, transformer_pb2.CSS_ENGINE_PREMAILER]
)
async def test_remote_resources_in_a_bomb_are_never_fetched(
    channel: grpc.aio.Channel, recording_server: tuple[str, list[str]], engine: int
) -> None:
    url, hits = recording_server
    one = (
        f'<link rel="stylesheet" href="{url}/l.css"><style>@import url("{url}/i.css");'
        f'p{{background:url({url}/bg.png)}}</style><img src="{url}/img.png">'
    ).encode()
    for nesting in (200, 10_000):  # premailer inlines the first and refuses the second (libxml2's depth)
        mime = html(one * 1000 + b"<div>" * nesting + b"<p>x</p>")
        code, details, _ = await call(channel, mime, inline_css=True, css_engine=engine)
        assert code in (OK, EXHAUSTED), details
    assert hits == []


async def test_still_serving_after_all_of_it(channel: grpc.aio.Channel) -> None:
    await assert_serving(channel)


# --- the time limit, the memory limit, a worker that dies ------------------------------------------------

SLOW = html(STYLE + b"<div>" * 100_000 + b"<p>slow</p>")  # under the tag limit; html5ever's scope checks
# make it quadratic: minutes of work


async def test_time_limit_answers_resource_exhausted_and_spares_other_messages() -> None:
    settings = TransformerSettings(grpc_port=0, transform_workers=2, transform_timeout_s=1.0)
    async with running(settings) as ch:
        slow, normal = await asyncio.gather(call(ch, SLOW), call(ch, html(STYLE + b"<p>fine</p>")))
        code, details, _ = slow
        assert code == EXHAUSTED
        assert details == (
            "transforming the message took longer than 1 s (POSTWIRE_TRANSFORM_TIMEOUT_S); "
            "its worker was stopped"
        )
        assert normal[0] == OK and normal[2].changed  # the other worker was not disturbed
        await assert_serving(ch)  # the stopped worker was replaced
        assert (await call(ch, SLOW))[0] == EXHAUSTED  # and again: every time the same answer, no hang


async def test_memory_limit_answers_resource_exhausted() -> None:
    """A 20 MB paragraph needs ~300 MB in a worker; at 450 MiB (256 of them the job thread's stack
    reservation, ~100 the interpreter and engines) it cannot have it."""
    settings = TransformerSettings(
        grpc_port=0, transform_workers=1, transform_memory_mb=450, transform_timeout_s=HANG_GUARD_S / 2
    )
    async with running(settings) as ch:
        code, details, _ = await call(ch, html(STYLE + b"<p>" + b"a" * (20 << 20) + b"</p>"))
        assert code == EXHAUSTED and "memory" in details
        await assert_serving(ch)


async def test_a_worker_that_dies_fails_only_its_message() -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    pool = WorkerPool(1, timeout_s=HANG_GUARD_S / 2)
    try:
        await pool.warm_up()
        (pid,) = {p.pid for p in multiprocessing.active_children()} - before
        job = asyncio.create_task(pool.transform(SLOW, "css-inline"))
        await asyncio.sleep(0.5)  # most likely mid-job; killed while idle, the job fails just the same
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(TransformFailed) as info:
            await job
        assert info.value.kind == "limit" and "worker process died" in str(info.value)
        result = await pool.transform(html(STYLE + b"<p>fine</p>"), "css-inline")  # on its replacement
        assert result.changed
    finally:
        await pool.close()
