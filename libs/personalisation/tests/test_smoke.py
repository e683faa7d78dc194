"""The library's front door: compile once, render per recipient."""

from __future__ import annotations

from postwire.personalisation import compile_template


def test_compile_once_render_per_recipient() -> None:
    tpl = compile_template('Hello {$name|default:"friend"}!')
    assert tpl.render({"name": "Ann"}) == "Hello Ann!"
    assert tpl.render({}) == "Hello friend!"
