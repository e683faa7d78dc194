"""An event has one public shape: webhooks POST what the events API later serves for the same event."""

from __future__ import annotations

from datetime import UTC

from postwire.core.events import make_event
from postwire.db.events_query import event_json, event_proto_data, event_proto_json
from postwire.v1 import envelope_pb2


def _accepted(**fields: object) -> envelope_pb2.Event:
    return make_event("accepted", account_id="acct1", message_id="m1", recipient="a@example.com",
                      mail_from="s@example.org", subject="Hi", size=120, source="smtp", **fields)


def test_a_webhook_carries_the_dsn_parameters_the_api_serves() -> None:
    ev = _accepted(dsn=envelope_pb2.Dsn(ret="HDRS", envid="env-1"),
                   recipient_dsn=envelope_pb2.RecipientDsn(notify=["FAILURE", "DELAY"],
                                                           orcpt="rfc822;a@example.com"))
    pushed = event_proto_json(ev)  # the webhook's payload, straight from the NATS event
    stored = event_json(ev.event_id, ev.type, ev.at.ToDatetime(tzinfo=UTC), ev.message_id, ev.recipient,
                        event_proto_data(ev))  # what the recorder stores and the API serves
    assert pushed == stored
    assert (pushed["dsn"], pushed["notify"], pushed["orcpt"]) == (
        {"ret": "HDRS", "envid": "env-1"}, ["FAILURE", "DELAY"], "rfc822;a@example.com")


def test_parameters_not_given_are_null() -> None:
    pushed = event_proto_json(_accepted())
    assert (pushed["dsn"], pushed["notify"], pushed["orcpt"]) == (None, None, None)
    assert (pushed["from"], pushed["subject"], pushed["size"]) == ("s@example.org", "Hi", 120)
