"""`postwire user create` as a user runs it: a console user of an account, its password shown once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from postwire.db import console_users
from postwire.db.engine import make_engine, make_sessionmaker

POSTWIRE = str(Path(sys.executable).parent / "postwire")


def _run(*args: str, pg_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([POSTWIRE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "POSTWIRE_DATABASE_URL": pg_url}, check=False)


async def test_user_create_makes_a_user_that_can_log_in(pg_url: str) -> None:
    name = f"usr-{uuid.uuid4().hex[:8]}"
    account = json.loads(_run("account", "create", name, "--json", pg_url=pg_url).stdout)
    email = f"{name}@Example.test"
    out = _run("user", "create", "--account", name, email, "--role", "viewer", "--json", pg_url=pg_url)
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert (made["account_id"], made["email"], made["role"]) == (account["account_id"], email.lower(),
                                                                 "viewer")
    engine = make_engine(pg_url)
    try:
        async with make_sessionmaker(engine)() as s:
            user = await console_users.verify(s, email, made["password"])
            assert user is not None and user.account_id == account["account_id"] and not user.can_change
            assert await console_users.verify(s, email, made["password"] + "x") is None
    finally:
        await engine.dispose()
    again = _run("user", "create", "--account", name, email, pg_url=pg_url)
    assert again.returncode == 1 and "exists already" in again.stderr
    missing = _run("user", "create", "--account", "no-such-account", "x@example.test", pg_url=pg_url)
    assert missing.returncode == 1 and "no account" in missing.stderr
