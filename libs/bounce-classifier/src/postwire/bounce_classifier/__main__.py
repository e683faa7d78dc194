"""`postwire bounce classify FILE…` (and `python -m postwire.bounce_classifier FILE…`): one JSON line per
bounced recipient, nothing for a mail that is not a bounce.

`replycode` is printed as a string ("550"), like the corpus labels and Sisimai's own output. `confidence`
(high, medium, low) says which evidence decided the reason (docs/bounces.md, "How a reason is decided").
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from postwire.bounce_classifier.parser import parse_bounce


def classify_files(paths: list[str]) -> Iterator[dict[str, object]]:
    """One dict per bounced recipient of each file, in argument order then mail order."""
    for path in paths:
        raw = Path(path).read_bytes()
        for r in parse_bounce(raw):
            yield {
                "file": path,
                "recipient": r.recipient,
                "reason": r.reason,
                "status": r.status,
                "replycode": str(r.replycode) if r.replycode is not None else None,
                "hardbounce": r.hardbounce,
                "confidence": r.confidence,
            }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the classification of every FILE; exit 2 on usage errors or unreadable files."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: postwire bounce classify FILE...", file=sys.stderr)
        return 2
    status = 0
    for path in args:
        try:
            for row in classify_files([path]):
                print(json.dumps(row, ensure_ascii=False))
        except OSError as exc:
            print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
