"""Which messages are transformed in the server process and which go to a worker (postwire.transformer.cost).

A message that may be expensive must reach a worker, where the time and memory limits apply; a usual one
must not pay for the trip. Nothing here asserts how long anything takes: where a message ran shows in
``postwire_transformer_runs_total{place}``, and a bomb that ran in a worker is stopped by its time limit.
"""

from __future__ import annotations

import binascii

import pytest
from prometheus_client import REGISTRY

from postwire.transformer.cost import MAX_TAGS, Budget, NeedsWorker
from postwire.transformer.html_parts import transform_mime
from postwire.transformer.worker_pool import TransformFailed, WorkerPool

HEAD = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: cost\r\nMIME-Version: 1.0\r\n"
# a small newsletter: a style sheet of a few rules, a table layout
NEWSLETTER = (
    "<html><head><style>body{margin:0} .wrap{width:600px} td.cell, th{padding:8px;color:#333}"
    " a{color:#06c} @media (max-width:480px){.wrap{width:100%}}</style></head><body>"
    + '<table class="wrap">'
    + "<tr><td class='cell'><a href='https://shop.example/'>item</a></td></tr>" * 40
    + "</table></body></html>"
)
STAR_BOMB = (
    "<style>" + "".join(f"* * * * * * * * * * {{x{i}:1}}" for i in range(999)) + "</style>" + "<div>" * 990
)


def message(html: str) -> bytes:
    return HEAD + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html.encode() + b"\r\n"


def runs(place: str) -> float:
    return REGISTRY.get_sample_value("postwire_transformer_runs_total", {"place": place}) or 0.0


def test_a_usual_newsletter_fits_the_budget() -> None:
    Budget().spend(NEWSLETTER, None, inline=True)


@pytest.mark.parametrize(
    "html",
    [
        pytest.param(STAR_BOMB, id="selector-bomb"),
        pytest.param("<style>div:HAS(p){x:1}</style><div><p>a</p></div>", id="has"),
        pytest.param("<p>" * (MAX_TAGS + 1), id="too-many-tags"),
        pytest.param("<style>*{" + "--p:" + "x" * 100_000 + "}</style>" + "<p>a</p>" * 400, id="output-bomb"),
    ],
)
def test_what_may_be_expensive_needs_a_worker(html: str) -> None:
    with pytest.raises(NeedsWorker):
        Budget().spend(html, None, inline=True)


def test_extra_css_counts_too() -> None:
    with pytest.raises(NeedsWorker):
        Budget().spend("<p>a</p>", "p:has(a){x:1}", inline=True)


def test_tracking_alone_is_charged_only_for_size() -> None:
    Budget().spend(STAR_BOMB, None, inline=False)  # no inlining: no selector matching to bound
    with pytest.raises(NeedsWorker):
        Budget().spend("<p>" * (MAX_TAGS + 1), None, inline=False)


def test_the_parts_of_one_message_share_the_budget() -> None:
    part = "<style>" + "p{x:1}" * 1600 + "</style>" + "<p>a</p>" * 100  # each alone fits, six do not
    Budget().spend(part, None, inline=True)
    body = b"".join(b"--b\r\nContent-Type: text/html\r\n\r\n" + part.encode() + b"\r\n" for _ in range(6))
    raw = HEAD + b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n' + body + b"--b--\r\n"
    with pytest.raises(NeedsWorker):
        transform_mime(raw, budget=Budget())
    assert transform_mime(raw).html_parts_transformed == 6  # without a budget (in a worker): all of them


async def test_the_pool_inlines_a_usual_message_in_process() -> None:
    pool = WorkerPool(1, in_process=True)
    try:
        before_here, before_worker = runs("in_process"), runs("worker")
        result = await pool.transform(message(NEWSLETTER), "css-inline")
        assert result.changed and b'style="color: #06c;"' in binascii.a2b_qp(result.mime)
        assert (runs("in_process"), runs("worker")) == (before_here + 1, before_worker)
    finally:
        await pool.close()


async def test_the_pool_sends_a_bomb_to_a_worker_where_the_time_limit_stops_it() -> None:
    pool = WorkerPool(1, in_process=True, timeout_s=0.5)  # the bomb takes seconds
    try:
        before = runs("worker")
        with pytest.raises(TransformFailed) as info:
            await pool.transform(message(STAR_BOMB), "css-inline")
        assert info.value.kind == "limit" and "took longer" in str(info.value)
        assert runs("worker") == before + 1
    finally:
        await pool.close()


async def test_premailer_always_runs_in_a_worker() -> None:
    pool = WorkerPool(1, in_process=True)
    try:
        before = runs("worker")
        assert (await pool.transform(message(NEWSLETTER), "premailer")).changed
        assert runs("worker") == before + 1
    finally:
        await pool.close()
