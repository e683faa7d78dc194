"""What the local run hands each process: the sandbox as the dispatcher's relay host (or not), the inbox
folder to the gateway, and webhooks allowed to reach this machine unless the environment says no."""

from __future__ import annotations

from pathlib import Path

import pytest

from postwire.cli.local_run import Service, services
from postwire.cli.settings import CliSettings


def _by_name(settings: CliSettings) -> dict[str, Service]:
    return {s.name: s for s in services(settings, "nats://127.0.0.1:4222", "postgresql://x")}


@pytest.fixture(autouse=True)
def _no_switches_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POSTWIRE_WEBHOOK_ALLOW_HTTP", "POSTWIRE_WEBHOOK_ALLOW_PRIVATE", "POSTWIRE_SANDBOX",
                 "POSTWIRE_HOST", "POSTWIRE_SANDBOX_SMTP_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_by_default_every_message_goes_to_the_sandbox(tmp_path: Path) -> None:
    run = _by_name(CliSettings(data_dir=tmp_path, ops_base_port=9100))
    assert list(run) == ["ingest-smtp", "api-gateway", "dispatcher", "transformer", "bounce-receiver",
                         "webhook-notifier", "recorder", "sandbox"]
    sandbox = run["sandbox"]
    assert sandbox.module == "postwire.cli.sandbox"
    assert run["dispatcher"].env["POSTWIRE_RELAY_HOST"] == "127.0.0.1:2527"
    assert sandbox.env["POSTWIRE_SANDBOX_SMTP_HOST"] == "127.0.0.1"
    assert sandbox.env["POSTWIRE_SANDBOX_SMTP_PORT"] == "2527"
    assert sandbox.env["POSTWIRE_SANDBOX_MAX_MESSAGES"] == "1000"
    folder = str(tmp_path.resolve() / "sandbox")
    assert sandbox.env["POSTWIRE_SANDBOX_DIR"] == run["api-gateway"].env["POSTWIRE_SANDBOX_DIR"] == folder
    # the services' ops ports keep their numbers; the sandbox takes the next one
    assert [int(s.env["POSTWIRE_OPS_PORT"]) for s in run.values()] == list(range(9101, 9109))


def test_sandbox_false_delivers_for_real(tmp_path: Path) -> None:
    run = _by_name(CliSettings(data_dir=tmp_path, sandbox=False))
    assert "sandbox" not in run
    assert "POSTWIRE_RELAY_HOST" not in run["dispatcher"].env
    assert "POSTWIRE_SANDBOX_DIR" not in run["api-gateway"].env


def test_sandbox_listens_on_loopback_even_when_the_run_listens_everywhere(tmp_path: Path) -> None:
    run = _by_name(CliSettings(data_dir=tmp_path, host="0.0.0.0", sandbox_smtp_port=2600))
    assert run["sandbox"].env["POSTWIRE_SANDBOX_SMTP_HOST"] == "127.0.0.1"
    assert run["dispatcher"].env["POSTWIRE_RELAY_HOST"] == "127.0.0.1:2600"
    run = _by_name(CliSettings(data_dir=tmp_path, host="::1"))
    assert run["dispatcher"].env["POSTWIRE_RELAY_HOST"] == "[::1]:2527"


def test_webhooks_may_reach_this_machine_unless_the_environment_says_no(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _by_name(CliSettings(data_dir=tmp_path))
    for name in ("api-gateway", "webhook-notifier"):
        assert run[name].env["POSTWIRE_WEBHOOK_ALLOW_HTTP"] == "true"
        assert run[name].env["POSTWIRE_WEBHOOK_ALLOW_PRIVATE"] == "true"
    monkeypatch.setenv("POSTWIRE_WEBHOOK_ALLOW_PRIVATE", "false")
    run = _by_name(CliSettings(data_dir=tmp_path))
    for name in ("api-gateway", "webhook-notifier"):
        assert run[name].env["POSTWIRE_WEBHOOK_ALLOW_HTTP"] == "true"
        assert run[name].env["POSTWIRE_WEBHOOK_ALLOW_PRIVATE"] == "false"
