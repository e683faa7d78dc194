"""The premailer engine (opt-in, ``css_engine: premailer``), kept apart so that only a worker asked to use
it imports premailer, lxml and cssutils. The policy is inline.py's: nothing is ever fetched, and a
document beyond libxml2's limits is refused rather than inlined truncated.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, NoReturn

import premailer
from cssutils import CSSParser
from premailer.premailer import etree  # premailer's own lxml, the parser it uses

from postwire.transformer.inline import HtmlTooComplex, InlineError


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


def _check_libxml2_limits(html: str) -> None:
    """Parse as premailer will (its own ``etree.HTMLParser()`` on the stripped text) and refuse a document
    that hits one of libxml2's resource limits: libxml2 reports it and carries on with the part it has,
    so premailer would return the document cut at that point."""
    parser = etree.HTMLParser()
    try:
        etree.fromstring(html.strip(), parser)
    except etree.LxmlError:
        return  # premailer fails the same way and reports it as an InlineError
    for error in parser.error_log:
        if error.type == etree.ErrorTypes.ERR_RESOURCE_LIMIT:
            message = str(error.message).strip()
            raise HtmlTooComplex(f"the HTML exceeds a limit of premailer's parser (libxml2: {message})")


def inline_premailer(html: str, extra_css: str | None) -> str:
    """premailer with nothing fetched and libxml2's silent truncation refused (see inline.py)."""
    _check_libxml2_limits(html)
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
    except RecursionError as exc:  # cssutils/cssselect recurse per selector part
        raise HtmlTooComplex("premailer failed: the CSS or HTML is nested too deeply") from exc
    except Exception as exc:  # premailer/lxml/cssutils raise many unrelated types on bad input
        raise InlineError(f"premailer failed: {type(exc).__name__}: {exc}") from exc
