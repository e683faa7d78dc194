"""Unit tests of ingest-smtp's pure parts, and guards against aiosmtpd's name-based wiring drifting."""

from __future__ import annotations

import asyncio
import inspect
import re
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtpd.smtp
import pytest
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import SMTP
from pydantic import ValidationError

from postwire.core import sendoptions
from postwire.core.intake import Submission
from postwire.core.sendoptions import take_option_headers
from postwire.db.accounts import SWITCHES, LoginDefaults
from postwire.ingest_smtp.addresses import address_problem
from postwire.ingest_smtp.dsn_params import DsnParamError, decode_xtext, mail_dsn, rcpt_dsn, split_params
from postwire.ingest_smtp.handler import SubmissionHandler
from postwire.ingest_smtp.message import extract_subject, received_header
from postwire.ingest_smtp.replies import REPLY_REWRITES
from postwire.ingest_smtp.server import SubmissionSMTP
from postwire.ingest_smtp.settings import IngestSmtpSettings
from postwire.ingest_smtp.tls import SELF_SIGNED_NAME, ensure_self_signed, load_context
from postwire.v1.envelope_pb2 import SendOptions

AIOSMTPD_SOURCE = inspect.getsource(aiosmtpd.smtp)


def hooks_aiosmtpd_calls() -> set[str]:
    """Read from aiosmtpd itself, so an upgrade that renames or drops a hook fails here too."""
    called = re.findall(r"""_call_handler_hook\(\s*['"](\w+)['"]""", AIOSMTPD_SOURCE)
    looked_up = re.findall(r"""_handle_hooks\.get\(\s*['"](\w+)['"]""", AIOSMTPD_SOURCE)
    probed = re.findall(r"""event_handler,\s*['"]handle_(\w+)['"]""", AIOSMTPD_SOURCE)
    return set(called) | set(looked_up) | set(probed)


def test_every_handle_method_is_a_hook_aiosmtpd_calls() -> None:
    known = hooks_aiosmtpd_calls()
    assert {"MAIL", "RCPT", "DATA", "AUTH", "exception"} <= known  # the scan itself works
    ours = {name.removeprefix("handle_") for name in dir(SubmissionHandler) if name.startswith("handle_")}
    assert ours == {"EHLO", "AUTH", "MAIL", "RCPT", "DATA", "exception"}
    assert ours <= known, f"aiosmtpd never calls: {ours - known}"


def test_server_overrides_exist_in_aiosmtpd() -> None:
    """SubmissionSMTP overrides by name too: each override must replace something real."""
    own = {n for n, v in vars(SubmissionSMTP).items() if callable(v) and not n.startswith("__")}
    ours = {"_verify", "_with_dsn_params", "close_for_shutdown", "_admit", "_early_talker", "_pending_input",
            "_count_errors", "_unknown_command", "_close_with", "_hang_up"}
    overrides = own - ours
    assert {"auth_PLAIN", "auth_LOGIN", "push", "connection_made", "connection_lost", "smtp_DATA",
            "_handle_client", "_timeout_cb"} <= overrides
    for name in overrides:
        assert hasattr(SMTP, name), name


async def test_aiosmtpd_internals_the_server_relies_on() -> None:
    """Unknown commands reach CommandTable.get; the early-talker and pipelining checks read the
    StreamReader's buffer; the timeouts reuse aiosmtpd's timer. (async: a StreamReader made outside a
    running loop warns when an earlier test left no current loop.)"""
    assert "method = self._smtp_methods.get(command)" in AIOSMTPD_SOURCE
    assert "bogus_budget" in AIOSMTPD_SOURCE  # what CommandTable takes over
    assert "def _reset_timeout(self, duration" in AIOSMTPD_SOURCE
    assert "self._timeout_handle = self.loop.call_later(" in AIOSMTPD_SOURCE
    assert "self._timeout_cb" in AIOSMTPD_SOURCE
    assert isinstance(asyncio.StreamReader()._buffer, bytearray)  # type: ignore[attr-defined]


def test_reply_rewrites_match_aiosmtpd_texts() -> None:
    joined = re.sub(r"""(['"])\s*\n\s*\1""", "", AIOSMTPD_SOURCE)  # implicit 'a' \n 'b' concatenation
    for stock, (ours, _) in REPLY_REWRITES.items():
        assert f"'{stock}'" in joined or f'"{stock}"' in joined, stock
        assert re.match(r"\d{3} [245]\.\d{1,3}\.\d{1,3} ", ours), ours


@pytest.mark.parametrize("address", [
    "user@example.com", "first.last+tag@sub.example.co.uk", '"john doe"@example.com', "u@[192.0.2.1]",
    "u@[IPv6:2001:db8::1]", "x@xn--bcher-kva.example",
])
def test_good_addresses(address: str) -> None:
    assert address_problem(address) is None


@pytest.mark.parametrize(("address", "why"), [
    ("user", "local-part@domain"),
    ("@example.com", "local-part@domain"),
    ("a..b@example.com", "local part"),
    ("a" * 65 + "@example.com", "local part longer"),
    ("user@localhost", "fully qualified"),
    ("user@-bad.example.com", "invalid domain"),
    ("user@exa_mple.com", "invalid domain"),
    ("user@example.123", "top-level"),
    ("user@[300.1.1.1]", "address literal"),
    ("u@" + ("a" * 60 + ".") * 5 + "com", "longer than 254"),
])
def test_bad_addresses(address: str, why: str) -> None:
    problem = address_problem(address)
    assert problem is not None and why in problem


@pytest.mark.parametrize(("raw", "subject"), [
    (b"Subject: Hello\r\n\r\nbody", "Hello"),
    (b"From: a@b.c\r\nSubject: =?utf-8?b?w4RwZmVs?=\r\n folded\r\n\r\nSubject: not this one", "Äpfel folded"),
    (b"From: a@b.c\r\n\r\nSubject: in the body", ""),
    (b"Subject: =?utf-8?q?unterminated\r\n\r\n", "=?utf-8?q?unterminated"),
    (b"Subject: caf\xe9 latin-1 bytes\r\n\r\n", "caf\ufffd latin-1 bytes"),
    (b"Subject: bare LF\n\nbody", "bare LF"),
    (b"", ""),
    (b"\x00\xff garbage without headers", ""),
])
def test_extract_subject_never_fails(raw: bytes, subject: str) -> None:
    assert extract_subject(raw) == subject


def test_received_header_shape() -> None:
    header = received_header(
        helo="evil (host)\x01", peer_ip="192.0.2.7", hostname="smtp.example.net", message_id="01abc",
        esmtp=True, tls=("TLSv1.3", "TLS_AES_256_GCM_SHA384"), account_id="a01", authenticated=True,
        recipients=["r@example.com"], now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert header == (
        b"Received: from evil__host__ ([192.0.2.7])\r\n"
        b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        b"\t(authenticated account a01)\r\n"
        b"\tby smtp.example.net (Postwire) with ESMTPSA id 01abc\r\n"
        b"\tfor <r@example.com>; Fri, 02 Jan 2026 03:04:05 +0000\r\n"
    )
    assert all(len(line) <= 998 for line in header.split(b"\r\n"))


def test_trusted_networks_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTWIRE_TRUSTED_NETWORKS", "10.0.0.0/8, 192.168.1.5/24,::1/128")
    monkeypatch.setenv("POSTWIRE_TRUSTED_ACCOUNT", "apps")
    monkeypatch.setenv("POSTWIRE_SMTP_PORT", "2525")
    settings = IngestSmtpSettings(smtp_hostname="h")
    assert [str(n) for n in settings.trusted_networks] == ["10.0.0.0/8", "192.168.1.0/24", "::1/128"]
    assert settings.smtp_port == 2525 and settings.max_recipients == 1000
    assert not settings.smtp_allow_insecure_auth


def test_trusted_networks_need_an_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTWIRE_TRUSTED_NETWORKS", "127.0.0.1/32")
    with pytest.raises(ValidationError, match="POSTWIRE_TRUSTED_ACCOUNT"):
        IngestSmtpSettings(smtp_hostname="h")


def test_self_signed_certificate_is_made_once_and_tls_starts_at_1_2(tmp_path: Path) -> None:
    pem = ensure_self_signed(tmp_path / "tls", "smtp.example.net")
    first = pem.read_bytes()
    assert pem.name == SELF_SIGNED_NAME and pem.stat().st_mode & 0o077 == 0
    assert ensure_self_signed(tmp_path / "tls", "smtp.example.net").read_bytes() == first
    ctx = load_context(None, None, tmp_path, "smtp.example.net")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert (tmp_path / "tls" / SELF_SIGNED_NAME).read_bytes() == first


def test_login_switches_are_the_option_headers_and_send_options_names() -> None:
    """A login's defaults, the headers' switches and SendOptions/Submission fields line up by name."""
    assert set(SWITCHES) == set(sendoptions.SWITCHES.values())
    assert set(SWITCHES) <= set(SendOptions.DESCRIPTOR.fields_by_name)
    assert set(SWITCHES) <= set(Submission.__dataclass_fields__)
    standard = Submission(account_id="a", mail_from="", recipients=[], raw=b"", source="smtp")
    assert LoginDefaults().as_dict() == {name: getattr(standard, name) for name in SWITCHES}


@pytest.mark.parametrize(("xtext", "text"), [
    ("abc", "abc"), ("a+2Bb", "a+b"), ("x+3Dy", "x=y"), ("+20lead", " lead"), ("lower+2bhex", "lower+hex"),
    ("rfc822;<a@b>", "rfc822;<a@b>"),
])
def test_decode_xtext(xtext: str, text: str) -> None:
    assert decode_xtext(xtext) == text


@pytest.mark.parametrize("xtext", ["", "a+b", "a+2", "a=b", "a b", "caf\u00e9"])
def test_bad_xtext(xtext: str) -> None:
    with pytest.raises(ValueError, match="not xtext"):
        decode_xtext(xtext)


def test_mail_and_rcpt_dsn_parameters() -> None:
    assert mail_dsn(["SIZE=10", "BODY=8BITMIME"]) is None
    dsn = mail_dsn(["ret=full", "ENVID=Q+2B1"])
    assert dsn is not None and (dsn.ret, dsn.envid) == ("FULL", "Q+1")
    rdsn = rcpt_dsn(["NOTIFY=delay,Failure,DELAY", "ORCPT=RFC822;Jo+2BSmith@Example.com"])
    assert rdsn is not None and list(rdsn.notify) == ["DELAY", "FAILURE"]
    assert rdsn.orcpt == "RFC822;Jo+Smith@Example.com"  # the addr-type as given, the address decoded
    assert rcpt_dsn([]) is None


@pytest.mark.parametrize(("parse", "options", "why"), [
    (mail_dsn, ["RET=NONE"], "FULL or HDRS"),
    (mail_dsn, ["RET"], "needs a value"),
    (mail_dsn, ["ENVID=" + "x" * 101], "longer than 100"),
    (mail_dsn, ["ENVID=a+0Ab"], "printable"),
    (mail_dsn, ["RET=FULL", "ret=HDRS"], "more than once"),
    (rcpt_dsn, ["NOTIFY=NEVER,DELAY"], "NEVER cannot be combined"),
    (rcpt_dsn, ["NOTIFY=SUCCESS,"], "comma-separated"),
    (rcpt_dsn, ["ORCPT=;a@b.example"], "addr-type;xtext"),
    (rcpt_dsn, ["ORCPT=rfc822;" + "a" * 501], "longer than 500"),
])
def test_bad_dsn_parameters(parse: Any, options: list[str], why: str) -> None:
    with pytest.raises(DsnParamError, match=why):
        parse(options)


async def test_split_params_keeps_the_dsn_ones_as_sent() -> None:
    smtp = SMTP(Sink())
    ours = frozenset({"RET", "ENVID"})
    assert split_params("FROM:<a@b.example> SIZE=5 ret=full ENVID=MiXed", "FROM:", ours, smtp._getaddr) == (
        "FROM:<a@b.example> SIZE=5", ["ret=full", "ENVID=MiXed"])
    assert split_params("FROM:<> RET=HDRS", "FROM:", ours, smtp._getaddr) == ("FROM:<>", ["RET=HDRS"])
    assert split_params('from: <"a b"@c.example> BODY=8BITMIME', "FROM:", ours, smtp._getaddr) == (
        'from: <"a b"@c.example> BODY=8BITMIME', [])
    assert split_params("TO:<x@y.example>", "FROM:", ours, smtp._getaddr) == ("TO:<x@y.example>", [])


BODY_HEADER = b"Subject: s\r\n\r\nX-Postwire-Tags: in the body\r\n"


@pytest.mark.parametrize(("raw", "content", "tags"), [
    (b"Subject: s\r\nX-Postwire-Tags: a\r\n\r\nbody\r\n", b"Subject: s\r\n\r\nbody\r\n", ["a"]),
    (b"Subject: s\r\nx-smtpeter-tags: a\r\n", b"Subject: s\r\n", ["a"]),  # no body, no empty line
    (b"x-smtpeter-tags: a\r\nSubject: s\r\n", b"Subject: s\r\n", ["a"]),
    (b"Subject: s\r\n", b"Subject: s\r\n", []),
    (BODY_HEADER, BODY_HEADER, []),  # only the top-level header block counts
])
def test_option_headers_go_with_or_without_a_body(raw: bytes, content: bytes, tags: list[str]) -> None:
    stripped, headers = take_option_headers(raw)
    assert (stripped, headers.tags) == (content, tags)


async def test_protocol_init_sets_what_aiosmtpd_s_constructor_sets() -> None:
    """init_protocol replaces SMTP.__init__ (which introspects on every connection): same attributes,
    same AUTH mechanisms, hooks and commands, bound to the new instance."""
    from postwire.ingest_smtp.protocol_init import init_protocol
    from postwire.ingest_smtp.server import capture_credentials

    loop = asyncio.get_running_loop()
    handler = SubmissionHandler(intake=None, policy=None, hostname="h", max_recipients=1,  # type: ignore[arg-type]
                                queue_connected=lambda: True)
    kwargs: dict[str, Any] = dict(loop=loop, hostname="mx.test", ident="Postwire ESMTP", data_size_limit=1000,
                                  tls_context=None, auth_require_tls=True, timeout=30)
    stock = SubmissionSMTP.__new__(SubmissionSMTP)
    SMTP.__init__(stock, handler, authenticator=capture_credentials, decode_data=False, **kwargs)
    ours = SubmissionSMTP.__new__(SubmissionSMTP)
    init_protocol(ours, handler, authenticator=capture_credentials, **kwargs)

    assert set(vars(ours)) == set(vars(stock))
    for table in ("_auth_methods", "_handle_hooks", "_smtp_methods"):
        assert set(getattr(ours, table)) == set(getattr(stock, table)), table
    assert ours._auth_methods["PLAIN"].method.__self__ is ours  # bound to this connection
    assert ours._smtp_methods["DATA"].__self__ is ours
    simple = {k: v for k, v in vars(stock).items()
              if isinstance(v, str | int | float | bool | type(None)) and k != "_proxy_timeout"}
    assert {k: vars(ours)[k] for k in simple} == simple
    assert ours._ehlo_hook_ver == stock._ehlo_hook_ver == "new"


@pytest.mark.parametrize("arg", [
    "<a@b.c>", "<a@b.c> SIZE=100", "<First.Last+tag@Sub.Example.COM> BODY=8BITMIME SIZE=9  ", "  <a@b.c>",
    "<a@b.c>(comment) SIZE=1", "<>", "< a@b.c >", '<"quoted x"@b.c>', "<@route:a@b.c>", "<a@b..c>",
    "<a.@b.c>", "a@b.c", "<a@[192.0.2.1]>", "<a@b.c", "<a@b.c>>", "<a b@c.d>", "", "<a@b.c>\tSIZE=1",
    "<ü@b.c>", "<a@b.c> NOTIFY=SUCCESS ORCPT=rfc822;x@y.z",
])
async def test_fast_path_parsing_agrees_with_aiosmtpd(arg: str) -> None:
    """MAIL/RCPT paths and Subjects take a regular-expression shortcut when they are plain; whatever it
    answers must be what aiosmtpd's (and the email package's) parser answers."""
    proto = SubmissionSMTP.__new__(SubmissionSMTP)
    proto.local_part_limit = 0
    assert proto._getaddr(arg) == SMTP._getaddr(proto, arg)


@pytest.mark.parametrize("raw", [
    b"Subject: Hello   world \r\n\r\nbody", b"subject:Hi\r\nFrom: a@b.c\r\n\r\n", b"SUBJECT:  \r\n\r\n",
    b"Subject: first\r\nSubject: second\r\n\r\n", b"Subject: folded\r\n second line\r\nX: y\r\n\r\n",
    b"From: a@b.c\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\n", b"Subject: tab\there\r\n\r\n",
    b"X-Subject: not it\r\nSubject: it\r\n\r\n", b"From: a@b.c\r\n\r\n",
])
def test_plain_subject_shortcut_agrees_with_the_header_parser(raw: bytes) -> None:
    from email import policy
    from email.parser import BytesHeaderParser

    value = BytesHeaderParser(policy=policy.default).parsebytes(raw).get("subject")
    assert extract_subject(raw) == re.sub(r"\s+", " ", "" if value is None else str(value)).strip()
