"""The cascade where an element's style depends on its place in the document, as juice works it out.

:func:`postwire.transformer.css_cascade.apply_cascade` rewrites each tag on its own, which is enough when
custom properties are set on the root only. This pass walks css-inline's output element by element
instead (its serialiser is regular: attribute values double-quoted, ``<`` escaped in text, an end tag for
every element that is not void, raw text only in ``script``, ``style`` and their kind), keeping a stack
of open elements, for three things juice does:

- ``var(--x)`` takes the value set on the nearest element that sets ``--x`` (juice's
  ``findVariableValue`` walks the ancestors), by a rule or by the element's own style;
- with inlinePseudoElements, each ::before/::after box becomes a ``<span>`` (or an ``<img>`` for
  ``content: url(...)``) as the first/last child of its element, its text from ``content``:
  strings, ``attr()``, ``var()`` and ``counter()``;
- counters (``counter-reset``, ``counter-increment``, ``counter-set``) are resolved in document order
  with CSS Lists 3 scoping as juice resolves them: a reset reaches the element, its descendants and its
  following siblings; a ::before box counts as its element's first child, ::after as its last.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Final

from postwire.transformer import code_blocks
from postwire.transformer.css_cascade import (
    ATTRIBUTE,
    MARKED_TAG,
    MARKER,
    VOID_ELEMENTS,
    CascadePlan,
    Styled,
    juice_controls,
    split_declarations,
    style_of,
    write_tag,
    written_style,
)
from postwire.transformer.css_sheet import parse_declaration

# what css-inline's serialiser writes: comments, doctype, end tags, start tags (double-quoted values)
_NODE: Final = re.compile(
    rf"<!--.*?-->|<![^>]*>|<\?[^>]*>|</([A-Za-z][^\s/>]*)\s*>|<([A-Za-z][^\s/>]*){ATTRIBUTE}*\s*/?>", re.S
)
_ATTRIBUTE: Final = re.compile(r"\s([^\s/>=]+)(?:=\"([^\"]*)\")?")
_STYLE_VALUE: Final = re.compile(r"\sstyle=\"([^\"]*)\"")
# elements whose content the serialiser writes as raw text: their end tag is the next "</name"
_RAW_TEXT: Final = frozenset({"script", "style", "xmp", "iframe", "noembed", "noframes", "noscript"})
_CACHED: Final = 5_000  # distinct tags, sets of custom properties and results kept per plan
_MAX_NESTED: Final = 16  # instances of one counter an element keeps (a bound for hostile nesting)
_URL_CONTENT: Final = re.compile(r"^\s*url\s*\(\s*(.*?)\s*\)\s*$", re.I | re.S)
_QUOTES: Final = re.compile(r"['\"]")
_VAR: Final = re.compile(r"var\s*\(\s*(.*?)\s*(?:,\s*(.*?)\s*)?\s*\)", re.I | re.S)
_COUNTER: Final = re.compile(r"counter\s*\(\s*(.*?)\s*(?:,\s*(.*?)\s*)?\s*\)", re.I | re.S)
_ATTR: Final = re.compile(r"attr\s*\(\s*(.*?)\s*\)", re.I | re.S)
_INTEGER: Final = re.compile(r"[+-]?\d+")
_ROMAN: Final = (
    (1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
    (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"),
)  # fmt: skip


@dataclass(slots=True)
class _Counter:
    name: str
    origin: int  # the element (or box) that created it
    origin_parent: int
    value: int


@dataclass(slots=True)
class _Frame:
    """An open element: what its content inherits, and its ::after box, written before its end tag."""

    name: str
    node: int
    variables: dict[str, str]
    variables_key: int
    counters: list[_Counter] = field(default_factory=list)
    last_child: list[_Counter] = field(default_factory=list)  # the counters of its last child so far
    after: Styled | None = None
    attributes: str = ""  # its start tag's attributes, for attr()


class _Walk:
    """One document's walk: the open elements, and the counters of the element visited last."""

    def __init__(self, plan: CascadePlan) -> None:
        self.plan = plan
        self.stack = [_Frame("", 0, {}, -1)]  # the root's custom properties come from the <html> element
        self.nodes = 0
        self.previous: list[_Counter] = []
        if max(len(plan.in_context), len(plan.variable_sets), len(plan.styled)) > _CACHED:
            plan.in_context.clear()
            plan.variable_sets.clear()
            plan.styled.clear()

    def start(self, name: str, tag: str) -> str:
        """The rewritten start tag, then its ::before box; the element is then open (if not void)."""
        parent = self.stack[-1]
        marked = MARKED_TAG.fullmatch(tag) if MARKER in tag else None
        styled = self.styled(name, marked.group(3), tag) if marked is not None else None
        self.nodes += 1
        frame = _Frame(name, self.nodes, parent.variables, parent.variables_key, attributes=tag)
        added = styled.variables if styled is not None else _own_custom_properties(tag) if "--" in tag else {}
        if added:  # custom properties set here, by rules or by a style no rule touched
            frame.variables = {**parent.variables, **added}
            frame.variables_key = self.variables_key(frame.variables)
        frame.counters = self.visit(frame.node, parent, styled)
        out = tag if marked is None or styled is None else write_tag(marked, *self.written(styled, parent))
        if name in VOID_ELEMENTS or tag.endswith("/>"):
            return out
        self.stack.append(frame)
        if styled is not None and styled.before is not None:
            out += self.box(styled.before, frame)
        frame.after = styled.after if styled is not None else None
        return out

    def end(self, name: str, tag: str) -> str:
        """The ::after boxes of the elements this end tag closes, then the tag."""
        if self.stack[-1].name != name and not any(frame.name == name for frame in self.stack[1:]):
            return tag  # a stray end tag: nothing to close
        out: list[str] = []
        while True:
            frame = self.stack.pop()
            if frame.after is not None:
                out.append(self.box(frame.after, frame))
            if frame.name == name:
                return "".join(out) + tag

    def styled(self, name: str, style: str, tag: str) -> Styled:
        """:func:`style_of`, cached by tag name, marked style and juice's controls."""
        controls = juice_controls(tag, self.plan.options)
        key = (name, style) if controls is None else (name, f"{style}\0{controls}")
        styled = self.plan.styled.get(key)
        if styled is None:
            styled = self.plan.styled[key] = style_of(name, style, self.plan, controls)
        return styled

    def variables_key(self, variables: dict[str, str]) -> int:
        """A number for a set of custom properties, the same for equal sets (a cache key)."""
        return self.plan.variable_sets.setdefault(tuple(variables.items()), len(self.plan.variable_sets))

    def written(self, styled: Styled, parent: _Frame) -> tuple[str, list[tuple[str, str]]]:
        """:func:`written_style` for an element in ``parent`` (cached by what it inherits)."""
        key = (id(styled), parent.variables_key)  # styled is kept in plan.styled while this is cached
        done = self.plan.in_context.get(key)
        if done is None:
            done = self.plan.in_context[key] = written_style(styled, self.plan, parent.variables)
        return done

    def box(self, box: Styled, element: _Frame) -> str:
        """A ::before/::after box as juice writes it: a span with its text, or an img; "" without content."""
        content = box.value("content")
        self.nodes += 1
        counters = self.visit(self.nodes, element, box)
        if content is None:
            return ""
        variables = {**element.variables, **box.variables} if box.variables else element.variables
        text = _content(content, variables, counters, element.attributes)
        if isinstance(text, _Image):
            box = Styled("img", "", [], box.winners, box.last, box.variables, box.preserve)
        style, attributes = written_style(box, self.plan, element.variables)
        style_attr = f' style="{style}"' if style else ""
        if isinstance(text, _Image):
            added = "".join(f' {attr}="{value}"' for attr, value in attributes)
            return f'<img{style_attr} src="{_escape_attribute(text.src)}"{added}>'
        return f"<span{style_attr}>{html.escape(text, quote=False)}</span>"

    def visit(self, node: int, parent: _Frame, styled: Styled | None) -> list[_Counter]:
        """The counters of ``node`` (a child of ``parent``), as juice's resolveCounters works them out."""
        if not self.plan.counters:
            return []
        counters = [_copy(counter) for counter in parent.counters]
        names = {counter.name for counter in counters}
        counters += [_copy(counter) for counter in parent.last_child if counter.name not in names]
        if self.previous:  # what the elements before it did to the counters it shares
            shared = {(c.name, c.origin): c for c in reversed(counters)}  # the first of each, as juice finds
            for counter in self.previous:
                same = shared.get((counter.name, counter.origin))
                if same is not None:
                    same.value = counter.value
        if styled is not None:
            _update(counters, node, parent.node, styled)
        self.previous = parent.last_child = counters
        return counters


def apply_in_context(document: str, plan: CascadePlan, blocks: str = "") -> str:
    """Rewrite css-inline's marked ``document`` element by element; ``blocks`` go before ``</head>``."""
    walk = _Walk(plan)
    out: list[str] = []
    pos = 0
    search = _NODE.search
    while (match := search(document, pos)) is not None:
        out.append(document[pos : match.start()])
        pos = match.end()
        closed, opened = match.group(1), match.group(2)
        if closed is not None:
            name = closed.lower()
            if blocks and name == "head":
                out.append(blocks)
                blocks = ""
            out.append(walk.end(name, match.group()))
        elif opened is None:  # comment, doctype
            out.append(match.group())
        else:
            name = opened.lower()
            out.append(walk.start(name, match.group()))
            if name in _RAW_TEXT:
                end = document.find(f"</{opened}", pos)
                end = len(document) if end < 0 else end
                out.append(document[pos:end])
                pos = end
    out.append(document[pos:])
    return blocks + "".join(out) if blocks else "".join(out)


def _own_custom_properties(tag: str) -> dict[str, str]:
    """The custom properties in the style attribute of a tag no rule matched."""
    style = _STYLE_VALUE.search(tag)
    if style is None or "--" not in style.group(1):
        return {}
    declarations = split_declarations(html.unescape(style.group(1)))
    found = (parse_declaration(text, 0) for text in declarations)
    return {decl.name: decl.value for decl in found if decl is not None and decl.name[:2] == "--"}


def _copy(counter: _Counter) -> _Counter:
    return _Counter(counter.name, counter.origin, counter.origin_parent, counter.value)


def _update(counters: list[_Counter], node: int, parent: int, styled: Styled) -> None:
    """Apply the element's counter-reset, then counter-increment, then counter-set (CSS Lists 3)."""
    reset, increment = styled.value("counter-reset"), styled.value("counter-increment")
    assigned = styled.value("counter-set")
    for name, value in _counter_list(reset, 0):
        _instantiate(counters, name, node, parent, value)
    for name, amount in _counter_list(increment, 1):
        (_innermost(counters, name) or _instantiate(counters, name, node, parent, 0)).value += amount
    for name, value in _counter_list(assigned, 0):
        (_innermost(counters, name) or _instantiate(counters, name, node, parent, 0)).value = value


def _counter_list(value: str | None, default: int) -> list[tuple[str, int]]:
    """``a 2 b`` -> [("a", 2), ("b", default)]; ``none`` names no counter."""
    if not value:
        return []
    tokens = value.split()
    out: list[tuple[str, int]] = []
    index = 0
    while index < len(tokens):
        name = tokens[index]
        amount = _INTEGER.match(tokens[index + 1]) if index + 1 < len(tokens) else None
        index += 2 if amount is not None else 1
        if name != "none":
            out.append((name, int(amount.group()) if amount is not None else default))
    return out


def _innermost(counters: list[_Counter], name: str) -> _Counter | None:
    return next((counter for counter in reversed(counters) if counter.name == name), None)


def _instantiate(counters: list[_Counter], name: str, node: int, parent: int, value: int) -> _Counter:
    """A new counter on ``node``; one of the same name created by it or a sibling ends there."""
    last = _innermost(counters, name)
    if last is not None and (last.origin == node or last.origin_parent == parent):
        counters.remove(last)
    counter = _Counter(name, node, parent, value)
    counters.append(counter)
    same = [index for index, c in enumerate(counters) if c.name == name]
    if len(same) > _MAX_NESTED:  # only the innermost ones can be read (counter() reads the innermost)
        del counters[same[0]]
    return counter


@dataclass(frozen=True, slots=True)
class _Image:
    src: str


def _content(value: str, variables: dict[str, str], counters: list[_Counter], tag: str) -> str | _Image:
    """The text of a box from its ``content`` value, read as juice reads it: the value is cut at its
    quotes, and a piece holding ``var()``, ``counter()`` or ``attr()`` becomes that function's value."""
    if value in ("none", "normal"):
        return ""
    url = _URL_CONTENT.match(value)
    if url is not None:
        return _Image(url.group(1).strip("'\""))
    parts: list[str] = []
    for piece in _QUOTES.split(value):
        if not piece:
            continue
        if (var := _VAR.search(piece)) is not None:
            found = variables.get(var.group(1)) or var.group(2) or ""
            parts.append(found.strip("'\""))
        elif (counter := _COUNTER.search(piece)) is not None:
            current = _innermost(counters, counter.group(1))
            parts.append(_counter_style(current.value if current else 0, counter.group(2)))
        elif (attr := _ATTR.search(piece)) is not None:
            parts.append(_attribute(tag, attr.group(1).lower()))
        else:
            parts.append(piece)
    return code_blocks.moved("".join(parts).replace("\\", ""))


def _attribute(tag: str, name: str) -> str:
    """The value of attribute ``name`` in a start tag css-inline wrote ("" when it has none)."""
    for found, value in _ATTRIBUTE.findall(tag):
        if found.lower() == name:
            return html.unescape(value)
    return ""


def _counter_style(value: int, style: str | None) -> str:
    """A counter's value in the styles juice knows (roman, latin); decimal otherwise or out of range."""
    style = (style or "").lower()
    if style in ("lower-roman", "upper-roman") and 0 < value < 4000:
        roman = _roman(value)
        return roman.lower() if style == "lower-roman" else roman
    if style in ("lower-latin", "lower-alpha", "upper-latin", "upper-alpha") and value > 0:
        latin = _latin(value)
        return latin.lower() if style.startswith("lower") else latin
    return str(value)


def _roman(value: int) -> str:
    out: list[str] = []
    for limit, letters in _ROMAN:
        count, value = divmod(value, limit)
        out.append(letters * count)
    return "".join(out)


def _latin(value: int) -> str:
    """1 -> A, 26 -> Z, 27 -> AA."""
    out = ""
    while value > 0:
        value, digit = divmod(value - 1, 26)
        out = chr(65 + digit) + out
    return out


def _escape_attribute(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;")
