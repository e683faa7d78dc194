"""Template code (``{{ ... }}``, ``<% ... %>``, FreeMarker's ``<#if>``) kept out of the HTML parser's reach.

juice, the reference email inliner, protects such "code blocks" (its ``juice.codeBlocks``: EJS, Handlebars
and FreeMarker by default): before parsing, each block is replaced by a placeholder, and after inlining
the placeholder is replaced by the block's exact source. Without it the parser reads ``{{#if a <= b}}``
as text with a stray ``<`` (written back as ``&lt;``) and ``<#list items as i>`` as a tag.

A placeholder is lower-case letters and digits (an HTML parser lower-cases attribute names, and no
escaping changes them), holds a secret drawn once per process (customer HTML cannot write one), and
may come back as an attribute name with an empty value (``<td {{attrs}}>``), which is undone too.

A block comes back as written where it was written. The inliner also copies text to where it was not:
CSS values into style attributes, ``attr()`` and ``var()`` values into generated text. A block in such
text is marked as moved (:func:`moved`) and comes back HTML-escaped, so that a block inside a <style>
(``color: {{ "><script>..." }}``) cannot write markup into an attribute; in the kept <style> block a
block comes back with ``</`` escaped, as the rest of that CSS (:func:`restore_css`).

Blocks are found with ``str.find``: an opening without its closing ends the search for that kind, so a
document full of ``{{`` costs one pass, not one per opening.
"""

from __future__ import annotations

import html as html_module
import re
import secrets
from typing import Final

CodeBlock = tuple[str, str]  # (start, end) delimiters

# juice's defaults, in its order (the kinds are replaced one after the other)
DEFAULT_CODE_BLOCKS: Final[tuple[CodeBlock, ...]] = (
    ("<%", "%>"),  # EJS
    ("{{", "}}"),  # Handlebars
    ("<#", ">"),  # FreeMarker directives
    ("</#", ">"),
    ("<@", ">"),  # FreeMarker macros
    ("</@", ">"),
)
_OTHER_DEFAULT_STARTS: Final = re.compile(r"<(?:%|/?[#@])")  # "<" first: the regex engine skips to each "<"
_PREFIX: Final = f"pwcb{secrets.token_hex(6)}x"
_PLACEHOLDER: Final = re.compile(rf'{_PREFIX}([0-9]+)([zm])(?:="")?')  # z: where written, m: moved
_UNMOVED: Final = re.compile(rf"({_PREFIX}[0-9]+)z")


def protect(html: str, blocks: tuple[CodeBlock, ...]) -> tuple[str, list[str]]:
    """``html`` with each code block replaced by a placeholder, and the blocks' sources by number."""
    if blocks == DEFAULT_CODE_BLOCKS and "{{" not in html and _OTHER_DEFAULT_STARTS.search(html) is None:
        return html, []  # the usual case, in two scans instead of six
    sources: list[str] = []
    for start, end in blocks:
        if start in html:
            html = _replace(html, start, end, sources)
    return html, sources


def _replace(html: str, start: str, end: str, sources: list[str]) -> str:
    """One kind of block replaced, left to right, each ending at the first ``end`` after its start."""
    out: list[str] = []
    pos = 0
    while (opening := html.find(start, pos)) >= 0:
        closing = html.find(end, opening + len(start))
        if closing < 0:
            break  # no later opening can close either
        closing += len(end)
        out.append(f"{html[pos:opening]}{_PREFIX}{len(sources)}z")
        text = html[opening:closing]  # may hold an earlier kind's placeholders: stored as written
        sources.append(restore(text, sources) if _PREFIX in text else text)
        pos = closing
    if not out:
        return html
    out.append(html[pos:])
    return "".join(out)


def moved(text: str) -> str:
    """``text`` with its placeholders marked as moved: their blocks come back HTML-escaped."""
    return _UNMOVED.sub(r"\1m", text) if _PREFIX in text else text


def restore(html: str, sources: list[str]) -> str:
    """Put each block's source back where its placeholder is (every copy of it; escaped if moved)."""
    if not sources:
        return html

    def source(match: re.Match[str]) -> str:
        number = int(match.group(1))
        if number >= len(sources):
            return match.group()
        return sources[number] if match.group(2) == "z" else html_module.escape(sources[number])

    return _PLACEHOLDER.sub(source, html)


def restore_css(css: str, sources: list[str]) -> str:
    """:func:`restore` for the kept <style> block: each block with ``</`` escaped, as the CSS around it."""
    if not sources or _PREFIX not in css:
        return css

    def source(match: re.Match[str]) -> str:
        number = int(match.group(1))
        return sources[number].replace("</", "<\\/") if number < len(sources) else match.group()

    return _PLACEHOLDER.sub(source, css)
