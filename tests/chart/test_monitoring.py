"""The dashboard and the alert rules use only metrics the services define, and the shaping rules the
chart mounts are those a dispatcher loads by default, whether the chart is rendered from this folder
or from its packaged archive."""

from __future__ import annotations

import importlib
import json
import tarfile
from pathlib import Path

import helm_python as helm
import pytest
import yaml
from prometheus_client import REGISTRY

from postwire.dispatcher.shaping import ShapingRules, load_rules, parse_rules
from postwire.testing.prometheus import METRIC, SUFFIXES

from .conftest import CHART, NAMESPACE, RELEASE, REPO, Rendered


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


def _mounted_rules(rendered: Rendered) -> ShapingRules:
    """The rules a dispatcher pod reads: the ConfigMap its POSTWIRE_SHAPING_FILE names, parsed and
    validated as the dispatcher does at boot."""
    for workload in rendered.workloads():
        env = rendered.env_of(workload)
        if "POSTWIRE_SHAPING_FILE" in env:
            assert env["POSTWIRE_SHAPING_FILE"] == "/etc/postwire/shaping/shaping.yaml"
    cm = rendered.get("ConfigMap", f"{RELEASE}-shaping")
    return parse_rules(yaml.safe_load(cm["data"]["shaping.yaml"]))


def test_the_dispatchers_get_the_rules_a_dispatcher_loads_by_default(default_render: Rendered) -> None:
    mounting = [w["metadata"]["name"] for w in default_render.workloads()
                if "POSTWIRE_SHAPING_FILE" in default_render.env_of(w)]
    assert mounting == [f"{RELEASE}-dispatcher-router", f"{RELEASE}-dispatcher-sender"]
    assert _mounted_rules(default_render) == load_rules()


def test_the_packaged_chart_carries_the_rules_too(tmp_path: Path) -> None:
    """`helm package` writes the linked rules into the archive as a regular file: a chart installed from
    a repository, without this checkout, ships the same rules."""
    archive = helm.package(str(CHART), destination=str(tmp_path))
    with tarfile.open(archive) as tar:
        member = tar.getmember("postwire/files/shaping.yaml")
        assert member.isfile()
    with helm.Chart.load_archive(Path(archive).read_bytes()) as chart:
        manifests = chart.render({}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = [d for path, text in manifests.items() if path.endswith(".yaml")
            for d in yaml.safe_load_all(text) if d]
    assert _mounted_rules(Rendered({}, docs)) == load_rules()


def test_complaint_rate_alerts_warn_at_a_tenth_and_page_at_three_tenths_of_a_percent(
        production_render: Rendered) -> None:
    rule = production_render.get("PrometheusRule", "postwire")
    [group] = [g for g in rule["spec"]["groups"] if g["name"] == "postwire.reputation"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {"PostwireComplaintRateHigh", "PostwireComplaintRateCritical"}
    for name, severity, threshold in (("PostwireComplaintRateHigh", "warning", "0.001"),
                                      ("PostwireComplaintRateCritical", "critical", "0.003")):
        alert = alerts[name]
        assert alert["labels"] == {"severity": severity}
        expr = " ".join(alert["expr"].split())
        assert f"postwire_account_complaint_ratio{{namespace=\"{NAMESPACE}\"}}) >= {threshold}" in expr
        # a tiny account does not page: at least 100 delivered in the 24 hours
        assert f"postwire_account_delivered_messages{{namespace=\"{NAMESPACE}\"}}) >= 100" in expr
        assert "{{ $labels.account }}" in alert["annotations"]["summary"]
