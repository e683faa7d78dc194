"""The relay host (Postfix's ``relayhost``): every message goes to one SMTP server instead of the MX hosts
of its recipients' domain.

``POSTWIRE_RELAY_HOST=host:port`` turns it on (empty, the default, is off). No MX lookup is made: the
relay host stands in for every domain's MX list, so the rest of the sender treats it as the one MX host
of every message — its shaping budget is the one its name matches, and the VERP return path, the DKIM
signature, retries and events (with ``mx_host`` = the relay host) are what they are without it. An IP
literal is connected to as it is; a host name is resolved to its A/AAAA addresses like an MX host's
(``POSTWIRE_DNS_NAMESERVERS`` applies). A relay that cannot be reached, or a name without addresses, is
a temporary failure: the mail waits for the relay instead of bouncing.

Two uses: a smarthost that does the final delivery, and the local run's sandbox, a catch-all MX that
keeps what it is sent (``postwire.cli.sandbox``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from postwire.dispatcher.mx import DnsFailure, MxHost, MxResolver, Route
from postwire.dispatcher.outcomes import local

DEFAULT_PORT = 25


@dataclass(frozen=True)
class RelayHost:
    host: str  # a name, or an IP address without brackets
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_relay_host(value: str) -> RelayHost | None:
    """``"smtp.example.net:587"``, ``"10.0.0.5"`` (port 25), ``"[::1]:2527"`` → a RelayHost; ``""`` → None.
    Raises ValueError for anything else, so a typo stops the dispatcher at boot."""
    text = value.strip()
    if not text:
        return None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"relay host {value!r}: write an IPv6 address as [address]:port")
        port_text = rest[1:] if rest else ""
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"relay host {value!r}: {host!r} in brackets is not an IPv6 address") from None
    elif text.count(":") > 1:
        raise ValueError(f"relay host {value!r}: write an IPv6 address as [address]:port")
    else:
        host, _, port_text = text.partition(":")
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise ValueError(f"relay host {value!r}: expected host:port")
    if port_text and not port_text.isdigit():
        raise ValueError(f"relay host {value!r}: the port is not a number")
    port = int(port_text) if port_text else DEFAULT_PORT
    if not 0 < port < 65536:
        raise ValueError(f"relay host {value!r}: the port is not between 1 and 65535")
    return RelayHost(host.lower().rstrip("."), port)


class RelayRoutes:
    """Routes every domain to the relay host: what the deliverer otherwise asks ``MxResolver``."""

    def __init__(self, relay: RelayHost, resolver: MxResolver) -> None:
        self.relay = relay
        self._resolver = resolver

    async def route(self, domain: str) -> Route:
        return Route(domain, [MxHost(self.relay.host, 0)], implicit=False)

    async def addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        found = await self._resolver.addresses(host)
        if not found:  # the operator's name for the relay is wrong or not published yet: wait for it
            raise DnsFailure(local("4.4.3", f"the relay host {host} has no A/AAAA records"))
        return found
