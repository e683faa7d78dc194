"""One outbound SMTP connection and the transactions sent over it (aiosmtplib underneath).

Commands go through ``execute_command`` rather than aiosmtplib's ``mail``/``rcpt`` helpers so every
reply is kept as an outcome instead of an exception: what matters to the sender is the reply to each
RCPT (a per-recipient result) and the reply to DATA (applies to the recipients accepted at RCPT).

STARTTLS is opportunistic by default, as on the public MX network: used when offered, certificates not
verified unless ``tls_verify``. When the handshake fails the pool reconnects to the same address without
TLS, which is what Postfix does at security level ``may``: refusing to deliver because a server's TLS is
broken would turn a cosmetic failure into a lost message. A shaping rule with ``tls: required``
(``require_tls``) is Postfix's ``encrypt``: no STARTTLS offered, or a failed handshake, is a temporary
failure (4.7.10 / 4.7.5) and the mail waits; it never goes out in plain text.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from dataclasses import dataclass

import aiosmtplib
import structlog
from aiosmtplib import SMTPResponse

from postwire.dispatcher import metrics
from postwire.dispatcher.domains import BadAddress, ascii_address
from postwire.dispatcher.replies import Reply, from_server, local

log = structlog.get_logger(__name__)

# connection-level trouble: the peer went away, timed out, or the socket failed
_CONNECTION_ERRORS = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError)


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


def tls_context(verify: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class Transaction:
    """What a transaction produced: a reply per recipient, and whether the connection can be reused."""

    replies: dict[str, Reply]
    reusable: bool


class SmtpConnection:
    """A greeted (EHLO'd, maybe TLS) session with one address of one MX host."""

    def __init__(self, client: aiosmtplib.SMTP, mx_host: str, address: str, port: int) -> None:
        self.client = client
        self.mx_host = mx_host
        self.address = address
        self.port = port
        self.messages = 0
        self.last_used = time.monotonic()
        self._closed = False
        self.provider = ""  # set by the pool: the provider gauge is decremented on close
        self.healthy = True  # False once a transaction ended in a way that leaves the session unusable

    @property
    def peer(self) -> str:
        return f"{self.mx_host}[{self.address}]:{self.port}"

    @classmethod
    async def open(cls, mx_host: str, address: str, port: int, cfg: ClientConfig,
                   use_tls: bool = True) -> SmtpConnection:
        """Connect, read the greeting, EHLO, and STARTTLS when offered (and ``use_tls``)."""
        peer = f"{mx_host}[{address}]:{port}"
        client = aiosmtplib.SMTP(hostname=address, port=port, local_hostname=cfg.ehlo_hostname,
                                 timeout=cfg.command_timeout_s, start_tls=False,
                                 validate_certs=cfg.tls_verify)
        try:
            await client.connect(timeout=cfg.connect_timeout_s)
            await cls._greet(client, mx_host)
            if use_tls and (cfg.starttls or cfg.require_tls) and client.supports_extension("starttls"):
                await cls._starttls(client, mx_host, peer, cfg)
            elif cfg.require_tls:
                client.close()
                raise ConnectFailure(local("4.7.10", f"{peer} does not offer STARTTLS and the shaping rule "
                                                     "requires TLS", mx_host=mx_host))
        except aiosmtplib.SMTPResponseException as e:
            client.close()
            stage = "HELO" if isinstance(e, aiosmtplib.SMTPHeloError) else "CONN"
            raise ConnectFailure(from_server(e.code, e.message, mx_host, stage)) from e
        except (*_CONNECTION_ERRORS, aiosmtplib.SMTPException) as e:
            client.close()
            raise ConnectFailure(local("4.4.1", f"connect to {peer}: {e}", mx_host=mx_host)) from e
        metrics.CONNECTIONS_OPENED.inc()
        metrics.OPEN_CONNECTIONS.inc()
        return cls(client, mx_host, address, port)

    @staticmethod
    async def _greet(client: aiosmtplib.SMTP, mx_host: str) -> None:
        """EHLO, falling back to HELO for the rare server that refuses EHLO."""
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError as e:
            if e.code // 100 != 5:
                raise
            await client.helo()

    @staticmethod
    async def _starttls(client: aiosmtplib.SMTP, mx_host: str, peer: str, cfg: ClientConfig) -> None:
        try:
            await client.starttls(server_hostname=mx_host, tls_context=tls_context(cfg.tls_verify))
            await client.ehlo()  # RFC 3207: forget what was learnt before TLS
        except (ssl.SSLError, *_CONNECTION_ERRORS, aiosmtplib.SMTPException) as e:
            client.close()
            raise TlsFailure(local("4.7.5", f"TLS handshake with {peer} failed: {e}",
                                   mx_host=mx_host)) from e

    @property
    def is_connected(self) -> bool:
        return self.client.is_connected

    async def reset(self) -> bool:
        """RSET before reusing the session; False means it is dead and must be replaced."""
        try:
            response = await self.client.execute_command(b"RSET")
        except _CONNECTION_ERRORS:
            return False
        return response.code == 250

    async def quit(self) -> None:
        """Polite close; a peer that is already gone is fine."""
        try:
            if self.client.is_connected:
                await self.client.execute_command(b"QUIT", timeout=5)
        except (*_CONNECTION_ERRORS, aiosmtplib.SMTPException):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.client.close()
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


class _Transaction:
    """The state of one transaction, so a dropped connection can answer for everyone still waiting."""

    def __init__(self, conn: SmtpConnection, mail_from: str, recipients: list[str], data: bytes,
                 dsn: DsnParams | None = None) -> None:
        self.conn = conn
        # RFC 3461 parameters go only to a server that offers DSN (RFC 3461 5.2: otherwise dropped)
        self.dsn = dsn if dsn is not None and conn.client.supports_extension("dsn") else None
        self.client = conn.client
        self.mail_from = mail_from
        self.recipients = recipients
        self.data = data
        self.replies: dict[str, Reply] = {}
        self.stage = "MAIL FROM"

    def reply(self, response: SMTPResponse) -> Reply:
        """The server's reply, labelled with the command it answered (for classification)."""
        command = "DATA" if self.stage.endswith("DATA") else self.stage.split(" ", 1)[0]
        return from_server(response.code, response.message, self.conn.mx_host, command)

    async def run(self) -> Transaction:
        try:
            await self._run()
        except _CONNECTION_ERRORS as e:
            lost = local("4.4.2", f"lost connection with {self.conn.peer} in reply to {self.stage}: {e}",
                         mx_host=self.conn.mx_host)
            self._all(lost)  # includes recipients accepted at RCPT whose DATA was never confirmed
            return Transaction(self.replies, reusable=False)
        return Transaction(self.replies, reusable=self.client.is_connected)

    def _envelope(self) -> tuple[bytes, list[str], bool]:
        """The encoded sender, the MAIL options, and whether SMTPUTF8 is needed but not offered."""
        utf8 = self.client.supports_extension("smtputf8")
        addrs = [self.mail_from, *self.recipients]
        needs_utf8 = not all(_encodable(a) for a in addrs)
        options: list[str] = []
        if self.client.supports_extension("size"):
            options.append(f"SIZE={len(self.data)}")
        if not self.data.isascii() and self.client.supports_extension("8bitmime"):
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
        response = await self.client.execute_command(b"MAIL", b"FROM:<" + sender + b">",
                                                     *(o.encode() for o in options))
        if response.code != 250:
            self._all(self.reply(response))
            return
        accepted = await self._rcpts(utf8=not utf8_missing)
        if not accepted:
            if self.client.is_connected:
                self.stage = "RSET"
                await self.client.execute_command(b"RSET")
            return
        self.stage = "end of DATA"
        try:
            response = await self.client.data(self.data)
        except aiosmtplib.SMTPDataError as e:
            response = SMTPResponse(e.code, e.message)
        for rcpt in accepted:
            self.replies[rcpt] = self.reply(response)

    async def _rcpts(self, utf8: bool) -> list[str]:
        """RCPT for each recipient; refusals are final replies, acceptances wait for DATA's reply."""
        accepted: list[str] = []
        for rcpt in self.recipients:
            if not _encodable(rcpt) and not utf8:
                self.replies[rcpt] = local("5.6.7", "non-ASCII recipient address and the server does not "
                                                    "offer SMTPUTF8", mx_host=self.conn.mx_host)
                continue
            self.stage = f"RCPT TO:<{rcpt}>"
            params = [o.encode() for o in self.dsn.rcpt_options()] if self.dsn is not None else []
            response = await self.client.execute_command(b"RCPT", b"TO:<" + _encode(rcpt, utf8) + b">",
                                                         *params)
            if response.code in (250, 251):
                accepted.append(rcpt)
            elif response.code == 421:  # the server is closing the session: nobody else gets through
                self._all(self.reply(response))
                return []
            else:
                self.replies[rcpt] = self.reply(response)
        return accepted

    def _all(self, reply: Reply) -> None:
        for rcpt in self.recipients:
            self.replies.setdefault(rcpt, reply)


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
