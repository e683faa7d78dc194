"""Per-client limits: connections per IP (open at once, and opened per minute) and AUTH failures per IP and
per username, with a lockout.

The counters are shared by every ingest-smtp replica (``postwire.core.sharedlimits``, docs/limits.md):
kept in the NATS KV bucket LIMITS, so behind a load balancer a client gets each limit once, not once
per replica. Connection allowance is leased, so only the first connection of a client after it has
been idle asks NATS; a failed AUTH is one write (it already cost a password hash), and whether a client
is locked out is known locally (lockouts are announced to every replica). If NATS cannot be reached,
each replica enforces its share: the limits divided by the live replicas last seen.

Clients are counted by IP address; an IPv6 client by its /64, since one host usually holds a whole /64
and could otherwise use a fresh address per connection. Tables are bounded: when more than ``max_keys``
clients are tracked, the least recently seen are forgotten first.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass

from postwire.core.sharedlimits import Clock, LimitStore, SharedBuckets, SharedFailures, SharedSlots

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

RATE_WINDOW_S = 60.0
MAX_KEYS = 100_000


def client_key(ip: IP) -> str:
    """What a client is counted as: its IPv4 address, or its IPv6 /64."""
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Exempt:
    """Networks the per-IP limits do not apply to (the operator's own hosts)."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def of(cls, *groups: Iterable[Network]) -> Exempt:
        return cls(tuple(net for group in groups for net in group))

    def __contains__(self, ip: IP | None) -> bool:
        return ip is not None and any(ip in net for net in self.networks)


class ConnectionLimits:
    """Open connections per client and connections opened per minute (Postfix's
    smtpd_client_connection_count_limit and smtpd_client_connection_rate_limit). A limit of 0 is off.

    The rate is a token bucket of ``per_minute`` connections refilled at ``per_minute`` a minute. Every
    attempt counts, refused ones too: a client that keeps hammering stays refused until it slows down."""

    def __init__(self, *, max_open: int, per_minute: int, exempt: Exempt = Exempt(),
                 store: LimitStore | None = None, clock: Clock = time.time, max_keys: int = MAX_KEYS) -> None:
        self._exempt = exempt
        self._rate = (SharedBuckets(store, "smtp.rate", [(per_minute / RATE_WINDOW_S, per_minute)],
                                    charge_refused=True, clock=clock, max_keys=max_keys)
                      if per_minute else None)
        self._open = (SharedSlots(store, "smtp.open", max_open, clock=clock, max_keys=max_keys)
                      if max_open else None)

    async def admit(self, ip: IP | None) -> str | None:
        """None when the connection may proceed (it then counts as open until :meth:`release`), else why
        not: ``too_many_connections`` or ``connection_rate``."""
        if ip is None or ip in self._exempt:
            return None
        key = client_key(ip)
        if self._rate is not None and await self._rate.take(key, 1) > 0:
            return "connection_rate"
        if self._open is not None and not await self._open.acquire(key):
            return "too_many_connections"
        return None

    def release(self, ip: IP | None) -> None:
        """A connection :meth:`admit` let in has closed."""
        if ip is None or ip in self._exempt or self._open is None:
            return
        self._open.release(client_key(ip))

    def open_count(self, ip: IP) -> int:
        return self._open.open_count(client_key(ip)) if self._open is not None else 0


class AuthLimits:
    """AUTH brute force: failures counted per client IP (exempt networks aside) and per username (from
    anywhere, so spreading guesses over many IPs does not help). While either is locked, AUTH is refused
    without checking the password, right or wrong.

    The per-username lock lets anyone who knows a login name keep it locked (the price of stopping
    distributed guessing); the refusal is temporary (454), so clients keep their mail and retry."""

    def __init__(self, per_ip: SharedFailures, per_user: SharedFailures, exempt: Exempt = Exempt()) -> None:
        self._per_ip = per_ip
        self._per_user = per_user
        self._exempt = exempt

    def locked(self, ip: IP | None, username: str | None) -> bool:
        if ip is not None and ip not in self._exempt and self._per_ip.locked(client_key(ip)):
            return True
        return username is not None and self._per_user.locked(_user_key(username))

    async def failed(self, ip: IP | None, username: str | None) -> bool:
        """Record a failed AUTH; True when it locked the IP or the username."""
        counts = []
        if ip is not None and ip not in self._exempt:
            counts.append(self._per_ip.failed(client_key(ip)))
        if username is not None:
            counts.append(self._per_user.failed(_user_key(username)))
        return any(await asyncio.gather(*counts))


def _user_key(username: str) -> str:
    """Case-folded (varying the case gains a guesser nothing) and cut short (a key's memory is bounded)."""
    return username.casefold()[:320]


@dataclass(frozen=True)
class ClientLimits:
    """The per-client limits one process shares between its listeners (and, through ``store``, with the
    other replicas)."""

    connections: ConnectionLimits
    auth: AuthLimits
    exempt: Exempt

    @classmethod
    def build(cls, *, exempt: Exempt, max_open: int = 0, per_minute: int = 0, auth_per_ip: int = 0,
              auth_per_user: int = 0, auth_window_s: float = 600.0, lockout_s: float = 600.0,
              store: LimitStore | None = None, clock: Clock = time.time,
              max_keys: int = MAX_KEYS) -> ClientLimits:
        def failures(name: str, limit: int) -> SharedFailures:
            return SharedFailures(store, name, limit=limit, window_s=auth_window_s, lockout_s=lockout_s,
                                  clock=clock, max_keys=max_keys)

        return cls(ConnectionLimits(max_open=max_open, per_minute=per_minute, exempt=exempt, store=store,
                                    clock=clock, max_keys=max_keys),
                   AuthLimits(failures("smtp.auth.ip", auth_per_ip),
                              failures("smtp.auth.user", auth_per_user), exempt), exempt)
