"""One stylesheet, split for inlining: rules an element's style attribute can hold, and CSS that must stay.

A style attribute holds plain declarations for one element, so some CSS cannot go there and is kept
for a <style> block instead: at-rules (@media, @font-face, @keyframes, @container...) and rules whose
selector depends on state (``a:hover``, ``:focus``, ``:checked``), kept as juice keeps them (see
:func:`_add_selectors`). ::before/::after rules are set apart (:class:`PseudoRule`) for juice's
inlinePseudoElements, which writes them as elements; CSS a juice ignore comment names is kept as
written (:mod:`postwire.transformer.css_ignore`). Everything else becomes an :class:`InlineRule`: one
selector (selector lists are split, because each selector has its own specificity), its declarations in
source order with their ``!important`` flags, and a position that keeps the cascade's source order.

CSS nesting is flattened here (``.card { & .title {...} }`` becomes ``.card .title``; an @media inside
a rule becomes an @media around that rule), so the selector engine sees plain selectors.

The parser finds rules and declarations without validating values, which are copied as written. It is
built for the first message with a given stylesheet, which pays for parsing it, so it leaves as little as
it can to Python code run per character or per rule: comments go in one regex pass, and a sheet whose
strings hold no ``{};()[]`` (nearly all) is cut at its ``}`` with ``str.split``, each piece a rule (pieces
with brackets are checked by one regex). An @media holding only such rules is written out directly; other
blocks that hold blocks (nesting, @supports in @media), and sheets with other strings, go through a
tokenizer over strings, brackets and ``{};``. Declarations (``str.split`` again, when the body has no
brackets or strings) and specificity are worked out when the cascade first needs them (:class:`Body`,
:class:`InlineRule`), since most rules of a framework's stylesheet match nothing in a given message.
Parsing is cached by CSS text, because a sender's templates repeat.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from postwire.transformer.css_ignore import IGNORED_STATEMENT, set_aside

# Pseudo-classes that depend on user state or navigation, and pseudo-elements other than ::before and
# ::after: an inline style cannot express them, so they are not inlined, and a rule whose first selector
# has one stays in <style> (where clients that support them apply it). This is juice's ``ignoredPseudos``
# (with the variants its substring test also catches: :focus-within, :placeholder-shown). ``:link`` is in
# the list although it could be decided statically: an unvisited-link colour in a style attribute would
# also paint visited links.
JUICE_STATE_PSEUDOS: Final = frozenset(
    {
        "hover", "active", "focus", "focus-within", "focus-visible", "visited", "link",
        "first-letter", "first-line", "marker", "selection", "placeholder", "placeholder-shown",
    }
)  # fmt: skip
# State that juice does not list (it would inline ``:checked`` for a box checked in the source, and drop
# ``:target`` rules): interactive email relies on them, so they are never inlined and each such selector
# is kept in <style>, wherever it stands in its list. Vendor pseudos (``::-webkit-...``) count here too.
INTERACTIVE_PSEUDOS: Final = frozenset({"target", "checked", "any-link", "backdrop", "file-selector-button"})
STATEFUL_PSEUDOS: Final = JUICE_STATE_PSEUDOS | INTERACTIVE_PSEUDOS
# What a selector needs (selector_kind): nothing, state, interactive state, or a generated box that
# juice's inlinePseudoElements writes as a <span> (``a::before`` matches ``a``, then a span inside it).
PLAIN: Final = ""
STATE: Final = "state"
INTERACTIVE: Final = "interactive"
BEFORE: Final = "before"
AFTER: Final = "after"

# Kinds of kept CSS, each switchable by an option (see inline_options.InlineOptions).
MEDIA: Final = "media"
FONT_FACE: Final = "font-face"
KEYFRAMES: Final = "keyframes"
CONTAINER: Final = "container"
LAYER: Final = "layer"
PSEUDO: Final = "pseudo"
OTHER_AT_RULE: Final = "at-rule"
IGNORED: Final = "ignored"  # set aside by a juice ignore comment: always kept, never inlined
_KINDS: Final = {
    "media": MEDIA, "font-face": FONT_FACE, "keyframes": KEYFRAMES, "container": CONTAINER, "layer": LAYER
}  # fmt: skip
# Blocks nested deeper are dropped (no real stylesheet comes close; a hostile one must not exhaust the stack).
MAX_NESTING: Final = 32

# comments (and the <!-- --> that old templates wrap their CSS in), and the strings they cannot start in;
# every branch starts with a literal character, so the regex engine skips quickly to the next candidate
_NOISE: Final = re.compile(r"/\*.*?(?:\*/|\Z)|<!--|-->|\"(?:\\.|[^\"\\])*\"?|'(?:\\.|[^'\\])*'?", re.S)
_COMMENTS: Final = re.compile(r"/\*.*?(?:\*/|\Z)|\"(?:\\.|[^\"\\])*\"?|'(?:\\.|[^'\\])*'?", re.S)  # no <!--
_BARE_COMMENT: Final = re.compile(r"/\*[^*]*(?:\*+[^*/][^*]*)*(?:\*+/|\**\Z)")  # a comment, strings not known
# strings, and the characters that give CSS its structure (once comments are gone)
_TOKEN: Final = re.compile(r"\"(?:\\.|[^\"\\])*\"?|'(?:\\.|[^'\\])*'?|[{}();\[\]]", re.S)
# A rule with no block inside, read in one match: its prelude and its body, where strings and brackets
# (three levels of parentheses: ``var(--a, var(--b, rgb(0, 0, 0)))``) may hold ``;``. Anything else
# (an unterminated string, deeper brackets, a brace inside brackets) fails the match and goes through the
# tokenizer. Each part is written as "plain run, then (group, plain run)*", which one text can match in
# one way only, so a failing match backtracks in linear time.
_STR: Final = r"\"[^\"\\]*(?:\\.[^\"\\]*)*\"|'[^'\\]*(?:\\.[^'\\]*)*'"


def _run(plain: str, groups: str) -> str:
    return rf"{plain}*(?:(?:{groups}){plain}*)*"


_IN_BRACKETS: Final = r"[^()\[\]{}\"']"
_SQUARE: Final = rf"\[{_run(_IN_BRACKETS, _STR)}\]"  # ``[class*=x]``, also inside ``:not(...)``
_PAREN1: Final = rf"\({_run(_IN_BRACKETS, f'{_STR}|{_SQUARE}')}\)"
_PAREN2: Final = rf"\({_run(_IN_BRACKETS, f'{_STR}|{_SQUARE}|{_PAREN1}')}\)"
_PAREN3: Final = rf"\({_run(_IN_BRACKETS, f'{_STR}|{_SQUARE}|{_PAREN2}')}\)"
_GROUPS: Final = f"{_STR}|{_PAREN3}|{_SQUARE}"
_PRELUDE: Final = _run(r"[^{};()\[\]\"']", _GROUPS)
_BODY: Final = _run(r"[^{}()\[\]\"']", _GROUPS)
_FLAT_RULE: Final = re.compile(rf"({_PRELUDE})\{{({_BODY})\}}", re.S)
_SIMPLE_RULE: Final = re.compile(r"([^{};()\[\]\"']*)\{([^{}()\[\]\"']*)\}")  # most rules: tried first
_SIMPLE_RUN: Final = re.compile(r"(?:[^{};()\[\]\"']*\{[^{}()\[\]\"']*\})+")  # several in a row
# a body whose first declaration is plainly one (most bodies): no need to split it to know it holds one
_PLAIN_DECLARATION: Final = re.compile(r"\s*[A-Za-z-][\w-]*\s*:\s*[^\s;!]")
# the declarations of a flat rule's body (a ``;`` outside strings and brackets ends one); empty matches too
_DECLARATION_TEXT: Final = re.compile(_run(r"[^;()\[\]\"']", _GROUPS), re.S)
_BRACKETS_WITHOUT_BRACES: Final = re.compile(_run(r"[^()\[\]\"']", _GROUPS))  # closed, no brace inside


def _parts(separator: str) -> re.Pattern[str]:
    """A part of a ``separator`` list and the separator after it (none at the end): split_top_level."""
    plain = "[^" + separator + "()\\[\\]\"']"
    return re.compile(rf"({_run(plain, _GROUPS)})({separator}|\Z)")


_TOP_LEVEL_PARTS: Final = {separator: _parts(separator) for separator in ",;"}
_SELECTOR_CARE: Final = re.compile(r"[(\[\"']")  # a selector list that str.split(",") cannot split
_NEEDS_CARE: Final = re.compile(r"[()\[\]\"']")  # a body that str.split(";") cannot split
IMPORTANT: Final = re.compile(r"\s*!\s*important\s*$", re.I)  # a declaration's !important, at its end
_STRING: Final = re.compile(r"\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'")
# a pseudo-class or pseudo-element in STATEFUL_PSEUDOS, or a vendor one (::-webkit-..., :-moz-...)
_STATEFUL_PSEUDO: Final = re.compile(
    rf"::?(?:-[a-zA-Z]|(?:{'|'.join(sorted(STATEFUL_PSEUDOS))})(?![\w-]))", re.I
)
_INTERACTIVE_PSEUDO: Final = re.compile(
    rf"::?(?:-[a-zA-Z]|(?:{'|'.join(sorted(INTERACTIVE_PSEUDOS))})(?![\w-]))", re.I
)
_GENERATED_PSEUDO: Final = re.compile(r"::?(before|after)(?![\w-])", re.I)
_SPACE: Final = re.compile(r"\s+")
_ESCAPE: Final = re.compile(r"\\.")
# at-rules whose block holds style rules (nesting inside them is flattened); others are copied as written
_GROUPING_AT_RULES: Final = frozenset({"media", "supports", "container", "layer", "document", "scope"})


class Declaration(NamedTuple):
    """``name: value`` as written (the value without ``!important``), with its place in the sheet."""

    name: str
    value: str
    important: bool
    position: int


class Body:
    """The declarations of one rule block, split and parsed the first time they are asked for.

    The selectors of a list share one body. ``source`` is the block's text between its braces, or its
    declaration texts already split; ``first_position`` numbers the declarations in sheet order.
    """

    __slots__ = ("_declarations", "_read", "first_position", "source")

    def __init__(self, source: str | tuple[str, ...], first_position: int) -> None:
        self.source = source
        self.first_position = first_position
        self._declarations: tuple[Declaration, ...] | None = None
        self._read: Sequence[tuple[str, str, bool, int]] | None = None

    @property
    def texts(self) -> tuple[str, ...]:
        if isinstance(self.source, str):
            self.source = tuple(_split_body(self.source))
        return self.source

    @property
    def declarations(self) -> tuple[Declaration, ...]:
        if self._declarations is None:
            if self._read is not None:
                self._declarations = tuple(map(Declaration._make, self._read))
            else:
                self._declarations = tuple(
                    decl
                    for offset, text in enumerate(self.texts)
                    if (decl := parse_declaration(text, self.first_position + offset)) is not None
                )
        return self._declarations

    def read(self) -> Sequence[tuple[str, str, bool, int]]:
        """The declarations as plain (name, value, important, position) tuples: the cascade reads each
        matched rule, and needs no :class:`Declaration` objects."""
        if self._read is None:
            source = self.source
            read = _read_declarations(source, self.first_position) if isinstance(source, str) else None
            self._read = read if read is not None else self.declarations
        return self._read


def _read_declarations(body: str, first_position: int) -> list[tuple[str, str, bool, int]] | None:
    """The declarations of ``body`` as :func:`_split_body` and :func:`parse_declaration` read them, without
    building the texts; None when it has brackets or strings (a ``;`` in them does not end a declaration)."""
    if _NEEDS_CARE.search(body) is not None:
        return None
    out: list[tuple[str, str, bool, int]] = []
    position = first_position  # counts the texts that are not blank, declarations or not
    for text in body.split(";"):
        name, colon, value = text.partition(":")
        if not colon:
            if text and not text.isspace():
                position += 1
            continue
        name = name.strip()
        if name and (name[0].isalpha() or name[0] in "-_*"):
            important = 0
            if "!" in value:
                value, important = IMPORTANT.subn("", value)
            value = value.strip()
            if value:
                out.append((_property_name(name), value, bool(important), position))
        position += 1
    return out


class InlineRule:
    """One selector and the declarations it gives the elements it matches (both worked out when asked)."""

    __slots__ = ("_specificity", "body", "selector")

    def __init__(self, selector: str, body: Body) -> None:
        self.selector = selector
        self.body = body
        self._specificity: tuple[int, int, int] | None = None

    @property
    def specificity(self) -> tuple[int, int, int]:
        if self._specificity is None:
            self._specificity = specificity(self.selector)
        return self._specificity

    @property
    def declarations(self) -> tuple[Declaration, ...]:
        return self.body.declarations


@dataclass(frozen=True, slots=True)
class KeptCss:
    """CSS text that stays in a <style> block, and which option decides whether it is kept.

    ``anchor``: how many inlinable selectors came before it in the sheet (where it stands among rules that
    are kept after all, juice's preservedSelectors); ``body``: the rule's, for a kept style rule.
    """

    kind: str
    text: str
    anchor: int = 0
    body: Body | None = None


class PseudoRule(NamedTuple):
    """A ::before/::after rule: ``selector`` finds the element, ``full`` (with the pseudo) ranks it."""

    selector: str
    full: str
    element: str  # BEFORE or AFTER
    body: Body


class Sheet:
    """A parsed stylesheet: what to inline and what to keep, both in source order.

    The inlinable rules are kept as two parallel lists (a selector, the body it shares with the other
    selectors of its list), which is all the marker stylesheet needs; :attr:`rules` builds objects.
    ::before/::after rules are apart (:attr:`pseudo`): only juice's inlinePseudoElements uses them.
    """

    __slots__ = ("bodies", "ignored", "kept", "pseudo", "selectors")

    def __init__(self) -> None:
        self.selectors: list[str] = []
        self.bodies: list[Body] = []
        self.kept: list[KeptCss] = []
        self.pseudo: list[PseudoRule] = []
        self.ignored: list[str] = []  # CSS set aside by juice's ignore comments (css_ignore), as written

    def keep(self, kind: str, text: str, body: Body | None = None) -> None:
        """Keep ``text`` for the <style> block, at the current place among the rules."""
        self.kept.append(KeptCss(kind, text, len(self.selectors), body))

    @property
    def rules(self) -> list[InlineRule]:
        return [
            InlineRule(selector, body) for selector, body in zip(self.selectors, self.bodies, strict=True)
        ]


@dataclass(slots=True)
class _Block:
    prelude: str
    items: list[_Item] = field(default_factory=list)
    has_blocks: bool = False  # whether some item is a _Block or a flat rule


# A block's items: declaration (or statement) texts, blocks, and flat rules as (prelude, body text), which
# become blocks only where one is needed (_flat_block).
_Item = str | _Block | tuple[str, str]


def _flat_block(item: tuple[str, str]) -> _Block:
    return _Block(item[0], [*_split_body(item[1])])


def _blocks(items: list[_Item]) -> list[str | _Block]:
    return [_flat_block(item) if isinstance(item, tuple) else item for item in items]


def _split_body(body: str) -> list[str]:
    parts = _DECLARATION_TEXT.findall(body) if _NEEDS_CARE.search(body) else body.split(";")
    return [text for part in parts if (text := part.strip())]


@functools.lru_cache(maxsize=64)
def parse_sheet(css: str) -> Sheet:
    """Split ``css`` into inlinable rules and kept CSS (cached: the result must not be changed)."""
    css, ignored = set_aside(css) if "juice" in css else (css, [])
    css = _without_comments(css)
    sheet = Sheet()
    sheet.ignored = ignored
    if not _read_pieces(sheet, css):
        sheet = Sheet()  # the tokenizer reads it all again, from the start
        sheet.ignored = ignored
        _read_items(sheet, _parse_blocks(css).items, [0])
    return sheet


def _without_comments(css: str) -> str:
    """``css`` with each comment (and ``<!--``, ``-->``) replaced by a space; strings are kept whole.

    A string may hold ``/*``, but when none is left outside comments once they are cut without looking for
    strings, none was there to hold one (the first difference would have left its quote behind).
    """
    html_comment = "<!--" in css or "-->" in css
    if "/*" not in css and not html_comment:
        return css
    bare = _BARE_COMMENT.sub(" ", css) if "/*" in css else css
    if '"' in bare or "'" in bare:
        return (_NOISE if html_comment else _COMMENTS).sub(_keep_strings, css)
    return bare.replace("<!--", " ").replace("-->", " ") if html_comment else bare


def _read_pieces(sheet: Sheet, css: str) -> bool:
    """Read ``css`` cut at each ``}``; False when it needs the tokenizer after all (``sheet`` is then spoilt).

    A piece with one ``{`` is a rule without nested blocks; blocks that hold blocks (@media, nesting) are
    gathered until they close and go through the tokenizer. Strings that hold ``{};()[]``, brackets that
    hold a brace or a ``;`` between statements, an unclosed block or a stray ``}`` send the whole sheet to
    the tokenizer, which reads them as before.
    """
    quoted = '"' in css or "'" in css
    if quoted and not _inert_strings(css):
        return False
    pieces = css.split("}")
    tail = pieces.pop()  # after the last "}": statements at most
    if "{" in tail:
        return False
    positions = [0]
    group: list[str] = []  # the pieces of a block that holds blocks
    depth = 0
    for piece in pieces:
        opened = piece.count("{")
        bracketed = "(" in piece or "[" in piece
        if bracketed and _BRACKETS_WITHOUT_BRACES.fullmatch(piece) is None:
            return False
        if not depth and opened == 1:
            if not _read_rule(sheet, piece, positions, careful=bracketed or quoted):
                return False
            continue
        depth += opened - 1
        if depth < 0:
            return False
        group.append(piece)
        if not depth:
            if not _keep_flat_group(sheet, group):
                _read_items(sheet, _parse_blocks("}".join(group) + "}").items, positions)
            group = []
    return not depth and _read_statements(sheet, tail.split(";"))


def _read_rule(sheet: Sheet, piece: str, positions: list[int], *, careful: bool) -> bool:
    """Add the rule ``prelude{body`` (statements before it too); ``careful``: the piece has brackets or
    strings, so its selector list is split by :func:`split_selectors`. False as :func:`_read_pieces`."""
    prelude, _, body = piece.partition("{")
    if ";" in prelude:
        *statements, prelude = prelude.split(";")
        if not _read_statements(sheet, statements):
            return False
    prelude = prelude.strip()  # whitespace inside is left as written: css-inline reads it alike
    if not prelude:
        return True
    if prelude[0] == "@":
        _add_at_rule(sheet, _flat_block((_squash(prelude), body)), None)
    elif (":" in prelude and selector_kind(prelude)) or _PLAIN_DECLARATION.match(body) is None:
        _add_flat_rule(sheet, split_selectors(_squash(prelude)), body, positions)
    else:  # the common case, _add_flat_rule without the stateful selectors and the odd bodies
        shared = Body(body, positions[0])
        positions[0] += body.count(";") + 1
        if "," not in prelude:
            listed = [prelude]
        elif careful:
            listed = split_selectors(prelude)
        else:  # split_selectors without looking for brackets and strings again
            listed = [selector for part in prelude.split(",") if (selector := part.strip())]
        sheet.selectors += listed
        sheet.bodies += [shared] * len(listed)
    return True


def _keep_flat_group(sheet: Sheet, pieces: list[str]) -> bool:
    """Keep a top-level @media (or other conditional group) that holds only flat rules, written as
    :func:`_add_at_rule` writes it, without the tokenizer; False for any other block."""
    head, *inner, last = pieces
    at_prelude, _, first = head.partition("{")
    at_prelude = _squash(at_prelude)
    bare = _at_name(at_prelude) if at_prelude.startswith("@") else ""
    if bare not in _GROUPING_AT_RULES or ";" in at_prelude or last.strip() or head.count("{") != 2:
        return False
    out: list[str] = []
    for piece in (first, *inner):
        prelude, _, body = piece.partition("{")
        if "{" in body or ";" in prelude or "@" in prelude:  # deeper blocks, declarations, at-rules
            return False
        texts = _split_body(body)
        listed = split_selectors(_squash(prelude))
        if texts and listed:
            out.append(f"{', '.join(listed)} {{ {'; '.join(texts)}; }}\n")
    if out:
        sheet.keep(_KINDS.get(bare, OTHER_AT_RULE), f"{at_prelude} {{\n{''.join(out)}}}")
    return True


def _inert_strings(css: str) -> bool:
    """Whether every string of ``css`` is closed and holds none of ``{};()[]`` (so cutting ignores them)."""
    bare = _STRING.sub("", css)
    return '"' not in bare and "'" not in bare and all(bare.count(c) == css.count(c) for c in "{};()[]")


def _read_statements(sheet: Sheet, texts: list[str]) -> bool:
    """Top-level statements: @import is kept, the rest dropped; False when a ``;`` may have cut brackets."""
    for text in texts:
        item = text.strip()
        if ("(" in item or "[" in item) and _BRACKETS_WITHOUT_BRACES.fullmatch(item) is None:
            return False
        _keep_statement(sheet, item)
    return True


def _keep_statement(sheet: Sheet, statement: str) -> None:
    """Keep an @import (the client may load it; we never do), a ``@layer a, b;`` order, or CSS a juice
    comment set aside."""
    if statement.startswith("@") and statement[1:7].lower() == "import":
        sheet.keep(OTHER_AT_RULE, statement + ";")
    elif statement.startswith("@") and _at_name(statement) == "layer":
        sheet.keep(LAYER, statement + ";")
    elif statement.startswith(IGNORED_STATEMENT):
        number = statement[len(IGNORED_STATEMENT) :]
        if number.isascii() and number.isdigit() and int(number) < len(sheet.ignored):
            sheet.keep(IGNORED, sheet.ignored[int(number)])


def _read_items(sheet: Sheet, items: list[_Item], positions: list[int]) -> None:
    """Add the top-level items of a block tree to ``sheet``; ``positions[0]`` numbers declarations."""
    selectors, bodies = sheet.selectors, sheet.bodies
    plain_declaration = _PLAIN_DECLARATION.match
    for item in items:
        if isinstance(item, tuple):
            prelude, text = item
            if prelude.startswith("@"):
                _add_at_rule(sheet, _flat_block(item), None)
            elif ":" in prelude or plain_declaration(text) is None:
                _add_flat_rule(sheet, split_selectors(prelude), text, positions)
            else:  # the common case, _add_flat_rule without the stateful selectors and the odd bodies
                body = Body(text, positions[0])
                positions[0] += text.count(";") + 1
                if "," in prelude:
                    listed = split_selectors(prelude)
                    selectors += listed
                    bodies += [body] * len(listed)
                elif prelude:
                    selectors.append(prelude)
                    bodies.append(body)
        elif isinstance(item, str):
            _keep_statement(sheet, item)
        elif item.prelude.startswith("@"):
            _add_at_rule(sheet, item, None)
        else:
            _add_style_rule(sheet, split_selectors(item.prelude), item, positions)


def _keep_strings(match: re.Match[str]) -> str:
    text = match.group()
    return text if text[0] in "\"'" else " "


def _parse_blocks(css: str) -> _Block:
    """The block tree of ``css`` (comments already gone): strings and bracketed text kept whole."""
    root = _Block("")
    stack = [root]
    depth = skipped = 0
    start = pos = 0  # css[start:] is the text since the last structural token
    simple_run, simple_rules = _SIMPLE_RUN.match, _SIMPLE_RULE.findall
    flat_rule, token_search = _FLAT_RULE.match, _TOKEN.search
    while True:
        if pos == start and not depth and not skipped and len(stack) <= MAX_NESTING:
            run = simple_run(css, pos)
            if run is not None:  # rules without brackets or strings, one after another: read at once
                found = simple_rules(css, pos, run.end())
                stack[-1].items += [(" ".join(prelude.split()), body) for prelude, body in found]
                stack[-1].has_blocks = True
                pos = start = run.end()
            flat = flat_rule(css, pos)
            if flat is not None:
                prelude, body = flat.groups()
                stack[-1].items.append((" ".join(prelude.split()), body))
                stack[-1].has_blocks = True
                pos = start = flat.end()
                continue
        match = token_search(css, pos)
        if match is None:
            break
        pos = match.end()
        token = match.group()
        if skipped:  # inside a block nested beyond MAX_NESTING: only its braces count
            if token == "{":
                skipped += 1
            elif token == "}":
                skipped -= 1
            start = pos
        elif token in ("(", "["):
            depth += 1
        elif token in (")", "]"):
            depth = max(0, depth - 1)
        elif depth or token[0] in "\"'":  # bracketed text, or a string
            pass
        elif token == "{" and len(stack) > MAX_NESTING:
            skipped, start = 1, pos
        elif token == "{":
            block = _Block(_squash(css[start : match.start()]))
            stack[-1].items.append(block)
            stack[-1].has_blocks = True
            stack.append(block)
            start = pos
        else:  # ";" or "}"
            _flush(stack[-1], css[start : match.start()])
            start = pos
            if token == "}" and len(stack) > 1:
                stack.pop()
    _flush(stack[-1], css[start:])
    return root


def _flush(block: _Block, text: str) -> None:
    text = text.strip()
    if text:
        block.items.append(text)


def _squash(text: str) -> str:
    return " ".join(text.split())  # str.split() and re's \s agree on what whitespace is


def _add_flat_rule(sheet: Sheet, selectors: list[str], body: str, positions: list[int]) -> None:
    """A rule without nested blocks: its body is split only if the cascade needs it."""
    first = positions[0]
    positions[0] = first + body.count(";") + 1  # at least as many as it has declarations: order is kept
    if _PLAIN_DECLARATION.match(body) is None and not any(_is_declaration(t) for t in _split_body(body)):
        return
    _add_selectors(sheet, selectors, Body(body, first))


def _add_selectors(sheet: Sheet, selectors: list[str], body: Body) -> None:
    """Add a rule's selectors where they belong: plain ones to inline, ::before/::after ones apart, and
    the rule to <style> as juice keeps it: whole (plain selectors too) when its first selector needs state
    (``a:hover, .x``), else not at all (``.x, a:hover`` loses its hover), but for INTERACTIVE ones."""
    kinds = [selector_kind(selector) if ":" in selector else PLAIN for selector in selectors]
    if not any(kinds):
        sheet.selectors += selectors
        sheet.bodies += [body] * len(selectors)
        return
    for selector, kind in zip(selectors, kinds, strict=True):
        if kind == PLAIN:
            sheet.selectors.append(selector)
            sheet.bodies.append(body)
        elif kind in (BEFORE, AFTER) and (target := without_pseudo_element(selector)):
            sheet.pseudo.append(PseudoRule(target, selector, kind, body))
    if kinds[0] in (STATE, INTERACTIVE):
        kept = selectors
    else:
        kept = [selector for selector, kind in zip(selectors, kinds, strict=True) if kind == INTERACTIVE]
    if kept:
        sheet.keep(PSEUDO, rule_text(kept, body), body)


def rule_text(selectors: Sequence[str], body: Body) -> str:
    """A style rule written for a <style> block: ``a, b { color: red; }``."""
    declarations = "".join(f"{n}: {v}{' !important' if bang else ''}; " for n, v, bang, _ in body.read())
    return f"{', '.join(selectors)} {{ {declarations}}}"


def _add_style_rule(sheet: Sheet, selectors: list[str], block: _Block, positions: list[int]) -> None:
    """Declarations of ``block`` for each selector, then its nested rules and at-rules, flattened."""
    texts = tuple(item for item in block.items if isinstance(item, str))
    first = positions[0]
    positions[0] += len(texts)
    if any(_is_declaration(text) for text in texts):
        _add_selectors(sheet, selectors, Body(texts, first))
    for item in block.items:
        if isinstance(item, tuple):
            if item[0].startswith("@"):
                _add_at_rule(sheet, _flat_block(item), selectors)
            else:
                _add_flat_rule(sheet, nest_selectors(selectors, split_selectors(item[0])), item[1], positions)
        elif isinstance(item, _Block):
            if item.prelude.startswith("@"):
                _add_at_rule(sheet, item, selectors)
            else:
                _add_style_rule(
                    sheet, nest_selectors(selectors, split_selectors(item.prelude)), item, positions
                )


def _add_at_rule(sheet: Sheet, block: _Block, parents: list[str] | None) -> None:
    bare = _at_name(block.prelude)
    kind = _KINDS.get(bare, OTHER_AT_RULE)
    if bare in _GROUPING_AT_RULES:
        body = _serialise_rules(block.items, parents)  # conditional groups hold rules: flatten them
    else:
        body = _serialise_verbatim(block.items)
    if body:
        sheet.keep(kind, f"{block.prelude} {{\n{body}}}")


def _at_name(prelude: str) -> str:
    """``@-webkit-keyframes x`` -> ``keyframes``: the at-keyword without its vendor prefix."""
    name = prelude[1:].split(None, 1)[0].split("(", 1)[0].lower() if len(prelude) > 1 else ""
    return re.sub(r"^-[a-z]+-", "", name)


def _serialise_rules(group: list[_Item], parents: list[str] | None) -> str:
    """Rules of a conditional group, nesting resolved against ``parents`` (the enclosing rule, if any)."""
    out: list[str] = []
    items = _blocks(group)
    declarations = [item for item in items if isinstance(item, str)]
    if declarations and parents:  # declarations directly in a nested @media apply to the parent rule
        out.append(f"{', '.join(parents)} {{ {'; '.join(declarations)}; }}\n")
    # Outside a rule they are invalid (browsers drop them), so they are dropped here too.
    for item in items:
        if not isinstance(item, _Block):
            continue
        if item.prelude.startswith("@"):
            grouping = _at_name(item.prelude) in _GROUPING_AT_RULES
            inner = _serialise_rules(item.items, parents) if grouping else _serialise_verbatim(item.items)
            if inner:
                out.append(f"{item.prelude} {{\n{inner}}}\n")
            continue
        selectors = split_selectors(item.prelude)
        if parents:
            selectors = nest_selectors(parents, selectors)
        out.append(_serialise_rules(item.items, selectors))
    return "".join(out)


def _serialise_verbatim(block: list[_Item]) -> str:
    items = _blocks(block)
    parts = [
        f"{item.prelude} {{ {_serialise_verbatim(item.items)}}}\n"
        if isinstance(item, _Block)
        else f"{item}; "
        for item in items
    ]
    return "".join(parts)


def parse_declaration(text: str, position: int) -> Declaration | None:
    """``color: red !important`` -> Declaration; None for text that is not a declaration."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or not (name[0].isalpha() or name[0] in "-_*"):
        return None
    important = 0
    if "!" in value:
        value, important = IMPORTANT.subn("", value)
    value = value.strip()
    if not value:
        return None
    return Declaration(_property_name(name), value, bool(important), position)


def _property_name(name: str) -> str:
    """A property's name as juice keys it (postcss's ``decl.prop``): as written, so ``Margin`` (the
    Outlook.com fallback) and ``margin`` are two properties that both stay, and without the IE hack
    character (``*zoom`` and ``_height`` are ``zoom`` and ``height``)."""
    return name[1:] if name[:1] in ("*", "_") and len(name) > 1 else name


def _is_declaration(text: str) -> bool:
    """Whether :func:`parse_declaration` reads ``text`` (stripped) as a declaration, without building it."""
    colon = text.find(":")
    if colon <= 0 or colon == len(text) - 1 or not (text[0].isalpha() or text[0] in "-_*"):
        return False
    return "!" not in text or bool(IMPORTANT.sub("", text[colon + 1 :]).strip())


def split_selectors(prelude: str) -> list[str]:
    """``a, b:is(c, d)`` -> ``["a", "b:is(c, d)"]``: commas inside brackets or strings do not split."""
    if "," not in prelude:
        prelude = prelude.strip()
        return [prelude] if prelude else []
    if _SELECTOR_CARE.search(prelude) is None:
        return [sel for part in prelude.split(",") if (sel := part.strip())]
    return split_top_level(prelude, ",")


def split_top_level(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside brackets and strings (selector lists, declaration lists);
    the parts stripped, empty ones left out."""
    pattern = _TOP_LEVEL_PARTS.get(separator)
    if pattern is not None:  # one regex pass; its parts tile the text unless a bracket is left open
        found = pattern.findall(text)
        if sum([len(part) + len(end) for part, end in found]) == len(text):
            return [stripped for part, _ in found if (stripped := part.strip())]
    out: list[str] = []
    depth = start = 0
    quote = ""
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth = max(0, depth - 1)
        elif char == separator and depth == 0:
            out.append(text[start:index].strip())
            start = index + 1
    out.append(text[start:].strip())
    return [part for part in out if part]


def nest_selectors(parents: list[str], children: list[str]) -> list[str]:
    """Resolve CSS nesting: ``&`` is each parent; a child without ``&`` is a descendant of the parent."""
    return [
        child.replace("&", parent) if "&" in child else f"{parent} {child}"
        for parent in parents
        for child in children
    ]


@functools.lru_cache(maxsize=4096)
def selector_kind(selector: str) -> str:
    """What ``selector`` (or a selector list) needs beyond a style attribute: PLAIN, STATE, INTERACTIVE
    (state juice does not list), or BEFORE/AFTER (a generated box, the first one it names)."""
    if ":" not in selector:
        return PLAIN
    plain = _masked(selector)
    if _INTERACTIVE_PSEUDO.search(plain) is not None:
        return INTERACTIVE
    if _STATEFUL_PSEUDO.search(plain) is not None:
        return STATE
    generated = _GENERATED_PSEUDO.search(plain)
    return generated.group(1).lower() if generated is not None else PLAIN


def is_stateful(selector: str) -> bool:
    """Whether ``selector`` uses a pseudo-class or pseudo-element that an inline style cannot express."""
    return selector_kind(selector) in (STATE, INTERACTIVE)


def without_pseudo_element(selector: str) -> str:
    """``a.x::before`` -> ``a.x``: the element that carries a ::before/::after box ("" for ``::before``)."""
    plain = _masked(selector)
    out: list[str] = []
    pos = 0
    for match in _GENERATED_PSEUDO.finditer(plain):
        out.append(selector[pos : match.start()])
        pos = match.end()
    out.append(selector[pos:])
    return "".join(out).strip()


def _masked(selector: str) -> str:
    """``selector`` with its escapes and strings blanked, at the same length (``.sm\\:hover`` is a class)."""
    if "\\" not in selector and '"' not in selector and "'" not in selector:
        return selector
    masked = _ESCAPE.sub("__", selector)
    return _STRING.sub(lambda m: m.group()[0] + "_" * (len(m.group()) - 2) + m.group()[-1], masked)


_SPEC_TOKEN: Final = re.compile(
    r"(?P<id>#(?:[\w-]|\\.)+)|(?P<cls>\.(?:[\w-]|\\.)+)|(?P<attr>\[[^\]]*\])"
    r"|(?P<pseudo>::?(?:[\w-]|\\.)+)(?P<open>\()?|(?P<type>(?:[a-zA-Z_]|\\.)(?:[\w-]|\\.)*|\*)"
)
_SPEC_NEEDS_CARE: Final = re.compile(r"[:\[\\\"'(]")
_SIMPLE_SPEC_TOKEN: Final = re.compile(r"#[\w-]+|\.[\w-]+|[a-zA-Z_][\w-]*|\*")  # _SPEC_TOKEN without the rest
_LEGACY_ELEMENTS: Final = frozenset({"before", "after", "first-line", "first-letter"})


@functools.lru_cache(maxsize=4096)
def specificity(selector: str, depth: int = 0) -> tuple[int, int, int]:
    """(ids, classes/attributes/pseudo-classes, types/pseudo-elements), as Selectors Level 4 counts.

    Selector arguments nested deeper than :data:`MAX_NESTING` count as one pseudo-class.
    """
    if _SPEC_NEEDS_CARE.search(selector) is None:  # no pseudo, attribute, escape or string: count tokens
        ids = classes = types = 0
        for token in _SIMPLE_SPEC_TOKEN.findall(selector):
            if token[0] == "#":
                ids += 1
            elif token[0] == ".":
                classes += 1
            elif token != "*":
                types += 1
        return ids, classes, types
    ids = classes = types = 0
    text = _STRING.sub('""', selector)
    pos = 0
    while pos < len(text):
        match = _SPEC_TOKEN.match(text, pos)
        if match is None:
            pos += 1
            continue
        pos = match.end()
        if match["id"]:
            ids += 1
        elif match["cls"] or match["attr"]:
            classes += 1
        elif match["type"]:
            types += match["type"] != "*"
        else:
            name = match["pseudo"].lstrip(":").lower()
            if match["open"]:
                end = closing_paren(text, pos)
                inner, pos = text[pos:end], end + 1
                if name in ("not", "is", "matches", "has", "-webkit-any", "-moz-any") and depth < MAX_NESTING:
                    best = max((specificity(s, depth + 1) for s in split_selectors(inner)), default=(0, 0, 0))
                    ids, classes, types = ids + best[0], classes + best[1], types + best[2]
                elif name != "where":
                    classes += 1
            elif match["pseudo"].startswith("::") or name in _LEGACY_ELEMENTS:
                types += 1
            else:
                classes += 1
    return ids, classes, types


def closing_paren(text: str, pos: int) -> int:
    """Where the bracket opened just before ``pos`` closes (nested ones counted); the end if never."""
    depth = 1
    for index in range(pos, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    return len(text)
