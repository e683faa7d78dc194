"""Hostile templates and data end in TemplateSyntaxError or RenderError, quickly, and leave the process
fine (the next render works)."""

from __future__ import annotations

import pytest

from postwire.personalisation import Limits, RenderError, TemplateSyntaxError, compile_template

MILLION = list(range(10**6))


def test_defaults() -> None:
    assert Limits() == Limits(max_output=2_000_000, max_steps=1_000_000, max_value=1_000_000)


def test_a_loop_over_a_million_items_stops_at_the_step_limit() -> None:
    tpl = compile_template("{foreach $xs as $x}{$x},{/foreach}")
    with pytest.raises(RenderError, match="more than 1000000 steps"):
        tpl.render({"xs": MILLION})
    assert tpl.render({"xs": [1, 2]}) == "1,2,"


def test_nested_loops_stop_at_the_step_limit() -> None:
    loops = "{foreach $xs as $a}{foreach $xs as $b}{foreach $xs as $c}.{/foreach}{/foreach}{/foreach}"
    tpl = compile_template(loops)
    with pytest.raises(RenderError, match="steps"):
        tpl.render({"xs": list(range(1000))})


def test_the_step_limit_is_the_callers() -> None:
    tpl = compile_template("{foreach $xs as $x}{$x}{/foreach}")
    assert tpl.render({"xs": list(range(100))}, Limits(max_steps=10_000)) == "".join(map(str, range(100)))
    with pytest.raises(RenderError):
        tpl.render({"xs": list(range(100))}, Limits(max_steps=100))


def test_cat_in_a_loop_growing_a_value_stops_at_the_value_limit() -> None:
    tpl = compile_template('{$s = "ab"}{foreach $xs as $x}{$s = $s|cat:$s}{/foreach}{$s|strlen}')
    with pytest.raises(RenderError, match="longer than 1000000 characters"):
        tpl.render({"xs": MILLION})
    assert tpl.render({"xs": [1, 2]}) == "8"


def test_assign_and_replace_are_bounded_before_they_build() -> None:
    with pytest.raises(RenderError, match="value grew longer"):
        compile_template('{$x|replace:"a":$big}').render({"x": "a" * 1000, "big": "b" * 10_000})
    with pytest.raises(RenderError, match="value grew longer"):
        compile_template("{$y = $x}").render({"x": "a" * 1_000_001})
    with pytest.raises(RenderError, match="value grew longer"):
        compile_template('{$x|regex_replace:"":$big}').render({"x": "a" * 1000, "big": "b" * 10_000})


def test_output_limit() -> None:
    tpl = compile_template("{foreach $xs as $x}{$big}{/foreach}")
    with pytest.raises(RenderError, match="output is longer than 2000000 characters"):
        tpl.render({"xs": list(range(100)), "big": "x" * 100_000})
    with pytest.raises(RenderError, match="longer than 10 characters"):
        compile_template("{$x}").render({"x": "12345678901"}, Limits(max_output=10))
    with pytest.raises(RenderError, match="longer than 3 characters"):
        compile_template("plain").render({}, Limits(max_output=3))


def test_hashing_a_big_value_in_a_loop_is_charged_by_its_length() -> None:
    tpl = compile_template("{foreach $xs as $x}{$big|md5}{/foreach}")
    with pytest.raises(RenderError, match="steps"):
        tpl.render({"xs": MILLION, "big": "x" * 1_000_000})


def test_catastrophic_regex_ends_quickly() -> None:
    tpl = compile_template('{foreach $xs as $x}{$x|regex_replace:"^(a|aa)+$":"-"}{/foreach}')
    out = tpl.render({"xs": ["a" * 5000 + "b"] * 10})
    assert out == ("a" * 5000 + "b") * 10


def test_a_megabyte_of_braces_is_text() -> None:
    source = "{" * 1_000_000
    assert compile_template(source).render({}) == source


@pytest.mark.parametrize(
    "source",
    [
        "{$a" * 200_000,
        "{if 1}" * 200_000,
        "{foreach $a as $b}" * 200_000,
        "{$a = " + "(" * 200_000,
        "{$a" + "[$a" * 200_000,
        "{if " + "!" * 200_000 + "$a}{/if}",
        "{$a" + "|cat:" * 200_000 + "}",
        "{/if}" * 200_000,
        "{* " * 200_000,
        '{$a|default:"' * 200_000,
    ],
)
def test_hostile_sources_are_syntax_errors(source: str) -> None:
    with pytest.raises(TemplateSyntaxError):
        compile_template(source)
