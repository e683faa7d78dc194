"""Recipient-domain sharding: the OUTBOUND subject carries shard = stable_hash(domain) mod N."""

from __future__ import annotations

import hashlib


def shard_for(domain: str, shards: int) -> int:
    """Stable across processes and Python versions (unlike hash()), so every replica agrees."""
    digest = hashlib.blake2b(domain.lower().encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def owned_shards(replica_index: int, replica_count: int, shards: int) -> list[int]:
    """Shards a replica consumes: round-robin, so adding replicas spreads the load evenly."""
    return [s for s in range(shards) if s % replica_count == replica_index]
