"""juice's ignore comments: CSS a sender sets aside from inlining, kept in <style> exactly as written.

- ``/* juice ignore */`` first in a stylesheet: none of it is inlined, all of it is kept;
- ``/* juice start ignore */`` ... ``/* juice end ignore */``: the rules between (and the two comments);
- ``/* juice ignore next */`` between rules: the rule after it (the comment itself goes);
- ``/* juice ignore next */`` inside a rule: the declaration after it is not inlined, and the whole rule
  is kept as written (the rest of it is still inlined).

:func:`set_aside` runs before the stylesheet is parsed: each set-aside piece is replaced by a statement
``@pw<secret>ignored<n>;`` that the parser keeps, in its place, as piece ``n`` (the secret is drawn per
process, so a stylesheet cannot write one). A linear scan over comments, strings and ``{};`` finds
where each directive stands (between rules or inside one) and where the rule it names ends.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Final, NamedTuple

IGNORED_STATEMENT: Final = f"@pw{secrets.token_hex(6)}ignored"
_DIRECTIVE: Final = re.compile(r"/\*\s*juice (ignore|start ignore|end ignore|ignore next)\s*\*/")
_SPACE: Final = re.compile(r"\s+")
_TOKEN: Final = re.compile(r"/\*.*?(?:\*/|\Z)|\"(?:\\.|[^\"\\])*\"?|'(?:\\.|[^'\\])*'?|[{};]", re.S)


class _Token(NamedTuple):
    start: int
    end: int
    text: str
    depth: int  # block depth before it
    directive: str | None  # for a juice comment: what it says


def set_aside(css: str) -> tuple[str, list[str]]:
    """``css`` with the pieces its juice comments set aside replaced by statements, and the pieces."""
    if _DIRECTIVE.search(css) is None:
        return css, []
    first = _DIRECTIVE.match(css.lstrip())
    if first is not None and first.group(1) == "ignore":
        return f"{IGNORED_STATEMENT}0;", [f"\n{css}\n"]
    tokens = _tokens(css)
    cuts: list[tuple[int, int, str, str]] = []  # (start, stop, kept text, what replaces it)
    for index, token in enumerate(tokens):
        if token.directive is None or (cuts and token.start < cuts[-1][1]):
            continue
        if token.depth == 0 and token.directive == "start ignore":
            stop = next(
                (t.end for t in _after(tokens, index) if t.depth == 0 and t.directive == "end ignore"),
                len(css),
            )
            cuts.append((token.start, stop, css[token.start : stop], ""))
        elif token.depth == 0 and token.directive == "ignore next":
            cuts += _next_rule(css, tokens, index)
        elif token.depth == 1 and token.directive == "ignore next":
            cuts += _rule_with_ignored_declarations(css, tokens, index, cuts[-1][1] if cuts else 0)
    return _cut(css, cuts)


def _after(tokens: list[_Token], index: int) -> Iterator[_Token]:
    """The tokens after ``tokens[index]``, without copying the list (a search may stop at the first)."""
    return (tokens[k] for k in range(index + 1, len(tokens)))


def _tokens(css: str) -> list[_Token]:
    out: list[_Token] = []
    depth = 0
    for match in _TOKEN.finditer(css):
        text = match.group()
        directive = _DIRECTIVE.fullmatch(text)
        out.append(_Token(match.start(), match.end(), text, depth, directive and directive.group(1)))
        if text == "{":
            depth += 1
        elif text == "}":
            depth = max(0, depth - 1)
    return out


def _next_rule(css: str, tokens: list[_Token], index: int) -> list[tuple[int, int, str, str]]:
    """The rule (or statement) after the directive ``tokens[index]``, directive included in the cut."""
    directive = tokens[index]
    start = _skip_comments(css, tokens, index + 1, directive.end)
    opened = False
    for token in _after(tokens, index):
        if token.start < start or token.text[:2] == "/*" or token.text[0] in "\"'":
            continue
        if token.text == ";" and not opened:
            return [(directive.start, token.end, css[start : token.end], "")]
        if token.text == "{":
            opened = True
        elif token.text == "}" and token.depth == 1:
            return [(directive.start, token.end, css[start : token.end], "")]
    return [(directive.start, len(css), css[start:], "")] if css[start:].strip() else []


def _skip_comments(css: str, tokens: list[_Token], index: int, pos: int) -> int:
    """Where the first thing after ``pos`` that is neither white space nor a comment starts."""
    for token in _after(tokens, index - 1):
        if css[pos : token.start].strip():
            break
        if token.text[:2] != "/*":
            return token.start
        pos = token.end
    return _skip_space(css, pos)


def _rule_with_ignored_declarations(
    css: str, tokens: list[_Token], index: int, floor: int
) -> list[tuple[int, int, str, str]]:
    """The style rule around the directive ``tokens[index]`` (starting after ``floor``): kept whole as
    written, and parsed without the declaration after each of its ``ignore next`` directives."""
    opening = next((k for k in range(index - 1, -1, -1) if tokens[k].text == "{"), None)
    if opening is None or tokens[opening].depth != 0:
        return []
    start = _skip_space(css, max(floor, _rule_start(tokens, opening)))
    if css[start : tokens[opening].start].lstrip().startswith("@"):
        return []  # an at-rule's block holds rules, not declarations
    closing = next((t for t in _after(tokens, index) if t.text == "}" and t.depth == 1), None)
    stop = closing.end if closing is not None else len(css)
    parsed: list[str] = []
    pos = start
    for k in range(index, len(tokens)):
        token = tokens[k]
        if token.start >= stop:
            break
        if token.depth == 1 and token.directive == "ignore next" and token.start >= pos:
            parsed.append(css[pos : token.start])
            end = next((t for t in _after(tokens, k) if t.depth == 1 and t.text in (";", "}")), None)
            pos = end.end if end is not None and end.text == ";" else (end.start if end is not None else stop)
    parsed.append(css[pos:stop])
    return [(start, stop, css[start:stop], "".join(parsed))]


def _skip_space(css: str, pos: int) -> int:
    match = _SPACE.match(css, pos)
    return match.end() if match is not None else pos


def _rule_start(tokens: list[_Token], opening: int) -> int:
    """Where the rule whose block opens at ``tokens[opening]`` starts: after the rule or statement before."""
    for k in range(opening - 1, -1, -1):
        token = tokens[k]
        if (token.text == "}" and token.depth == 1) or (token.text == ";" and token.depth == 0):
            return token.end
    return 0


def _cut(css: str, cuts: list[tuple[int, int, str, str]]) -> tuple[str, list[str]]:
    """``css`` with each cut replaced by its statement (and its replacement text)."""
    out: list[str] = []
    kept: list[str] = []
    pos = 0
    for start, stop, text, replacement in cuts:
        out.append(f"{css[pos:start]}\n{IGNORED_STATEMENT}{len(kept)};\n{replacement}")
        kept.append(text)
        pos = stop
    out.append(css[pos:])
    return "".join(out), kept
