"""One stylesheet, split for inlining: rules an element's style attribute can hold, and CSS that must stay.

A style attribute holds plain declarations for one element, so three kinds of CSS cannot go there and
are kept for a <style> block instead: at-rules (@media, @font-face, @keyframes, @container...), rules
whose selector depends on state or on a generated box (``a:hover``, ``:focus``, ``:checked``,
``::before``), and nothing else. Everything else becomes an :class:`InlineRule`: one selector (selector
lists are split, because each selector has its own specificity), its declarations in source order with
their ``!important`` flags, and a position that keeps the cascade's source order.

CSS nesting is flattened here (``.card { & .title {...} }`` becomes ``.card .title``; an @media inside
a rule becomes an @media around that rule), so the selector engine sees plain selectors.

The parser is a small tokenizer over strings, comments, brackets and ``{};``: enough to find rules and
declarations without validating values, which are copied as written. Parsing is cached by CSS text,
because a sender's templates repeat.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

# Pseudo-classes that depend on user state or navigation, and pseudo-elements (generated boxes): an
# inline style cannot express them, so their rules stay in <style> (where clients that support them apply
# them). ``:link`` is in the list although it could be decided statically: an unvisited-link colour in a
# style attribute would also paint visited links.
STATEFUL_PSEUDOS: Final = frozenset(
    {
        "hover", "active", "focus", "focus-within", "focus-visible", "visited", "link", "any-link",
        "target", "checked", "placeholder-shown",
        "before", "after", "first-letter", "first-line", "marker", "selection", "placeholder", "backdrop",
        "file-selector-button",
    }
)  # fmt: skip

# Kinds of kept CSS, each switchable by an option (see inline_options.InlineOptions).
MEDIA: Final = "media"
FONT_FACE: Final = "font-face"
KEYFRAMES: Final = "keyframes"
CONTAINER: Final = "container"
PSEUDO: Final = "pseudo"
OTHER_AT_RULE: Final = "at-rule"
# Blocks nested deeper are dropped (no real stylesheet comes close; a hostile one must not exhaust the stack).
MAX_NESTING: Final = 32

# comments (and the <!-- --> that old templates wrap their CSS in), strings, and the characters that
# give CSS its structure
_TOKEN: Final = re.compile(
    r"/\*.*?(?:\*/|\Z)|<!--|-->|\"(?:\\.|[^\"\\])*\"?|'(?:\\.|[^'\\])*'?|[{}();\[\]]", re.S
)
_IMPORTANT: Final = re.compile(r"\s*!\s*important\s*$", re.I)
_STRING: Final = re.compile(r"\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'")
_PSEUDO_NAME: Final = re.compile(r"::?(-?[a-zA-Z][\w-]*)")
_SPACE: Final = re.compile(r"\s+")
_ESCAPE: Final = re.compile(r"\\.")
# at-rules whose block holds style rules (nesting inside them is flattened); others are copied as written
_GROUPING_AT_RULES: Final = frozenset({"media", "supports", "container", "layer", "document", "scope"})


@dataclass(frozen=True, slots=True)
class Declaration:
    """``name: value`` as written (the value without ``!important``), with its place in the sheet."""

    name: str
    value: str
    important: bool
    position: int


@dataclass(frozen=True, slots=True)
class InlineRule:
    """One selector and the declarations it gives the elements it matches."""

    selector: str
    specificity: tuple[int, int, int]
    declarations: tuple[Declaration, ...]


@dataclass(frozen=True, slots=True)
class KeptCss:
    """CSS text that stays in a <style> block, and which option decides whether it is kept."""

    kind: str
    text: str


@dataclass(slots=True)
class Sheet:
    """A parsed stylesheet: what to inline and what to keep, both in source order."""

    rules: list[InlineRule] = field(default_factory=list)
    kept: list[KeptCss] = field(default_factory=list)


@dataclass(slots=True)
class _Block:
    prelude: str
    items: list[str | _Block] = field(default_factory=list)


@functools.lru_cache(maxsize=64)
def parse_sheet(css: str) -> Sheet:
    """Split ``css`` into inlinable rules and kept CSS (cached: the result must not be changed)."""
    sheet = Sheet()
    positions = itertools.count()
    for item in _parse_blocks(css).items:
        if isinstance(item, str):
            if item.startswith("@") and item[1:7].lower() == "import":
                sheet.kept.append(KeptCss(OTHER_AT_RULE, item + ";"))  # the client may load it; we never do
        elif item.prelude.startswith("@"):
            _add_at_rule(sheet, item, None)
        else:
            _add_style_rule(sheet, split_selectors(item.prelude), item, positions)
    return sheet


def _parse_blocks(css: str) -> _Block:
    """The block tree of ``css``: comments dropped, strings and bracketed text kept whole."""
    root = _Block("")
    stack = [root]
    chunk: list[str] = []
    depth = pos = skipped = 0
    for match in _TOKEN.finditer(css):
        chunk.append(css[pos : match.start()])
        pos = match.end()
        token = match.group()
        if skipped:  # inside a block nested beyond MAX_NESTING: only its braces count
            skipped += {"{": 1, "}": -1}.get(token, 0)
            chunk = []
        elif token.startswith("/*") or token in ("<!--", "-->"):
            chunk.append(" ")
        elif token in "([" or token.startswith(("'", '"')):
            depth += token in "(["
            chunk.append(token)
        elif token in ")]":
            depth = max(0, depth - 1)
            chunk.append(token)
        elif depth:
            chunk.append(token)
        elif token == "{" and len(stack) > MAX_NESTING:
            skipped, chunk = 1, []
        elif token == "{":
            block = _Block(_squash("".join(chunk)))
            stack[-1].items.append(block)
            stack.append(block)
            chunk = []
        else:  # ";" or "}"
            _flush(stack[-1], chunk)
            chunk = []
            if token == "}" and len(stack) > 1:
                stack.pop()
    chunk.append(css[pos:])
    _flush(stack[-1], chunk)
    return root


def _flush(block: _Block, chunk: list[str]) -> None:
    text = "".join(chunk).strip()
    if text:
        block.items.append(text)


def _squash(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def _add_style_rule(sheet: Sheet, selectors: list[str], block: _Block, positions: Iterator[int]) -> None:
    """Declarations of ``block`` for each selector, then its nested rules and at-rules, flattened."""
    declarations = tuple(
        decl
        for item in block.items
        if isinstance(item, str) and (decl := parse_declaration(item, next(positions))) is not None
    )
    if declarations:
        stateful = [sel for sel in selectors if is_stateful(sel)]
        for selector in selectors:
            if selector not in stateful:
                sheet.rules.append(InlineRule(selector, specificity(selector), declarations))
        if stateful:
            body = "".join(
                f"{d.name}: {d.value}{' !important' if d.important else ''}; " for d in declarations
            )
            sheet.kept.append(KeptCss(PSEUDO, f"{', '.join(stateful)} {{ {body}}}"))
    for item in block.items:
        if isinstance(item, _Block):
            if item.prelude.startswith("@"):
                _add_at_rule(sheet, item, selectors)
            else:
                _add_style_rule(
                    sheet, nest_selectors(selectors, split_selectors(item.prelude)), item, positions
                )


def _add_at_rule(sheet: Sheet, block: _Block, parents: list[str] | None) -> None:
    bare = _at_name(block.prelude)
    kind = {"media": MEDIA, "font-face": FONT_FACE, "keyframes": KEYFRAMES, "container": CONTAINER}.get(
        bare, OTHER_AT_RULE
    )
    if bare in _GROUPING_AT_RULES:
        body = _serialise_rules(block.items, parents)  # conditional groups hold rules: flatten them
    else:
        body = _serialise_verbatim(block.items)
    if body:
        sheet.kept.append(KeptCss(kind, f"{block.prelude} {{\n{body}}}"))


def _at_name(prelude: str) -> str:
    """``@-webkit-keyframes x`` -> ``keyframes``: the at-keyword without its vendor prefix."""
    name = prelude[1:].split(None, 1)[0].split("(", 1)[0].lower() if len(prelude) > 1 else ""
    return re.sub(r"^-[a-z]+-", "", name)


def _serialise_rules(items: list[str | _Block], parents: list[str] | None) -> str:
    """Rules of a conditional group, nesting resolved against ``parents`` (the enclosing rule, if any)."""
    out: list[str] = []
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


def _serialise_verbatim(items: list[str | _Block]) -> str:
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
    if not sep or not name or not value.strip() or not (name[0].isalpha() or name[0] in "-_*"):
        return None
    value, important = _IMPORTANT.subn("", value)
    value = value.strip()
    if not value:
        return None
    return Declaration(name if name.startswith("--") else name.lower(), value, bool(important), position)


def split_selectors(prelude: str) -> list[str]:
    """``a, b:is(c, d)`` -> ``["a", "b:is(c, d)"]``: commas inside brackets or strings do not split."""
    if not any(char in prelude for char in "([\"'"):
        return [sel for sel in (part.strip() for part in prelude.split(",")) if sel]
    out: list[str] = []
    depth = start = 0
    quote = ""
    for index, char in enumerate(prelude):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            out.append(prelude[start:index].strip())
            start = index + 1
    out.append(prelude[start:].strip())
    return [sel for sel in out if sel]


def nest_selectors(parents: list[str], children: list[str]) -> list[str]:
    """Resolve CSS nesting: ``&`` is each parent; a child without ``&`` is a descendant of the parent."""
    return [
        child.replace("&", parent) if "&" in child else f"{parent} {child}"
        for parent in parents
        for child in children
    ]


@functools.lru_cache(maxsize=4096)
def is_stateful(selector: str) -> bool:
    """Whether ``selector`` uses a pseudo-class or pseudo-element that an inline style cannot express."""
    if ":" not in selector:
        return False
    plain = _ESCAPE.sub("_", _STRING.sub('""', selector))  # .sm\:hover is a class, not :hover
    for name in _PSEUDO_NAME.findall(plain):
        name = name.lower()
        if name in STATEFUL_PSEUDOS or name.startswith("-"):  # vendor pseudos: ::-webkit-..., :-moz-...
            return True
    return False


_SPEC_TOKEN: Final = re.compile(
    r"(?P<id>#(?:[\w-]|\\.)+)|(?P<cls>\.(?:[\w-]|\\.)+)|(?P<attr>\[[^\]]*\])"
    r"|(?P<pseudo>::?(?:[\w-]|\\.)+)(?P<open>\()?|(?P<type>(?:[a-zA-Z_]|\\.)(?:[\w-]|\\.)*|\*)"
)
_LEGACY_ELEMENTS: Final = frozenset({"before", "after", "first-line", "first-letter"})


@functools.lru_cache(maxsize=4096)
def specificity(selector: str, depth: int = 0) -> tuple[int, int, int]:
    """(ids, classes/attributes/pseudo-classes, types/pseudo-elements), as Selectors Level 4 counts.

    Selector arguments nested deeper than :data:`MAX_NESTING` count as one pseudo-class.
    """
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
                end = _closing_paren(text, pos)
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


def _closing_paren(text: str, pos: int) -> int:
    depth = 1
    for index in range(pos, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    return len(text)
