"""What every console page shares: the templates, the security headers, the reasons' explanations."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from postwire.api_gateway.deps import Deps
from postwire.db.console_users import Session

HERE: Final = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
# what a console page may load: itself only (no CDN, no font, no remote image); previews of customer
# HTML sit in a sandboxed iframe without scripts, under this same policy
CSP: Final = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
              "frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS: Final = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
# one-line explanations of the bounce reasons (Sisimai's vocabulary, docs/bounces.md)
REASONS: Final = {
    "userunknown": "the mailbox does not exist",
    "hostunknown": "the domain does not exist or has no mail server",
    "mailboxfull": "the mailbox is full", "filtered": "refused by the recipient's filter or settings",
    "rejected": "the sender was refused", "blocked": "the sending IP or domain is blocked",
    "spamdetected": "the message was judged to be spam", "policyviolation": "against the receiver's policy",
    "securityerror": "authentication (SPF, DKIM, DMARC, TLS) failed", "virusdetected": "a virus was found",
    "toomanyconn": "too many connections or messages at once", "exceedlimit": "the message is too large",
    "mesgtoobig": "the message is too large", "suspend": "the mailbox is suspended or disabled",
    "hasmoved": "the recipient has moved", "expired": "could not be delivered within the delivery window",
    "networkerror": "the receiver could not be reached", "systemerror": "an error on the receiving system",
    "notaccept": "the domain accepts no mail", "syntaxerror": "the receiver did not understand the command",
    "contenterror": "the content was refused", "norelaying": "the receiver does not relay for this domain",
    "feedback": "the recipient marked it as spam (complaint)", "onhold": "not classified yet",
    "undefined": "no reason given", "vacation": "an auto-reply",
    "template": "the template could not be rendered",
    "failedstarttls": "TLS was required and failed", "speeding": "sent too fast for the receiver",
    "suppressed": "the address is on the suppression list",
    "unsubscribe": "the recipient unsubscribed from bulk mail",
}


def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def page(request: Request, name: str, session: Session | None, status_code: int = 200,
         **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, {"session": session, "reasons": REASONS, **context},
                                          status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


# a customer's HTML shown in a frame: its own inline styles and data: images, nothing else (no script,
# no remote load, no form), sandboxed even when opened on its own, framed only by the console
PREVIEW_CSP: Final = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; "
                      "frame-ancestors 'self'; base-uri 'none'; form-action 'none'")


def preview(html: str) -> HTMLResponse:
    """``html`` to show in a console page's sandboxed frame (``<iframe sandbox src=…>``)."""
    return HTMLResponse(html, headers={"Content-Security-Policy": PREVIEW_CSP,
                                       "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                                       "Cache-Control": "no-store"})
