"""A real authoritative DNS server on loopback (dnslib), serving the records a test puts in it.

The dispatcher's resolver is pointed at it with POSTWIRE_DNS_NAMESERVERS, so MX lookups are exercised
for real and never reach the system resolver.
"""

from __future__ import annotations

from collections import defaultdict

from dnslib import AAAA, CNAME, MX, QTYPE, RR, TXT, A, DNSLabel, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

_CLASSES = {"A": A, "AAAA": AAAA, "MX": MX, "TXT": TXT, "CNAME": CNAME}


class _ZoneResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, zone: dict[tuple[str, str], list[RR]]) -> None:
        self.zone = zone

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).lower().rstrip(".")
        qtype = QTYPE[request.q.qtype]
        answers = self.zone.get((qname, qtype), [])
        for rr in answers:
            reply.add_answer(rr)
        if not answers and not any(name == qname for name, _ in self.zone):
            reply.header.rcode = 3  # NXDOMAIN: the name does not exist at all
        return reply


class DnsServer:
    """Records live in memory; add them at any time, the next query sees them."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.zone: dict[tuple[str, str], list[RR]] = defaultdict(list)
        resolver = _ZoneResolver(self.zone)
        quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
        self._udp = DNSServer(resolver, address=host, port=port, tcp=False, logger=quiet)
        bound = self._udp.server.server_address[1]
        self._tcp = DNSServer(resolver, address=host, port=bound, tcp=True, logger=quiet)
        self.host, self.port = host, int(bound)

    @property
    def nameserver(self) -> str:
        """The value for POSTWIRE_DNS_NAMESERVERS."""
        return f"{self.host}:{self.port}"

    def add(self, name: str, rtype: str, value: str | tuple[int, str], ttl: int = 60) -> None:
        name = name.lower().rstrip(".")
        if rtype == "MX":
            assert isinstance(value, tuple)
            rdata = MX(DNSLabel(value[1]), value[0])
        elif rtype == "TXT":
            rdata = TXT([str(value)[i:i + 255].encode() for i in range(0, len(str(value)), 255)])
        else:
            rdata = _CLASSES[rtype](value)
        self.zone[(name, rtype)].append(RR(name, getattr(QTYPE, rtype), rdata=rdata, ttl=ttl))

    def add_mail_domain(self, domain: str, mx_host: str | None = None, ip: str = "127.0.0.1",
                        preference: int = 10) -> str:
        """An MX for ``domain`` pointing at ``mx_host`` (default mx.<domain>) with an A record to ``ip``."""
        mx_host = mx_host or f"mx.{domain}"
        self.add(domain, "MX", (preference, mx_host))
        if (mx_host.lower(), "A") not in self.zone:
            self.add(mx_host, "A", ip)
        return mx_host

    def clear(self, name: str) -> None:
        for key in [k for k in self.zone if k[0] == name.lower()]:
            del self.zone[key]

    def start(self) -> DnsServer:
        self._udp.start_thread()
        self._tcp.start_thread()
        return self

    def stop(self) -> None:
        for srv in (self._udp, self._tcp):
            srv.stop()
            srv.server.server_close()
