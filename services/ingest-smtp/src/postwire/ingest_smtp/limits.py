"""Per-client limits: connections per IP (open at once, and opened per minute) and AUTH failures per IP and
per username, with a lockout.

Everything is in memory and per process: with N replicas behind a load balancer a client gets up to N
times each limit. That is enough to stop one host from hogging a replica or guessing passwords at line
rate; a global limit would need shared state (NATS KV) on every connection.

Clients are counted by IP address; an IPv6 client by its /64, since one host usually holds a whole /64
and could otherwise use a fresh address per connection. Tables are bounded: when more than ``max_keys``
clients are tracked, the least recently seen are forgotten first.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Clock = Callable[[], float]
V = TypeVar("V")

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

    Every attempt counts towards the rate, refused ones too: a client that keeps hammering stays refused
    until it slows down."""

    def __init__(self, *, max_open: int, per_minute: int, exempt: Exempt = Exempt(),
                 clock: Clock = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self._max_open = max_open
        self._per_minute = per_minute
        self._exempt = exempt
        self._clock = clock
        self._max_keys = max_keys
        self._open: dict[str, int] = {}
        self._recent: OrderedDict[str, deque[float]] = OrderedDict()

    def admit(self, ip: IP | None) -> str | None:
        """None when the connection may proceed (it then counts as open until :meth:`release`), else why
        not: ``too_many_connections`` or ``connection_rate``."""
        if ip in self._exempt or ip is None:
            return None
        key = client_key(ip)
        if self._per_minute and self._over_rate(key):
            return "connection_rate"
        if self._max_open and self._open.get(key, 0) >= self._max_open:
            return "too_many_connections"
        self._open[key] = self._open.get(key, 0) + 1
        return None

    def release(self, ip: IP | None) -> None:
        """A connection :meth:`admit` let in has closed."""
        if ip in self._exempt or ip is None:
            return
        key = client_key(ip)
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)

    def open_count(self, ip: IP) -> int:
        return self._open.get(client_key(ip), 0)

    def _over_rate(self, key: str) -> bool:
        """Record this attempt; True when the client already made ``per_minute`` in the last minute."""
        now = self._clock()
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = deque(maxlen=self._per_minute)
            _forget_oldest(self._recent, self._max_keys)
        self._recent.move_to_end(key)
        while recent and recent[0] <= now - RATE_WINDOW_S:
            recent.popleft()
        over = len(recent) >= self._per_minute
        recent.append(now)  # a full deque drops its oldest: the window slides with the attempts
        return over


class FailureLimit:
    """``limit`` failures of one key within ``window_s`` lock the key for ``lockout_s``. A limit of 0 is off.

    A success does not reset the count: an attacker interleaving with the real user must not win extra
    guesses. Failures only ever expire."""

    def __init__(self, *, limit: int, window_s: float, lockout_s: float, clock: Clock = time.monotonic,
                 max_keys: int = MAX_KEYS) -> None:
        self._limit = limit
        self._window = window_s
        self._lockout = lockout_s
        self._clock = clock
        self._max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: OrderedDict[str, float] = OrderedDict()

    def locked(self, key: str) -> bool:
        until = self._locked_until.get(key)
        if until is None:
            return False
        if until > self._clock():
            return True
        del self._locked_until[key]
        return False

    def failed(self, key: str) -> bool:
        """Record a failure; True when it locked the key."""
        if not self._limit:
            return False
        now = self._clock()
        recent = self._failures.get(key)
        if recent is None:
            recent = self._failures[key] = deque(maxlen=self._limit)
            _forget_oldest(self._failures, self._max_keys)
        self._failures.move_to_end(key)
        while recent and recent[0] <= now - self._window:
            recent.popleft()
        recent.append(now)
        if len(recent) < self._limit:
            return False
        del self._failures[key]
        self._locked_until[key] = now + self._lockout
        self._locked_until.move_to_end(key)
        _forget_oldest(self._locked_until, self._max_keys)
        return True


class AuthLimits:
    """AUTH brute force: failures counted per client IP (exempt networks aside) and per username (from
    anywhere, so spreading guesses over many IPs does not help). While either is locked, AUTH is refused
    without checking the password, right or wrong.

    The per-username lock lets anyone who knows a login name keep it locked (the price of stopping
    distributed guessing); the refusal is temporary (454), so clients keep their mail and retry."""

    def __init__(self, per_ip: FailureLimit, per_user: FailureLimit, exempt: Exempt = Exempt()) -> None:
        self._per_ip = per_ip
        self._per_user = per_user
        self._exempt = exempt

    def locked(self, ip: IP | None, username: str | None) -> bool:
        if ip is not None and ip not in self._exempt and self._per_ip.locked(client_key(ip)):
            return True
        return username is not None and self._per_user.locked(_user_key(username))

    def failed(self, ip: IP | None, username: str | None) -> bool:
        """Record a failed AUTH; True when it locked the IP or the username."""
        locked = False
        if ip is not None and ip not in self._exempt:
            locked = self._per_ip.failed(client_key(ip))
        if username is not None:
            locked = self._per_user.failed(_user_key(username)) or locked
        return locked


def _user_key(username: str) -> str:
    """Case-folded (varying the case gains a guesser nothing) and cut short (a key's memory is bounded)."""
    return username.casefold()[:320]


def _forget_oldest(table: OrderedDict[str, V], max_keys: int) -> None:
    while len(table) > max_keys:
        table.popitem(last=False)


@dataclass(frozen=True)
class ClientLimits:
    """The per-client limits one process shares between its listeners."""

    connections: ConnectionLimits
    auth: AuthLimits
    exempt: Exempt

    @classmethod
    def build(cls, *, exempt: Exempt, max_open: int = 0, per_minute: int = 0, auth_per_ip: int = 0,
              auth_per_user: int = 0, auth_window_s: float = 600.0, lockout_s: float = 600.0,
              clock: Clock = time.monotonic) -> ClientLimits:
        def failures(limit: int) -> FailureLimit:
            return FailureLimit(limit=limit, window_s=auth_window_s, lockout_s=lockout_s, clock=clock)

        return cls(ConnectionLimits(max_open=max_open, per_minute=per_minute, exempt=exempt, clock=clock),
                   AuthLimits(failures(auth_per_ip), failures(auth_per_user), exempt), exempt)
