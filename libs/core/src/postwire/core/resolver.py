"""DNS resolvers for the services that look names up (the dispatcher's MX lookups, the API's live check
of a domain's records): only the configured nameservers when there are any (POSTWIRE_DNS_NAMESERVERS),
so a test or an offline run never falls back to the system resolver."""

from __future__ import annotations

import dns.asyncresolver
import dns.nameserver
import dns.resolver


def parse_nameservers(value: str) -> list[tuple[str, int]]:
    """``"127.0.0.1:5353,[::1]:53,10.0.0.2"`` → ``[("127.0.0.1", 5353), ("::1", 53), ("10.0.0.2", 53)]``."""
    servers: list[tuple[str, int]] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
            port = int(port_text)
        else:  # a bare IPv4 address or a bare IPv6 address
            host, port = item, 53
        servers.append((host, port))
    return servers


def make_resolver(nameservers: list[tuple[str, int]], timeout_s: float,
                  cache_size: int = 50_000) -> dns.asyncresolver.Resolver:
    """A resolver asking ``nameservers`` only (the system's when empty), answers kept for their TTL
    (``cache_size`` 0: none kept, for lookups that must see a record just published)."""
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
    else:
        resolver = dns.asyncresolver.Resolver()
    resolver.lifetime = timeout_s
    resolver.timeout = timeout_s
    if cache_size:
        resolver.cache = dns.resolver.LRUCache(max_size=cache_size)
    return resolver
