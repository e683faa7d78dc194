"""The dashboard and the alert rules use only metrics the services define, and the shaping rules the
chart ships are the repository's."""

from __future__ import annotations

import importlib
import json

import pytest
from prometheus_client import REGISTRY

from postwire.testing.prometheus import METRIC, SUFFIXES

from .conftest import CHART, REPO, Rendered


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample name the services can expose: import each module of the services that uses
    prometheus_client (so new metrics modules are found too) and read the default registry."""
    for src in sorted(REPO.glob("services/*/src/postwire/*")):
        for path in src.rglob("*.py"):
            if "prometheus_client" in path.read_text():
                rel = path.relative_to(src.parent).with_suffix("")
                importlib.import_module(".".join(("postwire", *rel.parts)))
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("postwire_"):
            names |= {family.name + s for s in SUFFIXES[family.type]}
    return names


def test_known_metrics_are_found(exported: set[str]) -> None:
    assert {
        "postwire_dispatcher_queue_messages",
        "postwire_dispatcher_provider_deliveries_total",
        "postwire_ingest_smtp_messages_accepted_total",
        "postwire_api_accept_seconds_bucket",
        "postwire_transformer_requests_total",
        "postwire_recorder_events_total",
    } <= exported


def dashboard_exprs() -> list[str]:
    dash = json.loads((CHART / "dashboards" / "postwire.json").read_text())
    exprs = []
    for panel in dash["panels"]:
        exprs += [t["expr"] for t in panel.get("targets", [])]
    for var in dash["templating"]["list"]:
        if isinstance(var.get("query"), dict):
            exprs.append(var["query"]["query"])
    return exprs


def test_dashboard_uses_only_exported_metrics(exported: set[str]) -> None:
    used = {m for e in dashboard_exprs() for m in METRIC.findall(e)}
    assert len(used) >= 20
    assert not sorted(used - exported)


def test_dashboard_covers_each_service(exported: set[str]) -> None:
    used = " ".join(dashboard_exprs())
    for prefix in (
        "postwire_ingest_smtp_",
        "postwire_api_",
        "postwire_transformer_",
        "postwire_dispatcher_",
        "postwire_recorder_",
        "postwire_bounce_",
        "postwire_webhook_",
    ):
        assert prefix in used, prefix


def test_dashboard_configmap_carries_the_json(default_render: Rendered) -> None:
    cm = default_render.get("ConfigMap", "postwire-dashboard")
    assert json.loads(cm["data"]["postwire.json"]) == json.loads(
        (CHART / "dashboards" / "postwire.json").read_text()
    )


def test_alerts_use_only_exported_metrics(production_render: Rendered, exported: set[str]) -> None:
    rule = production_render.get("PrometheusRule", "postwire")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert {"postwire_dispatcher_queue_messages", "postwire_dispatcher_provider_deliveries_total"} <= used
    assert not sorted(used - exported)
    assert 'outcome="deferred"' in " ".join(exprs)


def test_chart_shaping_rules_are_the_repository_copy(default_render: Rendered) -> None:
    shipped = (REPO / "config" / "shaping.yaml").read_text()
    assert (CHART / "files" / "shaping.yaml").read_text() == shipped, (
        "cp config/shaping.yaml charts/postwire/files/"
    )
    cm = default_render.get("ConfigMap", "postwire-shaping")
    assert cm["data"]["shaping.yaml"].strip() == shipped.strip()


def test_shaping_rules_load() -> None:
    from postwire.dispatcher.shaping import load_rules

    load_rules(CHART / "files" / "shaping.yaml")
