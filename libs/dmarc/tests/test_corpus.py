"""parse_report on the shared corpus of real reports (parsedmarc's samples), compared with its labels
field by field. Skips, saying why, when the corpus is absent; the fixtures in test_parse.py cover the
same behaviour and always run.

Where we depart from the labels, on purpose (each is allowed by the corpus README or follows an RFC):
- a dotted ``org_name`` is kept as written ("Outlook.com"); the labels reduce it to a lower-case base
  domain ("outlook.com");
- the three not-well-formed files (``lenient: true``) may be read differently or refused: ours decodes
  a stray 8-bit byte as Windows-1252 (the labels drop it) and reads an unescaped ``<`` in a value as
  text (the labels keep fragments of the broken markup).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from postwire.dmarc import InvalidReport, parse_report
from postwire.testing.corpus import corpus_path


def labels() -> list[dict[str, Any]]:
    path = corpus_path("dmarc", "labels.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def org_name_agrees(got: str, label: dict[str, Any]) -> bool:
    """Equal, or the label's base-domain reading of the dotted name we kept as written."""
    expected = label["org_name"]
    if got == expected or got == label.get("org_name_as_written"):
        return True
    lowered = got.lower()
    return "." in got and (lowered == expected or lowered.endswith("." + expected))


def disagreements(got: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The fields (records by index and key) where our reading differs from the label."""
    found = []
    for key, value in expected.items():
        if key == "org_name_as_written":
            continue
        if key == "org_name":
            if not org_name_agrees(got["org_name"], expected):
                found.append(f"org_name {got['org_name']!r} != {value!r}")
        elif key == "records" and len(got["records"]) == len(value):
            found += [f"records[{n}].{k} {ours.get(k)!r} != {theirs[k]!r}"
                      for n, (ours, theirs) in enumerate(zip(got["records"], value, strict=True))
                      for k in theirs if ours.get(k) != theirs[k]]
        elif got.get(key) != value:
            found.append(f"{key} {got.get(key)!r} != {value!r}")
    return found


def judge(label: dict[str, Any], root: Path) -> tuple[bool, str]:
    """(agrees, what happened) for one labelled file."""
    try:
        report = parse_report((root / label["file"]).read_bytes(), label["content_type"])
    except InvalidReport as exc:
        if not label["valid"]:
            return True, f"refused ({exc.code})"
        return False, f"refused ({exc.code}: {exc.message})"
    if not label["valid"]:
        return False, "read, but the label says it must be refused"
    wrong = disagreements(report.as_json(), label["report"])
    return not wrong, "; ".join(wrong) or "agrees"


def test_corpus_agrees_with_the_labels(capsys: pytest.CaptureFixture[str]) -> None:
    root = corpus_path("dmarc")
    results = {label["file"]: (label, *judge(label, root)) for label in labels()}
    agreed = sum(ok for _, ok, _ in results.values())
    with capsys.disabled():
        print(f"\nDMARC corpus: {agreed}/{len(results)} labelled files agree fully")
        for name, (label, ok, what) in results.items():
            if not ok:
                print(f"  {'lenient ' if label.get('lenient') else ''}{name}: {what}")
    for name, (label, ok, what) in results.items():
        assert ok or label.get("lenient"), f"{name}: {what}"
    assert agreed >= len(results) - 2
