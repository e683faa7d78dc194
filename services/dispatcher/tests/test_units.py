"""Pure logic: retry schedule, MX ordering, addresses, replies, settings parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from postwire.core.resolver import parse_nameservers
from postwire.dispatcher.mx import MxHost, is_null_mx, order_mx
from postwire.dispatcher.outcomes import from_server, local
from postwire.dispatcher.recipient_domains import BadAddress, domain_of, group_by_domain
from postwire.dispatcher.retry import MIN_DELAY_S, RetryPolicy
from postwire.dispatcher.transform import css_engine
from postwire.v1 import transformer_pb2

POLICY = RetryPolicy(base_s=60, max_s=3600, lifetime_s=5 * 86400)


def test_backoff_is_the_age_clamped_within_jitter_bounds() -> None:
    rng = random.Random(7)
    for age, step in [(0, 60), (30, 60), (60, 60), (500, 500), (1920, 1920)]:
        for _ in range(50):
            assert 0.75 * step <= POLICY.backoff(age, rng) <= step


def test_retries_double_from_the_first_step() -> None:
    """Attempts at age 0, then each wait about as long as the age: exponential growth up to the cap."""
    policy = RetryPolicy(base_s=300, max_s=3600, lifetime_s=5 * 86400)
    accepted = datetime(2026, 1, 1, tzinfo=UTC)
    now, waits = accepted, []
    for _ in range(9):
        delay = policy.next_delay(accepted, now, random.Random(0))
        assert delay is not None
        waits.append(delay)
        now += timedelta(seconds=delay)
    assert 225 <= waits[0] <= 300 and all(w <= 3600 for w in waits)
    assert waits[4] > 2 * waits[1] and waits[-1] >= 2700


def test_backoff_is_capped_and_survives_huge_ages() -> None:
    rng = random.Random(1)
    assert all(2700 <= POLICY.backoff(a, rng) <= 3600 for a in (3600, 7200, 10**9))


def test_backoff_jitter_spreads_a_burst() -> None:
    rng = random.Random(3)
    assert len({round(POLICY.backoff(600, rng), 3) for _ in range(20)}) > 10


def test_next_delay_stops_at_the_lifetime() -> None:
    accepted = datetime(2026, 1, 1, tzinfo=UTC)
    policy = RetryPolicy(base_s=60, max_s=3600, lifetime_s=600)
    assert policy.next_delay(accepted, accepted + timedelta(seconds=1)) is not None
    # the last retry is pulled in to the moment of expiry, not beyond it
    assert policy.next_delay(accepted, accepted + timedelta(seconds=590)) == pytest.approx(10)
    assert policy.next_delay(accepted, accepted + timedelta(seconds=600)) is None
    assert policy.next_delay(accepted, accepted + timedelta(days=1)) is None
    assert policy.next_delay(accepted, accepted + timedelta(seconds=599.999)) == MIN_DELAY_S


def test_mx_ordering_by_preference() -> None:
    hosts = order_mx([(20, "b.example."), (10, "a.example."), (30, "c.example.")])
    assert hosts == [MxHost("a.example", 10), MxHost("b.example", 20), MxHost("c.example", 30)]


def test_mx_equal_preferences_are_shuffled_but_stay_in_their_group() -> None:
    records = [(10, "a1"), (10, "a2"), (10, "a3"), (5, "first"), (20, "last")]
    rng = random.Random(11)
    orders = {tuple(h.name for h in order_mx(records, rng)) for _ in range(200)}
    assert all(o[0] == "first" and o[-1] == "last" for o in orders)
    assert {o[1:4] for o in orders} == {p for p in _permutations(("a1", "a2", "a3"))}


def _permutations(items: tuple[str, ...]) -> set[tuple[str, ...]]:
    import itertools

    return set(itertools.permutations(items))


def test_mx_duplicates_collapse_to_best_preference_and_root_targets_drop() -> None:
    assert order_mx([(20, "MX.Example."), (10, "mx.example"), (0, ".")]) == [MxHost("mx.example", 10)]


def test_null_mx() -> None:
    assert is_null_mx([(0, ".")])
    assert is_null_mx([(0, "")])
    assert not is_null_mx([(0, "."), (10, "mx.example")])
    assert not is_null_mx([])


def test_domains_are_lower_case_a_labels() -> None:
    assert domain_of("User@Bücher.DE") == "xn--bcher-kva.de"
    assert domain_of("x@EXAMPLE.com.") == "example.com"
    assert domain_of("x@_dmarc-ok.example") == "_dmarc-ok.example"
    for bad in ("no-at", "@example.com", "x@", "x@localhost", "x@a..b", "x@[127.0.0.1]", "x@-a.com"):
        with pytest.raises(BadAddress):
            domain_of(bad)


def test_group_by_domain_merges_idn_forms_and_drops_duplicates() -> None:
    groups, bad = group_by_domain(["a@bücher.de", "b@XN--BCHER-KVA.de", "A@Bücher.de", "c@other.example",
                                   "broken"])
    assert groups == {"xn--bcher-kva.de": ["a@bücher.de", "b@XN--BCHER-KVA.de"],
                      "other.example": ["c@other.example"]}
    assert [rcpt for rcpt, _ in bad] == ["broken"]


def test_server_replies_keep_the_text_and_enhanced_code() -> None:
    r = from_server(550, "5.1.1 <x@example.com>: Recipient address rejected\nUser unknown", "mx.example")
    assert (r.code, r.enhanced, r.outcome, r.mx_host) == (550, "5.1.1", "failed", "mx.example")
    assert r.text == "550 5.1.1 <x@example.com>: Recipient address rejected User unknown"
    assert from_server(451, "try later", "mx").enhanced == ""
    assert from_server(451, "try later", "mx").outcome == "deferred"
    assert from_server(250, "2.0.0 Ok", "mx").outcome == "delivered"


def test_local_replies_classify_by_enhanced_code() -> None:
    assert local("4.4.1", "connection refused").outcome == "deferred"
    assert local("5.1.2", "nxdomain").outcome == "failed"
    assert local("5.1.10", "null mx", code=556).outcome == "failed"


def test_nameserver_setting() -> None:
    assert parse_nameservers("127.0.0.1:5353, 10.0.0.2 ,[::1]:53,::1") == [
        ("127.0.0.1", 5353), ("10.0.0.2", 53), ("::1", 53), ("::1", 53)]
    assert parse_nameservers("") == []


def test_css_engine_names() -> None:
    assert css_engine("premailer") == transformer_pb2.CSS_ENGINE_PREMAILER
    assert css_engine("css-inline") == transformer_pb2.CSS_ENGINE_CSS_INLINE
    assert css_engine("") == css_engine("bogus") == transformer_pb2.CSS_ENGINE_UNSPECIFIED
