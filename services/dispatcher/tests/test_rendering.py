"""A personalised message rendered for one recipient (postwire.dispatcher.rendering): what each copy
says, and which copies fail rather than go out wrong."""

from __future__ import annotations

import json
import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from postwire.core import tracking
from postwire.dispatcher.rendering import CompiledCache, Renderer, RenderFailed
from postwire.v1 import envelope_pb2

KEY = b"k" * 32
GROUP = "01jdr4v5x0c4bq5ptq3rvzy8nd"


def content(**parts: Any) -> envelope_pb2.PersonalisedMessage:
    msg = envelope_pb2.PersonalisedMessage(
        subject=parts.pop("subject", "Hi {$name}"), to=parts.pop("to", "{$recipient}"),
        envelope="bounce@example.com", message_id_domain="mail.example.com",
        data=json.dumps(parts.pop("data", {"name": "friend", "shop": "Acme"})).encode())
    setattr(msg, "from", parts.pop("from_", "{$shop} <shop@example.com>"))
    headers = parts.pop("headers", {})
    msg.headers.extend(envelope_pb2.HeaderField(name=k, value=v) for k, v in headers.items())
    for name, value in parts.items():
        setattr(msg, name, value)
    return msg


def outbound(msg: envelope_pb2.PersonalisedMessage, rcpt: str, own: dict[str, Any] | None = None,
             nonce: str = "") -> envelope_pb2.OutboundMessage:
    out = envelope_pb2.OutboundMessage(
        message_id=GROUP, recipients=[rcpt], body=envelope_pb2.Body(inline=msg.SerializeToString()),
        personalised=envelope_pb2.Personalised(data=json.dumps(own).encode() if own else b""))
    out.accepted_at.GetCurrentTime()
    if nonce:
        out.tracking.CopyFrom(envelope_pb2.Tracking(nonce=nonce, group_id=GROUP, recipient_index=3))
    return out


def render(out: envelope_pb2.OutboundMessage, renderer: Renderer | None = None) -> EmailMessage:
    raw = (renderer or Renderer(KEY)).render(out, out.body.inline)
    msg = message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body(msg: EmailMessage, kind: str) -> str:
    part = msg.get_body(preferencelist=(kind,))
    assert part is not None
    return str(part.get_content())


def test_recipient_variables_lay_over_the_shared_ones() -> None:
    msg = content(text="Dear {$name} at {$shop}, this is for {$recipient} (bounces: {$envelope})",
                  headers={"X-Who": "{$name|upper}"})
    ann = render(outbound(msg, "ann@example.org", {"name": "Ann"}))
    other = render(outbound(msg, "bob@example.org"))
    assert (ann["Subject"], other["Subject"]) == ("Hi Ann", "Hi friend")
    assert ann["To"] == "ann@example.org" and other["To"] == "bob@example.org"
    assert ann["From"] == "Acme <shop@example.com>"
    assert ann["X-Who"] == "ANN"
    assert ann["Message-ID"] == f"<{GROUP}@mail.example.com>"
    assert body(ann, "plain").strip() == ("Dear Ann at Acme, this is for ann@example.org "
                                         "(bounces: bounce@example.com)")


def test_recipient_and_envelope_cannot_be_overridden_by_data() -> None:
    msg = content(text="{$recipient}")
    got = render(outbound(msg, "ann@example.org", {"recipient": "evil@example.net"}))
    assert body(got, "plain").strip() == "ann@example.org"


@pytest.mark.parametrize(("parts", "own", "says"), [
    ({"text": "x", "from_": "{$sender}"}, {"sender": "not an address"}, "from after rendering"),
    ({"text": "x", "subject": "{$s}"}, {"s": "a\r\nBcc: evil@example.net"}, "subject: holds a line break"),
    ({"text": "x", "headers": {"X-A": "{$s}"}}, {"s": "a\nb"}, "X-A: holds a line break"),
    ({"text": "{foreach $n as $a}{foreach $n as $b}{foreach $n as $c}x{/foreach}{/foreach}{/foreach}"},
     {"n": list(range(200))}, "steps"),
    ({"text": "x", "to": "{$to}"}, {"to": "nobody"}, "to after rendering"),
])
def test_a_copy_that_cannot_be_built_fails(parts: dict[str, Any], own: dict[str, Any], says: str) -> None:
    with pytest.raises(RenderFailed, match=re.escape(says)):
        render(outbound(content(**parts), "ann@example.org", own))


def test_recipient_data_that_is_not_an_object_fails() -> None:
    out = outbound(content(text="x"), "ann@example.org")
    out.personalised.data = b"[1, 2]"
    with pytest.raises(RenderFailed, match="not a JSON object"):
        render(out)


def test_tracking_placeholders_get_the_recipients_tokens_before_encoding() -> None:
    """A long HTML line is quoted-printable encoded, which may split a placeholder: the tokens are put
    in before, so every link carries this recipient's token whatever the encoding."""
    nonce = "0123456789abcdef"
    links = "".join(f'<a href="https://t.example/t/c/{tracking.placeholder(nonce, i)}">link {i}</a> '
                    for i in range(40))
    msg = content(html=f"<p>{{$name}}</p><p>{links}</p>", subject="Hi")
    got = body(render(outbound(msg, "ann@example.org", {"name": "Ann"}, nonce=nonce)), "html")
    assert "PWT" not in got
    tokens = re.findall(r"/t/c/([A-Za-z0-9_-]+)", got)
    assert len(tokens) == 40
    assert [tracking.read_token(KEY, t).link_index for t in tokens] == list(range(40))
    assert {tracking.read_token(KEY, t).recipient_index for t in tokens} == {3}


def test_one_compilation_per_message() -> None:
    cache = CompiledCache()
    renderer = Renderer(KEY, cache)
    msg = content(text="Hi {$name}")
    first = outbound(msg, "a@example.org")
    assert renderer.lookup(first.body) is None
    render(first, renderer)
    compiled = renderer.lookup(first.body)
    assert compiled is not None
    second = outbound(msg, "b@example.org", {"name": "Bo"})
    raw = renderer.render(second, compiled)  # no body needed once compiled
    assert b"Hi Bo" in raw
    assert renderer.lookup(outbound(content(text="other"), "c@example.org").body) is None


def test_an_unreadable_body_fails() -> None:
    out = outbound(content(text="x"), "ann@example.org")
    with pytest.raises(RenderFailed, match="cannot be read"):
        Renderer(KEY).render(out, b"\xff\xff\xff")
