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

The first message with a stylesheet pays for every rule it matches and every distinct tag, so both are
cheap in Python: a matched rule becomes, once, a list of entries with one int key each and the text they
write; an element concatenates its rules' entries in cascade order (rules ranked, important ones last) and
takes the last entry of each property, with C-level dict operations and no sort (:func:`_cascade`).
"""

from __future__ import annotations

import functools
import html
import operator
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

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
_OWN: Final = -1  # the "sheet" of the element's own style attribute, in a cascade key
_ATTRIBUTE_ELEMENTS: Final = SIZED_ELEMENTS | TABLE_ELEMENTS  # the only tags given derived attributes
_ATTRIBUTE_PROPERTIES: Final = frozenset({"width", "height", *STYLE_TO_ATTRIBUTE})  # what they derive from
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

# A cascade key packs (importance and origin, ids, classes, types, sheet, position) into one int, each
# field 40 bits wide, so that comparing keys compares those fields in turn: the bigger key wins, and is
# written later. Origin is 0 for rules and 1 for the element's own style; importance adds 2.
_FIELD: Final = 40
_IMPORTANT: Final = 2 << 5 * _FIELD
_ORDER: Final = 2 * _FIELD  # key >> _ORDER: importance and specificity alone, without source order
# A declaration in the cascade: (key, property, its text in the style attribute, value, important, the
# earlier declarations of the property in its group, see _Group). The text is written once per rule,
# escaped; "" when it is never written, None when var() must be resolved.
_Entry = tuple[int, str, str | None, str, bool, tuple["_Entry", ...]]
_PROPERTY: Final = operator.itemgetter(1)
_RANK: Final = operator.attrgetter("rank")
_MIXED: Final = operator.attrgetter("mixed")
_REPEATS: Final = operator.attrgetter("repeats")
_IMPORTANT_RUN: Final = operator.attrgetter("important")
_IS_IMPORTANT: Final = operator.itemgetter(4)
_NOT_PLAIN: Final = re.compile(r"[\"&(]")  # see _plain
_MARKER_RULE: Final = f"%s{{{MARKER}%d:1}}\n"  # a selector and its rule number: the marker stylesheet


def _base(origin: int, specificity: tuple[int, int, int], sheet: int) -> int:
    """The key of a declaration at position 0 (not important) of a rule or of the element's own style."""
    ids, classes, types = specificity
    key = (((origin << _FIELD | ids) << _FIELD | classes) << _FIELD | types) << _FIELD
    return (key | sheet + 1) << _FIELD  # the own style's sheet, -1, becomes 0


_OWN_BASE: Final = _base(1, (0, 0, 0), _OWN)


class _Group:
    """The cascade entries of a matched rule (or of an element's own style): in source order, and split
    into runs in cascade order.

    Within a group keys rise with the position, important ones above the rest, so its normal and its
    important entries are each in cascade order as written; ``rank`` orders groups among themselves. A
    property repeated with one importance (fallbacks: ``margin: 0; Margin: 0``) is all written when the
    group wins it, so its last entry carries the others (:func:`_with_companions`); a property repeated
    with both importances leaves the group ``mixed``, for :func:`_chains`.
    """

    __slots__ = ("by_property", "entries", "important", "mixed", "normal", "ordered", "rank", "repeats")

    def __init__(self, entries: list[_Entry], rank: int) -> None:
        self.rank = rank
        properties = list(map(_PROPERTY, entries))
        self.repeats = len(set(properties)) != len(properties)
        self.mixed = self.repeats and _with_companions(entries)
        self.entries = entries
        if any(map(_IS_IMPORTANT, entries)):
            self.normal = [entry for entry in entries if not entry[4]]
            self.important = [entry for entry in entries if entry[4]]
            self.ordered = self.normal + self.important
            properties = list(map(_PROPERTY, self.ordered))
        else:
            self.normal = self.ordered = entries
            self.important = []
        # when it is the only group (and not mixed): its winners in cascade order, and the last by property
        self.by_property = dict(zip(properties, self.ordered, strict=True))


def _with_companions(entries: list[_Entry]) -> bool:
    """Give the last entry of each repeated property the earlier ones; True if some repeat mixes
    importances (then the first ones may lose to another group while the last wins)."""
    indices: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        indices.setdefault(entry[1], []).append(index)
    mixed = False
    for repeated in indices.values():
        if len(repeated) > 1:
            earlier = tuple(entries[index] for index in repeated[:-1])
            mixed = mixed or any(entry[4] != entries[repeated[-1]][4] for entry in earlier)
            entries[repeated[-1]] = (*entries[repeated[-1]][:5], earlier)
    return mixed


def _entries(
    declarations: Iterable[tuple[str, str, bool, int]],
    base: int,
    options: InlineOptions,
    *,
    own: bool = False,
    plain: bool = False,
) -> list[_Entry]:
    """Cascade entries of ``declarations``, their text written as the options say (excluded ones left out).

    ``plain``: see :func:`_plain`; only content and custom properties are then written differently.
    """
    if options.excluded_properties:
        declarations = [decl for decl in declarations if decl[0] not in options.excluded_properties]
    important_base = base | _IMPORTANT
    resolving, preserve = options.resolve_css_variables, options.preserve_important
    if plain:
        return [
            (important_base | position if important else base | position, name,
             _text(name, value, False, own, resolving) if name == "content" or name[:2] == "--"
             else f"{name}: {value};", value, important, ())
            for name, value, important, position in declarations
        ]  # fmt: skip
    return [
        (important_base | position if important else base | position, name,
         _text(name, value, important and preserve, own, resolving), value, important, ())
        for name, value, important, position in declarations
    ]  # fmt: skip


def _plain(source: str | tuple[str, ...], options: InlineOptions) -> bool:
    """Whether a rule body holds nothing that :func:`_text` writes differently from ``name: value;``, but
    for the properties it checks by name (content, custom properties): no ``"``, ``&`` or ``(`` (var()),
    and no ``!important`` to keep."""
    return (
        isinstance(source, str)
        and _NOT_PLAIN.search(source) is None
        and not (options.preserve_important and "!" in source)
    )


def _text(name: str, value: str, important: bool, own: bool, resolving: bool) -> str | None:
    """``name: value;`` for the style attribute, escaped; "" if never written, None if it needs var()."""
    if name == "content" or (resolving and not own and name[:2] == "--"):
        return ""  # content only means something on ::before/::after; variables are resolved instead
    if resolving and "(" in value and _VAR.search(value):
        return None
    if important or _DOUBLE_QUOTE in value or "&" in value or "&" in name:
        return _written(name, value, important)
    return f"{name}: {value};"


def _written(name: str, value: str, important: bool) -> str:
    text = f"{name}: {value.replace(_DOUBLE_QUOTE, _SINGLE_QUOTE)}{' !important' if important else ''};"
    return _escape(text) if "&" in text or _DOUBLE_QUOTE in text else text


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
    rules: dict[int, _Group] = field(default_factory=dict)
    cache: dict[tuple[str, str], tuple[str, list[tuple[str, str]]]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def rule(self, index: int) -> _Group:
        rule = self.rules.get(index)
        if rule is None:
            body = self.bodies[index]
            base = _base(0, specificity(self.selectors[index]), self.sheet_of[index])
            entries = _entries(body.read(), base, self.options, plain=_plain(body.source, self.options))
            rule = self.rules[index] = _Group(entries, base | body.first_position)
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
    marker_css = "".join(map(_MARKER_RULE.__mod__, zip(selectors, range(len(selectors)), strict=True)))
    if var_styles and options.resolve_css_variables:  # one past the last rule: no rule of its own
        marker_css += f'[style*="var(" i]{{{MARKER}{len(selectors)}:1}}\n'
    root_variables: dict[str, str] = {}
    if ":root" in selectors or "html" in selectors:
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
    count, materialise = len(plan.selectors), plan.rule
    numbers = sorted(set(map(int, _MARKER_ID.findall(style))))
    rules = [materialise(number) for number in numbers if number < count]
    own = _own_declarations(_MARKER_ID.sub("", style))  # css-inline writes the markers first
    if name in NON_VISUAL or not rules:  # juice never styles these, nor elements no rule matched
        return _unmatched(name, own, plan, resolve=not rules and name not in NON_VISUAL), []
    options = plan.options
    own_group = _Group(_entries(own, _OWN_BASE, options, own=True), _OWN_BASE) if own else None
    winners, last = _cascade(own_group, rules)
    texts = [entry[2] for entry in winners]
    if None in texts:  # var() to resolve (never when variables are left alone)
        variables, preserve = _variables(last, plan), options.preserve_important
        texts = [
            _written(prop, _resolve(value, variables), important and preserve) if text is None else text
            for (_, prop, text, value, important, _) in winners
        ]
    attributes = _attributes(name, last, plan) if name in _ATTRIBUTE_ELEMENTS else []
    return "".join(filter(None, texts)), [(attr, _escape(value)) for attr, value in attributes]


def _own_declarations(own_style: str) -> list[Declaration]:
    """The declarations of an element's own style attribute (as css-inline wrote it: HTML-escaped)."""
    if not own_style or own_style.isspace():
        return []
    texts = split_declarations(html.unescape(own_style))
    return [decl for position, text in enumerate(texts) if (decl := parse_declaration(text, position))]


def _unmatched(name: str, own: Sequence[Declaration], plan: CascadePlan, *, resolve: bool) -> str:
    """The own style of an element no rule styles, as written; its var() resolved if ``resolve``."""
    resolve = resolve and plan.options.resolve_css_variables
    seen = _own_variables(own, plan) if resolve else {}  # marked for its var() alone: resolve it
    written = "".join(
        f"{d.name}: {_resolve(d.value, seen) if resolve else d.value}{' !important' if d.important else ''};"
        for d in own
    )
    return _escape(written)


def _own_variables(own: Sequence[Declaration], plan: CascadePlan) -> dict[str, str]:
    """The custom properties an element sees when no rule matched it: its own, else the root's."""
    own_variables = {decl.name: decl.value for decl in own if decl.name.startswith("--")}
    return {**plan.root_variables, **own_variables}


def _cascade(own: _Group | None, rules: list[_Group]) -> tuple[list[_Entry], dict[str, _Entry]]:
    """(the winning entries in cascade order, the final one per property), ``rules`` in source order.

    Per property the winner is the biggest key (importance, specificity, source order), with its
    companions (see :class:`_Group`). Put in cascade order group by group, the entries give each
    property's winner as its last entry; a property repeated with mixed importances needs
    :func:`_chains`.
    """
    if own is None and len(rules) == 1 and not rules[0].mixed:
        return rules[0].ordered, rules[0].by_property
    groups = [*rules] if own is None else [*rules, own]
    if any(map(_MIXED, groups)):
        return _chains([group.entries for group in ([own, *rules] if own else rules)])
    groups.sort(key=_RANK)  # the own style ranks above every rule
    entries = [entry for group in groups for entry in group.normal]
    if any(map(_IMPORTANT_RUN, groups)):
        entries += [entry for group in groups for entry in group.important]
    properties = list(map(_PROPERTY, entries))
    last = dict(zip(properties, entries, strict=True))  # the last entry of each property
    winners = list(map(last.__getitem__, reversed(dict.fromkeys(reversed(properties)))))
    if any(map(_REPEATS, groups)):
        companions = [entry for winner in winners for entry in winner[5]]
        if companions:
            winners = sorted(winners + companions)
    return winners, last


def _chains(groups: Sequence[list[_Entry]]) -> tuple[list[_Entry], dict[str, _Entry]]:
    """:func:`_cascade` when a group repeats a property with both importances: per property, the
    winning group's declarations of it that were not below the best so far when read, in order."""
    chains: dict[str, tuple[int, list[_Entry]]] = {}
    for group, entries in enumerate(groups):  # the element's own first, then rules in source order
        for entry in entries:
            current = chains.get(entry[1])
            if current is None:
                chains[entry[1]] = (group, [entry])
            elif entry[0] >> _ORDER >= current[1][-1][0] >> _ORDER:  # ties go to the later one, as in CSS
                if current[0] == group:
                    current[1].append(entry)
                else:
                    chains[entry[1]] = (group, [entry])
    winners = sorted([entry for _, chain in chains.values() for entry in chain])
    return winners, {prop: chain[-1] for prop, (_, chain) in chains.items()}


def _variables(last: dict[str, _Entry], plan: CascadePlan) -> dict[str, str]:
    """The custom properties an element sees: those set on it (by its style or a rule), then the root's."""
    own = {prop: entry[3] for prop, entry in last.items() if prop[:2] == "--"}
    return {**plan.root_variables, **own} if own else plan.root_variables


def _attributes(tag: str, last: dict[str, _Entry], plan: CascadePlan) -> list[tuple[str, str]]:
    """HTML attributes juice derives from the winning values (for clients that ignore CSS sizes)."""
    if last.keys().isdisjoint(_ATTRIBUTE_PROPERTIES):
        return []
    options = plan.options

    def final(prop: str) -> str | None:
        entry = last.get(prop)
        if entry is None:
            return None
        value = entry[3]
        if options.resolve_css_variables and "(" in value:
            return _resolve(value, _variables(last, plan))
        return value

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
