"""Tables. Changing one means adding an Alembic revision in migrations/versions."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    false,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = _now()
    # the 24-hour complaint rate (0.003 = 0.3 %) that pauses the account's bulk lane; None: never
    # (migration 0018, docs/delivery.md)
    pause_bulk_at_complaint_rate: Mapped[Decimal | None] = mapped_column(
        Numeric(6, 5), server_default=text("0.003"))
    # when the bulk lane was paused; None while bulk mail flows
    bulk_paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # may send From a domain that is not a verified sending domain of the account (migration 0019,
    # postwire.db.sender_domains); false: such mail is refused at intake
    allow_unverified_from: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ApiKey(Base):
    """An API key is ``pw_<id>_<secret>``; only SHA-256(secret) is stored (the secret is 256 random bits)."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # the lane of what it sends when a message names none (postwire.core.lanes); None: by the message
    default_stream: Mapped[str | None] = mapped_column(String(16))


class Domain(Base):
    """A sending domain of an account and its DKIM key pair (see postwire.db.domains and docs/domains.md).

    ``name`` is the lower-case A-label and unique across accounts: one domain's mail is signed with one
    key, and a second account must not be able to sign as a domain someone else registered.
    """

    __tablename__ = "domains"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    dkim_selector: Mapped[str] = mapped_column(String(63))
    dkim_algorithm: Mapped[str] = mapped_column(String(16))
    # RSA: PKCS#1 PEM; Ed25519: base64 of the 32-byte seed (RFC 8463), as dkimpy reads them
    dkim_private_key: Mapped[str] = mapped_column(Text)
    # the p= value of the DKIM TXT record
    dkim_public_key: Mapped[str] = mapped_column(Text)
    # host name of click/open tracking links for mail from this domain (a CNAME to the API's host the
    # customer publishes); None: POSTWIRE_TRACKING_BASE_URL (docs/tracking.md)
    tracking_host: Mapped[str | None] = mapped_column(String(253))
    created_at: Mapped[datetime] = _now()
    # when its DKIM record was found published, or an operator vouched for it; None: not verified, and
    # mail From it is refused unless the account allows unverified From domains (migration 0019)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SmtpCredential(Base):
    """SMTP AUTH login; the password is stored as an argon2id hash."""

    __tablename__ = "smtp_credentials"
    username: Mapped[str] = mapped_column(String(200), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    password_hash: Mapped[str] = mapped_column(Text)
    # the login's default switches (x-smtpeter-* / X-Postwire-* headers override them per message)
    inline_css: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    track_clicks: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    track_opens: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    track_bounces: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    prevent_scam: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # the lane of what it sends when a message names none (postwire.core.lanes); None: by the message
    default_stream: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = _now()


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32))
    mail_from: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text, default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    source: Mapped[str] = mapped_column(String(16), default="")
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONType, default=dict)
    # the stored template the message was built from (its accepted events carry it); None: written in the
    # send itself. No foreign key: a message is recorded whatever became of its template (migration 0008)
    template_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()
    __table_args__ = (
        # GET /v1/events/template/{id}: an account's messages of one template
        Index("ix_messages_account_template", "account_id", "template_id",
              postgresql_where=text("template_id IS NOT NULL")),
        # the console's message log: an account's messages newest first, a page at a time (migration 0010;
        # it serves every lookup by account alone too)
        Index("ix_messages_account_created", "account_id", "created_at", "id"),
        # the log's search by tag: tags @> '["tag"]'
        Index("ix_messages_tags", "tags", postgresql_using="gin", postgresql_ops={"tags": "jsonb_path_ops"}),
    )


class Recipient(Base):
    """Latest state of one recipient of one message (queued, deferred, delivered, failed)."""

    __tablename__ = "recipients"
    message_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    smtp_code: Mapped[int | None] = mapped_column(Integer)
    enhanced_status: Mapped[str | None] = mapped_column(String(16))
    response: Mapped[str | None] = mapped_column(Text)
    mx_host: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        # the message log's search by address: stored as the sender wrote it, found in any case (0010)
        Index("ix_recipients_account_address_lower", "account_id", func.lower(text("address"))),
    )


# Bounce-like events, as customers mean them: async bounces, complaints and failures that carry a
# classification reason. The partial index below is built on this predicate and the queries
# (postwire.db.events_query) use the same text, so the planner can always prove the index applies; written
# as PostgreSQL prints it back (pg_get_expr), which libs/db/tests/test_partial_indexes.py compares.
BOUNCE_LIKE: Final = ("((type)::text = 'bounced'::text) OR ((type)::text = 'complained'::text) OR "
                      "(((type)::text = 'failed'::text) AND ((data -> 'reason'::text) IS NOT NULL))")


class Event(Base):
    __tablename__ = "events"
    event_id: Mapped[str] = mapped_column(String(450), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(320))
    type: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # recording order, set by PostgreSQL (migration 0004): the events API pages on (txid, seq) and only
    # reads transactions older than every running one, so a page never skips a late commit (docs/events.md)
    txid: Mapped[int] = mapped_column(BigInteger, server_default=text("(pg_current_xact_id()::text::bigint)"))
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=False))
    __table_args__ = (
        Index("ix_events_account_at", "account_id", "at"),
        Index("ix_events_account_txid_seq", "account_id", "txid", "seq"),
        Index("ix_events_account_type_txid_seq", "account_id", "type", "txid", "seq"),
        Index("ix_events_message", "message_id"),
        # the soft-bounce policy counts one recipient's recent failures (migration 0003)
        Index("ix_events_account_recipient_at", "account_id", "recipient", "at"),
        # the console's bounces, newest first, without reading the other events (0010)
        Index("ix_events_account_bounces_at", "account_id", "at", "seq", postgresql_where=text(BOUNCE_LIKE)),
    )


# the longest tag counted per tag in event_counts; a longer one (the API allows 128 characters, SMTP 100)
# is counted from the events themselves
COUNTED_TAG_MAX: Final = 200


class EventCount(Base):
    """How many events an account has per UTC day and type, over all its events (``tag`` = '',
    ``domain`` = '') and per tag and sending domain of their message (each event under every pair of ''
    or one of its distinct tags and '' or its sending domain): what /v1/stats and the console's overview
    show, read without counting up to a million rows (postwire.db.events_query.daily_counts, totals).

    Kept by statement triggers on ``events`` and ``messages`` (migrations 0010, 0011), in the transaction
    that writes them, from the rows actually written: an event inserted again (ON CONFLICT DO NOTHING, the
    recorder's redeliveries) is not counted again, and no writer can forget it. The sending domain is the
    message's (events_query.sending_domain); an event stored before its message is counted under it when
    the message comes. ``unique_n`` counts the events flagged ``unique`` (a recipient's first open, first
    click of a link)."""

    __tablename__ = "event_counts"
    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tag: Mapped[str] = mapped_column(Text, primary_key=True)
    # '' = every sending domain (and events without one)
    domain: Mapped[str] = mapped_column(Text, primary_key=True, server_default=text("''"))
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    type: Mapped[str] = mapped_column(String(24), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
    unique_n: Mapped[int] = mapped_column(BigInteger)


class IdempotencyKey(Base):
    """The first answer to a request with an Idempotency-Key, replayed for retries of that request.
    ``created_at`` starts the key's lifetime (POSTWIRE_IDEMPOTENCY_TTL_S) and a pending row's lease."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)
    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _now()


class Suppression(Base):
    """An address an account must not send to (postwire.db.suppressions, docs/suppressions.md).

    ``address`` is lower-cased. ``created_at`` is kept when a suppression is renewed, so the listing's
    (created_at, address) order — and with it cursor pagination — stays stable. An entry past
    ``expires_at`` no longer blocks and is not listed; the next add for the address replaces it.
    """

    __tablename__ = "suppressions"
    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    # a Sisimai reason (userunknown, …) or manual | complaint | unsubscribe
    reason: Mapped[str] = mapped_column(String(64))
    # bounce | complaint | manual | soft_bounce_policy | unsubscribe
    source: Mapped[str] = mapped_column(String(24))
    source_event_id: Mapped[str | None] = mapped_column(String(450))
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # what mail it blocks: all | bulk (an unsubscribe) | list:<id> (an unsubscribe from one list)
    scope: Mapped[str] = mapped_column(String(120), default="all", server_default="all")
    __table_args__ = (
        Index("ix_suppressions_account_created", "account_id", "created_at", "address"),
    )


class Webhook(Base):
    """A customer endpoint that receives signed event POSTs (postwire.db.webhooks, docs/webhooks.md).

    ``secret`` is stored in clear on purpose: it is a shared HMAC key we must sign with, not a password
    we only verify. ``event_types`` empty means every type.
    """

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSONType, default=list)
    secret: Mapped[str] = mapped_column(String(128))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = _now()


class WebhookDeadLetter(Base):
    """A delivery that kept failing for the whole retry window; shown and replayed through the API."""

    __tablename__ = "webhook_dead_letters"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(450))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    last_error: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # when the event was first queued for this endpoint, and when it was given up on
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    parked_at: Mapped[datetime] = _now()
    __table_args__ = (
        Index("ix_webhook_dead_letters_webhook_parked", "webhook_id", "parked_at", "id"),
    )


class WebhookAttempt(Base):
    """One POST to an endpoint and how it ended: the "recent deliveries" of the API and the console.
    Written in batches by the notifier, best effort (a log, not the delivery's state: that lives in
    JetStream), and pruned after POSTWIRE_WEBHOOK_LOG_DAYS."""

    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(450))
    event_type: Mapped[str] = mapped_column(String(24), default="")
    attempt: Mapped[int] = mapped_column(Integer)  # 1 for the first POST of a delivery
    outcome: Mapped[str] = mapped_column(String(16))  # delivered | failed | refused
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index("ix_webhook_attempts_webhook_id", "webhook_id", "id"),
        Index("ix_webhook_attempts_at", "at"),
    )


class Template(Base):
    """A stored message template (postwire.db.templates, docs/templates.md). Integer ids, as SMTPeter's
    API hands them out; ``version`` is the current one. A deleted template keeps its versions (messages
    sent from it are resent from the version they were built from) and frees its name."""

    __tablename__ = "templates"
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index("ix_templates_account_name", "account_id", "name", unique=True,
              postgresql_where=text("deleted_at IS NULL")),
        Index("ix_templates_account_id", "account_id", "id"),
    )


class TemplateVersion(Base):
    """One saved content of a template: ``{"subject", "from", "replyto", "html", "text", "headers"}``."""

    __tablename__ = "template_versions"
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    content: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _now()


class ConsoleUser(Base):
    """A person who logs in to the console (docs/console.md): one account's, with a role. The password is
    stored as an argon2id hash; the e-mail address (lower-cased) is the login name, unique overall."""

    __tablename__ = "console_users"
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))  # admin | viewer
    created_at: Mapped[datetime] = _now()
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ConsoleSession(Base):
    """A logged-in browser: the cookie holds a random token, only its SHA-256 is stored (a leaked table
    opens no session). ``csrf`` is the token every form of the session must send back."""

    __tablename__ = "console_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("console_users.id", ondelete="CASCADE"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class DmarcReport(Base):
    """A DMARC aggregate report about one of an account's sending domains (postwire.db.dmarc_reports,
    docs/dmarc.md). The reporter's (org_name, report_id) names a report, so a report sent twice (or once
    by mail and once through the API) is stored once per account. ``policy`` is the published policy as
    the API shows it: ``{"p", "sp", "adkim", "aspf", "pct"}`` (and ``np`` when the report has it)."""

    __tablename__ = "dmarc_reports"
    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    domain: Mapped[str] = mapped_column(String(253))
    org_name: Mapped[str] = mapped_column(String(255))
    org_email: Mapped[str] = mapped_column(String(320))
    report_id: Mapped[str] = mapped_column(String(255))
    begin: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    policy: Mapped[dict[str, Any]] = mapped_column(JSONType)
    received_at: Mapped[datetime] = _now()
    __table_args__ = (
        Index("ix_dmarc_reports_account_org_report", "account_id", "org_name", "report_id", unique=True),
        # the listing (newest first by end, then id) and the summary (reports overlapping a window)
        Index("ix_dmarc_reports_account_domain_end", "account_id", "domain", "end", "id"),
    )


class DmarcRecord(Base):
    """One row of a report: ``count`` messages from ``source_ip`` evaluated alike. ``position`` keeps the
    report's order; the authentication results are the API's lists of objects."""

    __tablename__ = "dmarc_records"
    report_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("dmarc_reports.id", ondelete="CASCADE"),
                                           primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_ip: Mapped[str] = mapped_column(String(45))
    count: Mapped[int] = mapped_column(BigInteger)
    disposition: Mapped[str] = mapped_column(String(32))
    dkim: Mapped[str] = mapped_column(String(32))
    spf: Mapped[str] = mapped_column(String(32))
    header_from: Mapped[str] = mapped_column(String(255))
    dkim_results: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    spf_results: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)


class DataRequest(Base):
    """One data subject request (postwire.db.data_requests, docs/data-requests.md): an export or an
    erasure, and the audit record of it. ``subject`` is the address's pseudonym, never the address; the
    address itself is kept only by an export made with SMTPeter's two-step call (``POST /v1/datarequest``,
    then ``GET /v1/datarequest/{id}``), and an erasure of that address clears it. ``counts`` is what was
    exported or erased, per kind of data."""

    __tablename__ = "data_requests"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # export | erasure
    subject: Mapped[str] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(320))
    requested_by: Mapped[str] = mapped_column(String(64))  # the API key's id, or console:<user id>
    counts: Mapped[dict[str, int]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = _now()
    __table_args__ = (
        Index("ix_data_requests_account_created", "account_id", "created_at", "id"),
        # an erasure clears the address of the account's pending exports of it
        Index("ix_data_requests_account_address_lower", "account_id", func.lower(text("address")),
              postgresql_where=text("address IS NOT NULL")),
    )
