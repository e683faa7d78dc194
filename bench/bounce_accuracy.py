"""Accuracy of the bounce classifier over the labelled corpus (../shared/corpus/bounces).

Run: `scripts/uv run python bench/bounce_accuracy.py [--misses FIELD]`

Per field (recipient, reason, status, replycode, hardbounce), overall and per kind, plus the most
frequent reason confusions. Results are paired with labels by position within each mail. Statuses that
are Sisimai-internal ("no status in the mail", X.0.9xx) or missing in the label are compared by class
digit only, as the corpus README says.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from postwire.bounce_classifier.__main__ import classify_files
from postwire.testing.corpus import corpus_dir

FIELDS = ("recipient", "reason", "status", "replycode", "hardbounce")
CORPUS = corpus_dir() / "bounces"
_INTERNAL = re.compile(r"^[245]\.0\.9\d\d$")


def field_matches(name: str, want: Any, got: Any) -> bool:
    """Whether one predicted field agrees with the label (status by class digit where documented)."""
    if name == "status":
        if want is None or _INTERNAL.match(str(want)):
            return got is not None and str(got)[:1] == str(want or "5")[:1] if want else True
        return bool(got == want)
    if name == "recipient" and want is not None and got is not None:
        return bool(str(want).lower() == str(got).lower())
    return bool(want == got)


def evaluate(corpus: Path = CORPUS) -> dict[str, Any]:
    """Per-field counts overall and per kind, confusions and misses, for the whole corpus."""
    labels = [json.loads(line) for line in (corpus / "labels.jsonl").read_text().splitlines() if line.strip()]
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    confusions: Counter[tuple[str, str]] = Counter()
    misses: dict[str, list[tuple[str, Any, Any]]] = defaultdict(list)
    for entry in labels:
        path = str(corpus / entry["file"])
        got = list(classify_files([path]))
        for i, want in enumerate(entry["results"]):
            have = got[i] if i < len(got) else {}
            for name in FIELDS:
                ok = field_matches(name, want.get(name), have.get(name))
                for scope in ("all", entry["kind"]):
                    totals[scope][name + ":n"] += 1
                    totals[scope][name + ":ok"] += ok
                if not ok:
                    misses[name].append((entry["file"], want.get(name), have.get(name)))
            if want["reason"] != have.get("reason"):
                confusions[(want["reason"], str(have.get("reason")))] += 1
    not_bounce = sorted((corpus / "not-bounce").glob("*.eml"))
    false_pos = [p.name for p in not_bounce if list(classify_files([str(p)]))]
    return {"totals": totals, "confusions": confusions, "misses": misses, "false_positives": false_pos,
            "not_bounce": len(not_bounce)}


def accuracy(totals: dict[str, Counter[str]], scope: str, name: str) -> float:
    n = totals[scope][name + ":n"]
    return 100.0 * totals[scope][name + ":ok"] / n if n else 0.0


def report(result: dict[str, Any], show_misses: str | None) -> None:
    totals = result["totals"]
    scopes = ["all", *sorted(s for s in totals if s != "all")]
    print(f"{'kind':<10}{'n':>5}" + "".join(f"{f:>12}" for f in FIELDS))
    for scope in scopes:
        row = "".join(f"{accuracy(totals, scope, f):>11.1f}%" for f in FIELDS)
        print(f"{scope:<10}{totals[scope]['reason:n']:>5}{row}")
    wrong = len(result["false_positives"])
    print(f"\nnot-bounce mails classified as bounces: {wrong}/{result['not_bounce']}")
    print("\ntop reason confusions (label -> ours):")
    for (want, got), n in result["confusions"].most_common(15):
        print(f"  {n:>3}  {want} -> {got}")
    if show_misses:
        print(f"\nmisses for {show_misses}:")
        for file, want, got in result["misses"][show_misses]:
            print(f"  {file}: label={want!r} ours={got!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--misses", choices=FIELDS, help="list every miss of one field")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args(argv)
    report(evaluate(args.corpus), args.misses)
    return 0


if __name__ == "__main__":
    sys.exit(main())
