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
- ``var()`` is resolved (see inline_options) from the custom properties the element sets or inherits
  from its ancestors (:mod:`postwire.transformer.css_context` walks the document when an ancestor other
  than the root sets one); custom properties are then left out of the style attribute, as juice does;
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

from postwire.transformer import code_blocks
from postwire.transformer.css_sheet import (
    AFTER,
    BEFORE,
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
# elements without content or end tag (html5ever writes no end tag for them)
VOID_ELEMENTS: Final = frozenset(
    {"area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "img", "input", "keygen",
     "link", "meta", "param", "source", "track", "wbr"}
)  # fmt: skip
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

# an attribute as html5ever writes it: its name as the tokenizer read it (quotes in a name are a parse
# error it accepts), its value double-quoted with " escaped
ATTRIBUTE: Final = r"(?:\s+[^\s/>=]+(?:=\"[^\"]*\")?)"
MARKED_TAG: Final = re.compile(
    rf"<([a-zA-Z][^\s/>]*)({ATTRIBUTE}*?)\s+style=\"([^\"]*{MARKER}[^\"]*)\"({ATTRIBUTE}*)(\s*/?)>"
)
# juice's per-element switches, removed from every element of the output
JUICE_CONTROL: Final = re.compile(r'\s+data-juice-(duplicates|important)(?:="([^"]*)")?(?=[\s/>]|$)', re.I)
MARKER_ID: Final = re.compile(rf"{MARKER}([0-9]+):[^;]*(?:;|$)")
_PIXELS: Final = re.compile(r"\d+(?:\.\d+)?px")
_PERCENT: Final = re.compile(r"\d+(?:\.\d+)?%")
_GRADIENT: Final = re.compile(r"(?:linear|radial)-gradient\(", re.I)
_URL: Final = re.compile(r"""^url\(\s*(["']?)([^"']+)\1\s*\)$""", re.I)
_VAR: Final = re.compile(r"var\(", re.I)
_CUSTOM_DECLARATION: Final = re.compile(r"(?:^|[;{])\s*--")
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
_KEY: Final = operator.itemgetter(0)
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
             _text(name, value, False, resolving) if name == "content" or name[:2] == "--"
             else f"{name}: {value};", value, important, ())
            for name, value, important, position in declarations
        ]  # fmt: skip
    return [
        (important_base | position if important else base | position, name,
         _text(name, value, important and preserve, resolving), value, important, ())
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


def _text(name: str, value: str, important: bool, resolving: bool) -> str | None:
    """``name: value;`` for the style attribute, escaped; "" if never written, None if it needs var()."""
    if name == "content" or (resolving and name[:2] == "--"):
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
    Rules from ``pseudo_from`` on are ::before/::after rules (``pseudo``: which box each styles), there
    only with inlinePseudoElements. ``context``: the document must be walked element by element
    (:mod:`postwire.transformer.css_context`), for boxes, counters or custom properties set below the root.
    """

    selectors: list[str]  # as written: they rank the rules
    bodies: list[Body]
    sheet_of: list[int]  # per rule, the index of its stylesheet (cascade order)
    marker_css: str
    options: InlineOptions
    root_variables: dict[str, str]
    pseudo_from: int
    pseudo: list[str]
    context: bool
    counters: bool
    rules: dict[int, _Group] = field(default_factory=dict)
    cache: dict[tuple[str, str], tuple[str, list[tuple[str, str]]]] = field(default_factory=dict)
    styled: dict[tuple[str, str], Styled] = field(default_factory=dict)
    in_context: dict[tuple[int, int], tuple[str, list[tuple[str, str]]]] = field(default_factory=dict)
    variable_sets: dict[tuple[tuple[str, str], ...], int] = field(default_factory=dict)
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
    matched, pseudo_from, pseudo = list(selectors), len(selectors), []
    if options.inline_pseudo_elements:
        for index, sheet in enumerate(sheets):
            for rule in sheet.pseudo:
                matched.append(rule.selector)
                selectors.append(rule.full)
                bodies.append(rule.body)
                sheet_of.append(index)
                pseudo.append(rule.element)
    marker_css = "".join(map(_MARKER_RULE.__mod__, zip(matched, range(len(matched)), strict=True)))
    resolving = var_styles and options.resolve_css_variables
    if resolving:  # one past the last rule: no rule of its own
        marker_css += f'[style*="var(" i]{{{MARKER}{len(selectors)}:1}}\n'
    root_variables: dict[str, str] = {}
    if ":root" in selectors or "html" in selectors:
        for number, selector in enumerate(selectors):
            if selector == ":root" or selector == "html":
                declarations = bodies[number].declarations
                root_variables.update((d.name, d.value) for d in declarations if d.name.startswith("--"))
    scoped = resolving and any(
        _sets_custom_property(body) for selector, body in zip(selectors, bodies, strict=True)
        if selector != ":root" and selector != "html"
    )  # fmt: skip
    counters = bool(pseudo) and any("counter" in _source_text(body) for body in bodies)
    return CascadePlan(
        selectors, bodies, sheet_of, marker_css, options, root_variables,
        pseudo_from, pseudo, bool(pseudo) or scoped, counters,
    )  # fmt: skip


def _source_text(body: Body) -> str:
    return body.source if isinstance(body.source, str) else ";".join(body.source)


def _sets_custom_property(body: Body) -> bool:
    """Whether a rule declares a custom property (``--x: ...``; a ``var(--x)`` does not count)."""
    text = _source_text(body)
    return "--" in text and _CUSTOM_DECLARATION.search(text) is not None


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
        tag, _, style, _, _ = match.groups()
        controls = juice_controls(match.group(), plan.options)
        # the other attributes (a personalised href) do not change the result, but juice's controls
        key = (tag, style) if controls is None else (tag, f"{style}\0{controls}")
        restyled = cache.get(key)
        if restyled is None:
            styled = style_of(tag.lower(), style, plan, controls)
            restyled = cache[key] = written_style(styled, plan, plan.root_variables)
        return write_tag(match, *restyled)

    return MARKED_TAG.sub(replace, document)


def write_tag(match: re.Match[str], written: str, attributes: list[tuple[str, str]]) -> str:
    """A tag matched by :data:`MARKED_TAG` with its style attribute (and derived attributes) replaced."""
    tag, before, _, after, end = match.groups()
    style_attr = f' style="{written}"' if written else ""
    if not attributes:
        return f"<{tag}{before}{style_attr}{after}{end}>"
    replaced = _attribute_pattern(tuple(attr for attr, _ in attributes))
    before, after = replaced.sub("", before) if before else "", replaced.sub("", after) if after else ""
    added = "".join(f' {attr}="{value}"' for attr, value in attributes)
    return f"<{tag}{before}{style_attr}{after}{added}{end}>"


@dataclass(slots=True)
class Styled:
    """An element's cascade (or a ::before/::after box's), before its place in the document is known.

    ``own_style``: its own style attribute as css-inline wrote it, used when no rule matched (``winners``
    None); ``variables``: the custom properties it sets, which it and its descendants see.
    """

    name: str
    own_style: str
    own: list[Declaration]
    winners: list[_Entry] | None
    last: dict[str, _Entry]
    variables: dict[str, str]
    preserve: bool  # keep !important
    before: Styled | None = None
    after: Styled | None = None

    def value(self, prop: str) -> str | None:
        """The winning value of ``prop`` (without !important), None if no rule sets it."""
        entry = self.last.get(prop)
        return entry[3] if entry is not None else None


def juice_controls(tag: str, options: InlineOptions) -> tuple[bool, bool] | None:
    """(inline duplicate properties, keep !important) for an element, juice's options as its
    ``data-juice-duplicates`` / ``data-juice-important`` attributes override them (present or any
    value but "false": on); None when it has neither."""
    if "data-juice-" not in tag:
        return None
    duplicates, important = options.inline_duplicate_properties, options.preserve_important
    for name, value in JUICE_CONTROL.findall(tag):
        if name.lower() == "duplicates":
            duplicates = value != "false"
        else:
            important = value != "false"
    return duplicates, important


def style_of(name: str, style: str, plan: CascadePlan, controls: tuple[bool, bool] | None = None) -> Styled:
    """The cascade of a tag css-inline marked: its rules (``style`` lists their markers) and own style;
    ``controls``: see :func:`juice_controls`."""
    numbers = sorted(set(map(int, MARKER_ID.findall(style))))
    own_style = MARKER_ID.sub("", style).strip()  # css-inline writes the markers first
    own = _own_declarations(own_style)
    count, materialise, pseudo_from = len(plan.selectors), plan.rule, plan.pseudo_from
    options = plan.options
    duplicates, preserve = controls or (options.inline_duplicate_properties, options.preserve_important)
    if name in NON_VISUAL:  # juice never styles these
        return Styled(name, own_style, own, None, {}, {}, preserve)
    rules = [materialise(number) for number in numbers if number < pseudo_from]
    if not rules:
        styled = Styled(name, own_style, own, None, {}, _custom_properties(own), preserve)
    else:
        own_group = _Group(_entries(own, _OWN_BASE, options), _OWN_BASE) if own else None
        winners, last = _every_declaration(own_group, rules) if duplicates else _cascade(own_group, rules)
        variables = {prop: entry[3] for prop, entry in last.items() if prop[:2] == "--"}
        styled = Styled(name, own_style, own, winners, last, variables, preserve)
    if pseudo_from < count and name not in VOID_ELEMENTS:
        boxes = [(plan.pseudo[n - pseudo_from], materialise(n)) for n in numbers if pseudo_from <= n < count]
        styled.before = _box(BEFORE, [rule for kind, rule in boxes if kind == BEFORE], duplicates, preserve)
        styled.after = _box(AFTER, [rule for kind, rule in boxes if kind == AFTER], duplicates, preserve)
    return styled


def _box(kind: str, rules: list[_Group], duplicates: bool, preserve: bool) -> Styled | None:
    """The cascade of a ::before or ::after box from its rules (None without rules)."""
    if not rules:
        return None
    winners, last = _every_declaration(None, rules) if duplicates else _cascade(None, rules)
    variables = {prop: entry[3] for prop, entry in last.items() if prop[:2] == "--"}
    return Styled(kind, "", [], winners, last, variables, preserve)


def _every_declaration(own: _Group | None, rules: list[_Group]) -> tuple[list[_Entry], dict[str, _Entry]]:
    """juice's inlineDuplicateProperties: every declaration of every matching rule (and of the element's
    own style), in cascade order, for progressive enhancement across clients."""
    groups = rules if own is None else [*rules, own]
    entries = sorted((entry for group in groups for entry in group.entries), key=_KEY)
    return entries, dict(zip(map(_PROPERTY, entries), entries, strict=True))


def written_style(
    styled: Styled, plan: CascadePlan, inherited: dict[str, str]
) -> tuple[str, list[tuple[str, str]]]:
    """(the style attribute's new value, attributes to set), both escaped for a double-quoted value;
    ``inherited``: the custom properties the element's ancestors set."""
    if styled.winners is None:
        resolve = styled.name not in NON_VISUAL and plan.options.resolve_css_variables
        return _unmatched(styled, inherited, resolve=resolve), []
    preserve, resolving = styled.preserve, plan.options.resolve_css_variables
    if preserve == plan.options.preserve_important:
        texts = [entry[2] for entry in styled.winners]
    else:  # data-juice-important: the rules' texts were written for the other choice
        texts = [
            _text(prop, value, bang and preserve, resolving) for _, prop, _, value, bang, _ in styled.winners
        ]
    if None in texts:  # var() to resolve (never when variables are left alone)
        variables = _seen(styled, inherited)
        texts = [
            _written(prop, _resolve(value, variables), important and preserve) if text is None else text
            for text, (_, prop, _, value, important, _) in zip(texts, styled.winners, strict=True)
        ]
    attributes = _attributes(styled, plan, inherited) if styled.name in _ATTRIBUTE_ELEMENTS else []
    return "".join(filter(None, texts)), [(attr, _escape(value)) for attr, value in attributes]


def _seen(styled: Styled, inherited: dict[str, str]) -> dict[str, str]:
    """The custom properties an element sees: those it sets, then its ancestors'."""
    return {**inherited, **styled.variables} if styled.variables else inherited


def _own_declarations(own_style: str) -> list[Declaration]:
    """The declarations of an element's own style attribute (as css-inline wrote it: HTML-escaped)."""
    if not own_style or own_style.isspace():
        return []
    texts = split_declarations(html.unescape(own_style))
    return [decl for position, text in enumerate(texts) if (decl := parse_declaration(text, position))]


def _custom_properties(declarations: Sequence[Declaration]) -> dict[str, str]:
    return {decl.name: decl.value for decl in declarations if decl.name[:2] == "--"}


def _unmatched(styled: Styled, inherited: dict[str, str], *, resolve: bool) -> str:
    """The own style of an element no rule styles: as written, or with its var() resolved (juice leaves
    such elements alone, but a var() is no better for clients without var() support there)."""
    if not resolve or not any("var(" in decl.value.lower() for decl in styled.own):
        return styled.own_style
    seen = _seen(styled, inherited)
    written = "".join(
        f"{d.name}: {_resolve(d.value, seen)}{' !important' if d.important else ''};" for d in styled.own
    )
    return _escape(written)


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


def _attributes(styled: Styled, plan: CascadePlan, inherited: dict[str, str]) -> list[tuple[str, str]]:
    """HTML attributes juice derives from the winning values (for clients that ignore CSS sizes)."""
    tag, last = styled.name, styled.last
    if last.keys().isdisjoint(_ATTRIBUTE_PROPERTIES):
        return []
    options = plan.options

    def final(prop: str) -> str | None:
        entry = last.get(prop)
        if entry is None:
            return None
        value = entry[3]
        if options.resolve_css_variables and "(" in value:
            return _resolve(value, _seen(styled, inherited))
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
        if found is not None:  # its value may come from another element's style attribute
            replacement = code_blocks.moved(_resolve(found, variables, depth + 1))
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
