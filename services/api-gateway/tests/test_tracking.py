"""The click redirect and the open pixel over real HTTP, with the TRACKING entry in a real NATS bucket
and the events read back from the subject they are published on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from postwire.core import tracking
from postwire.core.ids import new_message_id
from postwire.core.topology import TRACKING
from postwire.testing.fixtures import eventually
from postwire.v1 import envelope_pb2

SECRET = "api-tracking-tests-verp-secret-0123456789"
KEY = tracking.tracking_key(SECRET.encode())
LINKS = ["https://shop.example/a?x=1&y=2", "https://shop.example/b"]


class Events:
    def __init__(self) -> None:
        self.seen: list[envelope_pb2.Event] = []

    async def on(self, msg: Msg) -> None:
        self.seen.append(envelope_pb2.Event.FromString(msg.data))


@pytest_asyncio.fixture
async def events(nc: Client) -> AsyncIterator[Events]:
    log = Events()
    sub = await nc.subscribe("events.track-acct.>", cb=log.on)
    yield log
    await sub.unsubscribe()


async def tracked(js: JetStreamContext) -> tuple[str, str]:
    """A TRACKING entry as the router writes it: two recipients, the second with its own message id."""
    group, second_id = new_message_id(), new_message_id()
    entry = tracking.TrackedMessage(account_id="track-acct", links=LINKS, recipients=["a@x.test", "b@x.test"],
                                    message_ids={"b@x.test": second_id}, tags=["spring"])
    await (await js.key_value(TRACKING)).put(group, entry.to_bytes())
    return group, second_id


async def test_click_redirects_to_the_original_link_and_records_the_click(
        start_gateway: Any, js: JetStreamContext, events: Events) -> None:
    gw = await start_gateway(verp_secret=SECRET)
    group, second_id = await tracked(js)
    token = tracking.make_token(KEY, group, 1, 0)

    first = await gw.http.get(f"/t/c/{token}", headers={"User-Agent": "Mail/1.0"})
    again = await gw.http.get(f"/t/c/{token}")
    other_link = await gw.http.get(f"/t/c/{tracking.make_token(KEY, group, 1, 1)}")

    assert first.status_code == again.status_code == 302 and first.headers["location"] == LINKS[0]
    assert "no-store" in first.headers["cache-control"]
    assert other_link.headers["location"] == LINKS[1]
    clicks = await eventually(lambda: events.seen if len(events.seen) == 3 else [])
    assert [(e.type, e.message_id, e.recipient, e.url, e.unique) for e in clicks] == [
        ("clicked", second_id, "b@x.test", LINKS[0], True),
        ("clicked", second_id, "b@x.test", LINKS[0], False),
        ("clicked", second_id, "b@x.test", LINKS[1], True),  # unique per link
    ]
    assert (clicks[0].client_ip, clicks[0].user_agent, list(clicks[0].tags)) == ("127.0.0.1", "Mail/1.0",
                                                                                 ["spring"])
    assert len({e.event_id for e in clicks}) == 3  # one event per hit, none deduplicated away


async def test_open_pixel_is_a_gif_and_the_first_open_is_unique(
        start_gateway: Any, js: JetStreamContext, events: Events) -> None:
    gw = await start_gateway(verp_secret=SECRET)
    group, _ = await tracked(js)
    token = tracking.make_token(KEY, group, 0, tracking.OPEN)

    replies = [await gw.http.get(f"/t/o/{token}") for _ in range(2)]

    assert all(r.status_code == 200 and r.headers["content-type"] == "image/gif" for r in replies)
    assert replies[0].content.startswith(b"GIF89a")
    opens = await eventually(lambda: events.seen if len(events.seen) == 2 else [])
    assert [(e.type, e.message_id, e.recipient, e.unique) for e in opens] == [
        ("opened", group, "a@x.test", True), ("opened", group, "a@x.test", False)]


async def test_forged_tampered_and_unknown_tokens_are_404_never_a_redirect(
        start_gateway: Any, js: JetStreamContext, events: Events) -> None:
    gw = await start_gateway(verp_secret=SECRET)
    group, _ = await tracked(js)
    good = tracking.make_token(KEY, group, 0, 0)
    flipped = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    bad = [
        flipped,
        tracking.make_token(tracking.tracking_key(b"another-installation-secret!!"), group, 0, 0),  # forged
        tracking.make_token(KEY, group, 0, 7),  # no such link
        tracking.make_token(KEY, group, 5, 0),  # no such recipient
        tracking.make_token(KEY, new_message_id(), 0, 0),  # expired or never tracked
        tracking.make_token(KEY, group, 0, tracking.OPEN),  # a pixel token is not a link
        "x", "https:%2F%2Fevil.example",
    ]
    for token in bad:
        reply = await gw.http.get(f"/t/c/{token}")
        assert reply.status_code == 404, token
        assert "location" not in reply.headers
        assert reply.json()["error"] == "not_found"
    assert (await gw.http.get(f"/t/o/{good}")).status_code == 404  # and a link token is not a pixel
    # a sentinel: the good token's click is published after anything the bad ones could have published
    assert (await gw.http.get(f"/t/c/{good}")).status_code == 302
    seen = await eventually(lambda: events.seen)
    assert [(e.type, e.message_id) for e in seen] == [("clicked", group)]
