"""POSTWIRE_RELAY_HOST: every message goes to one SMTP server, whatever DNS says about its domain. The
dispatcher runs in-process against real NATS, the loopback DNS server (which knows nothing of the
recipients' domains) and an aiosmtpd relay."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from postwire.dispatcher.relay_host import RelayHost, parse_relay_host
from postwire.dispatcher.settings import DispatcherSettings
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.ports import free_port
from postwire.testing.smtp import SmtpSink

from .conftest import BOUNCE_DOMAIN


async def test_mail_to_a_domain_without_dns_goes_to_the_relay(
        start_dispatcher: Any, submit: Any, events: Any, smtp_sink: SmtpSink, domain: str,
        make_mime: Any) -> None:
    # the domain is in no DNS at all (NXDOMAIN: failed 5.1.2 without a relay), and POSTWIRE_MX_PORT
    # points nowhere: only the relay's own port can deliver
    await start_dispatcher(relay_host=f"127.0.0.1:{smtp_sink.port}", mx_port=1)
    rcpt = f"someone@{domain}"
    mid = await submit([rcpt], make_mime("<p>Hi</p>"))
    [received] = await smtp_sink.handler.wait_for(1)
    assert received.rcpt_tos == [rcpt]
    assert received.mail_from.endswith("@" + BOUNCE_DOMAIN)  # VERP as without a relay
    [ev] = await eventually(lambda: events.of("delivered", rcpt))
    assert ev.message_id == mid and ev.mx_host == "127.0.0.1" and ev.smtp_code == 250
    assert not events.of("failed") and not events.of("deferred")


async def test_a_relay_named_by_host_name_is_resolved_like_an_mx_host(
        start_dispatcher: Any, submit: Any, events: Any, dns_server: DnsServer, smtp_sink: SmtpSink,
        domain: str, make_mime: Any) -> None:
    relay = f"relay.{domain}"
    dns_server.add(relay, "A", "127.0.0.1")
    await start_dispatcher(relay_host=f"{relay.upper()}:{smtp_sink.port}")
    rcpts = [f"a@elsewhere-{domain}", f"b@other-{domain}"]
    await submit(rcpts, make_mime())
    await smtp_sink.handler.wait_for(2)
    delivered = await eventually(lambda: len(events.of("delivered")) == 2 and events.of("delivered"))
    assert {ev.mx_host for ev in delivered} == {relay}


async def test_an_unreachable_relay_defers_and_the_retry_delivers(
        start_dispatcher: Any, submit: Any, events: Any, domain: str, make_mime: Any) -> None:
    port = free_port()
    await start_dispatcher(relay_host=f"127.0.0.1:{port}")
    rcpt = f"later@{domain}"
    await submit([rcpt], make_mime())
    [deferred, *_] = await eventually(lambda: events.of("deferred", rcpt))
    assert deferred.enhanced_status.startswith("4.") and deferred.mx_host == "127.0.0.1"
    relay = await SmtpSink(port=port).start()
    try:
        [ev] = await eventually(lambda: events.of("delivered", rcpt))
        assert ev.attempt >= 1
        assert [r.rcpt_tos for r in relay.handler.received] == [[rcpt]]
        assert not events.of("failed")
    finally:
        await relay.stop()


@pytest.mark.parametrize(("value", "expected"), [
    ("", None),
    ("  ", None),
    ("127.0.0.1:2527", RelayHost("127.0.0.1", 2527)),
    ("smtp.Example.NET.:587", RelayHost("smtp.example.net", 587)),
    ("10.0.0.5", RelayHost("10.0.0.5", 25)),
    ("[::1]:2527", RelayHost("::1", 2527)),
    ("[2001:db8::1]", RelayHost("2001:db8::1", 25)),
])
def test_relay_host_values(value: str, expected: RelayHost | None) -> None:
    assert parse_relay_host(value) == expected


@pytest.mark.parametrize("value", ["::1:25", "[::1", "[nope]:25", "host:port", "host:0", "host:70000",
                                   ":25", "user@host:25", "smtp://host:25", "[::1]x"])
def test_a_bad_relay_host_stops_the_dispatcher_at_boot(value: str) -> None:
    with pytest.raises(ValidationError, match="relay host"):
        DispatcherSettings(relay_host=value)


def test_relay_host_is_written_back_as_host_and_port() -> None:
    assert str(RelayHost("::1", 2527)) == "[::1]:2527"
    assert str(RelayHost("relay.example.net", 25)) == "relay.example.net:25"
