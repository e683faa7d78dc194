"""CSS conformance: our default engine against juice's own test cases (css/juice-cases in the shared corpus,
POSTWIRE_CORPUS_DIR; those tests skip, saying why, when it is absent) and against a few cases written for
the project in the same form (fixtures/css), which always run.

Each case NAME has NAME.html (input), NAME.css (extra CSS), optional NAME.json (juice options) and NAME.out
(juice's output). Outputs are compared as parsed HTML, not bytes: the element sequence with attributes,
each element's style declarations, the text, and the rules left in <style> blocks, all normalised.
The juice options in NAME.json are passed on (InlineOptions.from_juice). Cases where juice's policy is wrong
for email, or that need what we do not implement, are listed in EXPECTED_DIFFERENCES with the reason (the
same list is in docs/inlining.md); the test fails if one of them starts to match (the list is stale). The
score ("juice cases: 37/40 pass") is printed at the end of the run by conftest.py.

Run this file directly to print every case's normalised difference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Final

import pytest

from postwire.testing.corpus import corpus_dir, corpus_params, corpus_path
from postwire.transformer.inline import inline_html
from postwire.transformer.inline_options import InlineOptions

CASES_DIR = corpus_dir() / "css" / "juice-cases"
# the same form, expected outputs written by hand for the project: specificity, !important, @media, extra CSS
OWN_CASES_DIR = Path(__file__).parent / "fixtures" / "css"
JUICE_MATCH: Final = "juice_match"  # the user property conftest.py reads

EXPECTED_DIFFERENCES: dict[str, str] = {
    # --- juice's policy is wrong (or merely different) for email; ours is deliberate ---
    "pseudo-specificity": "juice counts :first-child and :not() like type selectors; we follow Selectors "
    "Level 4, as every client does when it applies the <style> block (background blue, padding 10px)",
    "juice-content/embed": "juice loads the <link data-embed> stylesheet; we never load linked "
    "stylesheets (the same CSS passed as extra CSS is inlined instead)",
    # --- HTML parsing: we parse as HTML5 (as clients do), juice keeps the source's shape ---
    "css-variables": "the variables resolve as juice's do; the stray <td> outside a table is dropped by "
    "HTML5 parsing (as in every client), so its bgcolor has nowhere to go",
}


@dataclass
class Normalised:
    """What a mail client would render from a document, in a form two serialisers agree on."""

    elements: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    style_rules: list[str] = field(default_factory=list)


# Elements an HTML5 parser adds or omits on its own (tbody inside table): no attributes, same rendering.
_WRAPPERS = {"html", "head", "body", "tbody"}


def _declarations(style: str) -> dict[str, list[str]]:
    """'a: 1; b: 2; a: 3' -> {'a': ['1', '3'], 'b': ['2']}: duplicates kept in order, property order not."""
    out: dict[str, list[str]] = {}
    for decl in style.split(";"):
        prop, sep, value = decl.partition(":")
        if sep and prop.strip():
            out.setdefault(prop.strip().lower(), []).append(_css_value(value))
    return out


def _css_value(value: str) -> str:
    value = re.sub(r"\s+", " ", value).strip().replace('"', "'")
    return re.sub(r"\s*!\s*important$", " !important", value, flags=re.IGNORECASE)


def _css_text(css: str) -> str:
    """Rules without comments or spare whitespace: '@media x { a { b: c; } }' -> '@media x{a{b:c}}'."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    css = re.sub(r"\s+", " ", css)
    css = re.sub(r"\s*([{}:;,>])\s*", r"\1", css)
    return css.replace(";}", "}").replace('"', "'").strip()


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.result = Normalised()
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "style":
            self._in_style = True
            return
        values: dict[str, Any] = {name: value or "" for name, value in attrs}
        if "style" in values:
            values["style"] = _declarations(values["style"])
        if tag not in _WRAPPERS or values:  # parsers add or omit empty html/head/body; they render the same
            self.result.elements.append((tag, values))

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            rules = _css_text(data)
            if rules:
                self.result.style_rules.append(rules)
        elif data.strip():
            self.result.text.append(re.sub(r"\s+", " ", data).strip())


def normalise(html: str) -> Normalised:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    result = collector.result
    result.text = [" ".join(result.text)]
    result.style_rules = ["".join(result.style_rules)]  # one block or several: the same rules apply
    return result


def case_names(cases_dir: Path = CASES_DIR) -> list[str]:
    return sorted(str(p.relative_to(cases_dir).with_suffix("")) for p in cases_dir.rglob("*.out"))


def run_case(name: str, cases_dir: Path = CASES_DIR) -> tuple[Normalised, Normalised]:
    """(ours, the expected output) for one case, both normalised."""
    base = cases_dir / name
    html = base.with_suffix(".html").read_text(encoding="utf-8")
    css_file = base.with_suffix(".css")
    extra_css = css_file.read_text(encoding="utf-8") if css_file.exists() else ""
    options_file = base.with_suffix(".json")
    options = json.loads(options_file.read_text(encoding="utf-8")) if options_file.exists() else {}
    extra_css += options.get("extraCss", "")
    ours = inline_html(html, extra_css or None, options=InlineOptions.from_juice(options))
    return normalise(ours), normalise(base.with_suffix(".out").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", case_names(OWN_CASES_DIR))
def test_own_case(name: str) -> None:
    ours, expected = run_case(name, OWN_CASES_DIR)
    assert ours == expected
    source = normalise((OWN_CASES_DIR / name).with_suffix(".html").read_text(encoding="utf-8"))
    assert source != expected  # the case needs inlining to pass


def test_own_cases_are_present() -> None:
    assert len(case_names(OWN_CASES_DIR)) >= 3


def test_corpus_is_present() -> None:
    corpus_path("css", "juice-cases")  # skips, saying why, when the corpus is absent
    assert len(case_names()) >= 40, f"juice cases not found under {CASES_DIR}"


@pytest.mark.parametrize("name", corpus_params(case_names(), CASES_DIR))
def test_juice_case(name: str, record_property: Callable[[str, object], None]) -> None:
    ours, juice = run_case(name)
    record_property(JUICE_MATCH, ours == juice)  # counted by conftest.py for the score line
    if name in EXPECTED_DIFFERENCES:
        assert ours != juice, f"{name} now matches juice: remove it from EXPECTED_DIFFERENCES"
    else:
        assert ours == juice


def test_expected_differences_name_real_cases() -> None:
    corpus_path("css", "juice-cases")
    assert set(EXPECTED_DIFFERENCES) <= set(case_names())


if __name__ == "__main__":
    passed = 0
    for case in case_names():
        mine, theirs = run_case(case)
        if mine == theirs:
            passed += 1
            continue
        print(f"--- {case}" + (" (expected)" if case in EXPECTED_DIFFERENCES else ""))
        for attr in ("elements", "text", "style_rules"):
            if getattr(mine, attr) != getattr(theirs, attr):
                print(f"  {attr}:\n    ours : {getattr(mine, attr)}\n    juice: {getattr(theirs, attr)}")
    print(f"juice cases: {passed}/{len(case_names())} pass")
