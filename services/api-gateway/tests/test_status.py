"""GET /v1/messages/{id} (rows written as the recorder would), probes, metrics and the OpenAPI docs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from postwire.core.ids import new_message_id
from postwire.db.accounts import NewCredentials
from postwire.db.engine import make_engine, make_sessionmaker
from postwire.db.models import Message, Recipient

if TYPE_CHECKING:
    from .conftest import Gateway, MakeAccount


async def _record(pg_url: str, account_id: str) -> str:
    """What the recorder writes from events: the message, one delivered and one failed recipient."""
    mid, now = new_message_id(), datetime.now(UTC)
    engine = make_engine(pg_url)
    async with make_sessionmaker(engine).begin() as s:
        s.add(Message(id=mid, account_id=account_id, mail_from="a@example.com", subject="status", size=10,
                      source="api", tags=["t1"], metadata_={"k": "v"}))
        s.add(Recipient(message_id=mid, address="ok@example.org", account_id=account_id, status="delivered",
                        smtp_code=250, enhanced_status="2.0.0", response="250 2.0.0 Ok: queued as 1",
                        mx_host="mx.example.org", attempts=1, updated_at=now))
        s.add(Recipient(message_id=mid, address="nope@example.org", account_id=account_id, status="failed",
                        smtp_code=550, enhanced_status="5.1.1", response="550 5.1.1 No such user",
                        mx_host="mx.example.org", attempts=1, updated_at=now))
        s.add(Recipient(message_id=mid, address="later@example.net", account_id=account_id, status="queued",
                        attempts=0, updated_at=now))
    await engine.dispose()
    return mid


async def test_message_status_shows_each_recipient(gateway: Gateway, account: NewCredentials,
                                                   pg_url: str) -> None:
    mid = await _record(pg_url, account.account_id)

    r = await gateway.http.get(f"/v1/messages/{mid}", headers=gateway.auth(account))

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["from"], body["subject"]) == (mid, "a@example.com", "status")
    assert body["tags"] == ["t1"] and body["metadata"] == {"k": "v"} and body["created_at"]
    by_email = {x["email"]: x for x in body["recipients"]}
    assert by_email["ok@example.org"]["status"] == "delivered"
    assert by_email["ok@example.org"]["smtp_code"] == 250
    failed = by_email["nope@example.org"]
    assert (failed["status"], failed["smtp_code"], failed["enhanced_status"]) == ("failed", 550, "5.1.1")
    assert failed["response"] == "550 5.1.1 No such user" and failed["mx_host"] == "mx.example.org"
    assert failed["attempts"] == 1 and failed["updated_at"]
    assert by_email["later@example.net"]["status"] == "queued"
    assert by_email["later@example.net"]["smtp_code"] is None


async def test_other_accounts_message_is_404(gateway: Gateway, account: NewCredentials,
                                             make_account: MakeAccount, pg_url: str) -> None:
    mid = await _record(pg_url, account.account_id)
    stranger = await make_account()

    theirs = await gateway.http.get(f"/v1/messages/{mid}", headers=gateway.auth(stranger))
    unknown = await gateway.http.get(f"/v1/messages/{new_message_id()}", headers=gateway.auth(account))

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"] == "not_found"
    assert theirs.json().keys() == unknown.json().keys()


async def test_probes_metrics_and_docs(gateway: Gateway, account: NewCredentials) -> None:
    sent = await gateway.http.post("/v1/messages", headers=gateway.auth(account), json={
        "from": "a@example.com", "to": ["b@example.org"], "text": "t"})
    assert sent.status_code == 202

    assert (await gateway.http.get("/healthz")).json() == {"status": "ok"}
    assert (await gateway.http.get("/readyz")).json() == {"ready": True, "nats": True, "database": True}
    metrics = (await gateway.http.get("/metrics")).text
    assert 'postwire_api_messages_accepted_total{endpoint="json"}' in metrics
    assert 'postwire_api_requests_total{method="POST",route="/v1/messages",status="202"}' in metrics
    assert "postwire_api_accept_seconds_bucket" in metrics
    assert (await gateway.http.get("/docs")).status_code == 200
    spec = (await gateway.http.get("/openapi.json")).json()
    send = spec["paths"]["/v1/messages"]["post"]
    assert {"202", "401", "409", "413", "422", "503"} <= send["responses"].keys()
    assert "from" in spec["components"]["schemas"]["SendRequest"]["properties"]
    assert "404" in spec["paths"]["/v1/messages/{message_id}"]["get"]["responses"]
