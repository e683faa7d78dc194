"""inline_html against what juice (the reference email inliner) documents: code blocks, pseudo-elements
as spans, var() from ancestors, XHTML output, and the <style> blocks gone before matching. Each case is
small and written from the documented behaviour, not taken from juice's own tests."""

from __future__ import annotations

import re

import pytest

from postwire.transformer import code_blocks
from postwire.transformer.inline import inline_html
from postwire.transformer.inline_options import InlineOptions

PSEUDO = InlineOptions(inline_pseudo_elements=True)


def _body(out: str) -> str:
    return out.partition("<body")[2].partition(">")[2].rpartition("</body>")[0].strip()


# --- codeBlocks: template code never reaches the HTML parser ---


@pytest.mark.parametrize(
    "template",
    [
        "{{#if `age <= 40`}}<p>Young</p>{{/if}}",  # Handlebars with a "<" inside
        "<% if (user.age < 40) { %><p>Young</p><% } %>",  # EJS
        "<#if user.age < 40><p>Young</p></#if>",  # FreeMarker
        '<a href="{{url}}"><p>Young</p></a>',  # in an attribute value
    ],
)
def test_code_blocks_come_back_exactly_as_written(template: str) -> None:
    out = inline_html(f"<style>p {{ color: red }}</style>{template}")
    assert _body(out) == template.replace("<p>", '<p style="color: red;">')


def test_a_code_block_in_tag_markup_comes_back_without_an_attribute_value() -> None:
    out = inline_html("<style>td { color: red }</style><table><tr><td {{attrs}}>x</td></tr></table>")
    assert '<td {{attrs}} style="color: red;">x</td>' in out


def test_an_unterminated_code_block_is_left_to_the_parser() -> None:
    out = inline_html("<style>p { color: red }</style><p>{{ a <b>b</b></p>")
    assert '<p style="color: red;">{{ a <b>b</b></p>' in out


def test_code_blocks_can_be_added_and_switched_off() -> None:
    liquid = "{% if a < b %}<p>x</p>{% endif %}"
    html = f"<style>p {{ color: red }}</style>{liquid}"
    assert "&lt;" in inline_html(html)  # not one of juice's defaults
    added = InlineOptions.from_juice({"codeBlocks": {"LIQUID": {"start": "{%", "end": "%}"}}})
    assert _body(inline_html(html, options=added)) == liquid.replace("<p>", '<p style="color: red;">')
    off = InlineOptions(code_blocks=())
    assert "{{a &lt; b}}" in inline_html("<p>{{a < b}}</p>", options=off)


def test_a_code_block_copied_by_the_inliner_cannot_write_markup() -> None:
    """A block comes back as written where it was written; where the inliner copied it (a CSS value into
    a style attribute, attr() into a box's text) it comes back escaped, and in the kept <style> with
    ``</`` escaped, so template code inside CSS cannot open a <script>."""
    css = (
        'p { color: {{brand}}; margin: {{ "x"><script>alert(1)</script> }} }'
        " @media print { p { x: {{ </style> }} } }"
    )
    out = inline_html(f'<style>{css}</style><p title="{{{{ "q" }}}}">x</p>')
    assert '<p title="{{ "q" }}" style="color: {{brand}};margin: {{ &quot;x&quot;&gt;&lt;script&gt;' in out
    assert "<script>" not in out and "x: {{ <\\/style> }}" in out
    boxes = '<style>p::before { content: attr(title) }</style><p title="{{ <b>bold</b> }}">x</p>'
    assert "<span>{{ &lt;b&gt;bold&lt;/b&gt; }}</span>" in inline_html(boxes, options=PSEUDO)


def test_placeholders_cannot_be_forged_and_many_openings_cost_one_pass() -> None:
    """The placeholder's secret is drawn per process: text shaped like juice's own placeholder (or
    ours with another secret) is left alone. An opening without a closing ends the search."""
    protected, sources = code_blocks.protect("JUICE_CODE_BLOCK_0_ pwcb000000000000x0z {{a}}", (("{{", "}}"),))
    assert sources == ["{{a}}"]
    assert code_blocks.restore(protected, sources) == "JUICE_CODE_BLOCK_0_ pwcb000000000000x0z {{a}}"
    # 200,000 openings without a closing: nothing protected (a quadratic search would take minutes)
    text = "{{ <% " * 200_000
    assert code_blocks.protect(text, code_blocks.DEFAULT_CODE_BLOCKS) == (text, [])


# --- <style> blocks are removed before selectors are matched, as juice does ---


def test_a_style_block_in_the_body_is_nobodys_sibling() -> None:
    out = inline_html("<body><style>p:first-child { color: blue }</style><p>a</p><p>b</p></body>")
    assert '<p style="color: blue;">a</p><p>b</p>' in out


# --- inlinePseudoElements: ::before and ::after as spans ---


def test_before_and_after_become_the_first_and_last_child() -> None:
    css = "a::before { content: '> '; color: red } a:after { content: \"!\" } a { color: blue }"
    out = inline_html(f"<style>{css}</style><a href='#'>Go</a>", options=PSEUDO)
    boxes = '<span style="color: red;">&gt; </span>Go<span>!</span>'
    assert _body(out) == f'<a href="#" style="color: blue;">{boxes}</a>'


def test_box_cascade_url_content_and_attr() -> None:
    css = """i::before { content: 'x' } i.b::before { content: attr(title) ' & more' }
    b::after { content: url('dot.png'); width: 20px } br::before { content: 'void' }
    em::before { color: red }"""
    html = '<i class="b" title="T &lt;1&gt;">i</i><b>b</b><br><em>e</em>'
    out = _body(inline_html(f"<style>{css}</style>{html}", options=PSEUDO))
    assert '<i class="b" title="T <1>"><span>T &lt;1&gt; &amp; more</span>i</i>' in out
    assert '<b>b<img style="width: 20px;" src="dot.png" width="20"></b>' in out  # an img like any other
    assert out.endswith("<br><em>e</em>")  # no box on a void element, nor without content


def test_counters_follow_css_scoping() -> None:
    css = """ol { counter-reset: item 10 } li { counter-increment: item }
    li::before { content: counter(item) '. ' } li.r::before { content: counter(item, upper-roman) ') ' }
    li.a::after { content: ' (' counter(item, lower-alpha) ')' }"""
    html = "<ol><li>a</li><li class='r'>b</li><li class='a'>c</li></ol><ol><li>d</li></ol>"
    out = _body(inline_html(f"<style>{css}</style>{html}", options=PSEUDO))
    texts = re.findall(r"<span>([^<]*)</span>", out)
    assert texts == ["11. ", "XII) ", "13. ", " (m)", "11. "]


def test_box_content_reads_variables_from_ancestors() -> None:
    css = """.card { --label: 'New' } .card p::before { content: var(--label) ': ' }
    p::after { content: var(--none, x) }"""
    html = "<div class='card'><p>x</p></div>"
    out = _body(inline_html(f"<style>{css}</style>{html}", options=PSEUDO))
    assert "<p><span>New: </span>x<span>x</span></p>" in out


def test_box_text_is_escaped_so_css_cannot_write_markup() -> None:
    css = "p::before { content: '<script>alert(1)</script>' }"
    out = inline_html(f"<style>{css}</style><p>x</p>", options=PSEUDO)
    assert "<script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out


def test_without_the_option_before_and_after_rules_are_dropped() -> None:
    out = inline_html("<style>p::before { content: 'x'; color: red } p { margin: 0 }</style><p>y</p>")
    assert '<p style="margin: 0;">y</p>' in out and "before" not in out and "<span" not in out


# --- var(): the nearest ancestor that sets the custom property, as juice's findVariableValue walks ---


def test_var_is_resolved_from_the_nearest_ancestor_that_sets_it() -> None:
    css = """:root { --fg: black } .dark { --fg: white; --bg: #000 } .card { --fg: red }
    p { color: var(--fg); background: var(--bg, none) }"""
    html = "<div class='dark'><p>a</p><div class='card'><p>b</p></div></div><p>c</p>"
    out = inline_html(f"<style>{css}</style>{html}")
    styles = re.findall(r'<p style="([^"]*)"', out)
    assert styles == [
        "color: white;background: #000;",
        "color: red;background: #000;",
        "color: black;background: none;",
    ]
    assert "--fg" not in _body(out)  # custom properties are resolved, not written (juice)


def test_var_reads_an_ancestors_own_style_and_an_unstyled_element_is_resolved_too() -> None:
    html = '<div style="--accent: #f60"><p class="x">a</p><span style="color: var(--accent)">b</span></div>'
    out = inline_html(f"<style>.x {{ color: var(--accent) }}</style>{html}")
    assert '<div style="--accent: #f60">' in out  # no rule matched it: left as written
    assert '<p class="x" style="color: #f60;">' in out
    assert '<span style="color: #f60;">' in out


def test_without_resolving_var_and_custom_properties_are_written_as_they_are() -> None:
    out = inline_html(
        "<style>.x { --a: 1px; margin: var(--a) }</style><p class='x'>a</p>",
        options=InlineOptions(resolve_css_variables=False),
    )
    assert '<p class="x" style="--a: 1px;margin: var(--a);">' in out


# --- xmlMode: XHTML output ---


def test_xml_mode_closes_void_elements_only() -> None:
    html = (
        "<style>img { width: 10px }</style><p>a<br>b<img src='x.png'></p><div></div>"
        "<!-- <br> --><script>'<br>'</script>"
    )
    out = inline_html(html, options=InlineOptions.from_juice({"xmlMode": True}))
    assert '<p>a<br/>b<img src="x.png" style="width: 10px;" width="10"/></p><div></div>' in out
    assert "<!-- <br> -->" in out and "<script>'<br>'</script>" in out
    assert "<br>" in inline_html(html).replace("<!-- <br> -->", "").replace("'<br>'", "x")


def test_juice_option_names_for_the_new_switches() -> None:
    options = InlineOptions.from_juice(
        {"inlinePseudoElements": True, "xmlMode": True, "webResources": {"images": 8}, "url": "./"}
    )
    assert options.inline_pseudo_elements and options.xml_mode


def test_style_text_inside_title_or_script_is_neither_inlined_nor_removed() -> None:
    html = (
        "<html><head><title>Use <style> tags</title><style>p { color: red }</style></head>"
        "<body><p>x</p><script>var s = '<style>p { margin: 0 }</style>';</script></body></html>"
    )
    out = inline_html(html)
    assert "<title>Use &lt;style&gt; tags</title>" in out and '<p style="color: red;">x</p>' in out
    assert "<script>var s = '<style>p { margin: 0 }</style>';</script>" in out


# --- inlineDuplicateProperties, data-juice-duplicates, data-juice-important ---

DUPLICATES_CSS = (
    "<style>.a { background: black; color: red !important } p.a { background: rgba(0,0,0,.5) }</style>"
)


def test_duplicate_properties_from_every_rule_for_progressive_enhancement() -> None:
    html = f'{DUPLICATES_CSS}<p class="a">x</p>'
    assert _body(inline_html(html)) == '<p class="a" style="background: rgba(0,0,0,.5);color: red;">x</p>'
    every = _body(inline_html(html, options=InlineOptions.from_juice({"inlineDuplicateProperties": True})))
    assert every == '<p class="a" style="background: black;background: rgba(0,0,0,.5);color: red;">x</p>'


def test_data_juice_attributes_switch_duplicates_and_important_per_element_and_go() -> None:
    html = (
        f'{DUPLICATES_CSS}<p class="a" data-juice-duplicates>x</p>'
        '<p class="a" data-juice-important="true">y</p>'
        '<p class="a" data-juice-duplicates="false" data-juice-important="false">z</p>'
        "<b data-juice-important>w</b>"
    )
    out = _body(
        inline_html(html, options=InlineOptions(inline_duplicate_properties=True, preserve_important=True))
    )
    assert out == (
        '<p class="a" style="background: black;background: rgba(0,0,0,.5);color: red !important;">x</p>'
        '<p class="a" style="background: black;background: rgba(0,0,0,.5);color: red !important;">y</p>'
        '<p class="a" style="background: rgba(0,0,0,.5);color: red;">z</p><b>w</b>'
    )
    plain = _body(inline_html(html))
    assert plain.startswith(
        '<p class="a" style="background: black;background: rgba(0,0,0,.5);color: red;">x</p>'
    )
    assert '<p class="a" style="background: rgba(0,0,0,.5);color: red !important;">y</p>' in plain
    assert "data-juice" not in plain


# --- preservedSelectors, preserveLayers ---


def test_preserved_selectors_are_inlined_and_kept_in_source_order() -> None:
    css = """.keep { color: green } @media (max-width: 600px) { .keep { color: blue !important } }
    .other, .keep-too { margin: 0 } a:hover, .keep { color: red }"""
    options = InlineOptions.from_juice({"preservedSelectors": ["keep"]})
    out = inline_html(f"<style>{css}</style><p class='keep keep-too'>x</p>", options=options)
    head = out.partition("</head>")[0]
    kept = [
        head.index(rule)
        for rule in (".keep { color: green; }", "@media", ".other, .keep-too", "a:hover, .keep")
    ]
    assert kept == sorted(kept) and head.count(".keep { color: green; }") == 1
    assert '<p class="keep keep-too" style="margin: 0;color: red;">' in out
    assert ".other" not in inline_html(f"<style>{css}</style><p>x</p>").partition("</head>")[0]


def test_layers_are_kept_unless_switched_off() -> None:
    css = "@layer base, theme; @layer base { p { color: red } } p { margin: 0 }"
    out = inline_html(f"<style>{css}</style><p>x</p>")
    assert "@layer base, theme;" in out and "@layer base {" in out and '<p style="margin: 0;">' in out
    off = inline_html(
        f"<style>{css}</style><p>x</p>", options=InlineOptions.from_juice({"preserveLayers": False})
    )
    assert "@layer" not in off


# --- juice's ignore comments ---


def test_ignore_comments_set_css_aside_in_place() -> None:
    css = """.a { color: red }
    /* juice start ignore */ .b { color: pink } /* juice end ignore */
    .c { margin: 0; /* juice ignore next */ padding: 1px }
    /* juice ignore next */ .d { color: navy }
    .e { border: 0 }"""
    out = inline_html(f"<style>{css}</style><p class='a b c d e'>x</p>")
    assert '<p class="a b c d e" style="color: red;margin: 0;border: 0;">' in out
    head = out.partition("</head>")[0]
    kept = [head.index(text) for text in (".b { color: pink }", "padding: 1px }", ".d { color: navy }")]
    assert kept == sorted(kept) and "juice ignore next" in head and ".e" not in head and ".a" not in head


def test_a_rule_with_an_ignored_declaration_is_kept_alone() -> None:
    css = ".a { color: red } .c { margin: 0; /* juice ignore next */ padding: 1px; border: 0 }"
    out = inline_html(f"<style>{css}</style><p class='a c'>x</p>")
    assert '<p class="a c" style="color: red;margin: 0;border: 0;">' in out
    assert out.partition("</head>")[0].partition("<style>")[2].strip().startswith(".c {")


def test_hostile_nesting_and_directives_stay_linear() -> None:
    """Counters nest with their elements (juice copies them per element): only the innermost few of a
    name are kept, so 4000 nested resets cost little; directives are found in one scan."""
    css = "div { counter-reset: c; counter-increment: c 2 } div::before { content: counter(c) }"
    nested = f"<style>{css}</style>" + "<div>" * 4000 + "x" + "</div>" * 4000
    out = inline_html(nested, options=PSEUDO)
    assert out.count("<span>2</span>") == 4000
    directives = (
        ".a { color: red; /* juice ignore next */ margin: 0 } /* juice ignore next */ .b { x: y } " * 20_000
    )
    assert 'style="color: red;"' in inline_html("<p class='a b'>x</p>", directives)


def test_a_stylesheet_ignored_from_its_first_comment_is_kept_whole() -> None:
    css = "/* juice ignore */ p { color: red } @media print { p { color: blue } }"
    out = inline_html(f"<style>{css}</style><p>x</p>")
    assert "<p>x</p>" in out and css in out
    assert ".x" in inline_html("<p>x</p>", "/* juice ignore */ .x { color: red }")  # extra CSS too


def test_remove_inlined_selectors_keeps_only_what_matched_nothing() -> None:
    """With removeStyleTags off, removeInlinedSelectors leaves in <style> the selectors no element
    matched; rules juice keeps whole (state first, preservedSelectors, at-rules) stay whole."""
    css = (
        "p, .none { color: red } a:hover, p { color: blue } .keep, .x { margin: 0 }"
        " @media print { p { color: black } } .gone { border: 0 }"
    )
    options = InlineOptions.from_juice(
        {"removeStyleTags": False, "removeInlinedSelectors": True, "preservedSelectors": ["keep"]}
    )
    out = inline_html(f"<style>{css}</style><p class='x gone'>t</p>", options=options)
    head = out.partition("</head>")[0]
    kept = [
        ".none { color: red; }",
        "a:hover, p { color: blue; }",
        ".keep, .x { margin: 0; }",
        "@media print",
    ]
    assert [head.index(rule) for rule in kept] == sorted(head.index(rule) for rule in kept)
    assert ".gone" not in head and "p, .none" not in head
    assert '<p class="x gone" style="color: blue;margin: 0;border: 0;">' in out
    whole = inline_html(
        f"<style>{css}</style><p class='x gone'>t</p>", options=InlineOptions(remove_style_tags=False)
    )
    assert css in whole


def test_kept_pseudo_class_rules_can_be_made_important() -> None:
    """addImportantToPseudoClasses: a:hover in <style> must beat the colour inlined on the link."""
    css = (
        "a { color: red } a:hover, .x { color: blue; background: url('a;b') !important }"
        " p::first-line { color: red } @media (max-width: 9px) { a:focus { outline: 0 } .y { margin: 0 } }"
    )
    out = inline_html(
        f"<style>{css}</style><a href='#'>x</a>",
        options=InlineOptions.from_juice({"addImportantToPseudoClasses": True}),
    )
    head = out.partition("</head>")[0]
    assert "a:hover, .x { color: blue !important; background: url('a;b') !important; }" in head
    assert "p::first-line { color: red; }" in head and "a:focus { outline: 0 !important; }" in head
    assert ".y { margin: 0; }" in head and '<a href="#" style="color: red;">' in out
    default = inline_html(f"<style>{css}</style><a href='#'>x</a>")
    assert "a:hover, .x { color: blue; " in default and "outline: 0;" in default
