"""The shared test corpora (real bounce mails, juice's CSS cases, …): found by path, never part of the
repository, and a clean skip when they are absent.

The corpus lives in ``POSTWIRE_CORPUS_DIR``, by default ``../shared/corpus`` beside the project root. A
user's clone has no such folder, so a test that needs it calls :func:`corpus_path`, which skips that test
with a reason saying what is missing and how to provide it. Whatever such a test covers is also covered
by a test on a small fixture written for the project, which always runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

ENV = "POSTWIRE_CORPUS_DIR"
# libs/testing/src/postwire/testing/corpus.py → the project root (workspace members install editable)
PROJECT_ROOT = Path(__file__).resolve().parents[5]

# what each top-level folder holds, so a skip can say where to get it
SOURCES = {
    "bounces": "labelled bounce mails (Sisimai's set-of-emails: eml/, not-bounce/, labels.jsonl)",
    "css": "juice's CSS inlining test cases (Automattic/juice test/cases, as css/juice-cases/)",
    "templates": "real HTML email templates",
    "dmarc": "real DMARC aggregate reports with parsedmarc's labels (aggregate/, extract_report/, failure/, "
             "smtp_tls/)",
}


def corpus_dir() -> Path:
    """``POSTWIRE_CORPUS_DIR`` if set, else ``../shared/corpus`` from the project root (may not exist)."""
    configured = os.environ.get(ENV)
    return Path(configured) if configured else PROJECT_ROOT.parent / "shared" / "corpus"


def absent_reason(path: Path) -> str:
    """Why a test that needs ``path`` (inside the corpus) is skipped, and how to run it."""
    root = corpus_dir()
    try:
        top = path.relative_to(root).parts[0]
    except (ValueError, IndexError):
        top = ""
    what = SOURCES.get(top, "test data")
    if root.is_dir():
        where = f"{path} is missing from the corpus at {root}"
    else:
        where = f"no corpus at {root} ({f'from {ENV}' if os.environ.get(ENV) else f'{ENV} is unset'})"
    return (f"test corpus absent: {where}. This part of it holds {what}; the corpus is not part of the "
            f"repository: to run this test, set {ENV} to a folder holding it.")


def corpus_path(*parts: str) -> Path:
    """A file or folder inside the corpus; skips the calling test, with the reason, when it is absent."""
    path = corpus_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(absent_reason(path))
    return path


def corpus_params(found: Sequence[Any], path: Path) -> list[Any]:
    """Parameters for a test parametrized over corpus files: ``found`` (what was found under ``path``), or,
    when that is empty, one parameter that skips with the reason, so the skip shows instead of nothing."""
    if found:
        return list(found)
    return [pytest.param(path, marks=pytest.mark.skip(reason=absent_reason(path)), id="corpus-absent")]


BOUNCE_MAILS = Path(__file__).parent / "bounce_mails"  # the project's own bounce mails (README there)


def bounce_mail(name: str) -> bytes:
    """One of the bounce mails written for the project's tests: always there, unlike the corpus."""
    return (BOUNCE_MAILS / name).read_bytes()
