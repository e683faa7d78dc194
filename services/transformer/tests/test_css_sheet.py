"""css_sheet: the CSS pre-pass (what is inlined, what stays in <style>, specificity, nesting)."""

from __future__ import annotations

import pytest

from postwire.transformer import css_sheet
from postwire.transformer.css_sheet import (
    AFTER,
    BEFORE,
    MAX_NESTING,
    MEDIA,
    PLAIN,
    PSEUDO,
    STATE,
    is_stateful,
    parse_sheet,
    selector_kind,
    specificity,
    split_selectors,
)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("p", (0, 0, 1)),
        ("*", (0, 0, 0)),
        ("#lead p.note", (1, 1, 1)),
        ("a[href^='http:']:first-child", (0, 2, 1)),
        (".a:not(div)", (0, 1, 1)),  # :not() counts its argument (Selectors Level 4)
        (".a:is(#x, p)", (1, 1, 0)),  # the most specific argument
        (".a:where(#x)", (0, 1, 0)),
        ("p::first-line", (0, 0, 2)),
        ("p:before", (0, 0, 2)),  # legacy one-colon pseudo-element
        ("td:nth-child(2n+1)", (0, 1, 1)),
    ],
)
def test_specificity(selector: str, expected: tuple[int, int, int]) -> None:
    assert specificity(selector) == expected


def test_selector_lists_split_outside_brackets_only() -> None:
    assert split_selectors("a, b:is(c, d), [title='x,y']") == ["a", "b:is(c, d)", "[title='x,y']"]


@pytest.mark.parametrize(
    ("selector", "stateful"),
    [("a:hover", True), ("#t:checked + .panel", True), ("p::-webkit-scrollbar", True),
     ("td:first-child", False), (".md\\:hover", False), (".hover\\:underline:hover", True),
     ("a[href='mailto:hover']", False)],
)  # fmt: skip
def test_stateful_selectors_are_recognised(selector: str, stateful: bool) -> None:
    assert is_stateful(selector) is stateful


def test_each_selector_of_a_list_is_a_rule_and_state_keeps_the_rule_as_juice_does() -> None:
    """juice's preservePseudos keeps a rule whose *first* selector needs state, with all its selectors
    (the plain ones are inlined too); a stateful selector later in a list is dropped, except the
    interactive ones (:checked, :target) that juice does not list."""
    sheet = parse_sheet(".a, a:hover { color: red !important; margin: 0 }")
    assert [rule.selector for rule in sheet.rules] == [".a"]
    assert [(d.name, d.value, d.important) for d in sheet.rules[0].declarations] == [
        ("color", "red", True),
        ("margin", "0", False),
    ]
    assert sheet.kept == []
    first = parse_sheet("a:hover, .a { color: red }")
    assert [rule.selector for rule in first.rules] == [".a"]
    assert [(kept.kind, kept.text) for kept in first.kept] == [(PSEUDO, "a:hover, .a { color: red; }")]
    interactive = parse_sheet(".menu, #t:checked ~ .menu, a:focus { display: block }")
    assert [kept.text for kept in interactive.kept] == ["#t:checked ~ .menu { display: block; }"]


@pytest.mark.parametrize(
    ("selector", "kind", "element"),
    [("a::before", BEFORE, "a"), ("* a:before", BEFORE, "* a"), ("e[length]:AFTER", AFTER, "e[length]"),
     ("a:hover::before", STATE, None), (".x\\:before", PLAIN, None), ("p::first-line", STATE, None)],
)  # fmt: skip
def test_before_and_after_rules_are_set_apart_for_inline_pseudo_elements(
    selector: str, kind: str, element: str | None
) -> None:
    """::before/::after rules are neither inlined on their element nor kept (juice drops them, or writes
    them as spans with inlinePseudoElements); other pseudo-elements need state and stay in <style>."""
    assert selector_kind(selector) == kind
    sheet = parse_sheet(f"{selector} {{ content: 'x'; color: red }}")
    assert [(rule.selector, rule.full, rule.element) for rule in sheet.pseudo] == (
        [(element, selector, kind)] if element else []
    )
    assert sheet.rules == [] or kind == PLAIN
    assert bool(sheet.kept) is (kind == STATE)


def test_css_wrapped_in_an_html_comment_is_read() -> None:
    sheet = parse_sheet("<!-- p { color: red } a { content: '<!--' } -->")
    found = [(rule.selector, rule.declarations[0].value) for rule in sheet.rules]
    assert found == [("p", "red"), ("a", "'<!--'")]


def test_declarations_outside_any_rule_in_media_are_dropped() -> None:
    assert parse_sheet("@media screen { color: blue; }").kept == []
    assert parse_sheet("@media screen { p { color: blue } }").kept[0].kind == MEDIA


def test_blocks_nested_too_deeply_are_dropped_not_recursed() -> None:
    deep = (
        "@media screen{" * (MAX_NESTING * 100) + "p{color:red}" + "}" * (MAX_NESTING * 100) + "b{color:red}"
    )
    assert [rule.selector for rule in parse_sheet(deep).rules] == ["b"]


@pytest.mark.parametrize(
    "css",
    [
        "p { color: red } .a, .b:not([x=y]) { margin: 0 } @media screen { .c { x: 1 } a:hover { y: 2 } }",
        "p { font-family: 'A B', \"C\" } .a, [title='x,y'] { margin: 0 !important }",  # inert strings
        "@import url(a.css); p { a: 1 } ; q { b: url(x;y) } @font-face { font-family: X }",
        "p { x: f(}) } q { y: 1 }",  # a brace inside brackets
        "p { x: a)( } q { y: 1 }",  # brackets in the wrong order
        "p { content: '}' } q { y: 1 }",  # a brace inside a string
        "p { x: 1 }} q { y: 1 }",  # a stray brace
        ".card { color: red; & .t { x: y } @media print { z: 1 } }"
        " @supports (x: y) { @media print { p { a: b } } }",
        "h1,\n  h2 { margin: 0; Margin: 0 } p { } p { foo }"
        " td:first-child, a:visited { color: red !important }",
    ],
)
def test_the_fast_reader_reads_as_the_tokenizer(css: str) -> None:
    """A sheet cut at its braces (or sent back to the tokenizer) gives what the tokenizer alone gives."""
    tokenized = css_sheet.Sheet()
    css_sheet._read_items(tokenized, css_sheet._parse_blocks(css_sheet._without_comments(css)).items, [0])
    parsed = parse_sheet(css)
    assert [" ".join(r.selector.split()) for r in parsed.rules] == [r.selector for r in tokenized.rules]
    assert [r.declarations for r in parsed.rules] == [r.declarations for r in tokenized.rules]
    assert parsed.kept == tokenized.kept
