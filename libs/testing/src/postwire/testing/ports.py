"""Free loopback ports for processes that must be told their port up front."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Container


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports. The sockets are held until all are chosen: ports asked for one by
    one, each socket closed before the next, can repeat, and two services given one port never start."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(int(s.getsockname()[1]))
        return ports


def free_block(count: int, avoid: Container[int] = (), host: str = "127.0.0.1") -> int:
    """A base port with ``count`` free ports after it (base+1 … base+count), none of them in ``avoid``."""
    while True:
        base = free_port(host)
        block = range(base + 1, base + 1 + count)
        if base + count >= 65535 or any(p in avoid for p in block):
            continue
        if all(_is_free(p, host) for p in block):
            return base


def _is_free(port: int, host: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
