"""Ports handed to the services of one local run never collide: a collision is a run that never starts."""

from __future__ import annotations

import socket

from postwire.testing.ports import free_block, free_ports


def test_ports_asked_for_together_are_distinct_and_bindable() -> None:
    ports = free_ports(500)  # asked for one by one, each socket closed, 500 ports repeat some
    assert len(set(ports)) == 500
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_block_avoids_the_ports_already_given_out() -> None:
    given = set(free_ports(300))
    for _ in range(50):
        base = free_block(5, avoid=given)
        assert given.isdisjoint(range(base + 1, base + 6))
