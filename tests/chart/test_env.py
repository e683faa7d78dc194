"""The chart sets every setting that has no safe default in a cluster, derived from the settings classes
themselves (so a new setting with a loopback or host-derived default fails here until the chart sets it),
and each workload's rendered environment really boots its settings class."""

from __future__ import annotations

import importlib
import os
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from .conftest import Rendered

# workload → the settings classes its process builds (module, class)
SETTINGS: dict[str, list[tuple[str, str]]] = {
    "ingest-smtp": [("postwire.ingest_smtp.settings", "IngestSmtpSettings")],
    "api-gateway": [("postwire.api_gateway.settings", "ApiSettings")],
    "transformer": [("postwire.transformer.settings", "TransformerSettings")],
    "dispatcher-router": [("postwire.dispatcher.settings", "DispatcherSettings")],
    "dispatcher-sender": [("postwire.dispatcher.settings", "DispatcherSettings")],
    "bounce-receiver": [("postwire.bounce_receiver.settings", "ReceiverSettings")],
    "recorder": [("postwire.recorder.settings", "RecorderSettings")],
    "webhook-notifier": [("postwire.webhook_notifier.settings", "WebhookSettings")],
}

# Defaults that are right for the local run but not in a cluster, beyond what the rules in
# `needs_cluster_value` find by themselves.
CLUSTER_SPECIFIC = {
    "stream_replicas",  # 1 locally; the NATS cluster size in a cluster
    "smtp_port",  # 587 cannot be bound by a non-root container
    "bounce_smtp_port",  # 2526 is the local run's port
    "transform_workers",  # 0 = one per CPU of the node, not of the container's limit
    "dispatcher_role",
    "replica_index",
    "replica_count",
}

# Fields a workload's process inherits but never reads (its role does not run that code). Each entry is
# a claim about the services' code: keep it short and true.
NOT_READ: dict[str, set[str]] = {
    "ingest-smtp": {"verp_secret"},
    "api-gateway": {"verp_secret", "ops_host", "ops_port"},  # /metrics is on the API port
    "transformer": {"database_url", "verp_secret"},
    "dispatcher-router": {"replica_index", "replica_count"},
    "dispatcher-sender": {"database_url", "verp_secret", "transformer_addr"},
    "bounce-receiver": set(),
    "recorder": {"verp_secret"},
    "webhook-notifier": {"verp_secret"},
}
# Settings production values must set although the service has a fallback for tests and trials
PRODUCTION_ONLY = {"ingest-smtp": {"tls_cert_file", "tls_key_file"}}

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def settings_classes(component: str) -> list[type[BaseSettings]]:
    return [getattr(importlib.import_module(m), c) for m, c in SETTINGS[component]]


def env_name(cls: type[BaseSettings], name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias.upper()
    return f"{cls.model_config.get('env_prefix', '')}{name}".upper()


def needs_cluster_value(name: str, field: FieldInfo) -> bool:
    """True when the field's default is wrong (or absent) in a Kubernetes pod."""
    if field.is_required() or name in CLUSTER_SPECIFIC:
        return True
    if field.default_factory is not None:  # e.g. socket.getfqdn(): the pod's name, not the public one
        return field.annotation is str
    default = field.default
    if isinstance(default, str) and any(h in default for h in LOOPBACK):
        return True
    if isinstance(default, Path) and not default.is_absolute():
        return True  # relative to the working directory
    if name.endswith("_port") and default == 0:
        return True  # a random port: probes and Services could not find it
    args = typing.get_args(field.annotation)
    return default is None and SecretStr in args  # a per-process key file: replicas would disagree


def required_env(component: str) -> dict[str, str]:
    """env name → field name of what the chart must set for this workload."""
    out: dict[str, str] = {}
    for cls in settings_classes(component):
        for name, field in cls.model_fields.items():
            if needs_cluster_value(name, field) and name not in NOT_READ[component]:
                out[env_name(cls, name, field)] = name
    return out


def test_the_rules_find_what_a_person_would() -> None:
    """Guards the derivation itself: these must be among the required ones."""
    assert {
        "POSTWIRE_NATS_URL",
        "POSTWIRE_DATABASE_URL",
        "POSTWIRE_DATA_DIR",
        "POSTWIRE_OPS_HOST",
        "POSTWIRE_OPS_PORT",
        "POSTWIRE_VERP_SECRET",
        "POSTWIRE_TRANSFORMER_ADDR",
        "POSTWIRE_EHLO_HOSTNAME",
        "POSTWIRE_REPLICA_INDEX",
    } <= set(required_env("dispatcher-sender")) | set(required_env("dispatcher-router"))
    assert {"POSTWIRE_SMTP_HOST", "POSTWIRE_SMTP_PORT", "POSTWIRE_SMTP_HOSTNAME"} <= set(
        required_env("ingest-smtp")
    )


@pytest.mark.parametrize("component", sorted(SETTINGS))
def test_chart_sets_every_setting_without_a_safe_default(rendered: Rendered, component: str) -> None:
    workload = next(
        w for w in rendered.of_kind("Deployment", "StatefulSet") if rendered.component(w) == component
    )
    env = rendered.env_of(workload)
    missing = sorted(set(required_env(component)) - set(env))
    assert not missing, f"{component}: the chart does not set {missing}"


def test_production_sets_the_smtp_certificate(production_render: Rendered) -> None:
    for component, fields in PRODUCTION_ONLY.items():
        w = next(w for w in production_render.workloads() if production_render.component(w) == component)
        env = production_render.env_of(w)
        for f in fields:
            assert f"POSTWIRE_{f.upper()}" in env


def _fake(name: str, value: Any) -> str:
    """A stand-in for a value Kubernetes fills in at run time."""
    if isinstance(value, str):
        return value
    if "fieldRef" in value:
        return "1"  # the pod ordinal
    if name == "POSTWIRE_DATABASE_URL":
        return "postgresql://pw:secret@db:5432/postwire"
    return "k" * 32


@pytest.mark.parametrize("component", sorted(SETTINGS))
def test_rendered_environment_boots_the_settings(
    rendered: Rendered, component: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload = next(
        w for w in rendered.of_kind("Deployment", "StatefulSet") if rendered.component(w) == component
    )
    for name in [n for n in os.environ if n.startswith("POSTWIRE_")]:
        monkeypatch.delenv(name)
    for name, value in rendered.env_of(workload).items():
        monkeypatch.setenv(name, _fake(name, value))
    for cls in settings_classes(component):
        try:
            settings = cls()
        except ValidationError as e:
            raise AssertionError(f"{component}: {e}") from e
        assert str(settings.data_dir) == "/var/lib/postwire"


def test_config_keys_are_real_settings(rendered: Rendered) -> None:
    """A misspelt POSTWIRE_* in values.config or a service's env would be silently ignored."""
    known = {
        env_name(cls, n, f)
        for comp in SETTINGS
        for cls in settings_classes(comp)
        for n, f in cls.model_fields.items()
    }
    set_by_chart = set(rendered.values["config"])
    for w in rendered.of_kind("Deployment", "StatefulSet"):
        if rendered.component(w) != "nats":
            set_by_chart |= set(rendered.env_of(w))
    assert not sorted(set_by_chart - known)
