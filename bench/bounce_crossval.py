"""Leave-one-family-out cross-validation of the bounce classifier over the labelled corpus.

Run: `scripts/uv run python bench/bounce_crossval.py [--field reason] [--misses FAMILY]`

A family is the MTA or provider a corpus file is named for (lhost-postfix, rhost-google, rfc3464, arf,
...). Each family in turn is held out and scored by a classifier that knows nothing about it. The
classifier has no part learned from the labels (no phrase table built from data, no weights): its phrase
rules are written from RFC 3463, MTA defaults and provider documentation, and were audited so that none
keys on one family's files (docs/bounces.md). What it does hold about single providers is their
documented error codes and wordings (`providers.py`) and the filtering gateways' headers (`parser.py`);
for each fold, that knowledge about the held-out family is switched off (`without_providers`), so a
family's score is what the classifier does on mail from a provider it has never been told about.

Reported per family: its mails' results, reason accuracy held out, and the same with all knowledge on
(the whole-corpus figure); then the mean over families, the worst family, and the pooled figures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bounce_accuracy import FIELDS, field_matches  # type: ignore[import-not-found]

from postwire.bounce_classifier.__main__ import classify_files
from postwire.bounce_classifier.providers import PROVIDERS, without_providers
from postwire.testing.corpus import corpus_dir

CORPUS = corpus_dir() / "bounces"
_FAMILY_RE = re.compile(r"^(?P<family>.+?)-\d+\.eml$")

# Which provider knowledge (providers.py tags) describes which corpus family.
FAMILY_KNOWLEDGE: dict[str, frozenset[str]] = {
    "rhost-franceptt": frozenset({"orange"}),
    "rhost-spectrum": frozenset({"spectrum"}),
    "rhost-cox": frozenset({"cox"}),
    "rhost-facebook": frozenset({"facebook"}),
    "rhost-microsoft": frozenset({"microsoft"}),
    "rhost-outlook": frozenset({"microsoft"}),
    "lhost-outlook": frozenset({"microsoft"}),
    "lhost-office365": frozenset({"microsoft"}),
    "lhost-ezweb": frozenset({"kddi"}),
    "lhost-kddi": frozenset({"kddi"}),
    "rhost-kddi": frozenset({"kddi"}),
    "rhost-mimecast": frozenset({"mimecast"}),
    "lhost-interscanmss": frozenset({"interscan"}),
    "lhost-googlegroups": frozenset({"googlegroups"}),
    "lhost-gmail": frozenset({"gmail"}),
    "rhost-google": frozenset({"gmail"}),
    "rhost-gsuite": frozenset({"gmail"}),
    "lhost-googleworkspace": frozenset({"gmail"}),
    "rhost-tencent": frozenset({"tencent"}),
    "rhost-yahooinc": frozenset({"yahoo"}),
    "lhost-yahoo": frozenset({"yahoo"}),
    "lhost-exchange2003": frozenset({"exchange2003"}),
    "lhost-imailserver": frozenset({"imail"}),
    "lhost-verizon": frozenset({"verizon"}),
}


@dataclass
class Score:
    """Matches per field for one family, held out and with everything known."""

    n: int = 0
    held_out: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    known: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    misses: list[tuple[str, Any, Any]] = field(default_factory=list)

    def pct(self, name: str, *, held_out: bool = True) -> float:
        counts = self.held_out if held_out else self.known
        return 100.0 * counts[name] / self.n if self.n else 0.0


def family_of(file: str) -> str:
    """`eml/lhost-postfix-07.eml` → `lhost-postfix`."""
    name = Path(file).name
    m = _FAMILY_RE.match(name)
    return m.group("family") if m else name


def check_knowledge_map() -> None:
    """Every provider tag the classifier has must be mapped to a family, or its fold would keep it."""
    mapped = frozenset().union(*FAMILY_KNOWLEDGE.values())
    unmapped = PROVIDERS - mapped
    if unmapped:
        raise SystemExit(f"provider knowledge with no corpus family in FAMILY_KNOWLEDGE: {sorted(unmapped)}")


def _score(entry: dict[str, Any], got: list[dict[str, object]], score: Score, *, held_out: bool) -> None:
    counts = score.held_out if held_out else score.known
    for i, want in enumerate(entry["results"]):
        have = got[i] if i < len(got) else {}
        for name in FIELDS:
            ok = field_matches(name, want.get(name), have.get(name))
            counts[name] += ok
            if held_out and name == "reason" and not ok:
                score.misses.append((entry["file"], want.get(name), have.get(name)))


def crossvalidate(corpus: Path = CORPUS) -> dict[str, Score]:
    """Per family: each of its mails classified once with its family's knowledge off, once with all on."""
    check_knowledge_map()
    labels = [json.loads(line) for line in (corpus / "labels.jsonl").read_text().splitlines() if line.strip()]
    scores: dict[str, Score] = defaultdict(Score)
    for entry in labels:
        family = family_of(entry["file"])
        path = str(corpus / entry["file"])
        score = scores[family]
        score.n += len(entry["results"])
        with without_providers(FAMILY_KNOWLEDGE.get(family, frozenset())):
            _score(entry, list(classify_files([path])), score, held_out=True)
        _score(entry, list(classify_files([path])), score, held_out=False)
    return dict(scores)


def pooled(scores: dict[str, Score], name: str, *, held_out: bool) -> float:
    n = sum(s.n for s in scores.values())
    ok = sum((s.held_out if held_out else s.known)[name] for s in scores.values())
    return 100.0 * ok / n if n else 0.0


def report(scores: dict[str, Score], name: str, show_misses: str | None) -> None:
    print(f"{'family':<24}{'n':>5}{'held out':>10}{'known':>8}   ({name})")
    for family in sorted(scores, key=lambda f: (scores[f].pct(name), f)):
        s = scores[family]
        print(f"{family:<24}{s.n:>5}{s.pct(name):>9.1f}%{s.pct(name, held_out=False):>7.1f}%")
    means = {f: s.pct(name) for f, s in scores.items()}
    worst = min(means, key=lambda f: (means[f], -scores[f].n))
    mean_known = sum(s.pct(name, held_out=False) for s in scores.values()) / len(scores)
    print(f"\nfamilies: {len(scores)}")
    mean = sum(means.values()) / len(means)
    print(f"mean over families   held out {mean:5.1f}%   known {mean_known:5.1f}%")
    print(f"worst family         {worst} ({scores[worst].n} results) {means[worst]:.1f}%")
    big = {f: v for f, v in means.items() if scores[f].n >= 5}
    if big:
        worst_big = min(big, key=lambda f: big[f])
        print(f"worst family, n >= 5 {worst_big} ({scores[worst_big].n} results) {big[worst_big]:.1f}%")
    both = [f"{f} {pooled(scores, f, held_out=True):.1f}%/{pooled(scores, f, held_out=False):.1f}%"
            for f in FIELDS]
    print("pooled (all results) " + "  ".join(both) + "   (held out/known)")
    if show_misses:
        print(f"\nheld-out {name} misses in {show_misses}:")
        for file, want, got in scores.get(show_misses, Score()).misses:
            print(f"  {file}: label={want!r} ours={got!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--field", choices=FIELDS, default="reason", help="the field reported per family")
    parser.add_argument("--misses", metavar="FAMILY", help="list the held-out reason misses of one family")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args(argv)
    report(crossvalidate(args.corpus), args.field, args.misses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
