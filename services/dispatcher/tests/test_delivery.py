"""The dispatcher end to end against real peers: NATS JetStream, a loopback DNS server, an aiosmtpd
destination and a grpc.aio transformer. Messages enter INBOUND the way the ingest services put them
there; what is asserted is what arrived at the destination and what the EVENTS stream says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from postwire.core.bodies import BodyStore
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.smtp import SmtpSink


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_delivers_to_mx_with_transformed_body_per_domain(
        start_dispatcher: Any, transformer: Any, submit: Any, events: Any, dns_server: DnsServer,
        smtp_sink: SmtpSink, domain: str, make_mime: Any) -> None:
    d1, d2 = f"one-{domain}", f"two-{domain}"
    mx1 = dns_server.add_mail_domain(d1)
    dns_server.add_mail_domain(d2)
    await start_dispatcher(transformer_addr=transformer.addr)
    rcpts = [f"a@{d1}", f"B@{d1.upper()}", f"c@{d2}"]
    mid = await submit(rcpts, make_mime("<p>Hello</p>"), inline_css=True)

    received = await smtp_sink.handler.wait_for(3)
    assert [len(r.rcpt_tos) for r in received] == [1, 1, 1]  # one transaction per recipient (VERP)
    for r in received:
        assert b'<p style="x">Hello</p>' in r.data
        assert r.mail_from.endswith("@bounces.postwire.test")
    delivered = await eventually(lambda: len(events.of("delivered")) == 3 and events.of("delivered"))
    for ev in delivered:
        assert ev.message_id == mid and ev.smtp_code == 250 and ev.enhanced_status == "2.0.0"
        assert "queued as" in ev.response and ev.attempt == 0
        assert list(ev.tags) == ["t1"] and dict(ev.metadata) == {"k": "v"}
    assert {ev.mx_host for ev in delivered if ev.recipient.lower().endswith(d1)} == {mx1}
    accepted = events.of("accepted")
    assert sorted(e.recipient for e in accepted) == sorted(rcpts)
    assert all(e.mail_from == "sender@example.org" and e.subject == "Hello" and e.source == "api"
               and e.size > 0 for e in accepted)
    # accepted is published before the message can be delivered, so the recorder sees it first
    assert events.events.index(accepted[-1]) < events.events.index(delivered[0])


async def test_a_record_fallback_when_no_mx(start_dispatcher: Any, submit: Any, events: Any,
                                            dns_server: DnsServer, smtp_sink: SmtpSink, domain: str,
                                            make_mime: Any) -> None:
    dns_server.add(domain, "A", "127.0.0.1")
    await start_dispatcher()
    await submit([f"x@{domain}"], make_mime())
    await smtp_sink.handler.wait_for(1)
    [ev] = await eventually(lambda: events.of("delivered"))
    assert ev.mx_host == domain


async def test_null_mx_fails_permanently(start_dispatcher: Any, submit: Any, events: Any,
                                         dns_server: DnsServer, smtp_sink: SmtpSink, domain: str,
                                         make_mime: Any) -> None:
    dns_server.add(domain, "MX", (0, "."))
    await start_dispatcher()
    await submit([f"x@{domain}"], make_mime())
    [ev] = await eventually(lambda: events.of("failed"))
    assert (ev.smtp_code, ev.enhanced_status) == (556, "5.1.10")
    assert "null MX" in ev.response
    assert smtp_sink.handler.received == []


async def test_nxdomain_fails_permanently(start_dispatcher: Any, submit: Any, events: Any, domain: str,
                                          smtp_sink: SmtpSink, make_mime: Any) -> None:
    await start_dispatcher()
    await submit([f"x@{domain}"], make_mime())
    [ev] = await eventually(lambda: events.of("failed"))
    assert ev.enhanced_status == "5.1.2"
    assert not events.of("deferred")
    assert smtp_sink.handler.received == []


async def test_unroutable_address_fails_at_the_router(start_dispatcher: Any, submit: Any, events: Any,
                                                      dns_server: DnsServer, smtp_sink: SmtpSink,
                                                      domain: str, make_mime: Any) -> None:
    dns_server.add_mail_domain(domain)
    await start_dispatcher()
    await submit(["no-at-sign", f"ok@{domain}"], make_mime())
    [failed] = await eventually(lambda: events.of("failed"))
    assert failed.recipient == "no-at-sign" and failed.enhanced_status == "5.1.3"
    await eventually(lambda: events.of("delivered", f"ok@{domain}"))


async def test_451_is_deferred_then_delivered_on_retry(start_dispatcher: Any, submit: Any, events: Any,
                                                       dns_server: DnsServer, smtp_sink: SmtpSink,
                                                       domain: str, make_mime: Any) -> None:
    dns_server.add_mail_domain(domain)
    rcpt = f"later@{domain}"
    smtp_sink.handler.script(rcpt, "451 4.3.0 try later")
    await start_dispatcher()
    await submit([rcpt], make_mime())
    [delivered] = await eventually(lambda: events.of("delivered", rcpt))
    [deferred] = events.of("deferred", rcpt)
    assert (deferred.smtp_code, deferred.enhanced_status) == (451, "4.3.0")
    assert "try later" in deferred.response and deferred.attempt == 0
    assert delivered.attempt > deferred.attempt
    assert len(smtp_sink.handler.for_rcpt(rcpt)) == 1


async def test_550_fails_with_the_remote_text(start_dispatcher: Any, submit: Any, events: Any,
                                              dns_server: DnsServer, smtp_sink: SmtpSink, domain: str,
                                              make_mime: Any) -> None:
    mx = dns_server.add_mail_domain(domain)
    rcpt = f"nobody@{domain}"
    smtp_sink.handler.script(rcpt, "550 5.1.1 <nobody>: no such user here")
    await start_dispatcher()
    await submit([rcpt], make_mime())
    [ev] = await eventually(lambda: events.of("failed", rcpt))
    assert (ev.smtp_code, ev.enhanced_status, ev.mx_host) == (550, "5.1.1", mx)
    assert ev.response == "550 5.1.1 <nobody>: no such user here"
    assert smtp_sink.handler.received == [] and not events.of("deferred")


async def test_partial_deferral_retries_only_the_deferred_recipient(
        start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer, smtp_sink: SmtpSink,
        domain: str, make_mime: Any) -> None:
    dns_server.add_mail_domain(domain)
    slow, fine = f"slow@{domain}", f"fine@{domain}"
    smtp_sink.handler.script(slow, "451 4.7.1 greylisted", "452 4.2.2 mailbox full")
    await start_dispatcher()
    await submit([slow, fine], make_mime())
    # each recipient has its own transaction (VERP), so "fine" does not wait for "slow", but it may
    # queue behind the backoff the greylisting reply causes: wait for both
    await eventually(lambda: events.of("delivered", slow) and events.of("delivered", fine))
    assert len(events.of("delivered", fine)) == 1
    assert len(events.of("deferred", slow)) == 2
    assert len(smtp_sink.handler.for_rcpt(fine)) == 1
    assert len(smtp_sink.handler.for_rcpt(slow)) == 1
    assert smtp_sink.handler.rcpt_attempts[fine] == 1  # the delivered one was never offered again
    attempts = [e.attempt for e in events.of("deferred", slow) + events.of("delivered", slow)]
    assert attempts == sorted(set(attempts))  # distinct, increasing: stable per-attempt event ids


async def test_expired_message_fails_with_reason_expired(start_dispatcher: Any, submit: Any, events: Any,
                                                         dns_server: DnsServer, smtp_sink: SmtpSink,
                                                         domain: str, make_mime: Any) -> None:
    dns_server.add_mail_domain(domain)
    rcpt = f"never@{domain}"
    smtp_sink.handler.script(rcpt, *["451 4.3.0 not now"] * 1000)
    await start_dispatcher(message_lifetime_s=1.0)
    await submit([rcpt], make_mime())
    [ev] = await eventually(lambda: events.of("failed", rcpt))
    assert (ev.response, ev.enhanced_status) == ("expired", "4.4.7")
    assert events.of("deferred", rcpt) and not events.of("delivered", rcpt)


async def test_transformer_down_message_waits_then_delivered(
        start_dispatcher: Any, transformer_down: Any, submit: Any, events: Any, dns_server: DnsServer,
        smtp_sink: SmtpSink, domain: str, make_mime: Any) -> None:
    dns_server.add_mail_domain(domain)
    before = metric("postwire_dispatcher_transformer_calls_total", outcome="unavailable")
    await start_dispatcher(transformer_addr=transformer_down.addr)
    await submit([f"x@{domain}"], make_mime("<p>styled</p>"), inline_css=True)
    await eventually(lambda: metric("postwire_dispatcher_transformer_calls_total",
                                    outcome="unavailable") >= before + 2)
    assert smtp_sink.handler.received == []  # it waited instead of going out un-inlined
    await transformer_down.start()
    [received] = await smtp_sink.handler.wait_for(1)
    assert b'<p style="x">styled</p>' in received.data
    await eventually(lambda: events.of("delivered"))


async def test_plain_text_mail_does_not_wait_for_the_transformer(
        start_dispatcher: Any, transformer_down: Any, submit: Any, dns_server: DnsServer,
        smtp_sink: SmtpSink, domain: str) -> None:
    dns_server.add_mail_domain(domain)
    await start_dispatcher(transformer_addr=transformer_down.addr)
    raw = b"From: a@example.test\r\nTo: x@" + domain.encode() + b"\r\nSubject: plain\r\n\r\nno html here\r\n"
    await submit([f"x@{domain}"], raw, inline_css=True)
    [received] = await smtp_sink.handler.wait_for(1)  # delivered although the transformer is down
    assert received.data.endswith(b"no html here\r\n")


async def test_transformer_rejection_sends_the_original(start_dispatcher: Any, transformer: Any,
                                                        submit: Any, dns_server: DnsServer,
                                                        smtp_sink: SmtpSink, domain: str,
                                                        make_mime: Any) -> None:
    dns_server.add_mail_domain(domain)
    await start_dispatcher(transformer_addr=transformer.addr)
    raw = make_mime("<p>as is</p>", extra_headers="X-Test-Reject: yes\r\n")
    await submit([f"x@{domain}"], raw, inline_css=True)
    [received] = await smtp_sink.handler.wait_for(1)
    assert b"<p>as is</p>" in received.data and transformer.servicer.calls == 1


async def test_connections_are_reused_across_messages(start_dispatcher: Any, submit: Any, events: Any,
                                                      dns_server: DnsServer, smtp_sink: SmtpSink,
                                                      domain: str, make_mime: Any, tmp_path: Path) -> None:
    dns_server.add_mail_domain(domain)
    opened = metric("postwire_dispatcher_smtp_connections_opened_total")
    rules = tmp_path / "shaping.yaml"
    rules.write_text("default: {max_connections: 2, connection_rate: unlimited}\n")
    await start_dispatcher(shaping_file=rules, connection_idle_s=2)
    for i in range(20):
        await submit([f"r{i}@{domain}"], make_mime(f"<p>message {i}</p>"))
    await smtp_sink.handler.wait_for(20)
    await eventually(lambda: len(events.of("delivered")) == 20)
    assert smtp_sink.max_connections <= 2
    assert metric("postwire_dispatcher_smtp_connections_opened_total") - opened <= 4
    # idle sessions are closed (with QUIT) once the burst is over
    await eventually(lambda: smtp_sink.connections == 0)


async def test_large_body_from_object_store_arrives_intact(start_dispatcher: Any, submit: Any, js: Any,
                                                           events: Any, dns_server: DnsServer,
                                                           smtp_sink: SmtpSink, domain: str) -> None:
    dns_server.add_mail_domain(domain)
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,;:!?-_=+()[]{}<>\r\n"
    body = b"".join(line[i % 7:] for i in range(100_000))  # ~8 MB, varied line lengths, leading dots
    raw = b"From: a@example.org\r\nSubject: big\r\nContent-Type: text/plain\r\n\r\n" + b"." + body
    mid = await submit([f"x@{domain}"], raw)
    assert (await BodyStore(js, 1).get(_object_body(mid, len(raw)))) == raw  # it really is in the bucket
    await start_dispatcher()
    [received] = await smtp_sink.handler.wait_for(1, timeout=60)
    # unsigned (the account has no key), so the sender only puts the Feedback-ID in front
    assert received.data == b"Feedback-ID: t1:acct1:transactional:postwire\r\n" + raw
    await eventually(lambda: events.of("delivered"))


def _object_body(mid: str, size: int) -> Any:
    from postwire.v1 import envelope_pb2

    return envelope_pb2.Body(object_name=f"{mid}/original", size=size)


async def test_shutdown_closes_pooled_connections(start_dispatcher: Any, submit: Any, events: Any,
                                                  dns_server: DnsServer, smtp_sink: SmtpSink, domain: str,
                                                  make_mime: Any) -> None:
    dns_server.add_mail_domain(domain)
    dispatcher = await start_dispatcher()
    await submit([f"x@{domain}"], make_mime())
    await smtp_sink.handler.wait_for(1)
    await eventually(lambda: events.of("delivered"))
    assert smtp_sink.connections == 1  # kept open for the next message
    await dispatcher.stop()
    await eventually(lambda: smtp_sink.connections == 0)
