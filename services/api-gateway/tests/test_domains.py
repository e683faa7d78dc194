"""/v1/domains against a real PostgreSQL: records to publish, account isolation, no private keys out."""

from __future__ import annotations

import base64
import logging
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from postwire.db.accounts import NewCredentials
from postwire.testing.dns import DnsServer

if TYPE_CHECKING:
    from .conftest import Gateway, MakeAccount


def fresh() -> str:
    return f"d{uuid.uuid4().hex[:10]}.example"


async def test_create_returns_the_domain_and_its_dns_records(gateway: Gateway, account: NewCredentials,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    name = fresh()
    caplog.set_level(logging.DEBUG)
    r = await gateway.http.post("/v1/domains", json={"name": name.upper()}, headers=gateway.auth(account))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == name and body["dkim_algorithm"] == "rsa-sha256"
    assert "private" not in r.text.lower() and "PRIVATE KEY" not in caplog.text
    records = {rec["purpose"]: rec for rec in body["dns_records"]}
    assert records["dkim"] == {"type": "TXT", "name": f"{body['dkim_selector']}._domainkey.{name}",
                               "value": f"v=DKIM1; k=rsa; p={body['dkim_public_key']}", "purpose": "dkim"}
    assert records["spf"] == {"type": "TXT", "name": name, "value": "v=spf1 include:spf.postwire.local ~all",
                              "purpose": "spf"}
    assert records["return_path"] == {"type": "CNAME", "name": f"pm-bounces.{name}",
                                      "value": "bounces.postwire.local", "purpose": "return_path"}


async def test_ed25519_and_idn_names(gateway: Gateway, account: NewCredentials) -> None:
    name = f"bücher-{uuid.uuid4().hex[:8]}.example"
    r = await gateway.http.post("/v1/domains", json={"name": name, "dkim_algorithm": "ed25519-sha256"},
                                headers=gateway.auth(account))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"].startswith("xn--") and body["dkim_algorithm"] == "ed25519-sha256"
    assert len(base64.b64decode(body["dkim_public_key"])) == 32
    assert "k=ed25519;" in body["dns_records"][0]["value"]
    got = await gateway.http.get(f"/v1/domains/{name.upper()}", headers=gateway.auth(account))
    assert got.status_code == 200 and got.json()["id"] == body["id"]


async def test_list_get_delete(gateway: Gateway, account: NewCredentials) -> None:
    names = sorted([fresh(), fresh()])
    for name in names:
        r = await gateway.http.post("/v1/domains", json={"name": name, "dkim_algorithm": "ed25519-sha256"},
                                    headers=gateway.auth(account))
        assert r.status_code == 201
    listed = await gateway.http.get("/v1/domains", headers=gateway.auth(account))
    assert [d["name"] for d in listed.json()["domains"]] == names
    auth = gateway.auth(account)
    assert (await gateway.http.delete(f"/v1/domains/{names[0]}", headers=auth)).status_code == 204
    assert (await gateway.http.get(f"/v1/domains/{names[0]}", headers=auth)).status_code == 404
    again = await gateway.http.delete(f"/v1/domains/{names[0]}", headers=gateway.auth(account))
    assert again.status_code == 404 and again.json()["error"] == "not_found"
    listed = await gateway.http.get("/v1/domains", headers=gateway.auth(account))
    assert [d["name"] for d in listed.json()["domains"]] == names[1:]


async def test_accounts_are_isolated(gateway: Gateway, make_account: MakeAccount) -> None:
    a, b = await make_account(), await make_account()
    name = fresh()
    r = await gateway.http.post("/v1/domains", json={"name": name, "dkim_algorithm": "ed25519-sha256"},
                                headers=gateway.auth(a))
    assert r.status_code == 201
    assert (await gateway.http.get(f"/v1/domains/{name}", headers=gateway.auth(b))).status_code == 404
    assert (await gateway.http.delete(f"/v1/domains/{name}", headers=gateway.auth(b))).status_code == 404
    assert (await gateway.http.get("/v1/domains", headers=gateway.auth(b))).json() == {"domains": []}
    taken = await gateway.http.post("/v1/domains", json={"name": name}, headers=gateway.auth(b))
    assert taken.status_code == 409
    assert taken.json() == {"error": "domain_exists",
                            "message": f"{name} is already registered by another account"}
    mine = await gateway.http.post("/v1/domains", json={"name": name}, headers=gateway.auth(a))
    assert mine.status_code == 409 and "in this account" in mine.json()["message"]
    assert (await gateway.http.get(f"/v1/domains/{name}", headers=gateway.auth(a))).status_code == 200


@pytest.mark.parametrize("payload, kind", [
    ({"name": "not a domain"}, "invalid_domain"),
    ({"name": "localhost"}, "invalid_domain"),
    ({"name": "-bad-.example"}, "invalid_domain"),
    ({"name": "192.168.0.1"}, "invalid_domain"),
    ({"name": "a" * 300 + ".example"}, "string_too_long"),
    ({"name": "ok.example", "dkim_algorithm": "rsa-sha1"}, "literal_error"),
    ({"name": "ok.example", "extra": 1}, "extra_forbidden"),
])
async def test_invalid_input_is_a_422_in_the_usual_shape(gateway: Gateway, account: NewCredentials,
                                                          payload: dict[str, object], kind: str) -> None:
    r = await gateway.http.post("/v1/domains", json=payload, headers=gateway.auth(account))
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "validation_error" and body["message"]
    assert body["detail"][0]["type"] == kind and body["detail"][0]["loc"][0] == "body"


async def test_requires_an_api_key(gateway: Gateway) -> None:
    r = await gateway.http.get("/v1/domains")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


async def test_tracking_host_is_set_shown_with_its_cname_and_cleared(gateway: Gateway,
                                                                     make_account: MakeAccount) -> None:
    owner, other = await make_account(), await make_account()
    name = fresh()
    assert (await gateway.http.post("/v1/domains", json={"name": name},
                                    headers=gateway.auth(owner))).status_code == 201

    r = await gateway.http.patch(f"/v1/domains/{name}", json={"tracking_host": f"Track.{name}"},
                                 headers=gateway.auth(owner))
    assert r.status_code == 200, r.text
    assert r.json()["tracking_host"] == f"track.{name}"
    [cname] = [rec for rec in r.json()["dns_records"] if rec["purpose"] == "tracking"]
    assert (cname["type"], cname["name"], cname["value"]) == ("CNAME", f"track.{name}", "127.0.0.1")
    bad = await gateway.http.patch(f"/v1/domains/{name}", json={"tracking_host": "not a host"},
                                   headers=gateway.auth(owner))
    assert bad.status_code == 422 and "tracking_host" in bad.text
    theirs = await gateway.http.patch(f"/v1/domains/{name}", json={"tracking_host": None},
                                      headers=gateway.auth(other))
    assert theirs.status_code == 404
    cleared = await gateway.http.patch(f"/v1/domains/{name}", json={"tracking_host": None},
                                       headers=gateway.auth(owner))
    assert cleared.json()["tracking_host"] is None
    assert all(rec["purpose"] != "tracking" for rec in cleared.json()["dns_records"])


async def test_check_looks_the_records_up_live(start_gateway: Any, account: NewCredentials,
                                               dns_server: DnsServer) -> None:
    """GET /v1/domains/{name}/check against a real DNS server on loopback: each record missing, then
    wrong, then published right, seen at once (no cache)."""
    gw = await start_gateway(dns_nameservers=dns_server.nameserver, dns_timeout_s=2.0,
                             spf_include="spf.relay.test", bounce_domain="bounce.relay.test",
                             return_path_label="pm-bounces")
    h = gw.auth(account)
    name = f"chk{uuid.uuid4().hex[:8]}.example"
    created = (await gw.http.post("/v1/domains", json={"name": name}, headers=h)).json()
    records = {r["purpose"]: r for r in created["dns_records"]}

    def states(body: dict[str, Any]) -> dict[str, str]:
        return {r["purpose"]: r["state"] for r in body["records"]}

    first = (await gw.http.get(f"/v1/domains/{name}/check", headers=h)).json()
    assert first["ok"] is False
    assert states(first) == {"dkim": "missing", "spf": "missing", "return_path": "missing",
                             "dmarc": "missing", "mx": "missing"}
    assert all(r["fix"] for r in first["records"])

    for host, spf_value in (("_spf.google.com", "v=spf1 ip4:192.0.2.0/24 ~all"),
                            ("spf.relay.test", "v=spf1 ip4:198.51.100.0/24 -all")):
        dns_server.clear(host)  # the DNS server is the session's: other tests publish these too
        dns_server.add(host, "TXT", spf_value)
    dns_server.add(records["dkim"]["name"], "TXT", "v=DKIM1; k=rsa; p=MIIBold")
    dns_server.add(name, "TXT", "v=spf1 include:_spf.google.com ~all")
    dns_server.add(records["return_path"]["name"], "CNAME", "elsewhere.example")
    dns_server.add(f"_dmarc.{name}", "TXT", "v=DMARC1; p=none")
    wrong = (await gw.http.get(f"/v1/domains/{name}/check", headers=h)).json()
    assert states(wrong) == {"dkim": "wrong", "spf": "wrong", "return_path": "wrong", "dmarc": "ok",
                             "mx": "missing"}
    spf = next(r for r in wrong["records"] if r["purpose"] == "spf")
    assert spf["found"] == ["v=spf1 include:_spf.google.com ~all"] and "include:spf.relay.test" in spf["fix"]

    for purpose in ("dkim", "return_path"):
        dns_server.clear(records[purpose]["name"])
    dns_server.clear(name)
    dns_server.add(records["dkim"]["name"], "TXT", records["dkim"]["value"])  # split in 255-byte strings
    dns_server.add(name, "TXT", "v=spf1 include:_spf.google.com include:spf.relay.test ~all")
    dns_server.add(records["return_path"]["name"], "CNAME", "bounce.relay.test.")
    right = (await gw.http.get(f"/v1/domains/{name}/check", headers=h)).json()
    assert right["ok"] is True, right
    assert (await gw.http.get("/v1/domains/other.example/check", headers=h)).status_code == 404
