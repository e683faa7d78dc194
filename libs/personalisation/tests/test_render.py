"""Every construct, rendered with data as a customer would write it; expected outputs follow the rules in
docs/personalisation.md."""

from __future__ import annotations

from typing import Any

import pytest

from postwire.personalisation import RenderError, compile_template


def render(source: str, data: dict[str, Any] | None = None) -> str:
    return compile_template(source).render(data or {})


CONTACT = {
    "name": "Ann",
    "first-name": "Annie",
    "address": {"city": "Delft", "lines": ["Main St 1", "Floor 2"]},
    "orders": [{"id": 7, "items": [{"sku": "A1"}]}, {"id": 9, "items": []}],
    "scores": {"math": 8, "art": 6},
    "zero": 0,
    "empty": "",
    "flag": True,
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hi {$name}!", "Hi Ann!"),
        ("{$first-name}", "Annie"),
        ("{$address.city}", "Delft"),
        ("{$address.lines[1]}", "Floor 2"),
        ("{$address.lines.0}", "Main St 1"),
        ('{$address["city"]}', "Delft"),
        ("{$address['city']}", "Delft"),
        ("{$orders[0].items[0].sku}", "A1"),
        ("{$orders[1].id}", "9"),
        ("{$address.lines[$zero]}", "Main St 1"),
        # missing variables and members are empty, never an error
        ("[{$nobody}]", "[]"),
        ("[{$name.first}]", "[]"),
        ("[{$address.lines[5]}]", "[]"),
        ("[{$address.lines[-1]}]", "[]"),
        ("[{$orders.x.y.z}]", "[]"),
        ("[{$address}]", "[]"),  # a mapping renders as nothing
        ("[{$flag}]", "[1]"),
        ("[{$zero}]", "[0]"),
    ],
)
def test_variables(source: str, expected: str) -> None:
    assert render(source, CONTACT) == expected


def test_output_is_not_escaped_unless_asked() -> None:
    data = {"html": '<b>"Tom" & Jerry</b>'}
    assert render("{$html}", data) == '<b>"Tom" & Jerry</b>'
    assert render("{$html|escape}", data) == "&lt;b&gt;&quot;Tom&quot; &amp; Jerry&lt;/b&gt;"


def test_escape_tag_escapes_every_output_but_not_the_text() -> None:
    data = {"html": "<i>x</i>"}
    assert render("{escape}<p>{$html}</p>", data) == "<p>&lt;i&gt;x&lt;/i&gt;</p>"
    assert render("{mode=url}?q={$html}", data) == "?q=%3Ci%3Ex%3C%2Fi%3E"
    assert render('{mode="raw"}{$html}', data) == "<i>x</i>"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{$a = 1 + 2 * 3}{$a}", "7"),
        ("{$a = (1 + 2) * 3}{$a}", "9"),
        ("{$a = 7 / 2}{$a}", "3.5"),
        ("{$a = 8 / 2}{$a}", "4"),
        ("{$a = 7 % 3}{$a}", "1"),
        ("{$a = -7 mod 3}{$a}", "-1"),
        ("{$a = 10 - 2 - 3}{$a}", "5"),
        ("{$a = -$n}{$a}", "-5"),
        ("{$a = 0.1 + 0.2}{$a}", "0.3"),
        ("{$a = 1.5e3}{$a}", "1500"),
        ('{$a = "12 apples" + 1}{$a}', "13"),
        ('{$a = "apples" + 1}{$a}', "1"),
        ("{$a = $n * $n * $n}{$a}", "125"),
        ("{$a = 9223372036854775807 + 1}{$a}", "9.2233720368548e+18"),
        ('{$a = "text"}{$a}', "text"),
        ("{$a = 'it\\'s'}{$a}", "it's"),
        ('{$a = "line\\nnext"}{$a}', "line\nnext"),
        ('{$a = "\\d+"}{$a}', "\\d+"),
        ("{$a = true}{$a}", "1"),
        ("{$a = false}[{$a}]", "[]"),
        ("{$a = null}[{$a}]", "[]"),
    ],
)
def test_expressions_and_assignment(source: str, expected: str) -> None:
    assert render(source, {"n": 5}) == expected


def test_division_by_zero_is_a_render_error() -> None:
    tpl = compile_template("a\n{$x / $y}")
    assert tpl.render({"x": 1, "y": 2}) == "a\n0.5"
    with pytest.raises(RenderError) as caught:
        tpl.render({"x": 1, "y": 0})
    assert str(caught.value) == "line 2: division by zero"


@pytest.mark.parametrize(
    ("condition", "truth"),
    [
        ("$n == 5", True),
        ("$n eq '5'", True),
        ("$n != 5", False),
        ("$n <> 4", True),
        ("$n ne 4", True),
        ("$n neq 5", False),
        ("$n > 4", True),
        ("$n gt 5", False),
        ("$n >= 5", True),
        ("$n ge 6", False),
        ("$n < 6", True),
        ("$n lt 5", False),
        ("$n <= 5", True),
        ("$n le 4", False),
        ("$n gte 5 and $n lte 5", True),
        ('"10" > "9"', True),  # numeric strings compare as numbers
        ('"abc" < "abd"', True),
        ('"abc" == 0', False),
        ("$missing == ''", True),
        ("$missing == 0", True),
        ("$zero_text", False),  # "0" is false
        ("$empty_list", False),
        ("$list", True),
        ("$n > 1 && $n < 9", True),
        ("$n < 1 || $n > 9", False),
        ("$n < 1 or $n > 4", True),
        ("not $n == 5", False),  # not applies to the comparison
        ("!$missing", True),
        ("not ($n > 9) and $n", True),
        ("$list == $list2", True),
        ("true == 'yes'", True),
    ],
)
def test_conditions(condition: str, truth: bool) -> None:
    data = {"n": 5, "zero_text": "0", "empty_list": [], "list": [1], "list2": [1]}
    assert render(f"{{if {condition}}}T{{else}}F{{/if}}", data) == ("T" if truth else "F")


def test_if_elseif_else() -> None:
    tpl = compile_template("{if $n > 10}big{elseif $n > 5}medium{else if $n > 0}small{else}none{/if}")
    assert [tpl.render({"n": n}) for n in (11, 6, 1, 0)] == ["big", "medium", "small", "none"]
    assert render("{if $a}yes{endif}", {"a": 1}) == "yes"


def test_foreach_forms() -> None:
    data = {"items": ["a", "b", "c"], "prices": {"tea": 2, "cake": 3}}
    assert render("{foreach $x in $items}[{$x}]{/foreach}", data) == "[a][b][c]"
    assert render("{foreach $items as $x}{$x}{/foreach}", data) == "abc"
    assert render("{foreach $items as $i => $x}{$i}:{$x} {/foreach}", data) == "0:a 1:b 2:c "
    assert render("{foreach $prices as $k => $v}{$k}={$v};{/foreach}", data) == "tea=2;cake=3;"
    assert render("{foreach $prices as $v}{$v}{/foreach}", data) == "23"


def test_foreachelse_runs_for_empty_missing_and_scalar_sources() -> None:
    tpl = compile_template("{foreach $xs as $x}{$x}{foreachelse}nothing{/foreach}")
    assert tpl.render({"xs": []}) == "nothing"
    assert tpl.render({}) == "nothing"
    assert tpl.render({"xs": "text"}) == "nothing"
    assert tpl.render({"xs": [1]}) == "1"


def test_nested_loops_and_outer_variables() -> None:
    data = {"orders": [{"id": 1, "items": ["x", "y"]}, {"id": 2, "items": ["z"]}], "sep": "/"}
    source = "{foreach $orders as $o}{foreach $o.items as $it}{$o.id}{$it}{$sep}{/foreach}{/foreach}"
    assert render(source, data) == "1x/1y/2z/"


def test_assignments_are_visible_after_the_tag_and_leave_the_data_alone() -> None:
    data = {"name": "Ann"}
    source = '{$name}|{assign "Bob" to $name}{$name}|{assign var="greet" value="Hi "|cat:$name}{$greet}'
    assert render(source, data) == "Ann|Bob|Hi Bob"
    assert data == {"name": "Ann"}


def test_loop_variable_keeps_its_last_value_and_counters_work() -> None:
    source = "{$total = 0}{foreach $xs as $x}{$total = $total + $x}{/foreach}{$total} {$x}"
    assert render(source, {"xs": [1, 2, 3]}) == "6 3"


def test_modifiers_on_literals_and_in_conditions() -> None:
    assert render('{$a = "abc"|upper}{$a}') == "ABC"
    assert render("{if $xs|count > 1}many{/if}", {"xs": [1, 2]}) == "many"
    assert render('{if $name|default:"x" == "x"}anon{/if}') == "anon"


def test_templates_are_reusable_across_recipients() -> None:
    tpl = compile_template("{$n = $n + 1}{$n}")
    assert [tpl.render({"n": i}) for i in range(3)] == ["1", "2", "3"]


def test_plain_text_renders_as_itself() -> None:
    assert render("no tags { here }") == "no tags { here }"
    assert render("") == ""
