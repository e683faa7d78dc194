"""Delivering one message to one domain: MX hosts in order, their addresses in order, one transaction.

Falling through to the next host happens only when no session could be had (DNS of the host, refused or
timed-out connection, a greeting or EHLO refusal). Once a server has answered MAIL FROM its replies are
the outcome: a 4xx there means "try later", not "try my backup MX now" (which would defeat the
receiver's throttling and bypass greylisting the same way Postfix avoids).

Where the hosts come from is the ``Routes`` given: the domain's MX records (``mx.MxResolver``), or one
relay host for every domain (``relay_host.RelayRoutes``, POSTWIRE_RELAY_HOST).

Every MX host belongs to a provider budget (``throttle.Shaper``): the pool enforces its connections and
rate, and every server reply is shown to the shaper, which cuts the budget on throttling replies (421 at
the greeting included). A throttled recipient is simply deferred: the retry queue brings it back later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import structlog

from postwire.core.lanes import TRANSACTIONAL
from postwire.dispatcher import metrics
from postwire.dispatcher.mx import DnsFailure, Route
from postwire.dispatcher.outcomes import Reply, local
from postwire.dispatcher.smtp_client import ConnectFailure, DsnParams, Transaction
from postwire.dispatcher.smtp_pool import ConnectionPool
from postwire.dispatcher.throttle import Budget, Shaper

log = structlog.get_logger(__name__)

# reused sessions tried when each turns out closed, before a new connection is opened for the message
STALE_RETRIES = 2


class Routes(Protocol):
    """The hosts to try for a domain, and each host's addresses; both raise DnsFailure."""

    async def route(self, domain: str) -> Route: ...

    async def addresses(self, host: str) -> list[str]: ...


class Deliverer:
    def __init__(self, resolver: Routes, pool: ConnectionPool, shaper: Shaper, port: int) -> None:
        self._resolver = resolver
        self._pool = pool
        self._shaper = shaper
        self._port = port

    async def deliver(self, domain: str, mail_from: str, recipients: list[str],
                      data: bytes, *, dsn: DsnParams | None = None, lane: str = TRANSACTIONAL,
                      started: Callable[[], None] | None = None) -> dict[str, Reply]:
        """A reply for every recipient (never raises for DNS or SMTP trouble). Raises BudgetFull when
        the first MX host's provider has a full ready queue for the message's ``lane``: the message must
        wait, not fail over. ``started`` is called when a session is ready for the first transaction."""
        try:
            route = await self._resolver.route(domain)
        except DnsFailure as e:
            return dict.fromkeys(recipients, e.reply)
        failure: Reply | None = None
        dns_error = False
        for host in route.hosts:
            try:
                addresses = await self._resolver.addresses(host.name)
            except DnsFailure as e:
                failure, dns_error = e.reply, True
                continue
            if not addresses:
                continue
            budget = self._shaper.budget_for(host.name)
            try:
                result = await self._send(budget, host.name, addresses, mail_from, recipients, data, dsn,
                                          lane, started)
            except ConnectFailure as e:
                self._shaper.observe(budget, e.reply)
                failure = e.reply
                continue
            self._observe(budget, result.replies)
            return result.replies
        return dict.fromkeys(recipients, failure or self._unreachable(domain, route.implicit, dns_error))

    async def _send(self, budget: Budget, mx_host: str, addresses: list[str], mail_from: str,
                    recipients: list[str], data: bytes, dsn: DsnParams | None, lane: str,
                    started: Callable[[], None] | None) -> Transaction:
        """One transaction on a session of the pool. A reused session that the server had closed shows
        as ``untouched`` (nothing of the transaction reached it): another session is taken, at most
        ``STALE_RETRIES`` times, after which the pool opens a new one anyway."""
        metrics.ATTEMPTS.labels(budget.provider).inc(len(recipients))
        for _ in range(STALE_RETRIES):
            async with self._pool.lease(budget, mx_host, self._port, addresses, lane=lane) as conn:
                if started is not None:
                    started()
                    started = None
                result = await conn.send(mail_from, recipients, data, dsn)
            if not result.untouched:
                return result
        async with self._pool.lease(budget, mx_host, self._port, addresses, fresh=True, lane=lane) as conn:
            return await conn.send(mail_from, recipients, data, dsn)

    def _observe(self, budget: Budget, replies: dict[str, Reply]) -> None:
        """One throttle signal per distinct reply: a 421 given to ten recipients is one event."""
        for reply in {r.text: r for r in replies.values() if r.outcome == "deferred"}.values():
            self._shaper.observe(budget, reply)

    @staticmethod
    def _unreachable(domain: str, implicit: bool, dns_error: bool) -> Reply:
        """No host had an address. Without DNS errors that is the domain's published answer: permanent."""
        if dns_error:
            return local("4.4.3", f"no address could be found for the mail hosts of {domain}")
        what = "no MX and no A/AAAA records" if implicit else "MX hosts without A/AAAA records"
        return local("5.4.4", f"Host or domain name not found: {domain} has {what}")
