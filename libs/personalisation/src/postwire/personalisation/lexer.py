"""Splits a template into text runs and tags, and each tag into tokens.

Where a tag starts (the rule SMART-TPL and Smarty's auto-literal share, narrowed so that CSS and JSON
pass through): a ``{`` opens a tag only when it is followed by

- ``$`` and a letter or ``_``: a variable tag such as ``{$name|upper}`` or ``{$x = 1}``;
- ``*``: a comment, up to ``*}``;
- a word directly followed by ``}`` or whitespace (``{if …}``, ``{else}``, ``{/foreach}``), or
  ``{mode=``: a known word is that tag, any other word is a syntax error ("unknown tag {foo}");
- ``/`` and such a word: a closing tag.

Every other ``{`` is text: ``p { color: red }`` (whitespace), ``a{color:red}`` (word then ``:``),
``{"key": 1}`` (quote), ``{{``, ``{}``. A ``}`` outside a tag is always text.

Tokens are ``(kind, value, offset)``; ``offset`` indexes the source so errors can name line and column.
They are produced as the parser asks for them, so a template that goes wrong early (nested too deep)
fails without the rest of it being read.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from typing import Any, NamedTuple

from postwire.personalisation.errors import TemplateSyntaxError


class Token(NamedTuple):
    kind: str  # TEXT, TAG (value: tag name), VAR, NAME, NUM, STR, OP, END (the closing "}"), EOF
    value: Any
    offset: int


# tags that take arguments, tags that take none, closing tags
ARG_TAGS = frozenset({"if", "elseif", "foreach", "assign"})
BARE_TAGS = frozenset({"else", "foreachelse", "endif", "escape", "literal", "ldelim", "rdelim"})
CLOSING_TAGS = frozenset({"if", "foreach", "literal"})

_CANDIDATE = re.compile(r"\{(?=[$*/A-Za-z_])")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_SPACE = frozenset(" \t\r\n")
_END_LITERAL = re.compile(r"\{/literal[ \t\r\n]*\}", re.IGNORECASE)
_SKIP_SPACE = re.compile(r"[ \t\r\n]*")

# a variable or member name: letters, digits, "_", and "-" between them ($first-name), as SMART-TPL
_NAME_TAIL = r"(?:[A-Za-z0-9_]|-(?=[A-Za-z0-9_]))*"
_IN_TAG = re.compile(
    r"(?P<ws>[ \t\r\n]+)"
    r"|(?P<end>\})"
    rf"|\$(?P<var>[A-Za-z_]{_NAME_TAIL})"
    r"|(?P<num>\d+\.\d+(?:[eE][-+]?\d+)?|\d+)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<quote>[\"'])"
    r"|(?P<op>==|!=|<>|<=|>=|=>|&&|\|\||[-+*/%<>=!()\[\].|:,])"
)
_MEMBER = re.compile(rf"[A-Za-z0-9_]{_NAME_TAIL}")
_STRINGS = {
    '"': re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"', re.DOTALL),
    "'": re.compile(r"'([^'\\]*(?:\\.[^'\\]*)*)'", re.DOTALL),
}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_DOUBLE_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
_SINGLE_ESCAPES = {"\\": "\\", "'": "'"}


def position(source: str, offset: int) -> tuple[int, int]:
    """Line and column (from 1) of ``offset``."""
    line_start = source.rfind("\n", 0, offset) + 1
    return source.count("\n", 0, offset) + 1, offset - line_start + 1


def syntax_error(source: str, part: str, offset: int, message: str) -> TemplateSyntaxError:
    line, column = position(source, offset)
    return TemplateSyntaxError(message, part=part, line=line, column=column)


def has_tags(text: str) -> bool:
    """Could ``text`` hold template syntax? False means it renders as itself, whatever the data."""
    return _CANDIDATE.search(text) is not None


def unescape(body: str, quote: str) -> str:
    """Backslash escapes as in PHP: in double quotes \\\\ \\" \\n \\t \\r, in single quotes \\\\ and
    \\'; any other backslash stays as written (so regex patterns keep theirs)."""
    if "\\" not in body:
        return body
    table = _DOUBLE_ESCAPES if quote == '"' else _SINGLE_ESCAPES
    return _ESCAPE.sub(lambda m: table.get(m.group(1), m.group(0)), body)


class Lexer:
    def __init__(self, source: str, part: str) -> None:
        self.source = source
        self.part = part
        self.ready: list[Token] = []  # tokens read, not yet handed out
        self._text: list[str] = []
        self._text_offset = 0
        self.spans: list[tuple[int, int]] = []  # [start, end) of each tag read so far

    def error(self, offset: int, message: str) -> TemplateSyntaxError:
        return syntax_error(self.source, self.part, offset, message)

    def _add_text(self, text: str, offset: int) -> None:
        if text:
            if not self._text:
                self._text_offset = offset
            self._text.append(text)

    def _flush_text(self) -> None:
        """Adjacent text (around comments, {literal}, {ldelim}) is one TEXT token."""
        if self._text:
            self.ready.append(Token("TEXT", "".join(self._text), self._text_offset))
            self._text = []

    def tokenize(self) -> Iterator[Token]:
        src = self.source
        pos = 0
        while True:
            match = _CANDIDATE.search(src, pos)
            if match is None:
                self._add_text(src[pos:], pos)
                break
            start = match.start()
            self._add_text(src[pos:start], pos)
            pos = yield from self._tag(start)
            if pos > start + 1:  # a "{" that is text moves on by one; every tag is longer
                self.spans.append((start, pos))
            if self.ready:
                yield from self.ready
                self.ready.clear()
        self._flush_text()
        yield from self.ready
        yield Token("EOF", None, len(src))

    def _tag(self, start: int) -> Generator[Token, None, int]:
        """Reads what starts at the ``{`` at ``start``; returns where scanning goes on."""
        src = self.source
        after = src[start + 1]
        if after == "*":
            end = src.find("*}", start + 2)
            if end < 0:
                raise self.error(start, "unterminated comment: {* without *}")
            return end + 2
        if after == "$":
            if start + 2 < len(src) and src[start + 2] in _NAME_START:
                return (yield from self._arguments("expr", start, start + 1))
            self._add_text("{", start)
            return start + 1
        closing = after == "/"
        word = _WORD.match(src, start + 2 if closing else start + 1)
        following = src[word.end()] if word is not None and word.end() < len(src) else ""
        if word is None or not (following == "}" or following in _SPACE or following == ""):
            if word is not None and not closing and word.group().lower() == "mode" and following == "=":
                return (yield from self._arguments("mode", start, word.end()))
            self._add_text("{", start)
            return start + 1
        name = word.group().lower()
        shown = "{" + ("/" if closing else "") + word.group() + "}"
        if closing:
            if name not in CLOSING_TAGS:
                raise self.error(start, f"unknown tag {shown}")
            if name == "literal":
                raise self.error(start, "{/literal} without {literal}")
            return self._bare("/" + name, start, word.end())
        if name in ARG_TAGS:
            return (yield from self._arguments(name, start, word.end()))
        if name not in BARE_TAGS:
            raise self.error(start, f"unknown tag {shown}")
        if name == "else":
            after_else = _SKIP_SPACE.match(src, word.end()).end()  # type: ignore[union-attr]
            maybe_if = _WORD.match(src, after_else)
            if maybe_if is not None and maybe_if.group().lower() == "if" and after_else > word.end():
                return (yield from self._arguments("elseif", start, maybe_if.end()))
        if name == "endif":
            name = "/if"
        end = self._expect_close(name, start, word.end())
        if name == "literal":
            close = _END_LITERAL.search(src, end)
            if close is None:
                raise self.error(start, "{literal} without {/literal}")
            self._add_text(src[end : close.start()], end)
            return close.end()
        if name in ("ldelim", "rdelim"):
            self._add_text("{" if name == "ldelim" else "}", start)
            return end
        self._flush_text()
        self.ready.append(Token("TAG", name, start))
        return end

    def _expect_close(self, name: str, start: int, pos: int) -> int:
        pos = _SKIP_SPACE.match(self.source, pos).end()  # type: ignore[union-attr]
        if pos >= len(self.source):
            raise self.error(start, f"unterminated tag {{{name}: missing }}")
        if self.source[pos] != "}":
            raise self.error(pos, f"{{{name}}} takes nothing here, found {self.source[pos]!r}")
        return pos + 1

    def _bare(self, name: str, start: int, pos: int) -> int:
        end = self._expect_close(name, start, pos)
        self._flush_text()
        self.ready.append(Token("TAG", name, start))
        return end

    def _arguments(self, name: str, start: int, pos: int) -> Generator[Token, None, int]:
        """Tokens of a tag's arguments from ``pos`` up to its ``}``, then an END token; returns the
        position after the ``}``."""
        self._flush_text()
        yield from self.ready
        self.ready.clear()
        src = self.source
        yield Token("TAG", name, start)
        after_dot = False
        while True:
            if pos >= len(src):
                raise self.error(start, f"unterminated tag {{{'$' if name == 'expr' else name}…: missing }}")
            if after_dot:
                member = _MEMBER.match(src, pos)
                if member is None:
                    raise self.error(pos, "expected a name or an index after '.'")
                yield Token("NAME", member.group(), pos)
                pos = member.end()
                after_dot = False
                continue
            match = _IN_TAG.match(src, pos)
            if match is None:
                raise self.error(pos, f"unexpected {src[pos]!r} in a tag")
            kind = match.lastgroup
            if kind == "ws":
                pass
            elif kind == "end":
                yield Token("END", "}", pos)
                return match.end()
            elif kind == "var":
                yield Token("VAR", match.group("var"), pos)
            elif kind == "num":
                text = match.group()
                # a longer digit string than int() accepts is a float, as in PHP
                yield Token("NUM", float(text) if "." in text or len(text) > 18 else int(text), pos)
            elif kind == "name":
                yield Token("NAME", match.group(), pos)
            elif kind == "quote":
                quote = match.group()
                string = _STRINGS[quote].match(src, pos)
                if string is None:
                    raise self.error(pos, "unterminated string")
                yield Token("STR", unescape(string.group(1), quote), pos)
                pos = string.end()
                continue
            else:
                op = match.group()
                yield Token("OP", op, pos)
                after_dot = op == "."
            pos = match.end()


def tokenize(source: str, part: str = "template") -> Iterator[Token]:
    return Lexer(source, part).tokenize()


def tag_spans(source: str) -> list[tuple[int, int]]:
    """The ``[start, end)`` offsets of every tag in ``source``, in order, as the lexer reads them: a
    ``{literal}`` block (content included), a ``{* comment *}``, ``{ldelim}`` are one span each.

    For tools that must keep a template's tags intact while changing the text around them (the
    transformer inlines CSS once per template). Raises :class:`TemplateSyntaxError` for what the lexer
    refuses (an unknown tag, an unterminated string); a template the parser would refuse (``{if}``
    without ``{/if}``) still has its spans.
    """
    lexer = Lexer(source, "template")
    for _ in lexer.tokenize():
        pass
    return lexer.spans
