"""Whatever text a customer sends, compiling and rendering it raises nothing but TemplateSyntaxError
or RenderError, and text that has_tags() calls plain renders as itself."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postwire.personalisation import Limits, RenderError, TemplateSyntaxError, compile_template, has_tags

DATA = {
    "a": "x<y>",
    "b": 0,
    "n": -3.5,
    "list": [1, "two", None, {"k": [True]}],
    "map": {"k": "v", "0": 1, "nested": {"deep": [1, 2]}},
    "big": 2**80,
    "empty": "",
}
LIMITS = Limits(max_output=50_000, max_steps=20_000, max_value=20_000)

# pieces of the language, so generated text reaches the parser's corners and not only the lexer's
FRAGMENTS = [
    "{", "}", "{$", "$a", "$b", "$n", "$list", "$map", "$big", "$x", ".k", ".0", "[0]", "[$b]", "[\"k\"]",
    "|", ":", "upper", "default", "truncate", "cat", "replace", "regex_replace", "date_format", "count",
    "escape", "nl2br", "md5", "\"", "'", "\\", "(", ")", " ", "\n", "1", "0", "-", "+", "*", "/", "%",
    "==", "!=", "<", ">=", " and ", " or ", "not ", "!", "{if ", "{elseif ", "{else}", "{/if}",
    "{foreach ", " as ", " in ", " => ", "{foreachelse}", "{/foreach}", "{assign ", " to ", " = ",
    "{literal}", "{/literal}", "{*", "*}", "{ldelim}", "{rdelim}", "{escape}", "{mode=", "html",
    "true", "null", "\"(a+)+$\"", "\"now\"", "\"%Y\"",
]  # fmt: skip
template_like = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)


def compile_and_render(source: str) -> str | None:
    try:
        template = compile_template(source)
    except TemplateSyntaxError as error:
        assert error.line >= 1 and error.column >= 1 and error.message
        return None
    try:
        return template.render(DATA, LIMITS)
    except RenderError:
        return None


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text(source: str) -> None:
    compile_and_render(source)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(template_like)
def test_template_like_text(source: str) -> None:
    compile_and_render(source)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="$*/")))
def test_text_without_tags_renders_as_itself(source: str) -> None:
    if not has_tags(source):
        assert compile_template(source).render(DATA) == source


# any data a caller could pass: JSON from anywhere (lone surrogates included), huge numbers, inf, NaN
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=2**60, max_value=2**4000)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(st.characters(blacklist_categories=()), max_size=30)
           | st.sampled_from(["", "0", "12 apples", "1e3", "2024-02-29", "now", "+1 day", "(a+)+$", "%Y"]))
json_like = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)
EVERYTHING = compile_template(
    "{$v}{$v.k}{$v[0]}{$v[$w]}{$v + $w}{$v - $w}{$v * $w}{$v % 7}{-$v}{$v / 2}"
    "{if $v == $w or $v < $w and not $v >= $w}y{/if}{if $v}t{/if}"
    "{foreach $v as $k => $x}{$k}{$x}{foreachelse}e{/foreach}"
    '{$v|default:$w}{$v|escape}{$v|escape:"url"}{$v|escape:"base64"}{$v|truncate:$w:$w:$w:$w}'
    "{$v|upper}{$v|lower}{$v|ucfirst}{$v|trim:$w}{$v|replace:$w:$v}{$v|regex_replace:$w:$v}"
    '{$v|regex_replace:"[a-z]+":"<$0>"}{$v|nl2br}{$v|count}{$v|strlen}{$v|cat:$w:$v}{$v|urlencode}'
    "{$v|base64_encode}{$v|base64_decode}{$v|md5}{$v|sha1}{$v|sha256}{$v|date_format:$w}{$v|date_format}"
    "{assign $v|cat:$w to $z}{$z}"
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_like, json_like)
def test_arbitrary_data(v: object, w: object) -> None:
    with contextlib.suppress(RenderError):
        EVERYTHING.render({"v": v, "w": w}, LIMITS)
