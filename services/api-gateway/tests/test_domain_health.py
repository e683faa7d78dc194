"""Domain health (GET /v1/domains/{name}/check): SPF walked through its includes and counted, DMARC
parsed and its report addresses verified, MX, against a real DNS server on loopback (never the system
resolver). Each test names its own domains, so the session's one DNS server serves them all."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from postwire.api_gateway.dmarc_record import organizational_domain
from postwire.api_gateway.dmarc_record import parse as parse_dmarc
from postwire.api_gateway.domain_check import RecordCheck, all_ok, check, resolver_for
from postwire.api_gateway.spf_check import parse as parse_spf
from postwire.db.accounts import NewCredentials
from postwire.db.domains import DomainInfo, dns_records
from postwire.testing.dns import DnsServer

if TYPE_CHECKING:
    from .conftest import StartGateway


@dataclass
class Setup:
    """A sending domain, the relay's host names, and the zone of a correct setup (publish() adds it)."""

    dns: DnsServer
    domain: str
    settings: SimpleNamespace
    info: DomainInfo

    @property
    def bounce(self) -> str:
        return str(self.settings.bounce_domain)

    @property
    def relay(self) -> str:
        return str(self.settings.spf_include)

    def publish(self, *, spf: str | None = None, dmarc: str | None = None, mx: bool = True) -> None:
        for record in dns_records(self.info, self.settings):
            if record.purpose != "spf":
                self.dns.add(record.name, record.type, record.value)
        self.dns.add(self.relay, "TXT", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all")
        self.dns.add(self.domain, "TXT", spf or f"v=spf1 include:{self.relay} ~all")
        dmarc = dmarc or f"v=DMARC1; p=reject; rua=mailto:dmarc@{self.bounce}"
        self.dns.add(f"_dmarc.{self.domain}", "TXT", dmarc)
        self.dns.add(f"{self.domain}._report._dmarc.{self.bounce}", "TXT", "v=DMARC1")
        if mx:
            self.dns.add_mail_domain(self.domain)

    async def check(self) -> dict[str, RecordCheck]:
        found = await check(self.info, self.settings, resolver_for(self.dns.nameserver, 2.0), budget_s=5.0)
        return {c.record: c for c in found}


def _setup(dns: DnsServer, domain: str | None = None) -> Setup:
    tag = uuid.uuid4().hex[:8]
    settings = SimpleNamespace(bounce_domain=f"bounce.relay{tag}.test", spf_include=f"spf.relay{tag}.test",
                               return_path_label="pm-bounces", tracking_base_url="https://t.relay.test")
    domain = domain or f"health{tag}.example"
    info = DomainInfo("d1", "a1", domain, "pw202612", "rsa-sha256", "MIIBkey", datetime.now(UTC))
    return Setup(dns, domain, settings, info)


@pytest.fixture
def setup(dns_server: DnsServer) -> Setup:
    return _setup(dns_server)


async def test_a_correct_setup_is_ok_with_the_details(setup: Setup) -> None:
    setup.publish()
    checks = await setup.check()
    assert list(checks) == ["dkim", "spf", "return_path", "dmarc", "mx"]
    assert {r: c.state for r, c in checks.items()} == dict.fromkeys(checks, "ok")
    assert all(c.fix == "" for c in checks.values()) and all_ok(checks.values())
    spf = checks["spf"].details
    assert (spf["lookups"], spf["void_lookups"], spf["all"]) == (1, 0, "~all")
    assert spf["authorises_postwire"] and spf["includes"] == [setup.relay]
    dmarc = checks["dmarc"].details
    assert dmarc["policy"]["p"] == "reject" and dmarc["applied_policy"] == "reject"
    assert dmarc["rua_includes_postwire"] and not dmarc["inherited"]
    assert dmarc["external_reports"] == [{"uri": f"mailto:dmarc@{setup.bounce}", "domain": setup.bounce,
                                          "authorization": f"{setup.domain}._report._dmarc.{setup.bounce}",
                                          "authorized": True}]
    assert dmarc["alignment"]["dkim"]["aligned"] is True
    assert dmarc["alignment"]["spf"]["aligned"] is False  # the return path is on the relay's domain
    assert checks["mx"].found == [f"10 mx.{setup.domain}"] and checks["mx"].required is False


async def test_eleven_lookups_through_nested_includes_is_wrong(setup: Setup) -> None:
    d, dns = setup.domain, setup.dns
    dns.add(f"x.{d}", "A", "192.0.2.1")
    dns.add(f"x.{d}", "MX", (10, f"x.{d}"))
    dns.add(f"l1.{d}", "TXT", f"v=spf1 include:l2.{d} include:l3.{d} a:x.{d} mx:x.{d} ~all")
    dns.add(f"l2.{d}", "TXT", f"v=spf1 a:x.{d} mx:x.{d} ~all")
    dns.add(f"l3.{d}", "TXT", f"v=spf1 include:l4.{d} -all")
    dns.add(f"l4.{d}", "TXT", f"v=spf1 a:x.{d} exists:x.{d} -all")
    setup.publish(spf=f"v=spf1 include:{setup.relay} include:l1.{d} ~all")
    spf = (await setup.check())["spf"]
    assert spf.state == "wrong"
    assert spf.fix == "too many DNS lookups (11 > 10): flatten or remove includes"
    assert spf.details["lookups"] == 11 and spf.details["void_lookups"] == 0 and spf.details["complete"]
    assert sorted(spf.details["includes"]) == sorted([setup.relay, *(f"l{i}.{d}" for i in range(1, 5))])

    dns.clear(f"l4.{d}")
    dns.add(f"l4.{d}", "TXT", f"v=spf1 a:x.{d} -all")  # 10: at the limit, allowed
    spf = (await setup.check())["spf"]
    assert (spf.state, spf.details["lookups"]) == ("ok", 10)


async def test_two_spf_records_are_a_permerror(setup: Setup) -> None:
    setup.publish()
    setup.dns.add(setup.domain, "TXT", "v=spf1 include:_spf.elsewhere.example -all")
    setup.dns.add(setup.domain, "TXT", "google-site-verification=abc")  # not SPF: ignored
    spf = (await setup.check())["spf"]
    assert spf.state == "wrong" and len(spf.found) == 2
    assert spf.fix == f"2 SPF records at {setup.domain}: receivers answer permerror; merge them into one"


async def test_an_include_loop_is_found_and_not_followed_forever(setup: Setup) -> None:
    d = setup.domain
    setup.dns.add(f"loop1.{d}", "TXT", f"v=spf1 include:loop2.{d} -all")
    setup.dns.add(f"loop2.{d}", "TXT", f"v=spf1 include:loop1.{d} -all")
    setup.publish(spf=f"v=spf1 include:{setup.relay} include:loop1.{d} ~all")
    spf = (await setup.check())["spf"]
    assert spf.state == "wrong"
    assert spf.fix.startswith(f"include loop: {d} → loop1.{d} → loop2.{d} → loop1.{d}")
    assert spf.details["lookups"] == 4


async def test_void_lookups(setup: Setup) -> None:
    d = setup.domain
    setup.publish(spf=f"v=spf1 include:{setup.relay} a:gone1.{d} ~all")
    one = (await setup.check())["spf"]
    assert one.state == "ok" and one.details["void_lookups"] == 1
    assert "does not exist" in one.fix  # a hint: one void lookup is allowed

    setup.dns.clear(d)
    setup.dns.add(d, "TXT", f"v=spf1 include:{setup.relay} a:gone1.{d} mx:gone2.{d} exists:gone3.{d} ~all")
    setup.dns.add_mail_domain(d)
    three = (await setup.check())["spf"]
    assert three.state == "wrong" and three.details["void_lookups"] == 3
    assert three.fix.startswith("too many void DNS lookups (3 > 2")

    setup.dns.clear(d)
    setup.dns.add(d, "TXT", f"v=spf1 include:{setup.relay} include:nowhere.{d} ~all")
    missing_include = (await setup.check())["spf"]
    assert missing_include.state == "wrong"
    assert missing_include.fix.startswith(f"include:nowhere.{d} does not exist: receivers answer permerror")


async def test_spf_without_the_relay_with_all_and_ptr(setup: Setup) -> None:
    d, dns = setup.domain, setup.dns
    dns.add(f"_spf.{d}", "TXT", f"v=spf1 include:{setup.relay} -all")
    setup.publish(spf=f"v=spf1 include:_spf.{d} ~all")  # the relay reached through the customer's own
    assert (await setup.check())["spf"].state == "ok"

    dns.clear(d)
    dns.add(d, "TXT", "v=spf1 ip4:192.0.2.7 ~all")
    spf = (await setup.check())["spf"]
    assert (spf.state, spf.fix) == ("wrong", f"add include:{setup.relay} to the SPF record at {d}")

    dns.clear(d)
    dns.add(d, "TXT", f"v=spf1 include:{setup.relay} +all")
    spf = (await setup.check())["spf"]
    assert spf.state == "wrong" and "lets every server on the Internet pass" in spf.fix

    dns.clear(d)
    dns.add(d, "TXT", f"v=spf1 ptr include:{setup.relay} ?all")
    spf = (await setup.check())["spf"]
    assert spf.state == "ok" and spf.fix.startswith("'ptr': ptr is deprecated")  # hints, in record order
    assert spf.details["warnings"][1].startswith("?all (neutral) protects nothing")

    dns.clear(d)
    dns.add(d, "TXT", f"v=spf1 include:{setup.relay} ip4:300.1.1.1 ~all")
    spf = (await setup.check())["spf"]
    assert spf.state == "wrong" and spf.fix.startswith("SPF syntax error: invalid address in 'ip4:300.1.1.1'")


async def test_dmarc_p_none_is_ok_with_a_hint(setup: Setup) -> None:
    setup.publish(dmarc=f"v=DMARC1; p=none; rua=mailto:dmarc@{setup.bounce}")
    dmarc = (await setup.check())["dmarc"]
    assert dmarc.state == "ok" and dmarc.fix.startswith("p=none only monitors")
    assert dmarc.details["policy"] == {"p": "none", "sp": "none", "adkim": "r", "aspf": "r", "pct": 100,
                                       "rua": [f"mailto:dmarc@{setup.bounce}"], "ruf": [], "fo": "0"}


async def test_dmarc_syntax_errors_are_wrong(setup: Setup) -> None:
    setup.publish(dmarc="v=DMARC1; p=sometimes")
    dmarc = (await setup.check())["dmarc"]
    assert dmarc.state == "wrong"
    assert dmarc.fix.startswith("DMARC syntax error: p=sometimes is not none, quarantine or reject")

    setup.dns.clear(f"_dmarc.{setup.domain}")
    setup.dns.add(f"_dmarc.{setup.domain}", "TXT", f"v=DMARC1; rua=mailto:dmarc@{setup.bounce}")
    dmarc = (await setup.check())["dmarc"]
    assert dmarc.state == "wrong" and "the p= tag (the policy) is missing" in dmarc.fix


async def test_dmarc_of_the_organizational_domain_applies_to_a_subdomain(dns_server: DnsServer) -> None:
    org = f"org{uuid.uuid4().hex[:8]}.example"
    setup = _setup(dns_server, f"news.{org}")
    setup.publish()
    dns_server.clear(f"_dmarc.{setup.domain}")
    dns_server.add(f"_dmarc.{org}", "TXT",
                   f"v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@{setup.bounce}")
    dns_server.add(f"{org}._report._dmarc.{setup.bounce}", "TXT", "v=DMARC1")
    dmarc = (await setup.check())["dmarc"]
    assert dmarc.state == "ok" and dmarc.fix == "", dmarc
    assert dmarc.name == f"_dmarc.news.{org}"
    assert dmarc.details["inherited"] is True and dmarc.details["found_at"] == f"_dmarc.{org}"
    assert dmarc.details["applied_policy"] == "quarantine"

    dns_server.clear(f"_dmarc.{org}")
    dmarc = (await setup.check())["dmarc"]
    assert dmarc.state == "missing" and dmarc.fix.startswith(f"publish a DMARC record at _dmarc.news.{org}")


async def test_rua_at_another_domain_needs_its_authorization(setup: Setup) -> None:
    third = f"reports{uuid.uuid4().hex[:8]}.example"
    setup.publish(dmarc=f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{setup.bounce},mailto:agg@{third}")
    dmarc = (await setup.check())["dmarc"]
    auth = f"{setup.domain}._report._dmarc.{third}"
    assert dmarc.state == "wrong"
    assert dmarc.fix == (f"reports to mailto:agg@{third} are not sent: {third} must publish TXT \"v=DMARC1\" "
                         f"at {auth} (RFC 7489 7.1)")

    setup.dns.add(auth, "TXT", "v=DMARC1")
    dmarc = (await setup.check())["dmarc"]
    assert dmarc.state == "ok" and dmarc.fix == ""
    assert {e["domain"]: e["authorized"] for e in dmarc.details["external_reports"]} == {setup.bounce: True,
                                                                                         third: True}


async def test_rua_without_postwire_and_its_own_authorization(setup: Setup) -> None:
    setup.publish(dmarc=f"v=DMARC1; p=reject; rua=mailto:postmaster@{setup.domain}")
    dmarc = (await setup.check())["dmarc"]
    assert dmarc.state == "ok" and dmarc.fix == f"add mailto:dmarc@{setup.bounce} to rua= to see the " \
                                                "aggregate reports in Postwire"
    assert dmarc.details["external_reports"] == []  # the domain's own address needs no authorization

    setup.dns.clear(f"{setup.domain}._report._dmarc.{setup.bounce}")
    setup.dns.clear(f"_dmarc.{setup.domain}")
    setup.dns.add(f"_dmarc.{setup.domain}", "TXT", f"v=DMARC1; p=reject; rua=mailto:dmarc@{setup.bounce}")
    dmarc = (await setup.check())["dmarc"]
    assert dmarc.state == "wrong" and "the Postwire operator must publish" in dmarc.fix


async def test_no_mx_is_missing_but_informational(setup: Setup) -> None:
    setup.publish(mx=False)
    checks = await setup.check()
    mx = checks["mx"]
    assert (mx.state, mx.found, mx.required) == ("missing", [], False)
    assert mx.fix.startswith(f"publish an MX record for {setup.domain}")
    assert all_ok(checks.values())

    setup.dns.add(setup.domain, "MX", (0, "."))
    null_mx = (await setup.check())["mx"]
    assert null_mx.state == "wrong" and "null MX" in null_mx.fix


async def test_a_silent_nameserver_answers_unknown_within_the_budget() -> None:
    """A nameserver that never answers: every record is unknown, none is called missing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        host, port = silent.getsockname()
        info = DomainInfo("d1", "a1", "silent.example", "pw202612", "rsa-sha256", "MIIB", datetime.now(UTC))
        settings = SimpleNamespace(bounce_domain="b.relay.test", spf_include="spf.relay.test",
                                   return_path_label="pm-bounces", tracking_base_url="https://t.relay.test")
        found = await check(info, settings, resolver_for(f"{host}:{port}", 0.3), budget_s=1.0)
    assert {c.state for c in found} == {"unknown"}


def test_organizational_domain_rule() -> None:
    assert organizational_domain("a.b.example.com") == "example.com"
    assert organizational_domain("mail.example.co.uk") == "example.co.uk"
    assert organizational_domain("example.com") == "example.com"


def test_parsers() -> None:
    terms, errors = parse_spf("v=spf1 a/24 mx:mx.example.com//64 ip6:2001:db8::/32 foo:bar "
                              "redirect=x.example")
    assert [t.name for t in terms] == ["a", "mx", "ip6", "redirect"] and errors == ["unknown term 'foo:bar'"]
    record = parse_dmarc("v=DMARC1; p=reject; adkim=s; pct=50; rua=mailto:a@r.example!10m; fo=1:d")
    assert (record.p, record.sp, record.adkim, record.aspf, record.pct, record.errors) == (
        "reject", "reject", "s", "r", 50, [])
    assert [u.domain for u in record.rua] == ["r.example"]
    assert parse_dmarc("p=reject; v=DMARC1").errors == ["v=DMARC1 must be the first tag"]


async def test_the_api_answers_every_record(start_gateway: StartGateway, account: NewCredentials,
                                            dns_server: DnsServer) -> None:
    tag = uuid.uuid4().hex[:8]
    gw = await start_gateway(dns_nameservers=dns_server.nameserver, dns_timeout_s=2.0,
                             spf_include=f"spf.relay{tag}.test", bounce_domain=f"bounce.relay{tag}.test")
    name = f"api{tag}.example"
    created = (await gw.http.post("/v1/domains", json={"name": name}, headers=gw.auth(account))).json()
    setup = _setup(dns_server, name)
    setup.settings.spf_include = gw.settings.spf_include
    setup.settings.bounce_domain = gw.settings.bounce_domain
    setup.info = DomainInfo("d1", "a1", name, created["dkim_selector"], "rsa-sha256",
                            created["dkim_public_key"], datetime.now(UTC))
    setup.publish(mx=False)
    body: dict[str, Any] = (await gw.http.get(f"/v1/domains/{name}/check", headers=gw.auth(account))).json()
    assert body["ok"] is True and body["domain"] == name
    records = {r["record"]: r for r in body["records"]}
    assert list(records) == ["dkim", "spf", "return_path", "dmarc", "mx"]
    assert set(records["spf"]) == {"record", "purpose", "name", "type", "expected", "found", "state", "fix",
                                   "required", "details"}
    assert all(r["purpose"] == r["record"] for r in body["records"])
    assert records["mx"]["state"] == "missing" and records["mx"]["required"] is False
    assert records["spf"]["details"]["lookups"] == 1
    assert records["dmarc"]["details"]["alignment"]["spf"]["envelope_domain"] == f"bounce.relay{tag}.test"
