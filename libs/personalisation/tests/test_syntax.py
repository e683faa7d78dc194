"""Where tags start and what is text; the errors a customer sees, with their line and column."""

from __future__ import annotations

import pytest

from postwire.personalisation import TemplateSyntaxError, compile_template, has_tags


def render(source: str, **data: object) -> str:
    return compile_template(source).render(data)


@pytest.mark.parametrize(
    "text",
    [
        "p { color: red }",
        "a{color:red}.b{font-family:Arial}",
        "@media (max-width:600px){.x{display:none!important}}",
        '{"name": "Ann", "tags": ["a", "b"]}',
        "{}",
        "{{ mustache }}",
        "{ $name }",
        "price: {$5}",
        "a } b",
        "{/}",
        "{-x}",
    ],
)
def test_braces_that_open_no_tag_are_text(text: str) -> None:
    assert render(text, name="Ann") == text


def test_css_and_a_variable_in_one_template() -> None:
    source = "<style>td{padding:0} p { margin: 0 }</style><p>Hi {$name}</p>"
    assert render(source, name="Ann") == "<style>td{padding:0} p { margin: 0 }</style><p>Hi Ann</p>"


def test_has_tags() -> None:
    assert not has_tags("plain text, p { color: red }, {\"a\": 1}, {{ x }}")
    assert has_tags("Hi {$name}")
    assert has_tags("{if $a}x{/if}")
    assert has_tags("{* note *}")
    assert has_tags("{ldelim}")


def test_comments_are_left_out() -> None:
    assert render("a{* one\nline {$x} two *}b") == "ab"


def test_literal_is_verbatim() -> None:
    source = "{literal}{if $a}{$b}{* c *}{/if}{/literal}!"
    assert render(source, a=True, b="B") == "{if $a}{$b}{* c *}{/if}!"


def test_ldelim_rdelim() -> None:
    assert render("{ldelim}$name{rdelim}") == "{$name}"


def test_keywords_ignore_case() -> None:
    assert render("{IF $a}yes{ELSE}no{/If}", a=1) == "yes"


def test_tags_may_span_lines() -> None:
    assert render("{if $a\n   and $b}both{/if}", a=1, b=1) == "both"


@pytest.mark.parametrize(
    ("source", "line", "column", "message"),
    [
        ("Hi\n\n{if $a}\nyes", 3, 1, "{if} without {/if}"),
        ("x {/if}", 1, 3, "{/if} without {if}"),
        ("{else}", 1, 1, "{else} without {if}"),
        ("{foreach $a as $b}{else}{/foreach}", 1, 19, "{else} without {if}"),
        ("{foreachelse}", 1, 1, "{foreachelse} without {foreach}"),
        ("\n  {foo}", 2, 3, "unknown tag {foo}"),
        ("{foo bar}", 1, 1, "unknown tag {foo}"),
        ("{/foo}", 1, 1, "unknown tag {/foo}"),
        ('{$a|default:"x}', 1, 13, "unterminated string"),
        ("ab\n{$name", 2, 1, "unterminated tag {$…: missing }"),
        ("{* never closed", 1, 1, "unterminated comment: {* without *}"),
        ("{literal} never closed", 1, 1, "{literal} without {/literal}"),
        ("{/literal}", 1, 1, "{/literal} without {literal}"),
        ("{if $a}{else}{else}{/if}", 1, 14, "{else} after the {else} of this {if}"),
        ("{foreach $a as $b}{foreachelse}{foreachelse}{/foreach}", 1, 32,
         "a second {foreachelse} in one {foreach}"),
        ("x{escape}", 1, 2, "{escape} must be the first thing in the template"),
        ("{$a b}", 1, 5, "unexpected 'b' in {$…}"),
        ("{$a ? 1}", 1, 5, "unexpected '?' in a tag"),
        ("{if}{/if}", 1, 4, "expected a value, found the end of the tag"),
        ("{if $a}\n{$b +}\n{/if}", 2, 6, "expected a value, found the end of the tag"),
        ("{$a[1}", 1, 6, "expected ']', found the end of the tag"),
        ("{foreach $a}{/foreach}", 1, 12, "expected 'as' or 'in' in {foreach}, found the end of the tag"),
        ("{assign 1}", 1, 10, "expected 'to' in {assign … to $name}, found the end of the tag"),
        ("{$a|regex_replace:\"(\":\"\"}", 1, 4,
         "invalid regular expression in regex_replace: missing ): ("),
        ("{$a + hello}", 1, 7, "unexpected word 'hello': a variable starts with $, text needs quotes"),
        ("{mode=xml}", 1, 7, "unknown mode 'xml': html, url, base64 or raw"),
    ],
)
def test_syntax_errors_name_line_and_column(source: str, line: int, column: int, message: str) -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        compile_template(source, part="html")
    error = caught.value
    assert (error.part, error.line, error.column, error.message) == ("html", line, column, message)
    assert str(error) == f"line {line}, column {column}: {message}"


def test_nesting_deeper_than_the_limit_is_a_syntax_error() -> None:
    compile_template("{if 1}" * 64 + "{/if}" * 64)
    with pytest.raises(TemplateSyntaxError, match="nested deeper than 64 levels"):
        compile_template("{if 1}" * 65 + "{/if}" * 65)
    with pytest.raises(TemplateSyntaxError, match="nested deeper than 64 levels"):
        compile_template("{$a + " + "(" * 100 + "1" + ")" * 100 + "}")
    with pytest.raises(TemplateSyntaxError, match="nested deeper than 64 levels"):
        compile_template("{$a" + " + 1" * 1000 + "}")
    with pytest.raises(TemplateSyntaxError, match="nested deeper than 64 levels"):
        compile_template("{$a" + "|upper" * 1000 + "}")
    with pytest.raises(TemplateSyntaxError, match="nested deeper than 64 levels"):
        compile_template("{$a" + ".b" * 1000 + "}")
    with pytest.raises(TemplateSyntaxError, match="nested deeper than 64 levels"):
        compile_template("{if " + "not " * 1000 + "$a}{/if}")


def test_errors_survive_pickling() -> None:
    """A worker process can hand the error, with its position, back to the API."""
    import pickle

    from postwire.personalisation import RenderError

    with pytest.raises(TemplateSyntaxError) as caught:
        compile_template("a\n {/if}", part="text")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.part, copy.line, copy.column, copy.message) == ("text", 2, 2, "{/if} without {if}")
    render_error = pickle.loads(pickle.dumps(RenderError("division by zero", line=4)))
    assert str(render_error) == "line 4: division by zero"
