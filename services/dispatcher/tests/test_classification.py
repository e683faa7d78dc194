"""Every failed/deferred event of the sender carries a Sisimai reason and a hard/soft verdict, from the
same classifier the bounce service applies to DSNs (postwire.bounce_classifier)."""

from __future__ import annotations

from typing import Any

from postwire.dispatcher.outcomes import from_server, local
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.smtp import SmtpSink


async def test_550_user_unknown_at_rcpt_is_a_hard_userunknown_failure(
        start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer, smtp_sink: SmtpSink,
        domain: str, make_mime: Any) -> None:
    dns_server.add_mail_domain(domain)
    rcpt, soft = f"x@{domain}", f"full@{domain}"
    smtp_sink.handler.script(rcpt, f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown")
    smtp_sink.handler.script(soft, "452 4.2.2 <full>: Mailbox full")
    await start_dispatcher()
    mid = await submit([rcpt, soft], make_mime())

    [failed] = await eventually(lambda: events.of("failed", rcpt))
    assert failed.message_id == mid and failed.smtp_code == 550 and failed.enhanced_status == "5.1.1"
    assert (failed.reason, failed.hardbounce) == ("userunknown", True)
    deferred = (await eventually(lambda: events.of("deferred", soft)))[0]
    assert (deferred.reason, deferred.hardbounce) == ("mailboxfull", False)
    await eventually(lambda: events.of("delivered", soft))


async def test_nxdomain_is_hostunknown_and_null_mx_notaccept(
        start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer, domain: str,
        make_mime: Any) -> None:
    nullmx = f"null-{domain}"
    dns_server.add(nullmx, "MX", (0, "."))
    await start_dispatcher()
    await submit([f"a@nx-{domain}", f"b@{nullmx}"], make_mime())
    [nx] = await eventually(lambda: events.of("failed", f"a@nx-{domain}"))
    assert (nx.reason, nx.hardbounce) == ("hostunknown", True)
    [null] = await eventually(lambda: events.of("failed", f"b@{nullmx}"))
    assert (null.reason, null.hardbounce, null.smtp_code) == ("notaccept", True, 556)


def test_local_replies_have_fixed_reasons() -> None:
    cases = {
        local("4.4.1", "connect to mx[127.0.0.1]:25: refused"): ("networkerror", False),
        local("4.4.2", "lost connection in reply to end of DATA"): ("networkerror", False),
        local("4.4.3", "DNS lookup failed"): ("networkerror", False),
        local("4.7.10", "no STARTTLS and the shaping rule requires TLS"): ("failedstarttls", False),
        local("4.7.5", "TLS handshake failed"): ("failedstarttls", False),
        local("5.4.4", "Host or domain name not found"): ("hostunknown", True),
        local("4.4.7", "expired"): ("expired", False),
    }
    for reply, expected in cases.items():
        verdict = reply.verdict()
        assert (verdict.reason, verdict.hardbounce) == expected, reply


def test_stage_and_deferral_shape_the_verdict() -> None:
    # "user unknown" only after the body was seen: a content filter's verdict, not a missing mailbox
    after_data = from_server(550, "Requested action not taken: user unknown", "mx", "DATA")
    assert after_data.verdict().reason == "filtered"
    # a temporary "user unknown" is never a hard bounce: the address is tried again
    soft = from_server(450, "4.1.1 <x>: Recipient address rejected: User unknown", "mx", "RCPT")
    assert soft.outcome == "deferred" and soft.verdict().hardbounce is False
    fields = from_server(554, "5.7.1 Service unavailable; client host blocked using zen.spamhaus.org", "mx",
                         "RCPT").event_fields()
    assert fields["reason"] == "blocked" and fields["hardbounce"] is False and fields["smtp_code"] == 554
