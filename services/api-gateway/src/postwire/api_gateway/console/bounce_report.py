"""The Bounces page's breakdown of a whole period: by reason, hard or soft, recipient domain and mailbox
provider, from one aggregate query (events_query.bounce_groups), so the figures do not depend on how many
rows the page lists."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from postwire.core.mailbox_providers import provider_of
from postwire.db.events_query import BounceGroup

TOP_DOMAINS: Final = 10


@dataclass
class BounceReport:
    total: int = 0
    hard: int = 0
    reasons: list[tuple[str, int, int]] = field(default_factory=list)  # (reason, all, of them hard)
    domains: list[tuple[str, int]] = field(default_factory=list)  # the TOP_DOMAINS largest
    providers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def soft(self) -> int:
        return self.total - self.hard


def summarise(groups: Sequence[BounceGroup]) -> BounceReport:
    """Sum the groups per reason, domain and provider, largest first (ties by name, for a stable page)."""
    reasons: Counter[str] = Counter()
    hard_by_reason: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    providers: Counter[str] = Counter()
    for g in groups:
        reasons[g.reason] += g.count
        hard_by_reason[g.reason] += g.count if g.hard else 0
        domains[g.domain or "(none)"] += g.count
        providers[provider_of(g.host, g.domain)] += g.count
    return BounceReport(
        total=sum(reasons.values()), hard=sum(hard_by_reason.values()),
        reasons=[(r, n, hard_by_reason[r]) for r, n in _largest(reasons)],
        domains=_largest(domains)[:TOP_DOMAINS], providers=_largest(providers))


def _largest(counts: Counter[str]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
