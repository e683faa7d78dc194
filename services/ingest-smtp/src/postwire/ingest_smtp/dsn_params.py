"""The SMTP DSN extension (RFC 3461): MAIL's RET and ENVID, RCPT's NOTIFY and ORCPT, checked and decoded.

aiosmtpd 1.4 knows none of these parameters: it would answer 555 to each, and it upper-cases every
parameter it passes on, which would change ENVID's and ORCPT's case. SubmissionSMTP therefore takes them
out of the command line before aiosmtpd parses it (:func:`split_params`) and hands them, as sent, to the
handler, which reads them with :func:`mail_dsn` and :func:`rcpt_dsn`. What these return travels with the
message as InboundMessage.dsn / recipient_dsn, xtext-decoded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Final

from postwire.v1.envelope_pb2 import Dsn, RecipientDsn

MAIL_KEYWORDS: Final = frozenset({"RET", "ENVID"})
RCPT_KEYWORDS: Final = frozenset({"NOTIFY", "ORCPT"})
RET_VALUES: Final = ("FULL", "HDRS")
NOTIFY_VALUES: Final = ("SUCCESS", "FAILURE", "DELAY")
ENVID_MAX: Final = 100  # RFC 3461 4.4 (decoded)
ORCPT_MAX: Final = 500  # RFC 3461 4.2 (decoded address)
# RFC 3461 5: DSN lengthens MAIL lines by up to 110 characters and RCPT lines by up to 500 (aiosmtpd's
# own line reader still stops every command at 1001 octets)
MAIL_EXTRA: Final = 110
RCPT_EXTRA: Final = 500

# RFC 3461 4: xchar is "!".."~" except "+" and "="; hexchar is "+" and two hex digits (upper case per the
# RFC; lower case is accepted too)
_XTEXT: Final = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})+")
_HEXCHAR: Final = re.compile(r"\+([0-9A-Fa-f]{2})")
_PRINTABLE: Final = re.compile(r"[\x20-\x7e]*")  # RFC 3461 4.2 / 4.4: printable US-ASCII once decoded
_ADDR_TYPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")  # "rfc822", "utf-8", "x400", ...


class DsnParamError(ValueError):
    """A DSN parameter that cannot be read; ``str(e)`` is the text after ``501 5.5.4 ``."""


def decode_xtext(text: str) -> str:
    """RFC 3461 4: "+HH" stands for the octet HH; every other character is itself."""
    if not _XTEXT.fullmatch(text):
        raise ValueError("not xtext (printable ASCII, with '+', '=' and others as +HH)")
    return _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), text)


def split_params(arg: str, keyword: str, ours: frozenset[str],
                 getaddr: Callable[[str], tuple[str | None, str | None]]) -> tuple[str, list[str]]:
    """``MAIL``/``RCPT``'s argument without the parameters named in ``ours``, and those parameters as
    sent. ``keyword`` is "FROM:" or "TO:"; ``getaddr`` is aiosmtpd's own address parser, so the address
    ends where aiosmtpd thinks it does. An argument aiosmtpd will refuse anyway is returned unchanged."""
    if arg[:len(keyword)].upper() != keyword:
        return arg, []
    rest = arg[len(keyword):].strip()
    address, params = getaddr(rest)
    if address is None or not params:
        return arg, []
    taken = [p for p in params.split() if p.partition("=")[0].upper() in ours]
    if not taken:
        return arg, []
    kept = [p for p in params.split() if p.partition("=")[0].upper() not in ours]
    path = rest[: len(rest) - len(params)].rstrip()
    return " ".join([keyword + path, *kept]), taken


def _values(options: Iterable[str], ours: frozenset[str]) -> dict[str, str]:
    """Our parameters as {KEYWORD: value}; each at most once and with a value."""
    found: dict[str, str] = {}
    for option in options:
        name, eq, value = option.partition("=")
        name = name.upper()
        if name not in ours:
            continue
        if not eq or not value:
            raise DsnParamError(f"{name} needs a value ({name}=...)")
        if name in found:
            raise DsnParamError(f"{name} given more than once")
        found[name] = value
    return found


def _xtext(name: str, value: str, limit: int) -> str:
    try:
        decoded = decode_xtext(value)
    except ValueError as e:
        raise DsnParamError(f"{name} is {e}") from None
    if not _PRINTABLE.fullmatch(decoded):
        raise DsnParamError(f"{name} must decode to printable US-ASCII")
    if len(decoded) > limit:
        raise DsnParamError(f"{name} longer than {limit} characters")
    return decoded


def mail_dsn(options: Iterable[str]) -> Dsn | None:
    """RET and ENVID of ``MAIL FROM``, or None when neither was given. Raises DsnParamError."""
    found = _values(options, MAIL_KEYWORDS)
    if not found:
        return None
    dsn = Dsn()
    if "RET" in found:
        ret = found["RET"].upper()
        if ret not in RET_VALUES:
            raise DsnParamError("RET must be FULL or HDRS")
        dsn.ret = ret
    if "ENVID" in found:
        dsn.envid = _xtext("ENVID", found["ENVID"], ENVID_MAX)
    return dsn


def rcpt_dsn(options: Iterable[str]) -> RecipientDsn | None:
    """NOTIFY and ORCPT of one ``RCPT TO``, or None when neither was given. Raises DsnParamError."""
    found = _values(options, RCPT_KEYWORDS)
    if not found:
        return None
    rdsn = RecipientDsn()
    if "NOTIFY" in found:
        rdsn.notify.extend(_notify(found["NOTIFY"]))
    if "ORCPT" in found:
        addr_type, sep, address = found["ORCPT"].partition(";")
        if not sep or not _ADDR_TYPE.fullmatch(addr_type):
            raise DsnParamError("ORCPT must be addr-type;xtext, e.g. rfc822;user@example.com")
        rdsn.orcpt = f"{addr_type};{_xtext('ORCPT', address, ORCPT_MAX)}"
    return rdsn


def _notify(value: str) -> list[str]:
    """RFC 3461 4.1: NEVER alone, or a comma-separated list of SUCCESS, FAILURE and DELAY."""
    values = list(dict.fromkeys(v.upper() for v in value.split(",")))
    if "NEVER" in values:
        if len(values) > 1:
            raise DsnParamError("NOTIFY=NEVER cannot be combined with SUCCESS, FAILURE or DELAY")
        return values
    if not values or not all(v in NOTIFY_VALUES for v in values):
        raise DsnParamError("NOTIFY must be NEVER or a comma-separated list of SUCCESS, FAILURE, DELAY")
    return values
