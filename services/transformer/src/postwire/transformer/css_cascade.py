"""The cascade, per element: which declarations of the matching rules end up in its style attribute.

css-inline (Rust) does the selector matching. It is handed one tiny rule per selector whose only
declaration is a marker custom property (``.card .title { --pw-rule-7: 1 }``), so every element comes
back with the list of rules that match it, next to its own inline style. This module then decides, as
juice does, what the element's style attribute says:

- per property, the winner is the declaration with the highest (importance, specificity, source order),
  the element's own style attribute counting as the most specific rule;
- when the winning rule declares the property several times (``color: red; color: rgba(...)``), all of
  them are kept in order, so clients that reject the last value fall back to the one before;
- declarations are written in cascade order, so a shorthand and its longhands resolve as in a browser
  (``padding: 10px`` then ``padding-top: 0`` leaves padding-top 0);
- ``!important`` is dropped from the written values unless asked for (see inline_options);
- ``var()`` is resolved (see inline_options); custom properties from rules are left out, and those of the
  element's own style attribute kept, since its descendants may inherit them in clients with var();
- width/height/bgcolor/align... attributes are derived for the elements juice derives them for.

Parsing css-inline's serialised output with a regex is safe because its serialiser is regular: every
attribute value is double-quoted with ``"`` escaped, and ``<`` in text is escaped. Results are cached per
distinct tag, because a template's elements repeat the same classes.
"""

from __future__ import annotations

import functools
import html
import operator
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from postwire.transformer.css_sheet import (
    Body,
    Declaration,
    Sheet,
    closing_paren,
    parse_declaration,
    specificity,
    split_top_level,
)
from postwire.transformer.inline_options import InlineOptions

# random per process: a customer's own style="--pw-…" (or one in a comment) can never pass for a marker
MARKER: Final = f"--pw-{secrets.token_hex(6)}-"
NON_VISUAL: Final = frozenset({"head", "title", "base", "link", "style", "meta", "script", "noscript"})
SIZED_ELEMENTS: Final = frozenset({"table", "td", "th", "img"})
TABLE_ELEMENTS: Final = frozenset(
    {"table", "th", "tr", "td", "caption", "colgroup", "col", "thead", "tbody", "tfoot"}
)
STYLE_TO_ATTRIBUTE: Final = {
    "background-color": "bgcolor",
    "background-image": "background",
    "text-align": "align",
    "vertical-align": "valign",
}
_INLINE_SPECIFICITY: Final = (1, 0, 0, 0)
_CASCADE_ORDER: Final = operator.itemgetter(0, 1)  # of an entry: (key, order)
_OWN: Final = -1  # the "sheet" of the element's own style attribute, in a cascade entry's order
_ATTRIBUTE_ELEMENTS: Final = SIZED_ELEMENTS | TABLE_ELEMENTS  # the only tags given derived attributes
_MAX_CACHED_TAGS: Final = 5_000  # distinct (tag, style) pairs per plan; a template has a few hundred

_ATTR: Final = r"(?:\s+[^\s\"'>/=]+(?:=\"[^\"]*\")?)"
_MARKED_TAG: Final = re.compile(
    rf"<([a-zA-Z][^\s/>]*)({_ATTR}*?)\s+style=\"([^\"]*{MARKER}[^\"]*)\"({_ATTR}*)(\s*/?)>"
)
_MARKER_ID: Final = re.compile(rf"{MARKER}([0-9]+):[^;]*(?:;|$)")
_PIXELS: Final = re.compile(r"\d+(?:\.\d+)?px")
_PERCENT: Final = re.compile(r"\d+(?:\.\d+)?%")
_GRADIENT: Final = re.compile(r"(?:linear|radial)-gradient\(", re.I)
_URL: Final = re.compile(r"""^url\(\s*(["']?)([^"']+)\1\s*\)$""", re.I)
_VAR: Final = re.compile(r"var\(", re.I)
_DOUBLE_QUOTE: Final = '"'  # juice writes values with single quotes: they need no escaping in style="..."
_SINGLE_QUOTE: Final = "'"

# (importance + specificity as 4 numbers, source order): bigger wins, and sorts later
_Key = tuple[int, int, int, int]
_Entry = tuple[_Key, tuple[int, int], Declaration]


class _Rule(NamedTuple):
    """A matched rule's declarations as cascade entries (property, (key, order, declaration))."""

    entries: tuple[tuple[str, _Entry], ...]
    has_variables: bool  # whether it sets a custom property


def _entries(
    specificity: _Key, sheet: int, declarations: Sequence[Declaration]
) -> tuple[tuple[str, _Entry], ...]:
    origin, ids, classes, types = specificity
    return tuple(
        (decl.name, ((origin + 2 * decl.important, ids, classes, types), (sheet, decl.position), decl))
        for decl in declarations
    )


@dataclass(slots=True)
class CascadePlan:
    """The rules of one set of stylesheets, numbered as their markers are, and what they produced.

    A rule's specificity and declarations are worked out (:meth:`rule`) only when it matches an element.
    """

    selectors: list[str]
    bodies: list[Body]
    sheet_of: list[int]  # per rule, the index of its stylesheet (cascade order)
    marker_css: str
    options: InlineOptions
    root_variables: dict[str, str]
    rules: dict[int, _Rule] = field(default_factory=dict)
    cache: dict[tuple[str, str], tuple[str, list[tuple[str, str]]]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def rule(self, index: int) -> _Rule:
        rule = self.rules.get(index)
        if rule is None:
            entries = _entries(
                (0, *specificity(self.selectors[index])),
                self.sheet_of[index],
                self.bodies[index].declarations,
            )
            rule = self.rules[index] = _Rule(entries, any(prop[:2] == "--" for prop, _ in entries))
        return rule


def build_plan(sheets: Sequence[Sheet], options: InlineOptions, *, var_styles: bool = False) -> CascadePlan:
    """Number the inlinable rules of ``sheets`` (in cascade order) and write their marker stylesheet.

    ``var_styles``: also mark the elements whose own style uses var(), so that it is resolved (when
    ``options`` resolve variables) whether or not a rule matches them.
    """
    selectors: list[str] = []
    bodies: list[Body] = []
    sheet_of: list[int] = []
    for index, sheet in enumerate(sheets):
        selectors += sheet.selectors
        bodies += sheet.bodies
        sheet_of += [index] * len(sheet.selectors)
    marker_css = "".join([f"{selector}{{{MARKER}{number}:1}}\n" for number, selector in enumerate(selectors)])
    if var_styles and options.resolve_css_variables:  # one past the last rule: no rule of its own
        marker_css += f'[style*="var(" i]{{{MARKER}{len(selectors)}:1}}\n'
    root_variables: dict[str, str] = {}
    for number, selector in enumerate(selectors):
        if selector == ":root" or selector == "html":
            declarations = bodies[number].declarations
            root_variables.update((d.name, d.value) for d in declarations if d.name.startswith("--"))
    return CascadePlan(selectors, bodies, sheet_of, marker_css, options, root_variables)


def apply_cascade(document: str, plan: CascadePlan) -> str:
    """Rewrite every style attribute css-inline marked: the cascaded declarations, then attributes."""
    cache, tags = plan.cache, plan.tags
    if len(cache) > _MAX_CACHED_TAGS or len(tags) > _MAX_CACHED_TAGS:
        cache.clear()
        tags.clear()

    def replace(match: re.Match[str]) -> str:
        whole = match.group()
        done = tags.get(whole)  # the same tag again (rows of a table): one lookup
        if done is None:
            done = tags[whole] = rewrite(match)
        return done

    def rewrite(match: re.Match[str]) -> str:
        tag, before, style, after, end = match.groups()
        key = (tag, style)  # the other attributes (a personalised href) do not change the result
        restyled = cache.get(key)
        if restyled is None:
            restyled = cache[key] = _restyle(tag.lower(), style, plan)
        written, attributes = restyled
        style_attr = f' style="{written}"' if written else ""
        if not attributes:
            return f"<{tag}{before}{style_attr}{after}{end}>"
        replaced = _attribute_pattern(tuple(attr for attr, _ in attributes))
        before, after = replaced.sub("", before) if before else "", replaced.sub("", after) if after else ""
        added = "".join(f' {attr}="{value}"' for attr, value in attributes)
        return f"<{tag}{before}{style_attr}{after}{added}{end}>"

    return _MARKED_TAG.sub(replace, document)


def _restyle(name: str, style: str, plan: CascadePlan) -> tuple[str, list[tuple[str, str]]]:
    """(the style attribute's new value, attributes to set), both escaped for a double-quoted value."""
    count = len(plan.selectors)
    rule_ids = sorted({number for text in _MARKER_ID.findall(style) if (number := int(text)) < count})
    own_style = _MARKER_ID.sub("", style)  # css-inline writes the markers first, then the element's own
    own: list[Declaration] = []
    if own_style and not own_style.isspace():
        for position, text in enumerate(split_declarations(html.unescape(own_style))):
            if (decl := parse_declaration(text, position)) is not None:
                own.append(decl)
    if name in NON_VISUAL or not rule_ids:  # juice never styles these, nor elements no rule matched
        resolve = not rule_ids and name not in NON_VISUAL and plan.options.resolve_css_variables
        seen = _own_variables(own, plan) if resolve else {}  # marked for its var() alone: resolve it
        written = "".join(
            f"{d.name}: {_resolve(d.value, seen) if resolve else d.value}"
            f"{' !important' if d.important else ''};"
            for d in own
        )
        return _escape(written), []
    materialise = plan.rule
    rules = [materialise(number) for number in rule_ids]
    winners = cascade(own, rules, plan.options.excluded_properties)
    variables: dict[str, str] = {}
    if plan.options.resolve_css_variables:
        if any(rule.has_variables for rule in rules) or any(decl.name.startswith("--") for decl in own):
            variables = {**plan.root_variables, **_custom_properties(winners)}
        else:
            variables = plan.root_variables
    written = _style_text(winners, plan, variables)
    attributes = _attributes(name, winners, plan, variables) if name in _ATTRIBUTE_ELEMENTS else []
    return _escape(written), [(attr, _escape(value)) for attr, value in attributes]


def _own_variables(own: Sequence[Declaration], plan: CascadePlan) -> dict[str, str]:
    """The custom properties an element sees when no rule matched it: its own, else the root's."""
    own_variables = {decl.name: decl.value for decl in own if decl.name.startswith("--")}
    return {**plan.root_variables, **own_variables}


def cascade(
    own: Sequence[Declaration], rules: Iterable[_Rule], excluded: frozenset[str]
) -> dict[str, list[_Entry]]:
    """Per property, the winning declarations (several when the winning rule repeats the property)."""
    winners: dict[str, tuple[int, list[_Entry]]] = {}
    groups = [_entries(_INLINE_SPECIFICITY, _OWN, own)] if own else []
    groups += [rule.entries for rule in rules]
    for group, entries in enumerate(groups):
        for prop, entry in entries:
            if excluded and prop in excluded:
                continue
            current = winners.get(prop)
            if current is None:
                winners[prop] = (group, [entry])
            elif entry[0] >= current[1][-1][0]:  # ties go to the later declaration, as in CSS
                if current[0] == group:
                    current[1].append(entry)
                else:
                    winners[prop] = (group, [entry])
    return {prop: entries for prop, (_, entries) in winners.items()}


def _style_text(winners: dict[str, list[_Entry]], plan: CascadePlan, variables: dict[str, str]) -> str:
    """The style attribute: winners in cascade order; custom properties only if from the element's own."""
    options = plan.options
    resolving = options.resolve_css_variables
    preserve_important = options.preserve_important
    parts = []
    for _, order, decl in sorted(
        [entry for chain in winners.values() for entry in chain], key=_CASCADE_ORDER
    ):
        name = decl.name
        if name == "content" or (resolving and name.startswith("--") and order[0] != _OWN):
            continue  # content only means something on ::before/::after; variables are resolved below
        value = _resolve(decl.value, variables) if resolving and "(" in decl.value else decl.value
        if decl.important and preserve_important:
            value += " !important"
        parts.append(f"{name}: {value.replace(_DOUBLE_QUOTE, _SINGLE_QUOTE)};")
    return "".join(parts)  # css-inline's form, "a: 1;b: 2;": a byte per declaration saved over juice's


def _attributes(
    tag: str, winners: dict[str, list[_Entry]], plan: CascadePlan, variables: dict[str, str]
) -> list[tuple[str, str]]:
    """HTML attributes juice derives from the winning values (for clients that ignore CSS sizes)."""
    options = plan.options

    def final(prop: str) -> str | None:
        chain = winners.get(prop)
        if not chain:
            return None
        value = chain[-1][2].value
        return _resolve(value, variables) if options.resolve_css_variables and "(" in value else value

    out: list[tuple[str, str]] = []
    for dimension, wanted in (
        ("width", options.apply_width_attributes),
        ("height", options.apply_height_attributes),
    ):
        value = final(dimension) if wanted and tag in SIZED_ELEMENTS else None
        if value is None:
            continue
        if _PIXELS.fullmatch(value):
            out.append((dimension, value[:-2]))
        elif value == "auto" or (tag in TABLE_ELEMENTS and _PERCENT.fullmatch(value)):
            out.append((dimension, value))
    if options.apply_attributes_table_elements and tag in TABLE_ELEMENTS:
        for prop, attr in STYLE_TO_ATTRIBUTE.items():
            value = final(prop)
            if value is None:
                continue
            if attr == "background":
                value = _URL.sub(r"\2", value)
            if not _GRADIENT.search(value):
                out.append((attr, value))
    return out


def _custom_properties(winners: dict[str, list[_Entry]]) -> dict[str, str]:
    """The custom properties set on the element (by its style or a rule): each ``--name``'s winning value."""
    return {prop: chain[-1][2].value for prop, chain in winners.items() if prop.startswith("--")}


def _resolve(value: str, variables: dict[str, str], depth: int = 0) -> str:
    """``var(--x, fallback)`` replaced by the value of --x, else by the fallback, else left as written."""
    if depth > 8 or not _VAR.search(value):
        return value
    out: list[str] = []
    pos = 0
    for match in _VAR.finditer(value):
        if match.start() < pos:
            continue
        end = closing_paren(value, match.end())
        name, comma, fallback = value[match.end() : end].partition(",")
        found = variables.get(name.strip())
        if found is not None:
            replacement = _resolve(found, variables, depth + 1)
        elif comma:
            replacement = _resolve(fallback.strip(), variables, depth + 1)
        else:
            replacement = value[match.start() : end + 1]
        out.append(value[pos : match.start()] + replacement)
        pos = end + 1
    out.append(value[pos:])
    return "".join(out)


def split_declarations(style: str) -> list[str]:
    """``a: 1; b: url(x;y)`` -> ``["a: 1", "b: url(x;y)"]``: semicolons in brackets or strings stay."""
    if "(" not in style and '"' not in style and "'" not in style:
        return [part for part in style.split(";") if part.strip()]
    return split_top_level(style, ";")


@functools.lru_cache(maxsize=64)
def _attribute_pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    """Matches the attributes ``names`` (which are about to be set again) in a run of attributes."""
    return re.compile(rf'\s+(?:{"|".join(names)})(?:="[^"]*")?(?=\s|$)', re.I)


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;")
