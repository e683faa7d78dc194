"""The sandbox inbox: what the local run's catch-all MX caught, one message per file, in one folder.

The sandbox MX (``postwire.cli.sandbox``) writes it; the api-gateway's console reads it. Both import
this module, which is why it lives in a library: a service may not import the CLI.

The folder (``$POSTWIRE_DATA_DIR/sandbox`` in the local run) holds, per message:

- ``<id>.eml``: the message exactly as it arrived after DATA (CRLF line endings, nothing added);
- ``<id>.json``: its index entry: ``id``, ``mail_from`` (the envelope sender, ``""`` for ``<>``),
  ``recipients`` (the envelope's), ``received_at`` (ISO 8601, UTC), ``size`` (bytes of the .eml),
  ``subject``, ``from`` and ``to`` (the header fields, decoded; ``""`` when missing), ``helo`` and
  ``peer`` (the client's EHLO name and address).

``<id>`` is the arrival time and a random part, ``20250314T093015.123456Z-<32 hex digits>``, so the
names sort by arrival and an id is checked with one pattern (no path can be smuggled in through one).

A message is written .eml first, then .json, each under a temporary name, flushed to disk and renamed
into place: the .json is the commit. A message without one is not listed (it is being written, or its
writer died, and :func:`sweep` removes it). Beyond ``keep`` messages the oldest are removed, .json
first, so a reader never lists a message whose .eml is already gone for good; one that loses the race
gets None from :func:`read_message` and skips it.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from typing import Any

DEFAULT_KEEP = 1000
_ID = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{32}")
_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_TMP_PREFIX = "."  # temporary files: hidden, and never matching *.json / *.eml of a committed message
_HEADER_MAX = 998  # one header line at most (RFC 5322); the index is for lists, the .eml has it all


@dataclass(frozen=True)
class CaughtMessage:
    id: str
    mail_from: str
    recipients: tuple[str, ...]
    received_at: datetime
    size: int
    subject: str = ""
    header_from: str = ""
    header_to: str = ""
    helo: str = ""
    peer: str = ""
    raw: bytes | None = None  # the .eml's bytes: read_message fills it in, list_messages does not

    def email(self) -> EmailMessage:
        """The message parsed (headers, parts, attachments); only from :func:`read_message`."""
        if self.raw is None:
            raise ValueError("the message's source was not read: use read_message")
        msg = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(msg, EmailMessage)
        return msg


def is_message_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def new_message_id(now: datetime | None = None) -> str:
    at = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{at.strftime(_TIME_FORMAT)}-{uuid.uuid4().hex}"


# ---------------------------------------------------------------------------------------------- writing


def store_message(folder: Path, mail_from: str, recipients: Sequence[str], data: bytes, *,
                  keep: int = DEFAULT_KEEP, helo: str = "", peer: str = "",
                  now: datetime | None = None) -> CaughtMessage:
    """Write one caught message durably, then remove the oldest beyond ``keep``. Blocking file I/O:
    call it from a thread in an event loop."""
    folder.mkdir(parents=True, exist_ok=True)
    received_at = (now or datetime.now(UTC)).astimezone(UTC)
    subject, header_from, header_to = _header_index(data)
    msg = CaughtMessage(id=new_message_id(received_at), mail_from=mail_from, recipients=tuple(recipients),
                        received_at=received_at, size=len(data), subject=subject, header_from=header_from,
                        header_to=header_to, helo=helo, peer=peer)
    _write_durably(folder / f"{msg.id}.eml", data)
    _write_durably(folder / f"{msg.id}.json", json.dumps(_index_entry(msg), ensure_ascii=False).encode())
    _sync_folder(folder)
    prune(folder, keep)
    return msg


def prune(folder: Path, keep: int) -> int:
    """Remove the oldest messages beyond the newest ``keep``; how many were removed."""
    ids = _committed_ids(folder)
    old = ids[:max(0, len(ids) - keep)]
    for message_id in old:
        _remove(folder, message_id)
    return len(old)


def delete_message(folder: Path, message_id: str) -> bool:
    """Remove one message; False when the id is not a message id or there is no such message."""
    if not is_message_id(message_id) or not (folder / f"{message_id}.json").exists():
        return False
    _remove(folder, message_id)
    return True


def sweep(folder: Path) -> None:
    """Remove what an interrupted writer left: temporary files, and .eml files without their .json.
    Only while nothing writes to the folder (the sandbox MX calls it before it listens)."""
    if not folder.is_dir():
        return
    committed = set(_committed_ids(folder))
    for path in folder.iterdir():
        stem, suffix = path.stem, path.suffix
        if path.name.startswith(_TMP_PREFIX) or (suffix == ".eml" and stem not in committed):
            path.unlink(missing_ok=True)


def _remove(folder: Path, message_id: str) -> None:
    (folder / f"{message_id}.json").unlink(missing_ok=True)  # unlisted first, then gone
    (folder / f"{message_id}.eml").unlink(missing_ok=True)


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _sync_folder(folder: Path) -> None:
    """The renames themselves are durable once the folder's entry is on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _header_index(data: bytes) -> tuple[str, str, str]:
    """Subject, From and To, decoded, on one line each."""
    headers = BytesHeaderParser(policy=policy.default).parsebytes(data)
    found = []
    for name in ("Subject", "From", "To"):
        try:
            value = headers.get(name)
            text = "" if value is None else str(value)
        except Exception:  # a malformed header is still caught; the console shows it raw from the .eml
            text = ""
        found.append(" ".join(text.split())[:_HEADER_MAX])
    return found[0], found[1], found[2]


def _index_entry(msg: CaughtMessage) -> dict[str, Any]:
    return {"id": msg.id, "mail_from": msg.mail_from, "recipients": list(msg.recipients),
            "received_at": msg.received_at.isoformat(), "size": msg.size, "subject": msg.subject,
            "from": msg.header_from, "to": msg.header_to, "helo": msg.helo, "peer": msg.peer}


# ---------------------------------------------------------------------------------------------- reading


def count_messages(folder: Path) -> int:
    return len(_committed_ids(folder))


def list_messages(folder: Path, limit: int = 50, offset: int = 0) -> list[CaughtMessage]:
    """Newest first, without their sources; ``offset`` skips that many of the newest."""
    if limit <= 0 or offset < 0:
        return []
    ids = _committed_ids(folder)[::-1][offset:offset + limit]
    found = (_read_index(folder, message_id) for message_id in ids)
    return [m for m in found if m is not None]


def read_message(folder: Path, message_id: str) -> CaughtMessage | None:
    """One message with its source (``raw``); None for anything that is not the id of a message here."""
    if not is_message_id(message_id):
        return None
    msg = _read_index(folder, message_id)
    if msg is None:
        return None
    try:
        raw = (folder / f"{message_id}.eml").read_bytes()
    except FileNotFoundError:  # removed between the two reads (pruned, deleted)
        return None
    return replace(msg, raw=raw)


def _committed_ids(folder: Path) -> list[str]:
    """Ids of the messages whose .json is in place, oldest first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(name[:-5] for name in names if name.endswith(".json") and is_message_id(name[:-5]))


def _read_index(folder: Path, message_id: str) -> CaughtMessage | None:
    try:
        entry = json.loads((folder / f"{message_id}.json").read_bytes())
        return CaughtMessage(
            id=message_id, mail_from=str(entry["mail_from"]),
            recipients=tuple(str(r) for r in entry["recipients"]),
            received_at=datetime.fromisoformat(entry["received_at"]), size=int(entry["size"]),
            subject=str(entry.get("subject", "")), header_from=str(entry.get("from", "")),
            header_to=str(entry.get("to", "")), helo=str(entry.get("helo", "")),
            peer=str(entry.get("peer", "")))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):  # not written by store_message: not a message
        return None
