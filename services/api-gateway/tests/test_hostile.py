"""What the schemathesis fuzzer (test_fuzz.py) found, pinned as plain regression tests.

Each of these used to answer 500 (an unhandled error), 503 (a database error reported as the database
being down, which invites retries of a request that can never work) or a status/Content-Type the
OpenAPI schema did not document. docs/reliability.md lists them.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.exc import DBAPIError

from postwire.api_gateway import app as app_module
from postwire.db.accounts import NewCredentials

from .conftest import Gateway, offline_app

NUL_PATHS = [
    "/v1/messages/a%00b", "/v1/domains/a%00b", "/v1/suppressions/a%00b", "/v1/webhooks/a%00b",
    "/v1/webhooks/a%00b/dead-letters", "/v1/stats/a%00b", "/v1/events/email/a%00b",
    "/v1/events/tags/a%00b", "/v1/events?recipient=a%00b", "/v1/events?message_id=a%00b",
    "/v1/events?tag=a%00b", "/v1/events?cursor=a%00b", "/v1/bounces?tag=a%00b", "/v1/stats?tag=a%00b",
    "/v1/events/messageid/x?tags=%00", "/v1/suppressions?q=a%00b", "/v1/suppressions?reason=a%00b",
    "/v1/suppressions/export.csv?q=a%00b", "/v1/webhooks/x/dead-letters?cursor=%00",
]


async def test_nul_in_a_parameter_is_a_422(gateway: Gateway, account: NewCredentials) -> None:
    """PostgreSQL cannot hold NUL: these were 503 database_unavailable (and a torn CSV stream)."""
    deletable = {"/v1/domains/a%00b", "/v1/suppressions/a%00b", "/v1/webhooks/a%00b"}
    for path in NUL_PATHS:
        for method in ("GET", "DELETE") if path in deletable else ("GET",):
            r = await gateway.http.request(method, path, headers=gateway.auth(account))
            assert r.status_code == 422, (method, path, r.text)
            assert r.json()["detail"][0]["type"] == "nul_character"


async def test_a_json_body_that_is_not_utf8_is_a_422(gateway: Gateway, account: NewCredentials) -> None:
    """FastAPI answered these with an undocumented 400 "There was an error parsing the body"."""
    for path in ("/v1/messages", "/v1/domains", "/v1/webhooks", "/v1/suppressions", "/v1/send",
                 "/v1/resend"):
        r = await gateway.http.post(path, content=b'{"a": "\xff\xfe"}', headers={
            **gateway.auth(account), "Content-Type": "application/json"})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["type"] == "json_invalid" and "UTF-8" in r.json()["message"]


MESSAGE = {"from": "a@example.com", "to": ["b@example.org"], "text": "t"}
SEND = {"from": "a@example.com", "recipient": "b@example.org", "text": "t"}


HOSTILE_BODIES: list[tuple[str, dict[str, Any], str]] = [
    # out-of-range dates: overflowed in protobuf, month arithmetic or PostgreSQL (500 / 503)
    ("/v1/messages", {**MESSAGE, "options": {"max_deliver_time": "9999-12-31T23:59:59-12:00"}},
     "datetime_out_of_range"),
    ("/v1/messages", {**MESSAGE, "options": {"max_deliver_time": "0001-01-01T00:00:00+12:00"}},
     "datetime_out_of_range"),
    ("/v1/send", {**SEND, "maxdelivertime": "0001-01-01 00:00:00"}, "datetime_out_of_range"),
    ("/v1/suppressions", {"address": "a@example.com", "expires_at": "9999-12-31T23:59:59-12:00"},
     "datetime_out_of_range"),
    # webhook URLs: a NUL reached PostgreSQL (503), a broken IPv6 host crashed urlsplit (500)
    ("/v1/webhooks", {"url": "https://1.1.1.1/a\u0000b"}, "unsafe_url"),
    ("/v1/webhooks", {"url": "https://[::1\u0000]/x"}, "unsafe_url"),
    ("/v1/webhooks", {"url": "https://[::1/x"}, "unsafe_url"),
    ("/v1/webhooks", {"url": "https://1.1.1.1/a b"}, "unsafe_url"),
    ("/v1/webhooks/x/dead-letters/replay", {"ids": ["a\u0000"]}, "string_pattern_mismatch"),
    # NUL in a message: refused as ingest-smtp refuses it in DATA (RFC 5322 2.3)
    ("/v1/messages", {**MESSAGE, "text": "a\u0000b"}, "nul_character"),
    ("/v1/send", {**SEND, "text": "a\u0000b"}, "nul_character"),
    ("/v1/send", {"recipient": "b@example.org",
                  "mime": "From: a@example.com\r\nSubject: x\u0000\r\n\r\nb\r\n"}, "nul_character"),
]


async def test_hostile_bodies_are_a_422(gateway: Gateway, account: NewCredentials) -> None:
    for path, body, type_ in HOSTILE_BODIES:
        r = await gateway.http.post(path, json=body, headers=gateway.auth(account))
        assert r.status_code == 422, (path, body, r.text)
        assert r.json()["detail"][0]["type"] == type_, (path, body)


async def test_out_of_range_dates_in_queries_are_a_422(gateway: Gateway, account: NewCredentials) -> None:
    for query in ("/v1/stats?end=0001-01-02T00:00:00Z", "/v1/stats?start=0001-01-01",
                  "/v1/events?start=9999-12-31T23:59:59Z", "/v1/events/email/x@example.org?start=9999-12-31",
                  "/v1/events/email/x@example.org?end=0001-01-01",
                  "/v1/bounces?end=9999-12-31T23:59:59-12:00"):
        r = await gateway.http.get(query, headers=gateway.auth(account))
        assert r.status_code == 422, (query, r.text)
        assert "1970-01-01 and 9000-01-01" in r.json()["message"]


async def test_resend_of_an_id_no_message_can_have_is_a_404(gateway: Gateway,
                                                            account: NewCredentials) -> None:
    """A CR (or any character outside an id's alphabet) went into a NATS subject: 503 queue_unavailable."""
    for odd in ("\u0086R\u00a3:\r\udba1\udfbd", "a\r\nb", "a b", "a.b*>", "x" * 40):
        r = await gateway.http.post("/v1/resend", content=json.dumps({"message": odd}), headers={
            **gateway.auth(account), "Content-Type": "application/json"})
        assert r.status_code == 404, (odd, r.text)


def test_the_schema_documents_csv_and_the_common_answers() -> None:
    paths = offline_app().openapi()["paths"]
    assert "text/csv" in paths["/v1/bounces"]["get"]["responses"]["200"]["content"]
    for path, operations in paths.items():
        if path.startswith("/v1/"):
            for method, op in operations.items():
                assert {"413", "422", "429"} <= op["responses"].keys(), (method, path)


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


async def _answer(sqlstate: str) -> Any:
    error = DBAPIError("SELECT", None, _PgError(sqlstate))
    return await app_module._database_error(None, error)  # type: ignore[arg-type]


async def test_a_database_data_exception_is_a_422_not_a_503() -> None:
    """The fallback behind the checks above: PostgreSQL refusing a value is the request's fault."""
    response = await _answer("22021")  # character_not_in_repertoire (a NUL)
    assert response.status_code == 422 and b"invalid_value" in response.body
    response = await _answer("08006")  # connection_failure: the database really is unavailable
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
