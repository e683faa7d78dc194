"""Shaping rules as data (the shipped file, validation errors) and the budget arithmetic of adaptive
backoff, driven with explicit clock values."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from postwire.dispatcher.outcomes import from_server, local
from postwire.dispatcher.shaping import (
    ShapingError,
    load_rules,
    parse_duration,
    parse_rate,
    parse_rules,
)
from postwire.dispatcher.throttle import PACER_TOLERANCE_S, Budget, Pacer, Shaper


def test_the_shipped_rules_are_the_default_and_shape_the_big_providers() -> None:
    rules = load_rules()  # what a dispatcher without POSTWIRE_SHAPING_FILE uses
    d = rules.default
    assert (d.max_connections, d.max_messages_per_connection, d.message_rate) == (10, 100, 100.0)
    google, yahoo, outlook = (rules.providers[p] for p in ("google", "yahoo", "outlook"))
    assert (google.max_connections, google.max_messages_per_connection, google.tls) == (5, 50, "required")
    assert not google.tls_verify and google.message_rate == 100.0  # inherited from default
    assert yahoo.max_messages_per_connection == 20
    assert (outlook.max_connections, outlook.max_messages_per_connection) == (5, 50)
    assert rules.provider_for("gmail-smtp-in.l.google.com.") == "google"
    assert rules.provider_for("ASPMX.L.GOOGLE.COM") == "google"
    assert rules.provider_for("mta7.am0.yahoodns.net") == "yahoo"
    assert rules.provider_for("contoso-com.mail.protection.outlook.com") == "outlook"
    assert rules.provider_for("mx.example.org") == "default"
    assert yahoo.backoff.matches("421 4.7.0 [TS02] Messages from 192.0.2.1 temporarily deferred")
    assert yahoo.backoff.matches("451 [TS01] busy") and not google.backoff.matches("451 [TS01] busy")
    assert google.backoff.matches("421 4.7.28 Our system has detected an unusual rate")
    assert outlook.backoff.matches("451 4.7.650 The mail server has been temporarily rate limited")
    assert not d.backoff.matches("451 4.3.0 try later") and not d.backoff.matches("550 5.1.1 no user")


def test_rates_and_durations() -> None:
    assert parse_rate("100/s") == 100 and parse_rate("3000/m") == 50 and parse_rate("36000/h") == 10
    assert parse_rate("unlimited") is None and parse_rate(None) is None and parse_rate(5) == 5
    assert parse_duration("5m") == 300 and parse_duration("2h") == 7200 and parse_duration(30) == 30
    for bad in ("100", "fast", "0/s", "-1/m"):
        with pytest.raises(ValueError):
            parse_rate(bad)


@pytest.mark.parametrize(("text", "complaint"), [
    ("default: {max_connections: 0}", "max_connections"),
    ("default: {message_rate: lots}", "message_rate"),
    ("default: {tls: sometimes}", "tls"),
    ("default: {max_conections: 3}", "max_conections"),
    ("default: {backoff: {throttle_patterns: ['4.7.(']}}", "throttle pattern"),
    ("default: {}\nproviders: {gmaillike: {max_connections: 3}}", "no match patterns"),
    ("default: {}\nproviders: {Bad Name: {match: ['*.x']}}", "provider name"),
    ("providers: {}", "'default' rule"),
    ("default: [unclosed", "not valid YAML"),
])
def test_bad_rules_fail_at_load_with_the_field_named(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ShapingError) as err:
        load_rules(path)
    assert str(path) in str(err.value) and complaint in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ShapingError, match="cannot read"):
        load_rules(tmp_path / "nope.yaml")


def test_providers_inherit_the_default_and_add_throttle_patterns() -> None:
    rules = parse_rules({
        "default": {"max_connections": 7, "message_rate": "10/s", "backoff": {"throttle_patterns": ["^421"]}},
        "providers": {"gmaillike": {"match": ["*.gmail-like.test"], "max_connections": 3,
                                    "backoff": {"throttle_patterns": ["TS0[1-3]"], "duration": "2s"}}},
    })
    rule = rules.providers["gmaillike"]
    assert (rule.max_connections, rule.message_rate, rule.backoff.duration) == (3, 10.0, 2.0)
    assert rule.backoff.throttle_patterns == ("^421", "TS0[1-3]")
    assert rules.provider_for("mx1.gmail-like.test") == "gmaillike"


def _budget(**rule: Any) -> Budget:
    return Shaper(parse_rules({"default": rule})).budget_for("mx.budget.test")


def test_throttle_halves_rate_and_connections_then_recovers_stepwise() -> None:
    budget = _budget(max_connections=5, message_rate="40/s", connection_rate="10/s",
                     backoff={"duration": 10, "recovery_step": 2, "settle": 1, "max_level": 3})
    assert budget.throttle("421 4.7.0 slow down", now=100.0)
    assert (budget.level, budget.max_connections, budget.message_rate) == (1, 2, 20.0)
    assert budget.messages.rate == 20.0 and budget.connects.rate == 5.0
    assert not budget.throttle("421 again", now=100.5)  # within settle: same overload, no second cut
    assert budget.throttle("421 again", now=101.6)
    assert budget.throttle("421 again", now=103.0)
    assert (budget.level, budget.max_connections, budget.message_rate) == (3, 1, 5.0)  # floor 1
    assert not budget.throttle("421 again", now=105.0)  # max_level
    budget.tick(now=114.0)
    assert budget.level == 3  # 10 s after the *last* throttling reply (105), not the last cut
    budget.tick(now=115.0)
    assert budget.level == 2
    budget.tick(now=116.0)
    assert budget.level == 2  # one step per recovery_step
    budget.tick(now=117.0)
    budget.tick(now=119.0)
    assert (budget.level, budget.max_connections, budget.message_rate) == (0, 5, 40.0)


def test_parked_messages_come_back_when_the_provider_has_room_for_them() -> None:
    """Without a rate limit, a full ready queue parks the message until the queue ahead (and what was
    parked before it) has drained, at the measured capacity (connections over the time a message holds
    one), to half a second of work; with a rate limit, until the queue has drained at that rate."""
    fast = _budget(max_connections=20)  # a ready queue of 80
    for _ in range(20):
        fast.sent(0.1)  # 10 messages a second per connection: 200 a second
    fast.ready = 80
    delays = [fast.park_delay(now=100.0) for _ in range(200)]
    assert 0.25 <= delays[0] <= 0.26  # half a second of work is more than the queue: back at once
    assert delays[-1] >= (80 - 79 + 199) / 200  # each parked message one slot after the one before
    assert max(delays) < 1.1  # not the seconds a fixed delay would cost a fast provider
    # one that came back to a full queue goes to the head of the line, not behind the 200 parked since
    assert fast.park_delay(now=100.0, waited=True) <= 0.26

    slow = _budget(max_connections=2)  # a ready queue of 8
    slow.sent(1.0)  # a second per message: 2 a second
    slow.ready = 8
    assert 2.0 <= slow.park_delay(now=100.0) <= 2.25

    stalled = _budget(max_connections=2)
    stalled.sent(300.0)  # a transaction that ran into its timeout
    stalled.ready = 8
    assert stalled.park_delay(now=100.0) == 60.0  # kept away for the longest park

    unknown = _budget(max_connections=20)  # nothing sent yet, no rate limit
    unknown.ready = 80
    assert 1.5 <= unknown.park_delay(now=100.0) <= 3.0

    limited = _budget(max_connections=20, message_rate="10/s")  # a ready queue of 80: 8 s at 10/s
    limited.sent(0.01)
    limited.ready = 80
    assert all(6.0 <= limited.park_delay(now=100.0) <= 12.0 for _ in range(20))


def test_only_matching_server_replies_throttle() -> None:
    shaper = Shaper(parse_rules({"default": {"backoff": {"throttle_patterns": ["^421", r"4\.7\.\d+"]}}}))
    budget = shaper.budget_for("mx.a.test")
    assert not shaper.observe(budget, from_server(451, "4.3.0 later", "mx.a.test"))
    assert not shaper.observe(budget, local("4.7.5", "TLS handshake failed"))  # ours, not the server's
    assert shaper.observe(budget, from_server(421, "4.3.2 closing", "mx.a.test"))
    assert budget.level == 1


def test_default_budgets_are_per_mx_host_and_providers_share_one() -> None:
    shaper = Shaper(parse_rules({"default": {}, "providers": {"g": {"match": ["*.g.test"]}}}))
    assert shaper.budget_for("mx1.g.test") is shaper.budget_for("MX2.g.test.")
    assert shaper.budget_for("mx.a.test") is not shaper.budget_for("mx.b.test")
    assert shaper.budget_for("mx.a.test").provider == "default"


async def test_pacer_spaces_callers_without_polling() -> None:
    pacer = Pacer(50.0)
    start = time.monotonic()
    await asyncio.gather(*(pacer.take() for _ in range(31)))
    # a lower bound: slots are 20 ms apart, less the tolerance the pacer may run ahead by
    assert time.monotonic() - start >= (30 / 50 - PACER_TOLERANCE_S) * 0.95


async def test_bad_rules_stop_the_dispatcher_before_it_connects(tmp_path: Path) -> None:
    from postwire.dispatcher.service import serve
    from postwire.dispatcher.settings import DispatcherSettings

    bad = tmp_path / "bad.yaml"
    bad.write_text("default: {message_rate: fast}\n")
    settings = DispatcherSettings(shaping_file=bad, nats_url="nats://127.0.0.1:1")  # nothing listens
    with pytest.raises(ShapingError, match="message_rate"):
        await serve(settings, asyncio.Event())
