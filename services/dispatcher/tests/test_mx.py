"""MX resolution and host fallback against the real loopback DNS server (never the system resolver)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator

import dns.nameserver
import pytest
import pytest_asyncio

from postwire.core.resolver import make_resolver
from postwire.dispatcher.delivery import Deliverer
from postwire.dispatcher.mx import DnsFailure, MxHost, MxResolver
from postwire.dispatcher.shaping import parse_rules
from postwire.dispatcher.smtp_client import ClientConfig
from postwire.dispatcher.smtp_pool import ConnectionPool
from postwire.dispatcher.throttle import Shaper
from postwire.testing.dns import DnsServer
from postwire.testing.smtp import SmtpSink

SHAPER = Shaper(parse_rules({"default": {"max_connections": 2}}))


@pytest.fixture
def resolver(dns_server: DnsServer) -> MxResolver:
    host, port = dns_server.nameserver.split(":")
    return MxResolver(make_resolver([(host, int(port))], timeout_s=2), rng=random.Random(5))


@pytest_asyncio.fixture
async def pool() -> AsyncIterator[ConnectionPool]:
    cfg = ClientConfig(ehlo_hostname="dispatcher.test", connect_timeout_s=5, command_timeout_s=10)
    p = ConnectionPool(cfg, idle_s=30)
    p.start()
    yield p
    await p.close()


def test_configured_nameservers_are_the_only_ones() -> None:
    r = make_resolver([("127.0.0.1", 5353)], timeout_s=1)
    assert [(ns.address, ns.port) for ns in r.nameservers if isinstance(ns, dns.nameserver.Do53Nameserver)] \
        == [("127.0.0.1", 5353)]
    assert len(r.nameservers) == 1


async def test_mx_hosts_in_preference_order(resolver: MxResolver, dns_server: DnsServer, domain: str) -> None:
    dns_server.add(domain, "MX", (20, f"backup.{domain}"))
    dns_server.add(domain, "MX", (10, f"primary.{domain}"))
    route = await resolver.route(domain)
    assert route.hosts == [MxHost(f"primary.{domain}", 10), MxHost(f"backup.{domain}", 20)]
    assert not route.implicit


async def test_implicit_mx_when_domain_has_only_addresses(resolver: MxResolver, dns_server: DnsServer,
                                                          domain: str) -> None:
    dns_server.add(domain, "A", "127.0.0.1")
    route = await resolver.route(domain)
    assert route.implicit and route.hosts == [MxHost(domain, 0)]
    assert await resolver.addresses(domain) == ["127.0.0.1"]


async def test_nxdomain_and_null_mx_are_permanent(resolver: MxResolver, dns_server: DnsServer,
                                                  domain: str) -> None:
    with pytest.raises(DnsFailure) as nx:
        await resolver.route(f"missing.{domain}")
    assert nx.value.reply.outcome == "failed" and nx.value.reply.enhanced == "5.1.2"
    dns_server.add(domain, "MX", (0, "."))
    with pytest.raises(DnsFailure) as null:
        await resolver.route(domain)
    assert (null.value.reply.code, null.value.reply.enhanced) == (556, "5.1.10")


async def test_unreachable_nameserver_is_temporary() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a UDP port nobody answers on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        resolver = MxResolver(make_resolver([("127.0.0.1", port)], timeout_s=0.3))
        with pytest.raises(DnsFailure) as e:
            await resolver.route("example.test")
    assert e.value.reply.outcome == "deferred" and e.value.reply.enhanced == "4.4.3"


async def test_answers_are_cached_for_their_ttl(resolver: MxResolver, dns_server: DnsServer,
                                               domain: str) -> None:
    dns_server.add_mail_domain(domain)
    first = await resolver.route(domain)
    dns_server.clear(domain)  # gone from DNS, but the 60 s TTL has not run out
    assert await resolver.route(domain) == first


async def test_falls_back_to_the_next_mx_host(resolver: MxResolver, pool: ConnectionPool,
                                              dns_server: DnsServer, smtp_sink: SmtpSink,
                                              domain: str) -> None:
    dns_server.add(domain, "MX", (10, f"ghost.{domain}"))  # no address at all
    live = dns_server.add_mail_domain(domain, preference=20)
    replies = await Deliverer(resolver, pool, SHAPER, smtp_sink.port).deliver(
        domain, "s@example.org", [f"r@{domain}"], b"Subject: x\r\n\r\nhi\r\n")
    assert replies[f"r@{domain}"].outcome == "delivered"
    assert replies[f"r@{domain}"].mx_host == live


async def test_mx_hosts_without_addresses_fail_permanently(resolver: MxResolver, pool: ConnectionPool,
                                                           dns_server: DnsServer, domain: str) -> None:
    dns_server.add(domain, "MX", (10, f"ghost.{domain}"))
    replies = await Deliverer(resolver, pool, SHAPER, 25).deliver(domain, "s@example.org",
                                                                  [f"r@{domain}"], b"x")
    assert replies[f"r@{domain}"].enhanced == "5.4.4"


async def test_a_reused_session_the_server_just_closed_costs_no_deferral(resolver: MxResolver,
                                                                          dns_server: DnsServer,
                                                                          domain: str) -> None:
    """A server may time an idle session out at the moment we reuse it: the connection closes before
    MAIL is answered, so the server has seen nothing of the transaction. The message goes out on a new
    session instead of being deferred for minutes (sessions are reused without an RSET probe)."""
    transactions = 0

    async def mx(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal transactions
        writer.write(b"220 mx ESMTP\r\n")
        served = False
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"MAIL" and served:
                break  # the idle timeout fires just as the next transaction begins: close, no reply
            if verb == b"DATA":
                writer.write(b"354 go on\r\n")
                while (await reader.readline()) not in (b".\r\n", b""):
                    pass
                transactions += 1
                served = True
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250-mx\r\n250 PIPELINING\r\n" if verb == b"EHLO" else b"250 ok\r\n")
        writer.close()

    server = await asyncio.start_server(mx, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dns_server.add_mail_domain(domain)
    pool = ConnectionPool(ClientConfig(ehlo_hostname="dispatcher.test", connect_timeout_s=5,
                                       command_timeout_s=5), idle_s=30)
    deliverer = Deliverer(resolver, pool, Shaper(parse_rules({"default": {"max_connections": 1}})), port)
    try:
        first = await deliverer.deliver(domain, "s@example.org", [f"a@{domain}"], b"Subject: 1\r\n\r\nx\r\n")
        second = await deliverer.deliver(domain, "s@example.org", [f"b@{domain}"], b"Subject: 2\r\n\r\nx\r\n")
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()
    assert first[f"a@{domain}"].outcome == second[f"b@{domain}"].outcome == "delivered"
    assert transactions == 2
