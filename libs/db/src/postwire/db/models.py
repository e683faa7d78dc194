"""Tables. Changing one means adding an Alembic revision in migrations/versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, MetaData, String, Text, func
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


class ApiKey(Base):
    """An API key is ``pw_<id>_<secret>``; only SHA-256(secret) is stored (the secret is 256 random bits)."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


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
    created_at: Mapped[datetime] = _now()


class SmtpCredential(Base):
    """SMTP AUTH login; the password is stored as an argon2id hash."""

    __tablename__ = "smtp_credentials"
    username: Mapped[str] = mapped_column(String(200), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32), index=True)
    mail_from: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text, default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    source: Mapped[str] = mapped_column(String(16), default="")
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONType, default=dict)
    created_at: Mapped[datetime] = _now()


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


class Event(Base):
    __tablename__ = "events"
    event_id: Mapped[str] = mapped_column(String(450), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str] = mapped_column(String(40))
    recipient: Mapped[str] = mapped_column(String(320))
    type: Mapped[str] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    __table_args__ = (
        Index("ix_events_account_at", "account_id", "at"),
        Index("ix_events_message", "message_id"),
    )


class IdempotencyKey(Base):
    """The first answer to a request with an Idempotency-Key, replayed for retries of that request."""

    __tablename__ = "idempotency_keys"
    account_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _now()
