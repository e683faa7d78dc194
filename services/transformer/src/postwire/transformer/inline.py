"""CSS inlining of one HTML document, with two engines and one safety policy: nothing is ever fetched.

css-inline (Rust, the default) does the selector matching; the cascade around it follows juice, the
reference email inliner (:mod:`postwire.transformer.css_sheet` splits the CSS, :mod:`postwire.transformer.
css_cascade` writes each element's style, see docs/inlining.md). premailer (Python + lxml + cssutils) is an
opt-in for senders that depend on its output; it ignores :class:`InlineOptions`. Both are
configured so that no stylesheet, @import or other resource is loaded from the network or the disk: the
transformer runs inside the cluster, and a customer's HTML must not be able to make it open connections.
At-rules such as @media, and rules such as a:hover, stay in a <style> block, so responsive rules still
override inline styles (when they say !important, as responsive email CSS does: inline styles are written
without !important so that they can be overridden).

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

from postwire.transformer.css_cascade import CascadePlan, apply_cascade, build_plan
from postwire.transformer.css_sheet import (
    CONTAINER,
    FONT_FACE,
    KEYFRAMES,
    MEDIA,
    OTHER_AT_RULE,
    PSEUDO,
    Sheet,
    is_stateful,
    parse_sheet,
    specificity,
)
from postwire.transformer.inline_options import DEFAULT_OPTIONS, InlineOptions

CSS_INLINE: Final = "css-inline"
PREMAILER: Final = "premailer"
ENGINES: Final = (CSS_INLINE, PREMAILER)
MAX_HTML_TAGS: Final = 120_000  # start tags in one document; more is refused (see the module doc)
_START_TAG: Final = re.compile(r"<[A-Za-z]")  # where a start tag can begin (in comments too: an upper bound)
_DATA_EMBED: Final = re.compile(r"\sdata-embed\b", re.I)
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


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


def inline_html(
    html: str, extra_css: str | None = None, engine: str = CSS_INLINE, *, options: InlineOptions | None = None
) -> str:
    """Return ``html`` with its <style> rules (and ``extra_css``) moved into style attributes.

    What cannot be inlined (@media, @font-face, a:hover...) is kept in a <style> block in <head>;
    ``options`` switches juice's behaviours on and off (the css-inline engine only). Raises
    :class:`InlineError` (:class:`HtmlTooComplex` for a document beyond the limits in the module doc).
    """
    if engine in ENGINES:
        check_html_limits(html)
    if engine == CSS_INLINE:
        return _inline_css_inline(html, extra_css, options or DEFAULT_OPTIONS)
    if engine == PREMAILER:
        # imported here: premailer, lxml and cssutils cost each worker some 20 MB, and it is opt-in
        from postwire.transformer.premailer_engine import inline_premailer

        return inline_premailer(html, extra_css)
    raise InlineError(f"unknown CSS engine {engine!r}; expected one of {', '.join(ENGINES)}")


class _Plan:
    """Everything derived from one document's CSS, reused while the same template is sent again.

    ``var_styles``: whether some element's own style uses var() (it is then resolved, see css_cascade).
    """

    def __init__(
        self, styles: tuple[str, ...], extra_css: str, options: InlineOptions, var_styles: bool
    ) -> None:
        sheets = [parse_sheet(css) for css in styles] if options.apply_style_tags else []
        extra = parse_sheet(extra_css) if extra_css else None
        self.cascade: CascadePlan = build_plan(
            [*sheets, *([extra] if extra else [])], options, var_styles=var_styles
        )
        kept = [text for css in styles for text in _kept(parse_sheet(css), options)]
        if not options.remove_style_tags:
            kept = list(styles)
        if extra and options.insert_preserved_extra_css:
            kept += _kept(extra, options, extra=True)
        kept.sort(key=lambda text: not text.startswith("@import"))  # clients ignore an @import after rules
        self.kept_css = "\n".join(text for text in kept if text.strip()).replace("</", "<\\/")
        self.inliner = css_inline.CSSInliner(
            inline_style_tags=False,  # the CSS goes in as marker rules (css_cascade), not as written
            keep_style_tags=False,  # what must stay is written back after the cascade
            keep_link_tags=False,  # a <link rel=stylesheet> is dropped, never followed
            load_remote_stylesheets=False,
            base_url=None,
            extra_css=self.cascade.marker_css or None,
        )


@functools.lru_cache(maxsize=16)
def _plan(styles: tuple[str, ...], extra_css: str, options: InlineOptions, var_styles: bool) -> _Plan:
    return _Plan(styles, extra_css, options, var_styles)


def clear_caches() -> None:
    """Forget every parsed stylesheet and plan, as in a fresh process (for benchmarks of the cold path)."""
    for cache in (_plan, parse_sheet, specificity, is_stateful):
        cache.cache_clear()


def _kept(sheet: Sheet, options: InlineOptions, extra: bool = False) -> list[str]:
    """The parts of ``sheet`` that stay in <style>, as ``options`` choose.

    From the extra CSS only the at-rules are kept, as juice's insertPreservedExtraCss does (its a:hover,
    ::before... rules are dropped): juice is the reference senders compare with, and a state rule that
    matters belongs in the document's own <style>, which keeps it.
    """
    wanted = {
        MEDIA: options.preserve_media_queries,
        FONT_FACE: options.preserve_font_faces,
        KEYFRAMES: options.preserve_key_frames,
        CONTAINER: options.preserve_container_queries,
        PSEUDO: options.preserve_pseudos and not extra,
        OTHER_AT_RULE: True,
    }
    return [kept.text for kept in sheet.kept if wanted[kept.kind]]


def _style_blocks(html: str, lower: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(CSS of each <style> to inline, whole <style data-embed> elements to keep as they are).

    <style> elements as an HTML parser finds them: not inside comments (``<!--[if mso]><style>`` is for
    Outlook alone), ended by the first ``</style``.
    """
    styles: list[str] = []
    embedded: list[str] = []
    pos = 0  # ``lower`` is html.lower(), searched with str.find
    while (start := lower.find("<style", pos)) >= 0:
        comment = lower.rfind("<!--", pos, start)
        if comment >= 0 and lower.find("-->", comment + 4, start) < 0:  # this <style is commented out
            pos = lower.find("-->", start)
            if pos < 0:
                break
            continue
        tag_end = lower.find(">", start)
        if tag_end < 0:
            break
        end = lower.find("</style", tag_end)
        end = len(html) if end < 0 else end
        pos = end
        attributes, css = html[start + 6 : tag_end], html[tag_end + 1 : end]
        if attributes[:1] not in ("", " ", "\t", "\n", "\r", "\f", "/"):
            continue  # <styles>, <style-x>: another element
        if _DATA_EMBED.search(attributes):
            embedded.append(f"<style{_DATA_EMBED.sub('', attributes)}>{css}</style>")
        else:
            styles.append(css)
    return tuple(styles), tuple(embedded)


def _insertion_point(document: str) -> int:
    """Where kept <style> blocks go in css-inline's output: the end of <head>, else the start of <body>."""
    head_end = document.find("</head>")
    if head_end >= 0:
        return head_end
    body = document.find("<body")
    return document.index(">", body) + 1 if body >= 0 else 0


def _insert(document: str, blocks: str) -> str:
    split = _insertion_point(document)
    return document[:split] + blocks + document[split:]


def _inline_css_inline(html: str, extra_css: str | None, options: InlineOptions) -> str:
    lower = html.lower()  # str.find is many times faster than a case-insensitive regex over the document
    if len(lower) != len(html):  # "İ".lower() is two characters: lower only ASCII, so positions agree
        lower = html.translate(_ASCII_LOWER)
    styles, embedded = _style_blocks(html, lower)
    var_styles = options.resolve_css_variables and "var(" in lower  # some style may use var()
    plan = _plan(styles, extra_css or "", options, var_styles)
    try:
        marked = str(plan.inliner.inline(html))
    except (ValueError, TypeError) as exc:  # css_inline.InlineError is a ValueError
        raise InlineError(f"css-inline failed: {exc}") from exc
    blocks = "".join(embedded) + (f"<style>\n{plan.kept_css}\n</style>" if plan.kept_css else "")
    if not plan.cascade.marker_css:
        return _insert(marked, blocks) if blocks else marked
    if not blocks:
        return apply_cascade(marked, plan.cascade)
    split = _insertion_point(marked)  # rewrite around it: one copy of a document that can be megabytes
    return "".join(
        (apply_cascade(marked[:split], plan.cascade), blocks, apply_cascade(marked[split:], plan.cascade))
    )
