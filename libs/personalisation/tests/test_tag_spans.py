"""tag_spans: where each tag is, by the lexer's own rules, and the same lexing errors as compile_template."""

from __future__ import annotations

import pytest

from postwire.personalisation import TemplateSyntaxError, compile_template, tag_spans


def tags(source: str) -> list[str]:
    return [source[start:end] for start, end in tag_spans(source)]


def test_variables_and_modifiers() -> None:
    source = 'Hi {$name|default:"friend"}, {$a.b[0]|upper} and { $not } {$5}'
    assert tags(source) == ['{$name|default:"friend"}', "{$a.b[0]|upper}"]


def test_a_quoted_string_may_hold_a_closing_brace() -> None:
    source = "<p>{$x|default:\"a } b\"}</p><p>{$y|replace:'}':'{'}</p>"
    assert tags(source) == ['{$x|default:"a } b"}', "{$y|replace:'}':'{'}"]


def test_blocks() -> None:
    source = (
        "{if $a > 1}A{elseif $b}B{else if $c}C{else}D{/if}{foreach $rows as $r}{$r}{foreachelse}-{/foreach}"
    )
    assert tags(source) == [
        "{if $a > 1}", "{elseif $b}", "{else if $c}", "{else}", "{/if}",
        "{foreach $rows as $r}", "{$r}", "{foreachelse}", "{/foreach}",
    ]  # fmt: skip


def test_spans_are_in_order_and_exact() -> None:
    source = "a{$x}b\n{if $y}\nc{/if}"
    assert tag_spans(source) == [(1, 5), (7, 14), (16, 21)]


def test_literal_is_one_span_with_its_content() -> None:
    source = "<script>{literal}function(){return {$x}}{/literal}</script>{$y}"
    assert tags(source) == ["{literal}function(){return {$x}}{/literal}", "{$y}"]


def test_comments_and_delimiters() -> None:
    source = "{* a {$comment} with } braces *}{ldelim}x{rdelim}{mode=html}"
    assert tags(source) == ["{* a {$comment} with } braces *}", "{ldelim}", "{rdelim}", "{mode=html}"]


def test_css_and_json_braces_are_not_tags() -> None:
    source = (
        "<style>p { color: red } a{color:red}@media (max-width:600px){.x{display:none}}</style>"
        '{"key": 1} {} {{ x }} a } b {assign var="n" value=1}'
    )
    assert tags(source) == ['{assign var="n" value=1}']


def test_no_tags() -> None:
    assert tag_spans("") == [] and tag_spans("plain text") == []


@pytest.mark.parametrize(
    "source",
    [
        "{foo}",
        '{$x|default:"unterminated}',
        "{* no end",
        "{literal} no end",
        "{/literal}",
        "{$x",
        "{if $a ~ 1}",
        "{else junk}",
    ],
)
def test_lexing_errors_are_compile_errors(source: str) -> None:
    with pytest.raises(TemplateSyntaxError) as compiled:
        compile_template(source)
    with pytest.raises(TemplateSyntaxError) as spans:
        tag_spans(source)
    assert (spans.value.message, spans.value.line, spans.value.column) == (
        compiled.value.message, compiled.value.line, compiled.value.column,
    )  # fmt: skip


def test_parse_errors_still_have_spans() -> None:
    """Only lexing is checked: an {if} without {/if} is the parser's to report."""
    with pytest.raises(TemplateSyntaxError):
        compile_template("{if $a}x")
    assert tags("{if $a}x") == ["{if $a}"]
