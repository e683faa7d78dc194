"""A Postfix relay of its own for the side-by-side benchmark: Debian's Postfix, loopback only.

A private instance (``postfix -c <dir>``): its own main.cf, master.cf, queue and data directories in a
temporary folder, listening on one loopback port, relaying everything from 127.0.0.0/8 to the benchmark's
sink (``relayhost = [127.0.0.1]:<sink>``). Every other setting is Postfix's default, so it delivers with
its stock 20 connections per destination and connection caching. The system's own Postfix configuration
(/etc/postfix/main.cf) is neither read nor touched. Postfix's master runs as root and drops to the
``postfix`` user, so this needs root; ``unavailable()`` says why it cannot run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import psutil

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix-relay.bench.test
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink_port}
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
local_recipient_maps =
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
"""

# Debian's master.cf services that a relay uses, unchrooted (the private queue lives outside the chroot)
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def unavailable() -> str | None:
    """Why a Postfix relay cannot run here, or None when it can."""
    if shutil.which("postfix") is None:
        return "Postfix is not installed (scripts/bench-deps installs Debian's package as root)"
    if os.geteuid() != 0:
        return "Postfix's master must start as root"
    return None


class PostfixRelay:
    def __init__(self, root: Path, port: int, sink_port: int) -> None:
        self.root, self.port, self.sink_port = root, port, sink_port
        self.conf = root / "conf"

    def start(self, timeout_s: float = 20.0) -> PostfixRelay:
        for sub in ("conf", "queue", "data"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for folder in (self.root.parent, self.root):  # the postfix user must reach its queue in our folder
            folder.chmod(0o755)
        shutil.chown(self.root / "data", "postfix")
        (self.conf / "main.cf").write_text(MAIN_CF.format(root=self.root, sink_port=self.sink_port))
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.port))
        started = subprocess.run(["postfix", "-c", str(self.conf), "start"], capture_output=True)
        if started.returncode != 0:
            raise RuntimeError(f"postfix start failed: {self._log_tail()}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.master() is not None and _listening(self.port):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"Postfix did not start: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return " | ".join((self.root / "maillog").read_text().splitlines()[-3:])
        except OSError:
            return "no maillog (the postfix user cannot reach the folder?)"

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True)
        deadline = time.monotonic() + 10
        while self.master() is not None and time.monotonic() < deadline:
            time.sleep(0.1)

    def master(self) -> psutil.Process | None:
        pid_file = self.root / "queue" / "pid" / "master.pid"
        try:
            return psutil.Process(int(pid_file.read_text().split()[0]))
        except (OSError, ValueError, IndexError, psutil.Error):
            return None

    def queued(self) -> int:
        """Messages still in the queue (incoming, active, deferred)."""
        return sum(1 for d in ("incoming", "active", "deferred", "maildrop")
                   for p in (self.root / "queue" / d).rglob("*") if p.is_file())


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
