"""An ack that NATS loses after the sender acted on the message: JetStream hands the message out again
after ack_wait (what a consumer leader that dies before replicating an ack does), and the recipient must
not get the mail twice. The loss is made real by not sending the first ack at all."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from postwire.dispatcher import sender
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.smtp import SmtpSink


def _settled_again() -> float:
    return REGISTRY.get_sample_value("postwire_dispatcher_settled_redeliveries_total") or 0.0


async def test_a_delivered_message_whose_ack_was_lost_is_not_sent_again(
        start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer, smtp_sink: SmtpSink,
        domain: str, make_mime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    dns_server.add_mail_domain(domain)
    confirm_ack = sender._confirm_ack
    lost: list[str] = []

    async def first_ack_lost(js: Any, msg: Msg) -> None:
        if not lost and msg.metadata.stream == "OUTBOUND":
            lost.append(msg.subject)  # never reaches NATS: as if the leader died with it
            return
        await confirm_ack(js, msg)

    monkeypatch.setattr(sender, "_confirm_ack", first_ack_lost)
    before = _settled_again()
    await start_dispatcher(ack_wait_s=1.0)
    rcpt = f"once@{domain}"
    mid = await submit([rcpt], make_mime())

    await eventually(lambda: smtp_sink.handler.for_rcpt(rcpt))
    # JetStream hands it out again once ack_wait has passed; the sender recognises it and acks it
    await eventually(lambda: _settled_again() == before + 1, timeout=30)
    assert lost
    assert len(smtp_sink.handler.for_rcpt(rcpt)) == 1
    assert [e.message_id for e in events.of("delivered", rcpt)] == [mid]
