"""Free loopback ports for processes that must be told their port up front.

They are drawn from below the kernel's ephemeral range (``net.ipv4.ip_local_port_range``): a port the
kernel hands out with ``bind(port 0)`` may also go, a moment later, to the local end of an outgoing
connection, and a service told to listen on it then fails with "address already in use" (seen when a
whole stack started on a port chosen that way while its services opened connections to NATS).
"""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Container
from pathlib import Path

LOWEST = 10_000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports. The sockets are held until all are chosen: ports asked for one by
    one, each socket closed before the next, can repeat, and two services given one port never start."""
    top = _ephemeral_start()
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            port = random.randrange(LOWEST, top)
            if port not in ports and _bind(held, port, host):
                ports.append(port)
        return ports


def free_block(count: int, avoid: Container[int] = (), host: str = "127.0.0.1") -> int:
    """A base port with ``count`` free ports after it (base+1 … base+count), none of them in ``avoid``."""
    top = _ephemeral_start()
    while True:
        base = random.randrange(LOWEST, top - count - 1)
        block = range(base, base + 1 + count)
        if any(p in avoid for p in block):
            continue
        if all(_is_free(p, host) for p in block):
            return base


def _bind(held: contextlib.ExitStack, port: int, host: str) -> bool:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
    except OSError:
        s.close()
        return False
    held.enter_context(s)
    return True


def _is_free(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
