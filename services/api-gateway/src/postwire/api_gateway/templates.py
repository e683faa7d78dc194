"""Stored templates as the API sees them: the template JSON, its checks, and rendering it with data
(docs/templates.md). One implementation behind SMTPeter's `/v1/template…` routes and Postwire's own
`/v1/templates`.

A template's parts (subject, from, replyto, html, text and each header value) are written in SMTPeter's
personalisation language (postwire.personalisation, docs/personalisation.md). Every part is compiled when
the template is saved, so a syntax error is a 422 naming the part and the line then, not at send time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from postwire.api_gateway.errors import ApiError, InvalidInput
from postwire.api_gateway.schemas import check_custom_headers
from postwire.core.addresses import AddressError, has_line_break, parse_mailbox
from postwire.core.compose import Draft, build
from postwire.db.templates import NAME
from postwire.personalisation import RenderError, TemplateSyntaxError, compile_template, has_tags

PARTS: Final = ("subject", "from", "replyto", "html", "text")
# a template's content, all parts together: a newsletter template is tens of kilobytes (the corpus's
# largest 148 KB); below the request limit (POSTWIRE_API_BODY_MAX, 256 KB), so this is what answers
MAX_TEMPLATE_BYTES: Final = 200 * 1024


class TemplateIn(BaseModel):
    """A template as customers write it. `name`: letters, digits, `-` and `_`, unique in the account
    (not digits only: a reference of digits is an id)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={"examples": [
        {"name": "welcome", "subject": "Welcome, {$name|default:\"friend\"}",
         "from": "Shop <shop@example.com>", "html": "<p>Hello {$name|escape}</p>",
         "text": "Hello {$name}", "headers": {"X-Campaign": "welcome"}}]})

    id: int | None = Field(default=None, description="For SMTPeter's PUT: the template to save a new "
                                                       "version of (or give its `name`).")
    name: str | None = Field(default=None, description="Unique in the account: letters, digits, `-`, "
                             "`_`; not digits only. Required to create; to save a version, a new name "
                             "renames the template.")
    subject: str | None = Field(default=None, max_length=4000)
    from_: str | None = Field(default=None, alias="from", max_length=4000)
    replyto: str | None = Field(default=None, validation_alias=AliasChoices("replyto", "replyTo"),
                                max_length=4000)
    html: str | None = None
    text: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, description="More header fields; values may "
                                    "use the language too.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not NAME.match(v):
            raise PydanticCustomError("invalid_template_name", "template name {name!r}: 1-100 letters, "
                                      "digits, '-' or '_', not digits only", {"name": v[:120]})
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        return check_custom_headers(v)

    def content(self) -> dict[str, Any]:
        """What is stored as a version."""
        return {"subject": self.subject, "from": self.from_, "replyto": self.replyto, "html": self.html,
                "text": self.text, "headers": dict(self.headers)}


def check(content: Mapping[str, Any]) -> None:
    """413 when too large; 422 naming the part and the line when a part does not compile."""
    size = sum(len(str(v).encode()) for v in _parts(content).values())
    if size > MAX_TEMPLATE_BYTES:
        raise ApiError(413, "template_too_large", f"the template's parts hold {size} bytes; at most "
                       f"{MAX_TEMPLATE_BYTES}")
    for part, source in _parts(content).items():
        compile_part(part, source)


def compile_part(part: str, source: str, loc: tuple[str, ...] = ("body",)) -> None:
    """422 ``template_syntax`` at ``loc`` + the part (``headers.X`` as ``headers``, ``X``), naming the line,
    when ``source`` does not compile."""
    try:
        compile_template(source, part=part)
    except TemplateSyntaxError as e:
        raise InvalidInput((*loc, *part.split(".", 1)), f"{part}: {e}", "template_syntax") from None


def render(content: Mapping[str, Any], data: Mapping[str, Any],
           loc: tuple[str, ...] = ("body", "data")) -> dict[str, Any]:
    """Every part of ``content`` rendered with ``data``; a part without template syntax as it is. A
    failure of one render (a limit reached) is a 422 at ``loc`` (where the data came from) naming the
    part."""
    out: dict[str, Any] = {}
    for part, source in _parts(content).items():
        try:
            value = compile_template(source, part=part).render(data) if has_tags(source) else source
        except (TemplateSyntaxError, RenderError) as e:
            raise InvalidInput(loc, f"{part}: {e}", "template_render") from None
        if part.startswith("headers."):
            out.setdefault("headers", {})[part.split(".", 1)[1]] = value
        else:
            out[part] = value
    return {k: out.get(k) for k in PARTS} | {"headers": out.get("headers", {})}


def mime(rendered: Mapping[str, Any], message_id: str, domain: str) -> bytes:
    """The rendered template as the message it would be (no recipients: To is left out)."""
    try:
        sender = parse_mailbox(rendered["from"] or "")
        reply_to = [parse_mailbox(rendered["replyto"])] if rendered.get("replyto") else []
    except AddressError as e:
        raise InvalidInput(("query",), f"from/replyto after rendering: {e}", "invalid_address") from None
    for name, value in (("subject", rendered.get("subject") or ""), *rendered["headers"].items()):
        if has_line_break(value):
            raise InvalidInput(("query",), f"{name} holds a line break after rendering", "header_injection")
    text, html = rendered.get("text"), rendered.get("html")
    draft = Draft(from_=sender, reply_to=reply_to, subject=rendered.get("subject") or "",
                  text="" if text is None and html is None else text, html=html,
                  headers=list(rendered["headers"].items()))
    return build(draft, message_id, domain, datetime.now(UTC))


def _parts(content: Mapping[str, Any]) -> dict[str, str]:
    found = {p: content[p] for p in PARTS if content.get(p) is not None}
    found |= {f"headers.{k}": v for k, v in (content.get("headers") or {}).items()}
    return found
