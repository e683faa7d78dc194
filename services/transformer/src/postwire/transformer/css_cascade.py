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
- width/height/bgcolor/align... attributes are derived for the elements juice derives them for.

Parsing css-inline's serialised output with a regex is safe because its serialiser is regular: every
attribute value is double-quoted with ``"`` escaped, and ``<`` in text is escaped. Results are cached per
distinct tag, because a template's elements repeat the same classes.
"""

from __future__ import annotations

import functools
import html
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from postwire.transformer.css_sheet import Declaration, Sheet, parse_declaration
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
_MAX_CACHED_TAGS: Final = 5_000  # distinct (tag, style) pairs per plan; a template has a few hundred

_ATTR: Final = r"(?:\s+[^\s\"'>/=]+(?:=\"[^\"]*\")?)"
_MARKED_TAG: Final = re.compile(
    rf"<([a-zA-Z][^\s/>]*)({_ATTR}*?)\s+style=\"([^\"]*{MARKER}[^\"]*)\"({_ATTR}*)(\s*/?)>"
)
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


@dataclass(frozen=True, slots=True)
class _Rule:
    specificity: _Key
    sheet: int
    declarations: tuple[Declaration, ...]


@dataclass(slots=True)
class CascadePlan:
    """The rules of one set of stylesheets, numbered as their markers are, and what they produced."""

    rules: list[_Rule]
    marker_css: str
    options: InlineOptions
    root_variables: dict[str, str]
    cache: dict[tuple[str, str], tuple[str, list[tuple[str, str]]]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def build_plan(sheets: Sequence[Sheet], options: InlineOptions) -> CascadePlan:
    """Number the inlinable rules of ``sheets`` (in cascade order) and write their marker stylesheet."""
    rules: list[_Rule] = []
    marker_css: list[str] = []
    root_variables: dict[str, str] = {}
    for index, sheet in enumerate(sheets):
        for rule in sheet.rules:
            marker_css.append(f"{rule.selector}{{{MARKER}{len(rules)}:1}}\n")
            rules.append(_Rule((0, *rule.specificity), index, rule.declarations))
            if rule.selector in (":root", "html"):
                root_variables.update((d.name, d.value) for d in rule.declarations if d.name.startswith("--"))
    return CascadePlan(rules, "".join(marker_css), options, root_variables)


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
    own: list[Declaration] = []
    rule_ids: list[int] = []
    for position, text in enumerate(split_declarations(html.unescape(style))):
        prop = text.partition(":")[0].strip()
        if prop.startswith(MARKER):
            rule_id = prop[len(MARKER) :]
            if rule_id.isdecimal() and int(rule_id) < len(plan.rules):
                rule_ids.append(int(rule_id))
        elif (decl := parse_declaration(text, position)) is not None:
            own.append(decl)
    if name in NON_VISUAL:  # juice never styles these; keep what the element had
        winners: dict[str, list[_Entry]] = {}
        written = "".join(f"{d.name}: {d.value}{' !important' if d.important else ''};" for d in own)
    else:
        winners = cascade(own, (plan.rules[i] for i in sorted(rule_ids)), plan.options.excluded_properties)
        written = _style_text(winners, plan)
    attributes = _attributes(name, winners, plan) if winners else []
    return _escape(written), [(attr, _escape(value)) for attr, value in attributes]


def cascade(
    own: Sequence[Declaration], rules: Iterable[_Rule], excluded: frozenset[str]
) -> dict[str, list[_Entry]]:
    """Per property, the winning declarations (several when the winning rule repeats the property)."""
    winners: dict[str, tuple[int, list[_Entry]]] = {}
    groups = [(_INLINE_SPECIFICITY, -1, tuple(own))]
    groups += [(rule.specificity, rule.sheet, rule.declarations) for rule in rules]
    for group, (specificity, sheet, declarations) in enumerate(groups):
        for decl in declarations:
            if decl.name in excluded:
                continue
            key = (specificity[0] + 2 * decl.important, *specificity[1:])
            entry: _Entry = (key, (sheet, decl.position), decl)
            current = winners.get(decl.name)
            if current is None:
                winners[decl.name] = (group, [entry])
            elif key >= current[1][-1][0]:  # ties go to the later declaration, as in CSS
                if current[0] == group:
                    current[1].append(entry)
                else:
                    winners[decl.name] = (group, [entry])
    return {prop: entries for prop, (_, entries) in winners.items()}


def _style_text(winners: dict[str, list[_Entry]], plan: CascadePlan) -> str:
    options = plan.options
    entries = sorted((entry for chain in winners.values() for entry in chain), key=lambda e: (e[0], e[1]))
    variables = _variables(winners, plan) if options.resolve_css_variables else {}
    parts = []
    for _, _, decl in entries:
        if decl.name == "content" or (options.resolve_css_variables and decl.name.startswith("--")):
            continue  # content only means something on ::before/::after; variables are resolved below
        value = _resolve(decl.value, variables) if variables else decl.value
        if decl.important and options.preserve_important:
            value += " !important"
        parts.append(f"{decl.name}: {value.replace(_DOUBLE_QUOTE, _SINGLE_QUOTE)};")
    return "".join(parts)  # css-inline's form, "a: 1;b: 2;": a byte per declaration saved over juice's


def _attributes(tag: str, winners: dict[str, list[_Entry]], plan: CascadePlan) -> list[tuple[str, str]]:
    """HTML attributes juice derives from the winning values (for clients that ignore CSS sizes)."""
    options = plan.options
    variables = _variables(winners, plan) if options.resolve_css_variables else {}

    def final(prop: str) -> str | None:
        chain = winners.get(prop)
        if not chain:
            return None
        value = chain[-1][2].value
        return _resolve(value, variables) if variables else value

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


def _variables(winners: dict[str, list[_Entry]], plan: CascadePlan) -> dict[str, str]:
    """Custom properties visible to the element: its own, else the document root's (:root, html)."""
    own = {prop: chain[-1][2].value for prop, chain in winners.items() if prop.startswith("--")}
    return {**plan.root_variables, **own} if own or plan.root_variables else {}


def _resolve(value: str, variables: dict[str, str], depth: int = 0) -> str:
    """``var(--x, fallback)`` replaced by the value of --x, else by the fallback, else left as written."""
    if depth > 8 or not _VAR.search(value):
        return value
    out: list[str] = []
    pos = 0
    for match in _VAR.finditer(value):
        if match.start() < pos:
            continue
        end = _closing(value, match.end())
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


def _closing(text: str, pos: int) -> int:
    depth = 1
    for index in range(pos, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    return len(text)


def split_declarations(style: str) -> list[str]:
    """``a: 1; b: url(x;y)`` -> ``["a: 1", "b: url(x;y)"]``: semicolons in brackets or strings stay."""
    if "(" not in style and '"' not in style and "'" not in style:
        return [part for part in style.split(";") if part.strip()]
    out: list[str] = []
    depth = start = 0
    quote = ""
    for index, char in enumerate(style):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == ";" and depth == 0:
            out.append(style[start:index])
            start = index + 1
    out.append(style[start:])
    return [part for part in out if part.strip()]


@functools.lru_cache(maxsize=64)
def _attribute_pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    """Matches the attributes ``names`` (which are about to be set again) in a run of attributes."""
    return re.compile(rf'\s+(?:{"|".join(names)})(?:="[^"]*")?(?=\s|$)', re.I)


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;")
