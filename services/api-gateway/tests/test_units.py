"""Pure functions: raw MIME editing, the API key cache, fingerprints."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postwire.api_gateway.auth import KeyCache
from postwire.api_gateway.errors import InvalidInput
from postwire.api_gateway.idempotency import fingerprint
from postwire.api_gateway.rawmime import prepare_raw

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_folded_bcc_is_removed_and_other_headers_kept_verbatim() -> None:
    raw = (b"Received: from a\r\n\tby b\r\n"
           b"BCC: x@example.com,\r\n  y@example.com\r\n"
           b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <own@id>\r\n"
           b"Date: Mon, 1 Jan 2026 00:00:00 +0000\r\n"
           b"\r\nbody\r\n")

    out = prepare_raw(raw, None, [], "mid", "d.test", NOW)

    assert out.raw == (b"Received: from a\r\n\tby b\r\n"
                       b"From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <own@id>\r\n"
                       b"Date: Mon, 1 Jan 2026 00:00:00 +0000\r\n\r\nbody\r\n")
    assert out.recipients == ["b@example.org", "x@example.com", "y@example.com"]


def test_duplicate_recipients_are_sent_once() -> None:
    raw = b"From: a@example.com\r\nTo: B@example.org, b@EXAMPLE.org\r\nCc: b@example.org\r\n\r\nx"
    assert prepare_raw(raw, None, [], "m", "d", NOW).recipients == ["B@example.org"]


def test_headers_only_message_gets_an_empty_body() -> None:
    out = prepare_raw(b"From: a@example.com\nTo: b@example.org\n", None, [], "m", "d", NOW)
    assert out.raw.endswith(b"To: b@example.org\r\n\r\n")
    assert out.raw.startswith(b"Message-ID: <m@d>\r\nDate: Fri, 02 Jan 2026 03:04:05 +0000\r\n")


@pytest.mark.parametrize("raw", [b"\r\nFrom: a@example.com\r\n", b"Subject : obsolete\r\n\r\nx",
                                 b"From: a@example.com\r\nhello\r\n\r\nx"])
def test_lines_that_are_not_header_fields_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidInput) as e:
        prepare_raw(raw, None, ["b@example.org"], "m", "d", NOW)
    assert e.value.errors[0].type == "invalid_mime"


def test_key_cache_is_bounded_and_expires() -> None:
    cache = KeyCache(ttl_s=3600, max_size=2)
    cache.put("a", "acct-a")
    cache.put("b", "acct-b")
    assert cache.get("a") == "acct-a"  # a is now the most recent
    cache.put("c", "acct-c")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("acct-a", None, "acct-c")
    expired = KeyCache(ttl_s=0, max_size=2)
    expired.put("a", "acct-a")
    assert expired.get("a") is None


def test_fingerprint_parts_are_unambiguous() -> None:
    assert fingerprint(b"ab", b"c") != fingerprint(b"a", b"bc")
