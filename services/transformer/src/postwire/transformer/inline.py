"""CSS inlining of one HTML document, with two engines and one safety policy: nothing is ever fetched.

css-inline (Rust, the default) is faster and matches juice, the reference email inliner, on more cases.
premailer (Python + lxml + cssutils) is an opt-in for senders that depend on its output. Both are
configured so that no stylesheet, @import or other resource is loaded from the network or the disk: the
transformer runs inside the cluster, and a customer's HTML must not be able to make it open connections.
At-rules such as @media stay in a <style> block, so responsive rules still override inline styles.

Hostile documents: css-inline recurses once per nesting level somewhere in its native code, so a document
nested deeply enough overflows the stack of the thread running it (about 12 000 levels on a default 8 MB
stack). The transformer's workers run it on a 256 MB stack (:mod:`postwire.transformer.worker_pool`), and an
HTML part with more than :data:`MAX_HTML_TAGS` start tags is refused before either engine sees it: every
element a parser builds comes from a start tag or is implied by one (``<table><td>`` makes four), so
the depth stays far below what that stack holds (240 000 levels were measured to work). Nesting within
the limit can still be slow (html5ever checks scopes level by level); the per-message time limit stops
it. premailer's parser, libxml2, does not fail on documents beyond its own limits (256 levels, 10 MB of
text in one node) but silently drops what lies beyond them; that is detected and refused instead of
inlining a truncated document.
"""

from __future__ import annotations

import functools
import re
from typing import Final

import css_inline

CSS_INLINE: Final = "css-inline"
PREMAILER: Final = "premailer"
ENGINES: Final = (CSS_INLINE, PREMAILER)
MAX_HTML_TAGS: Final = 120_000  # start tags in one document; more is refused (see the module doc)
_START_TAG: Final = re.compile(r"<[A-Za-z]")  # where a start tag can begin (in comments too: an upper bound)


class InlineError(ValueError):
    """The HTML or CSS could not be inlined (bad input or an unknown engine); the document is unusable."""


class HtmlTooComplex(InlineError):
    """The document exceeds a limit (tags, nesting, an engine's parser limits); it is refused, not cut."""


def check_html_limits(html: str) -> None:
    """Raise :class:`HtmlTooComplex` when ``html`` has more than :data:`MAX_HTML_TAGS` start tags."""
    if len(html) <= MAX_HTML_TAGS or html.count("<") <= MAX_HTML_TAGS:  # the common cases, no regex
        return
    for count, _ in enumerate(_START_TAG.finditer(html), start=1):
        if count > MAX_HTML_TAGS:
            raise HtmlTooComplex(f"the HTML has more than {MAX_HTML_TAGS} tags")


def inline_html(html: str, extra_css: str | None = None, engine: str = CSS_INLINE) -> str:
    """Return ``html`` with its <style> rules (and ``extra_css``) moved into style attributes.

    At-rules (@media, @font-face, ...) are kept in a <style> block in <head>. Raises :class:`InlineError`
    (:class:`HtmlTooComplex` for a document beyond the limits described in the module doc).
    """
    if engine in ENGINES:
        check_html_limits(html)
    if engine == CSS_INLINE:
        return _inline_css_inline(html, extra_css)
    if engine == PREMAILER:
        # imported here: premailer, lxml and cssutils cost each worker some 20 MB, and it is opt-in
        from postwire.transformer.premailer_engine import inline_premailer

        return inline_premailer(html, extra_css)
    raise InlineError(f"unknown CSS engine {engine!r}; expected one of {', '.join(ENGINES)}")


@functools.lru_cache(maxsize=16)
def _css_inliner(extra_css: str | None) -> css_inline.CSSInliner:
    """One configured inliner per extra CSS: building it parses that CSS, so reuse it."""
    return css_inline.CSSInliner(
        inline_style_tags=True,
        keep_style_tags=False,
        keep_at_rules=True,  # @media etc. stay in <style>: inline styles cannot express them
        keep_link_tags=False,  # a <link rel=stylesheet> is dropped, never followed
        load_remote_stylesheets=False,
        base_url=None,
        extra_css=extra_css or None,
    )


def _inline_css_inline(html: str, extra_css: str | None) -> str:
    try:
        return str(_css_inliner(extra_css).inline(html))
    except (ValueError, TypeError) as exc:  # css_inline.InlineError is a ValueError
        raise InlineError(f"css-inline failed: {exc}") from exc
