"""Whatever text a customer sends, compiling and rendering it raises nothing but TemplateSyntaxError
or RenderError, and text that has_tags() calls plain renders as itself."""

from __future__ import annotations

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
