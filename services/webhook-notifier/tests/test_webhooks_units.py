"""Signing, the address policy, the backoff schedule and the fan-out's filter, without network."""

from __future__ import annotations

import ipaddress
import random
from datetime import UTC, datetime

import pytest

from postwire.db.webhooks import UnsafeUrl, UrlPolicy, check_url, is_public
from postwire.webhook_notifier.notifier import backoff
from postwire.webhook_notifier.subscriptions import EVERYTHING, NOTHING, HookRef, covers, subjects_for
from postwire.webhook_notifier.webhook_signature import sign, signature, verify


def test_signature_is_stripe_style_and_verifies() -> None:
    body = b'{"event":{"id":"x"}}'
    header = sign("whsec_k", body, timestamp=1_700_000_000)
    assert header == f"t=1700000000,v1={signature('whsec_k', 1_700_000_000, body)}"
    assert verify("whsec_k", body, header, now=1_700_000_100)
    assert not verify("whsec_k", body, header, now=1_700_001_000)  # outside the replay tolerance
    assert not verify("whsec_other", body, header, now=1_700_000_000)
    assert not verify("whsec_k", body + b"x", header, now=1_700_000_000)
    rotated = f"t=1700000000,v1={'0' * 64},v1={signature('whsec_k', 1_700_000_000, body)}"
    assert verify("whsec_k", body, rotated, now=1_700_000_000)
    assert not verify("whsec_k", body, "garbage")


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1", "::1", "::", "fe80::1", "fc00::1",
    "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::", "64:ff9b::a00:1",
    "2001:db8::1", "::7f00:1",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_url_syntax() -> None:
    strict = UrlPolicy()
    assert check_url("https://Example.com/a?b=1", strict) == ("https", "example.com", 443, "/a?b=1")
    assert check_url("https://example.com:8443", strict)[2:] == (8443, "/")
    for bad in ("http://example.com/", "ftp://example.com/", "https://u:p@example.com/", "https:///x",
                "https://example.com:99999/", "x" * 3000):
        with pytest.raises(UnsafeUrl):
            check_url(bad, strict)
    assert check_url("http://example.com/", UrlPolicy(allow_http=True))[0] == "http"


def test_backoff_grows_is_capped_and_jittered() -> None:
    random.seed(1)
    delays = [backoff(n, 10, 3600) for n in range(1, 15)]
    assert 7.5 <= delays[0] <= 12.5 and 15 <= delays[1] <= 25
    assert all(d <= 3600 * 1.25 for d in delays) and delays[-1] >= 3600 * 0.75
    # the default schedule keeps trying for the whole 24 h window: about 30 attempts
    total, n = 0.0, 0
    while total < 24 * 3600:
        n += 1
        total += min(3600, 10 * 2 ** (n - 1))
    assert 25 <= n <= 35


def _hook(account: str, *types: str) -> HookRef:
    return HookRef(f"wh_{account}{len(types)}", account, types, datetime(2026, 1, 1, tzinfo=UTC))


def test_fanout_filter_is_the_subjects_webhooks_want_without_overlap() -> None:
    hooks = [_hook("a1", "bounced"), _hook("a1", "delivered", "bounced"), _hook("a2"), _hook("a2", "opened"),
             _hook("a3", "clicked")]
    assert subjects_for(hooks, 100) == ["events.a1.bounced", "events.a1.delivered", "events.a2.>",
                                        "events.a3.clicked"]
    assert subjects_for([], 100) == [NOTHING]
    assert not any(covers(NOTHING, f"events.a{i}.delivered") for i in range(3))
    assert subjects_for(hooks, 3) == [EVERYTHING]  # beyond the limit: every event, as before filtering


def test_subject_coverage_follows_nats_wildcards() -> None:
    assert covers("events.>", "events.a.delivered") and covers("events.a.>", "events.a.>")
    assert covers("events.a.*", "events.a.bounced") and not covers("events.a.*", "events.a.>")
    assert not covers("events.a.bounced", "events.a.>") and not covers("events.a.>", "events.b.bounced")
    assert not covers("events.a.>", "events.a") and not covers("events.a.b", "events.a.b.c")
