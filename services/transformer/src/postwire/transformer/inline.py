"""CSS inlining of one HTML document, with two engines and one safety policy: nothing is ever fetched.

css-inline (Rust, the default) is faster and matches juice, the reference email inliner, on more cases.
premailer (Python + lxml + cssutils) is an opt-in for senders that depend on its output. Both are
configured so that no stylesheet, @import or other resource is loaded from the network or the disk: the
transformer runs inside the cluster, and a customer's HTML must not be able to make it open connections.
At-rules such as @media stay in a <style> block, so responsive rules still override inline styles.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Final, NoReturn

import css_inline
import premailer
from cssutils import CSSParser

CSS_INLINE: Final = "css-inline"
PREMAILER: Final = "premailer"
ENGINES: Final = (CSS_INLINE, PREMAILER)


class InlineError(ValueError):
    """The HTML or CSS could not be inlined (bad input or an unknown engine); the document is unusable."""


def inline_html(html: str, extra_css: str | None = None, engine: str = CSS_INLINE) -> str:
    """Return ``html`` with its <style> rules (and ``extra_css``) moved into style attributes.

    At-rules (@media, @font-face, ...) are kept in a <style> block in <head>. Raises :class:`InlineError`.
    """
    if engine == CSS_INLINE:
        return _inline_css_inline(html, extra_css)
    if engine == PREMAILER:
        return _inline_premailer(html, extra_css)
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


def _refuse_fetch(url: str) -> NoReturn:
    raise InlineError(f"refusing to fetch {url!r}: remote stylesheets are never loaded")


class _NoFetchSession:
    """Stands in for premailer's ``requests`` session: any fetch attempt fails instead of connecting."""

    def get(self, url: str, **_: Any) -> NoReturn:
        _refuse_fetch(url)


def _no_fetch(url: str) -> tuple[None, None]:
    """cssutils fetcher for @import: report the sheet as absent instead of downloading it."""
    return None, None


class _SafePremailer(premailer.Premailer):  # type: ignore[misc]
    """Premailer whose cssutils parser cannot follow @import (premailer's own parser would download it)."""

    def _parse_css_string(self, css_body: str, validate: bool = True) -> Any:
        return _parse_css_no_fetch(css_body, validate)


@functools.lru_cache(maxsize=256)
def _parse_css_no_fetch(css_body: str, validate: bool) -> Any:
    parser = CSSParser(fetcher=_no_fetch, validate=validate, loglevel=logging.CRITICAL)
    return parser.parseString(css_body)


def _inline_premailer(html: str, extra_css: str | None) -> str:
    try:
        return str(
            _SafePremailer(
                html,
                css_text=extra_css or None,
                base_url=None,
                disable_link_rewrites=True,
                allow_network=False,  # <link rel=stylesheet> is left alone, not loaded
                allow_loading_external_files=False,
                session=_NoFetchSession(),
                keep_style_tags=False,
                strip_important=False,  # !important must survive to beat client defaults
                disable_validation=True,
                cssutils_logging_level=logging.CRITICAL,
            ).transform()
        )
    except InlineError:
        raise
    except Exception as exc:  # premailer/lxml/cssutils raise many unrelated types on bad input
        raise InlineError(f"premailer failed: {type(exc).__name__}: {exc}") from exc
