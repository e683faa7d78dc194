"""Sending only From verified domains (docs/domains.md): a new account's mail From a domain it has not
verified is refused with 422 on every sending route, a domain becomes verified once its DKIM record is
published (looked up on a real DNS server on loopback), and then it and its subdomains may be sent From."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from postwire.db.sender_domains import set_allow_unverified_from
from postwire.testing.dns import DnsServer

if TYPE_CHECKING:
    from .conftest import Gateway, Inbound, MakeAccount, StartGateway


def message(sender: str) -> dict[str, Any]:
    return {"from": sender, "to": ["alice@example.org"], "subject": "hi", "text": "hello"}


def mime(sender: str) -> bytes:
    return f"From: {sender}\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n".encode()


def refused_for(r: Any, domain: str) -> bool:
    body = r.json()
    return r.status_code == 422 and body["error"] == "unverified_from_domain" and domain in body["message"]


async def gateway_with_dns(start_gateway: StartGateway, dns: DnsServer) -> Gateway:
    # no caching of verified domains: each request sees the database as it is
    return await start_gateway(dns_nameservers=dns.nameserver, dns_timeout_s=2.0, from_policy_ttl_s=0)


async def test_a_new_account_cannot_send_from_a_domain_it_has_not_verified(
        start_gateway: StartGateway, make_account: MakeAccount, inbound: Inbound,
        dns_server: DnsServer) -> None:
    gw = await gateway_with_dns(start_gateway, dns_server)
    acct = await make_account(allow_unverified_from=False)
    h = gw.auth(acct)

    json_send = await gw.http.post("/v1/messages", json=message("Shop <orders@example.com>"), headers=h)
    raw_send = await gw.http.post("/v1/messages/mime", content=mime("orders@example.com"),
                                  params={"to": "alice@example.org"},
                                  headers={**h, "Content-Type": "message/rfc822"})
    smtpeter = await gw.http.post("/v1/send", json={"recipient": "alice@example.org",
                                                    "from": "orders@example.com", "subject": "hi",
                                                    "text": "hello"}, headers=h)

    assert refused_for(json_send, "example.com"), json_send.text
    assert refused_for(raw_send, "example.com"), raw_send.text
    assert refused_for(smtpeter, "example.com"), smtpeter.text
    assert await inbound.count() == 0


async def test_a_verified_domain_and_its_subdomains_may_be_sent_from(
        start_gateway: StartGateway, make_account: MakeAccount, inbound: Inbound,
        dns_server: DnsServer) -> None:
    gw = await gateway_with_dns(start_gateway, dns_server)
    acct = await make_account(allow_unverified_from=False)
    h = gw.auth(acct)
    domain = f"mail.shop{uuid.uuid4().hex[:8]}.example"
    created = (await gw.http.post("/v1/domains", json={"name": domain}, headers=h)).json()
    assert created["verified"] is False and created["verified_at"] is None

    # registered but its DKIM record not yet published: still refused, and verify says why
    assert refused_for(await gw.http.post("/v1/messages", json=message(f"a@{domain}"), headers=h), domain)
    early = await gw.http.post(f"/v1/domains/{domain}/verify", headers=h)
    assert early.status_code == 200 and early.json()["verified"] is False
    assert {c["record"]: c["state"] for c in early.json()["records"]}["dkim"] == "missing"

    dkim = next(r for r in created["dns_records"] if r["purpose"] == "dkim")
    dns_server.add(dkim["name"], "TXT", dkim["value"])
    verified = await gw.http.post(f"/v1/domains/{domain}/verify", headers=h)
    assert verified.status_code == 200 and verified.json()["verified"] is True
    assert (await gw.http.get(f"/v1/domains/{domain}", headers=h)).json()["verified"] is True

    for sender in (f"Shop <a@{domain}>", f"news@eu.{domain}", f"a@{domain.upper()}"):
        r = await gw.http.post("/v1/messages", json=message(sender), headers=h)
        assert r.status_code == 202, (sender, r.text)
    parent = domain.removeprefix("mail.")  # not covered: its mail would not be signed by the domain's key
    assert refused_for(await gw.http.post("/v1/messages", json=message(f"a@{parent}"), headers=h), parent)
    assert await inbound.count() == 3


async def test_another_accounts_verified_domain_is_not_yours(
        start_gateway: StartGateway, make_account: MakeAccount, dns_server: DnsServer) -> None:
    gw = await gateway_with_dns(start_gateway, dns_server)
    owner = await make_account(allow_unverified_from=False)
    other = await make_account(allow_unverified_from=False)
    domain = f"owned{uuid.uuid4().hex[:8]}.example"
    created = (await gw.http.post("/v1/domains", json={"name": domain}, headers=gw.auth(owner))).json()
    dkim = next(r for r in created["dns_records"] if r["purpose"] == "dkim")
    dns_server.add(dkim["name"], "TXT", dkim["value"])
    assert (await gw.http.post(f"/v1/domains/{domain}/verify", headers=gw.auth(owner))).json()["verified"]

    r = await gw.http.post("/v1/messages", json=message(f"ceo@{domain}"), headers=gw.auth(other))
    assert refused_for(r, domain)
    # one unverified address among several From mailboxes is enough to refuse
    both = await gw.http.post("/v1/messages/mime", content=mime(f"a@{domain}, b@elsewhere.example"),
                              params={"to": "alice@example.org", "from": f"a@{domain}"},
                              headers={**gw.auth(owner), "Content-Type": "message/rfc822"})
    assert refused_for(both, "elsewhere.example"), both.text


async def test_an_account_allowed_unverified_from_domains_sends_from_any(
        start_gateway: StartGateway, make_account: MakeAccount, inbound: Inbound, dns_server: DnsServer,
        sessions: async_sessionmaker[AsyncSession]) -> None:
    gw = await gateway_with_dns(start_gateway, dns_server)
    acct = await make_account(allow_unverified_from=False)
    assert refused_for(await gw.http.post("/v1/messages", json=message("a@example.com"),
                                          headers=gw.auth(acct)), "example.com")
    async with sessions.begin() as s:
        assert await set_allow_unverified_from(s, acct.account_id, True)

    r = await gw.http.post("/v1/messages", json=message("a@example.com"), headers=gw.auth(acct))
    assert r.status_code == 202, r.text
    assert await inbound.count() == 1
