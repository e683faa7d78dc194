"""One outbound SMTP connection and the transactions sent over it.

The wire is an ``asyncio.Protocol`` of our own (``SmtpWire``) rather than aiosmtplib: a relay sends
the same few commands millions of times, and what it needs from the client — every reply kept as an
outcome, never an exception; PIPELINING (RFC 2920) so MAIL, every RCPT and DATA go out in one write and
a transaction costs two round trips instead of three plus one per recipient; no RSET between
transactions that ended cleanly — aiosmtplib's one-reply-per-command reader cannot give. What matters
to the sender is the reply to each RCPT (a per-recipient result) and the reply to DATA (it applies to
the recipients accepted at RCPT).

A reused session can have been closed by the server a moment before we use it. Nothing reaches the
server in that case before the reply to MAIL would come, so the transaction reports ``untouched`` and
the deliverer takes another session, instead of deferring the mail as Postfix would not either.

STARTTLS is opportunistic by default, as on the public MX network: used when offered, certificates not
verified unless ``tls_verify``. When the handshake fails the pool reconnects to the same address without
TLS, which is what Postfix does at security level ``may``: refusing to deliver because a server's TLS is
broken would turn a cosmetic failure into a lost message. A shaping rule with ``tls: required``
(``require_tls``) is Postfix's ``encrypt``: no STARTTLS offered, or a failed handshake, is a temporary
failure (4.7.10 / 4.7.5) and the mail waits; it never goes out in plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

import structlog

from postwire.dispatcher import metrics
from postwire.dispatcher.outcomes import Reply, from_server, local
from postwire.dispatcher.recipient_domains import BadAddress, ascii_address

log = structlog.get_logger(__name__)

# RFC 5321 4.5.3.1.5 allows 512 octets per reply line; real servers send longer ones, so be generous
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100
# a reply the server never finishes: longer than any real multi-line reply
MAX_REPLY = MAX_REPLY_LINE * MAX_REPLY_LINES
_BARE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")


@dataclass(frozen=True)
class ClientConfig:
    ehlo_hostname: str
    connect_timeout_s: float
    command_timeout_s: float
    starttls: bool = True
    tls_verify: bool = False
    require_tls: bool = False


class ConnectFailure(Exception):
    """No usable session with this address; ``reply`` says why (temporary unless the server said 5xx)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


class TlsFailure(ConnectFailure):
    """STARTTLS was offered but the handshake failed: worth one more try without TLS."""


class Lost(Exception):
    """The connection failed: closed by the peer, reset, timed out, or a reply that is not SMTP."""


def tls_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Transaction:
    """What a transaction produced: a reply per recipient, whether the connection can be reused, and
    whether the server saw nothing of it (a reused session that turned out closed: try another)."""

    replies: dict[str, Reply]
    reusable: bool
    untouched: bool = False


@dataclass(frozen=True)
class ServerReply:
    code: int  # -1: the server sent something that is not an SMTP reply
    text: str


class SmtpWire(asyncio.Protocol):
    """The byte stream of one session: writes, and the server's replies parsed in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # the lines of a multi-line reply read so far
        self._replies: deque[ServerReply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but is one

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        start = 0
        while (end := self._buffer.find(b"\n", start)) != -1:
            self._line(bytes(self._buffer[start:end + 1]))
            start = end + 1
        del self._buffer[:start]
        if len(self._buffer) > MAX_REPLY_LINE:
            self._fail(Lost("reply line too long"))
        self._wake()

    def eof_received(self) -> bool:
        self._fail(Lost("connection closed by the server"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(Lost(f"connection lost: {exc}" if exc else "connection closed"))
        self.transport = None

    # --- for the session ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and self._error is None

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self.transport is None or self.transport.is_closing():
            raise Lost("connection closed")
        self.transport.write(data)

    async def reply(self, timeout_s: float) -> ServerReply:
        """The next reply, in order (several may be waiting after a pipelined write). A timer that fails
        the session, rather than ``asyncio.timeout``: this runs several times per message, and the
        timer costs a fifth as much."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = loop.call_later(timeout_s, self._time_out, timeout_s)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self._replies.popleft()

    def _time_out(self, timeout_s: float) -> None:
        self._fail(Lost(f"no reply within {timeout_s:g} s"))
        self.abort()

    def resume_reading_after_tls(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --- parsing --------------------------------------------------------------------------------------

    def _line(self, line: bytes) -> None:
        """One reply line: ``ddd-text`` continues a reply, ``ddd text`` (or ``ddd``) ends it."""
        code = line[:3]
        sep = line[3:4]
        if not code.isdigit() or sep not in (b" ", b"-", b"\r", b"\n"):
            self._replies.append(ServerReply(-1, line.decode("utf-8", "replace").strip()))
            self._lines.clear()
            return
        self._lines.append(line[4:].strip(b" \t\r\n"))
        if sep == b"-" and len(self._lines) < MAX_REPLY_LINES:
            return
        text = "\n".join(part.decode("utf-8", "surrogateescape") for part in self._lines)
        self._lines.clear()
        self._replies.append(ServerReply(int(code), text))

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done() and (self._replies or self._error):
            self._waiter.set_result(None)


def _extensions(ehlo_text: str) -> dict[str, str]:
    """EHLO keywords (upper case) → their parameters; the first line is the server's greeting name."""
    found: dict[str, str] = {}
    for line in ehlo_text.splitlines()[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            found[keyword.upper()] = params
    return found


class SmtpConnection:
    """A greeted (EHLO'd, maybe TLS) session with one address of one MX host."""

    def __init__(self, wire: SmtpWire, mx_host: str, address: str, port: int, cfg: ClientConfig,
                 extensions: dict[str, str], tls: bool) -> None:
        self.wire = wire
        self.mx_host = mx_host
        self.address = address
        self.port = port
        self.extensions = extensions
        self.tls = tls
        self.timeout_s = cfg.command_timeout_s
        self.messages = 0
        self.last_used = time.monotonic()
        self._closed = False
        self.provider = ""  # set by the pool: the provider gauge is decremented on close
        self.healthy = True  # False once a transaction ended in a way that leaves the session unusable

    @property
    def peer(self) -> str:
        return f"{self.mx_host}[{self.address}]:{self.port}"

    def supports(self, extension: str) -> bool:
        return extension.upper() in self.extensions

    @classmethod
    async def open(cls, mx_host: str, address: str, port: int, cfg: ClientConfig,
                   use_tls: bool = True) -> SmtpConnection:
        """Connect, read the greeting, EHLO, and STARTTLS when offered (and ``use_tls``)."""
        peer = f"{mx_host}[{address}]:{port}"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                _, wire = await loop.create_connection(SmtpWire, address, port)
        except (OSError, TimeoutError) as e:
            raise ConnectFailure(local("4.4.1", f"connect to {peer}: {e or 'timed out'}",
                                       mx_host=mx_host)) from e
        try:
            greeting = await wire.reply(cfg.command_timeout_s)
            if greeting.code != 220:
                raise ConnectFailure(from_server(greeting.code, greeting.text, mx_host, "CONN"))
            extensions = await cls._greet(wire, mx_host, cfg)
            tls = False
            if use_tls and (cfg.starttls or cfg.require_tls) and "STARTTLS" in extensions:
                extensions = await cls._starttls(wire, mx_host, peer, cfg)
                tls = True
            elif cfg.require_tls:
                raise ConnectFailure(local("4.7.10", f"{peer} does not offer STARTTLS and the shaping rule "
                                                     "requires TLS", mx_host=mx_host))
        except Lost as e:
            wire.abort()
            raise ConnectFailure(local("4.4.1", f"connect to {peer}: {e}", mx_host=mx_host)) from e
        except BaseException:
            wire.abort()
            raise
        metrics.CONNECTIONS_OPENED.inc()
        metrics.OPEN_CONNECTIONS.inc()
        return cls(wire, mx_host, address, port, cfg, extensions, tls)

    @staticmethod
    async def _greet(wire: SmtpWire, mx_host: str, cfg: ClientConfig) -> dict[str, str]:
        """EHLO, falling back to HELO for the rare server that refuses EHLO; the extensions offered."""
        wire.write(b"EHLO " + cfg.ehlo_hostname.encode("ascii", "replace") + b"\r\n")
        ehlo = await wire.reply(cfg.command_timeout_s)
        if ehlo.code == 250:
            return _extensions(ehlo.text)
        if ehlo.code // 100 == 5:
            wire.write(b"HELO " + cfg.ehlo_hostname.encode("ascii", "replace") + b"\r\n")
            helo = await wire.reply(cfg.command_timeout_s)
            if helo.code == 250:
                return {}
            ehlo = helo
        raise ConnectFailure(from_server(ehlo.code, ehlo.text, mx_host, "HELO"))

    @classmethod
    async def _starttls(cls, wire: SmtpWire, mx_host: str, peer: str, cfg: ClientConfig) -> dict[str, str]:
        def failed(why: object) -> TlsFailure:
            return TlsFailure(local("4.7.5", f"TLS handshake with {peer} failed: {why}", mx_host=mx_host))

        try:
            wire.write(b"STARTTLS\r\n")
            ready = await wire.reply(cfg.command_timeout_s)
            if ready.code != 220:
                raise failed(f"STARTTLS answered {ready.code} {ready.text}")
            assert wire.transport is not None
            async with asyncio.timeout(cfg.command_timeout_s):
                transport = await asyncio.get_running_loop().start_tls(
                    wire.transport, wire, tls_context(cfg.tls_verify), server_hostname=mx_host)
            if transport is None:
                raise failed("the connection closed during the handshake")
            wire.resume_reading_after_tls(transport)
            return await cls._greet(wire, mx_host, cfg)  # RFC 3207: forget what was learnt before TLS
        except (ssl.SSLError, OSError, TimeoutError, Lost) as e:
            raise failed(e or "timed out") from e

    @property
    def is_connected(self) -> bool:
        return self.wire.connected

    async def reset(self) -> bool:
        """RSET: after a transaction that did not end cleanly; False means the session is unusable."""
        try:
            self.wire.write(b"RSET\r\n")
            return (await self.wire.reply(self.timeout_s)).code == 250
        except Lost:
            return False

    async def quit(self) -> None:
        """Polite close; a peer that is already gone is fine."""
        try:
            if self.wire.connected:
                self.wire.write(b"QUIT\r\n")
                await self.wire.reply(min(self.timeout_s, 5.0))
        except Lost:
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.wire.close()
        if not self._closed:
            self._closed = True
            metrics.OPEN_CONNECTIONS.dec()
            if self.provider:
                metrics.PROVIDER_CONNECTIONS.labels(self.provider).dec()

    async def send(self, mail_from: str, recipients: list[str], data: bytes,
                   dsn: DsnParams | None = None) -> Transaction:
        """One MAIL/RCPT…/DATA transaction; every recipient gets a reply, none raises."""
        self.messages += 1
        self.last_used = time.monotonic()
        with metrics.SMTP_TRANSACTION.time():
            result = await _Transaction(self, mail_from, recipients, data, dsn).run()
        self.healthy = result.reusable
        return result


@dataclass(frozen=True)
class DsnParams:
    """RFC 3461 parameters of a one-recipient transaction, passed on to a next hop that offers DSN."""

    ret: str = ""
    envid: str = ""
    notify: tuple[str, ...] = ()
    orcpt: str = ""

    def mail_options(self) -> list[str]:
        opts = [f"RET={self.ret}"] if self.ret in ("FULL", "HDRS") else []
        return opts + ([f"ENVID={xtext(self.envid)}"] if self.envid else [])

    def rcpt_options(self) -> list[str]:
        opts = [f"NOTIFY={','.join(self.notify)}"] if self.notify else []
        if self.orcpt and ";" in self.orcpt:
            kind, addr = self.orcpt.split(";", 1)
            opts.append(f"ORCPT={kind};{xtext(addr)}")
        return opts


def xtext(value: str) -> str:
    """RFC 3461 4: "+" and "=", controls, space and non-ASCII as +HH (UTF-8 octets)."""
    return "".join(chr(b) if 33 <= b <= 126 and b not in (43, 61) else f"+{b:02X}"
                   for b in value.encode("utf-8"))


def wire_data(data: bytes) -> bytes:
    """The message as it goes after DATA: CRLF line ends, dot-stuffed (RFC 5321 4.5.2), and the final
    ``.``. Submissions arrive with CRLF already (ingest refuses bare CR and LF), so the usual case is a
    few scans in C, not a regular expression over the whole message: without its CRLFs the message holds
    a CR or LF only if one was bare (counting CRs and LFs, a plain loop per byte in CPython, took three
    times as long)."""
    rest = data.replace(b"\r\n", b"")
    if b"\n" in rest or b"\r" in rest:
        data = _BARE_LINE_END.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data + b".\r\n"


class _Transaction:
    """The state of one transaction, so a dropped connection can answer for everyone still waiting."""

    def __init__(self, conn: SmtpConnection, mail_from: str, recipients: list[str], data: bytes,
                 dsn: DsnParams | None = None) -> None:
        self.conn = conn
        # RFC 3461 parameters go only to a server that offers DSN (RFC 3461 5.2: otherwise dropped)
        self.dsn = dsn if dsn is not None and conn.supports("DSN") else None
        self.wire = conn.wire
        self.timeout = conn.timeout_s
        self.mail_from = mail_from
        self.recipients = recipients
        self.data = data
        self.replies: dict[str, Reply] = {}
        self.stage = "MAIL FROM"
        self.answered = False  # the server has replied to something of this transaction
        self.closing = False  # the server said 421: it is closing the session

    def reply(self, response: ServerReply) -> Reply:
        """The server's reply, labelled with the command it answered (for classification)."""
        command = "DATA" if self.stage.endswith("DATA") else self.stage.split(" ", 1)[0]
        return from_server(response.code, response.text, self.conn.mx_host, command)

    async def run(self) -> Transaction:
        try:
            await self._run()
        except Lost as e:
            self.wire.abort()
            if not self.answered and self.conn.messages > 1:
                return Transaction({}, reusable=False, untouched=True)  # a reused session was dead
            lost = local("4.4.2", f"lost connection with {self.conn.peer} in reply to {self.stage}: {e}",
                         mx_host=self.conn.mx_host)
            self._all(lost)  # includes recipients accepted at RCPT whose DATA was never confirmed
            return Transaction(self.replies, reusable=False)
        return Transaction(self.replies, reusable=self.wire.connected and not self.closing)

    def _envelope(self) -> tuple[bytes, list[str], bool]:
        """The encoded sender, the MAIL options, and whether SMTPUTF8 is needed but not offered."""
        utf8 = self.conn.supports("SMTPUTF8")
        addrs = [self.mail_from, *self.recipients]
        needs_utf8 = not all(_encodable(a) for a in addrs)
        options: list[str] = []
        if self.conn.supports("SIZE"):
            options.append(f"SIZE={len(self.data)}")
        if not self.data.isascii() and self.conn.supports("8BITMIME"):
            options.append("BODY=8BITMIME")
        if needs_utf8 and utf8:
            options.append("SMTPUTF8")
        if self.dsn is not None:
            options += self.dsn.mail_options()
        return _encode(self.mail_from, utf8), options, needs_utf8 and not utf8

    async def _run(self) -> None:
        sender, options, utf8_missing = self._envelope()
        if utf8_missing and not _encodable(self.mail_from):
            self._all(local("5.6.7", "non-ASCII sender address and the server does not offer SMTPUTF8",
                            mx_host=self.conn.mx_host))
            return
        rcpts: list[tuple[str, bytes]] = []
        for rcpt in self.recipients:
            if not _encodable(rcpt) and utf8_missing:
                self.replies[rcpt] = local("5.6.7", "non-ASCII recipient address and the server does not "
                                                    "offer SMTPUTF8", mx_host=self.conn.mx_host)
                continue
            params = "".join(f" {o}" for o in self.dsn.rcpt_options()) if self.dsn is not None else ""
            rcpts.append((rcpt, b"RCPT TO:<" + _encode(rcpt, not utf8_missing) + b">" + _command(params)))
        mail = b"MAIL FROM:<" + sender + b">" + _command("".join(f" {o}" for o in options))
        if self.conn.supports("PIPELINING"):
            await self._pipelined(mail, rcpts)
        else:
            await self._one_by_one(mail, rcpts)

    async def _pipelined(self, mail: bytes, rcpts: list[tuple[str, bytes]]) -> None:
        """MAIL, every RCPT and DATA in one write, then their replies in order (RFC 2920)."""
        self.wire.write(b"".join([mail, *(cmd for _, cmd in rcpts), b"DATA\r\n"]) if rcpts else mail)
        response = await self._next()
        mail_ok = response.code == 250
        if not mail_ok:
            self._all(self.reply(response))
            if self.closing:
                return  # nothing more will come
        accepted = []
        for rcpt, _ in rcpts:
            self.stage = f"RCPT TO:<{rcpt}>"
            answer = await self._next()
            if self.closing:  # the server is closing the session: nobody else gets through
                self._all(self.reply(answer))
                return
            if not mail_ok:
                continue  # "503 need MAIL": the reply to MAIL is the outcome
            if answer.code in (250, 251):
                accepted.append(rcpt)
            else:
                self.replies[rcpt] = self.reply(answer)
        if not rcpts:
            if mail_ok:
                await self._reset()
            return
        self.stage = "DATA"
        go_ahead = await self._next()
        if go_ahead.code != 354:
            for rcpt in accepted:  # the server refused the message as a whole
                self.replies[rcpt] = self.reply(go_ahead)
            if mail_ok and not self.closing:
                await self._reset()  # the transaction is still open: MAIL was accepted
            return
        await self._data(accepted)

    async def _one_by_one(self, mail: bytes, rcpts: list[tuple[str, bytes]]) -> None:
        self.wire.write(mail)
        response = await self._next()
        if response.code != 250:
            self._all(self.reply(response))
            return
        accepted: list[str] = []
        for rcpt, command in rcpts:
            self.stage = f"RCPT TO:<{rcpt}>"
            self.wire.write(command)
            answer = await self._next()
            if self.closing:  # the server is closing the session: nobody else gets through
                self._all(self.reply(answer))
                return
            if answer.code in (250, 251):
                accepted.append(rcpt)
            else:
                self.replies[rcpt] = self.reply(answer)
        if not accepted:
            await self._reset()
            return
        self.stage = "DATA"
        self.wire.write(b"DATA\r\n")
        go_ahead = await self._next()
        if go_ahead.code != 354:
            for rcpt in accepted:
                self.replies[rcpt] = self.reply(go_ahead)
            if not self.closing:
                await self._reset()
            return
        await self._data(accepted)

    async def _data(self, accepted: list[str]) -> None:
        self.stage = "end of DATA"
        self.wire.write(wire_data(self.data))
        final = await self._next()
        for rcpt in accepted:
            self.replies[rcpt] = self.reply(final)

    async def _next(self) -> ServerReply:
        response = await self.wire.reply(self.timeout)
        self.answered = True
        self.closing = self.closing or response.code == 421
        if response.code == -1:
            raise Lost(f"protocol error: {self.conn.mx_host} answered {response.text[:200]!r}")
        return response

    async def _reset(self) -> None:
        self.stage = "RSET"
        self.wire.write(b"RSET\r\n")
        await self._next()

    def _all(self, reply: Reply) -> None:
        for rcpt in self.recipients:
            self.replies.setdefault(rcpt, reply)


def _command(params: str) -> bytes:
    """The parameters and line end of a command; a control character would end it early (injection)."""
    encoded = params.encode("ascii", "replace")
    if any(b < 32 or b == 127 for b in encoded):
        raise ValueError("command parameter with a control character")
    return encoded + b"\r\n"


def _encodable(address: str) -> bool:
    """ASCII once the domain is an A-label (so IDN domains need no SMTPUTF8)."""
    try:
        return ascii_address(address).isascii() if address else True
    except BadAddress:
        return address.isascii()


def _encode(address: str, utf8: bool) -> bytes:
    if not address:
        return b""  # the null reverse-path <>
    if not address.isascii():
        with contextlib.suppress(BadAddress):
            address = ascii_address(address)
    return address.encode("utf-8" if utf8 else "ascii")
