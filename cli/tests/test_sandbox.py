"""The sandbox MX: a real SMTP client talks to it on loopback, and what it caught is read back the way
the console does (postwire.core.sandbox_store)."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
import sys
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest
import pytest_asyncio
from pydantic import ValidationError

from postwire.cli.sandbox import (
    HOOKS,
    NO_AUTH,
    TEMPORARY_ERROR,
    SandboxHandler,
    SandboxSettings,
    start_sandbox,
)
from postwire.core import sandbox_store
from postwire.testing.fixtures import eventually
from postwire.testing.ports import free_port


def _message(subject: str, to: str = "someone@nowhere.invalid") -> bytes:
    msg = EmailMessage()
    msg["From"] = "App <app@example.com>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("<p>Hello</p>", subtype="html")
    return bytes(msg).replace(b"\n", b"\r\n")


def _send(port: int, mail_from: str, rcpts: list[str], data: bytes) -> tuple[int, bytes]:
    """One transaction with the standard library's client; the reply to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        code, _ = client.mail(mail_from)
        assert code == 250
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        return client.data(data)


@pytest_asyncio.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    folder = tmp_path / "sandbox"
    listener = await start_sandbox(folder, host="127.0.0.1", port=0, keep=3, max_message_size=1 << 20)
    yield listener.port, folder
    await listener.close(5)


async def test_every_recipient_is_caught_and_listed(sandbox: tuple[int, Path]) -> None:
    port, folder = sandbox
    first = _message("First")
    code, reply = await asyncio.to_thread(_send, port, "bounce+a@bounces.test",
                                          ["a@nowhere.invalid", "b@elsewhere.invalid"], first)
    assert code == 250 and reply.startswith(b"2.0.0 Ok: caught as ")
    caught_as = reply.decode().rsplit(" ", 1)[1]
    code, _ = await asyncio.to_thread(_send, port, "", ["c@nowhere.invalid"], _message("Second"))
    assert code == 250

    newest, oldest = sandbox_store.list_messages(folder)
    assert oldest.id == caught_as
    assert (oldest.mail_from, oldest.recipients) == ("bounce+a@bounces.test",
                                                      ("a@nowhere.invalid", "b@elsewhere.invalid"))
    assert (oldest.subject, oldest.header_from, oldest.helo, oldest.peer) == (
        "First", "App <app@example.com>", "client.test", "127.0.0.1")
    assert (newest.mail_from, newest.recipients, newest.subject) == ("", ("c@nowhere.invalid",), "Second")
    read = sandbox_store.read_message(folder, oldest.id)
    assert read is not None and read.raw is not None
    assert read.raw.rstrip(b"\r\n") == first.rstrip(b"\r\n")  # the bytes as sent, nothing added


async def test_simulator_addresses_act_out_their_outcome_and_are_not_caught(
        sandbox: tuple[int, Path]) -> None:
    port, folder = sandbox

    def talk() -> tuple[list[tuple[int, bytes]], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.test")
            client.mail("app@example.com")
            rcpts = ("bounce@any.example", "Bounce+7@other.example", "full@any.example",
                     "blocked@any.example", "defer@any.example", "reader@any.example")
            replies = [client.rcpt(r) for r in rcpts]
            return replies, client.data(_message("Mixed"))

    replies, data = await asyncio.to_thread(talk)
    assert [(code, text.split()[0]) for code, text in replies] == [
        (550, b"5.1.1"), (550, b"5.1.1"), (552, b"5.2.2"), (554, b"5.7.1"), (451, b"4.2.0"), (250, b"2.1.5")]
    assert b"User unknown" in replies[0][1] and b"<bounce@any.example>" in replies[0][1]
    assert data[0] == 250
    [caught] = sandbox_store.list_messages(folder)
    assert caught.recipients == ("reader@any.example",)  # only the ordinary recipient


async def test_the_newest_are_kept(sandbox: tuple[int, Path]) -> None:
    port, folder = sandbox
    for i in range(5):
        await asyncio.to_thread(_send, port, "", ["r@nowhere.invalid"], _message(f"n{i}"))
    assert [m.subject for m in sandbox_store.list_messages(folder)] == ["n4", "n3", "n2"]
    assert len(list(folder.iterdir())) == 6


async def test_no_auth_and_no_tls_offered(sandbox: tuple[int, Path]) -> None:
    port, _ = sandbox

    def talk() -> tuple[dict[str, str], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.test")
            return client.esmtp_features, client.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==")

    features, auth = await asyncio.to_thread(talk)
    assert "auth" not in features and "starttls" not in features
    assert f"{auth[0]} {auth[1].decode()}" == NO_AUTH


async def test_a_message_that_cannot_be_written_is_a_temporary_failure(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-folder"
    folder.write_text("a file where the folder should be")
    listener = await start_sandbox(folder, host="127.0.0.1", port=0, keep=3, max_message_size=1 << 20)
    try:
        code, reply = await asyncio.to_thread(_send, listener.port, "", ["r@nowhere.invalid"], _message("x"))
    finally:
        await listener.close(5)
    assert f"{code} {reply.decode()}" == TEMPORARY_ERROR


def test_loopback_only() -> None:
    assert SandboxSettings(sandbox_smtp_host="::1").sandbox_smtp_host == "::1"
    for host in ("0.0.0.0", "192.0.2.1", "localhost", ""):
        with pytest.raises(ValidationError, match="loopback"):
            SandboxSettings(sandbox_smtp_host=host)


def test_the_folder_defaults_to_the_data_dir(tmp_path: Path) -> None:
    assert SandboxSettings(data_dir=tmp_path).folder == tmp_path / "sandbox"
    assert SandboxSettings(data_dir=tmp_path, sandbox_dir=tmp_path / "x").folder == tmp_path / "x"


def test_every_handle_method_is_an_aiosmtpd_hook() -> None:
    """aiosmtpd finds hooks by name: a misspelt one would silently never be called."""
    mine = {n for n in dir(SandboxHandler) if n.startswith("handle_")}
    assert mine == set(HOOKS)
    assert mine <= {"handle_" + m for m in ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT",
                                            "VRFY", "AUTH", "PROXY", "STARTTLS", "exception")}


async def test_runs_as_its_own_process_and_stops_on_sigterm(tmp_path: Path) -> None:
    """As the local run starts it: ``python -m postwire.cli.sandbox`` with its settings in the environment."""
    port, folder = free_port(), tmp_path / "caught"
    env = {**os.environ, "POSTWIRE_SANDBOX_SMTP_PORT": str(port), "POSTWIRE_SANDBOX_DIR": str(folder),
           "POSTWIRE_SANDBOX_MAX_MESSAGES": "10", "POSTWIRE_OPS_PORT": "0",
           "POSTWIRE_DATA_DIR": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "postwire.cli.sandbox", env=env,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async def listening() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            await writer.wait_closed()
            return True

        await eventually(listening)
        code, _ = await asyncio.to_thread(_send, port, "", ["r@nowhere.invalid"], _message("from a process"))
        assert code == 250
        assert [m.subject for m in sandbox_store.list_messages(folder)] == ["from a process"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, stderr.decode()
