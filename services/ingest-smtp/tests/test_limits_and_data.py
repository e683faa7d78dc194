"""Unit tests of the DATA reader (data.py) and the per-client limiters (limits.py), with a fake clock.

test_hostile_input.py drives the same code over TCP against the real server; these pin the edges."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from postwire.core.sharedlimits import SharedFailures
from postwire.ingest_smtp import replies
from postwire.ingest_smtp.data import Received, read_data
from postwire.ingest_smtp.limits import (
    AuthLimits,
    ClientLimits,
    ConnectionLimits,
    Exempt,
    client_key,
)
from postwire.ingest_smtp.message import header_block_too_big
from postwire.ingest_smtp.protocol_init import READ_LIMIT
from postwire.ingest_smtp.settings import IngestSmtpSettings


async def read(wire: bytes, max_size: int | None = 10_000, piece: int = 7,
               limit: int = 1001) -> tuple[Received, bytes]:
    """Feed ``wire`` in small pieces (a line may arrive split anywhere) through a reader with aiosmtpd's
    limit (1001) or ingest's (``limit``); what the reader left unread comes back too."""
    reader = asyncio.StreamReader(limit=limit)
    for i in range(0, len(wire), piece):
        reader.feed_data(wire[i:i + piece])
    reader.feed_eof()
    received = await read_data(reader, max_size)
    return received, await reader.read()


async def test_plain_message_is_unstuffed_and_the_rest_stays_unread() -> None:
    received, rest = await read(b"Subject: x\r\n\r\n..leading dot\r\n.\r\n\r\nQUIT\r\n")
    assert received == Received(content=b"Subject: x\r\n\r\n.leading dot\r\n")
    assert rest == b"\r\nQUIT\r\n"


@pytest.mark.parametrize(("fake_end", "reply"), [
    (b"\n.\n", replies.BARE_LF),
    (b"\r.\r", replies.BARE_CR),
    (b"\n.\r\n", replies.BARE_LF),
    (b"\r\n.\n", replies.BARE_LF),
    (b"\r.\r\n", replies.BARE_CR),
    (b"\r\n.\r", replies.BARE_CR),
])
async def test_only_crlf_dot_crlf_ends_the_data_and_bare_endings_refuse(fake_end: bytes, reply: str) -> None:
    smuggled = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<v@rcpt.example>\r\nDATA\r\nsmuggled\r\n"
    received, rest = await read(b"Subject: x\r\n\r\nbody" + fake_end + smuggled + b".\r\nNOOP\r\n")
    assert received == Received(refusal=(reply, "bare_line_ending"))
    assert rest == b"NOOP\r\n"  # the fake end never ended anything: the reader stopped at the real one


async def test_line_limit_is_998_after_unstuffing() -> None:
    ok = b"x" * 998 + b"\r\n" + b"." + b"y" * 998 + b"\r\n"  # the second is 999 on the wire: stuffed
    assert await read(ok + b".\r\n") == (Received(content=b"x" * 998 + b"\r\n" + b"y" * 998 + b"\r\n"), b"")
    for wire in (b"x" * 999 + b"\r\n", b"x" * 5000 + b"\r\n", b"x" * 1001 + b"\r\n"):
        refused = Received(refusal=(replies.LINE_TOO_LONG, "line_too_long"))
        assert await read(wire + b".\r\n") == (refused, b"")


async def test_a_long_line_ending_in_a_dot_does_not_end_the_data() -> None:
    """The reader hands a long line over in pieces; a piece that starts with '.' is not a line start."""
    wire = b"x" * 1500 + b".\r\nafter\r\n.\r\nNOOP\r\n"
    for piece in (1, 7, 1000, 1002, 4096):
        received, rest = await read(wire, piece=piece)
        assert received.refusal == (replies.LINE_TOO_LONG, "line_too_long") and rest == b"NOOP\r\n"


async def test_nul_is_refused_and_size_outranks_everything() -> None:
    assert (await read(b"a\0b\r\n.\r\n"))[0].refusal == (replies.NUL, "nul_in_data")
    assert (await read(b"a\nb\r\n" + b"z" * 900 + b"\r\n.\r\n", max_size=500))[0].refusal == (
        replies.TOO_BIG, "too_big")
    assert (await read(b"x" * 498 + b"\r\n.\r\n", max_size=500))[0].content == b"x" * 498 + b"\r\n"
    assert (await read(b"x" * 499 + b"\r\n.\r\n", max_size=500))[0].refusal == (replies.TOO_BIG, "too_big")


@pytest.mark.parametrize("piece", [1, 3, 76, 1000, 16384, 100_000])
@pytest.mark.parametrize("limit", [1001, READ_LIMIT])
async def test_chunked_reading_finds_the_same_end_whatever_the_pieces(piece: int, limit: int) -> None:
    """The data is read up to each ".<CRLF>"; only one whose dot starts a line ends it, however the
    input was cut on the way and however much the reader holds at once."""
    lines = [b"line %d ends with a dot." % i if i % 3 else b"=3D.start %d" % i for i in range(3000)]
    lines = [b"." + line if i % 7 == 0 else line for i, line in enumerate(lines)]  # some start with a dot
    body = b"\r\n".join(lines) + b"\r\n"
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines) + b"\r\n"
    wire = stuffed + b".\r\nQUIT\r\n"
    received, rest = await read(wire, max_size=10**6, piece=piece, limit=limit)
    assert received.content == body and rest == b"QUIT\r\n"
    smuggled, rest = await read(b"a\r\n" * 5000 + b"x\n.\r\nMAIL FROM:<e@v.il>\r\n.\r\nNOOP\r\n",
                                max_size=10**6, piece=piece, limit=limit)
    assert smuggled.refusal == (replies.BARE_LF, "bare_line_ending") and rest == b"NOOP\r\n"


async def test_the_client_going_away_mid_message_ends_the_session() -> None:
    with pytest.raises(asyncio.CancelledError):
        await read(b"Subject: x\r\n\r\nhalf a mess")


def test_header_block_size() -> None:
    assert not header_block_too_big(b"A: b\r\n\r\n" + b"x" * 100, 6)
    assert not header_block_too_big(b"A: bcd\r\n\r\n", 6) and header_block_too_big(b"A: bcde\r\n\r\n", 6)
    assert not header_block_too_big(b"A: b", 6)  # all header, short
    assert header_block_too_big(b"A: b\r\n x\r\n", 6)  # all header (no empty line), long


# --- limits -------------------------------------------------------------------------------------------------

IP1, IP2 = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_connections_open_at_once_per_ip() -> None:
    limits = ConnectionLimits(max_open=2, per_minute=0)
    assert [await limits.admit(IP1) for _ in range(3)] == [None, None, "too_many_connections"]
    assert await limits.admit(IP2) is None and limits.open_count(IP1) == 2
    limits.release(IP1)
    assert await limits.admit(IP1) is None


async def test_connection_rate_is_a_bucket_and_counts_refused_attempts() -> None:
    """3 a minute: a bucket of 3 refilled at one every 20 s; a refused attempt costs a token too."""
    clock = Clock()
    limits = ConnectionLimits(max_open=0, per_minute=3, clock=clock)
    assert [await limits.admit(IP1) for _ in range(4)] == [None, None, None, "connection_rate"]
    for _ in range(2):  # a token back every 20 s, but each refused attempt owes one
        clock.now += 20
        assert await limits.admit(IP1) == "connection_rate"
    clock.now += 40  # a client that waits is let in again
    assert await limits.admit(IP1) is None


async def test_exempt_networks_and_ipv6_per_64() -> None:
    exempt = Exempt.of([ipaddress.ip_network("10.0.0.0/8")])
    limits = ConnectionLimits(max_open=1, per_minute=1, exempt=exempt)
    assert all([await limits.admit(ipaddress.ip_address("10.1.2.3")) is None for _ in range(5)])
    assert await limits.admit(ipaddress.ip_address("2001:db8::1")) is None
    assert await limits.admit(ipaddress.ip_address("2001:db8::ffff:2")) == "connection_rate"  # same /64
    assert client_key(ipaddress.ip_address("2001:db8::1")) == "2001:db8::/64"


async def test_auth_failures_lock_the_ip_and_the_user_until_the_lockout_ends() -> None:
    clock = Clock()
    guard = ClientLimits.build(exempt=Exempt(), auth_per_ip=3, auth_per_user=4, auth_window_s=600,
                               lockout_s=900, clock=clock).auth
    assert [await guard.failed(IP1, f"user{i}") for i in range(3)] == [False, False, True]
    assert guard.locked(IP1, "someone-else") and not guard.locked(IP2, "user0")
    # four failures for one name from four addresses
    ips = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(4)]
    assert [await guard.failed(ip, "Target") for ip in ips] == [False, False, False, True]
    assert guard.locked(IP2, "target")  # case does not matter
    clock.now += 899
    assert guard.locked(IP1, None) and guard.locked(IP2, "TARGET")
    clock.now += 2
    assert not guard.locked(IP1, "user0") and not guard.locked(IP2, "target")


async def test_auth_failures_expire_after_the_window() -> None:
    clock = Clock()
    limit = SharedFailures(None, "f", limit=2, window_s=600, lockout_s=60, clock=clock)
    assert not await limit.failed("k")
    clock.now += 601
    assert not await limit.failed("k") and not limit.locked("k")
    assert await limit.failed("k") and limit.locked("k")


async def test_auth_limits_exempt_networks_from_the_ip_count_only() -> None:
    exempt = Exempt.of([ipaddress.ip_network("127.0.0.0/8")])
    guard = AuthLimits(SharedFailures(None, "ip", limit=1, window_s=60, lockout_s=60),
                       SharedFailures(None, "user", limit=2, window_s=60, lockout_s=60), exempt)
    local = ipaddress.ip_address("127.0.0.1")
    assert not await guard.failed(local, "a") and not guard.locked(local, "b")
    assert await guard.failed(local, "a") and guard.locked(local, "a")  # the username still locks


async def test_tables_stay_bounded() -> None:
    limits = ClientLimits.build(exempt=Exempt(), per_minute=5, auth_per_user=1, max_keys=100)
    for i in range(1000):
        await limits.connections.admit(ipaddress.ip_address(f"10.0.{i // 256}.{i % 256}"))
        await limits.auth.failed(None, f"user{i}")
    assert len(limits.connections._rate._local) == 100  # type: ignore[union-attr]
    assert len(limits.auth._per_user._locked) == 100 and limits.auth.locked(None, "user999")


def test_limit_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = IngestSmtpSettings(smtp_hostname="h")
    assert [str(n) for n in defaults.smtp_limit_exempt_networks] == ["127.0.0.0/8", "::1/128"]
    assert (defaults.smtp_max_connections_per_ip, defaults.smtp_connection_rate_per_ip) == (20, 60)
    assert (defaults.smtp_auth_failures_per_ip, defaults.smtp_auth_failures_per_user) == (5, 10)
    assert (defaults.smtp_timeout_s, defaults.smtp_data_timeout_s, defaults.smtp_max_errors) == (300, 600, 20)
    monkeypatch.setenv("POSTWIRE_SMTP_LIMIT_EXEMPT_NETWORKS", "")
    monkeypatch.setenv("POSTWIRE_SMTP_MAX_CONNECTIONS_PER_IP", "0")
    settings = IngestSmtpSettings(smtp_hostname="h")
    assert settings.smtp_limit_exempt_networks == [] and settings.smtp_max_connections_per_ip == 0
    monkeypatch.setenv("POSTWIRE_SMTP_LIMIT_EXEMPT_NETWORKS", "10.0.0.0/8, 2001:db8::/32")
    assert len(IngestSmtpSettings(smtp_hostname="h").smtp_limit_exempt_networks) == 2
