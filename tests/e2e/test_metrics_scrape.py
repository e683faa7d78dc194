"""The metrics the running services really export (scraped from each service's /metrics in the local run)
cover everything the Grafana dashboard and the PrometheusRule alerts of the chart use; and docs/metrics.md
documents every metric the services define, and nothing else."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY, Metric
from prometheus_client.parser import text_string_to_metric_families

from postwire.testing.prometheus import METRIC, SUFFIXES
from postwire.testing.stack import LocalStack

pytestmark = pytest.mark.slow  # starts the whole system

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "postwire"
METRICS_DOC = REPO / "docs" / "metrics.md"
# ops port offsets of the local run (cli/src/postwire/cli/local_run.py); the api-gateway (+2) serves
# /metrics on its API port instead
OPS_OFFSETS = {"ingest-smtp": 1, "dispatcher": 3, "transformer": 4, "bounce-receiver": 5,
               "webhook-notifier": 6, "recorder": 7}


def _sample_names(families: list[Metric]) -> set[str]:
    """Every sample name a family can have, whether or not it has samples yet (a labelled metric with
    no children is only HELP and TYPE lines)."""
    names: set[str] = set()
    for family in families:
        names |= {family.name + s for s in SUFFIXES[family.type]}
        names |= {s.name for s in family.samples}
    return names


async def _scrape(stack: LocalStack) -> dict[str, list[Metric]]:
    urls = {"api-gateway": f"{stack.api}/metrics"} | {
        name: f"http://{stack.host}:{stack.ops_base_port + offset}/metrics"
        for name, offset in OPS_OFFSETS.items()
    }
    scraped: dict[str, list[Metric]] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for name, url in urls.items():
            r = await client.get(url)
            assert r.status_code == 200, (name, r.status_code)
            scraped[name] = [f for f in text_string_to_metric_families(r.text)
                             if f.name.startswith("postwire_")]
    return scraped


def dashboard_metrics() -> set[str]:
    """Metric names in any query of the dashboard (panels, nested rows, template variables)."""
    dash = json.loads((CHART / "dashboards" / "postwire.json").read_text())
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query") and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dash)
    return {m for e in exprs for m in METRIC.findall(e)}


def alert_metrics() -> set[str]:
    """Metric names in the chart's PrometheusRule: its template and any values file (extra rules)."""
    texts = [p.read_text() for p in sorted(CHART.glob("templates/*.yaml"))
             if "PrometheusRule" in p.read_text()]
    texts += [p.read_text() for p in [CHART / "values.yaml", *sorted(CHART.glob("ci/*.yaml"))]]
    return {m for t in texts for m in METRIC.findall(t)}


@pytest_asyncio.fixture(scope="module")
async def scraped(stack: LocalStack) -> dict[str, list[Metric]]:
    return await _scrape(stack)


def test_every_service_exports_its_metrics(scraped: dict[str, list[Metric]]) -> None:
    prefixes = {"api-gateway": ("postwire_api_",), "ingest-smtp": ("postwire_ingest_smtp_",),
                "dispatcher": ("postwire_dispatcher_",), "transformer": ("postwire_transformer_",),
                "bounce-receiver": ("postwire_bounce_",), "webhook-notifier": ("postwire_webhook_",),
                "recorder": ("postwire_recorder_",)}
    for service, wanted in prefixes.items():
        names = {f.name for f in scraped[service]}
        for prefix in wanted:
            assert any(n.startswith(prefix) for n in names), (service, prefix, sorted(names))


def test_dashboard_uses_only_metrics_the_running_services_export(scraped: dict[str, list[Metric]]) -> None:
    exported = _sample_names([f for families in scraped.values() for f in families])
    used = dashboard_metrics()
    assert len(used) >= 20
    assert sorted(used - exported) == []


def test_alerts_use_only_metrics_the_running_services_export(scraped: dict[str, list[Metric]]) -> None:
    exported = _sample_names([f for families in scraped.values() for f in families])
    used = alert_metrics()
    assert "postwire_dispatcher_queue_messages" in used
    assert sorted(used - exported) == []


# --- docs/metrics.md --------------------------------------------------------------------------------------


def _doc_name(family_name: str, family_type: str) -> str:
    """The name docs/metrics.md lists: counters with _total (as queried), others by their family name."""
    return family_name + "_total" if family_type == "counter" else family_name


def registered_metrics() -> dict[str, str]:
    """Documented name -> type of every postwire_ metric the services' and libraries' modules register:
    every module that uses prometheus_client is imported (so a metric defined outside metrics.py counts,
    and a library's is found whatever this session's other tests imported)."""
    for src in sorted([*REPO.glob("services/*/src/postwire/*"), *REPO.glob("libs/*/src/postwire/*")]):
        for path in sorted(src.rglob("*.py")):
            if "prometheus_client" in path.read_text():
                rel = path.relative_to(src.parent).with_suffix("")
                importlib.import_module(".".join(("postwire", *rel.parts)))
    return {_doc_name(f.name, f.type): f.type for f in REGISTRY.collect() if f.name.startswith("postwire_")}


def documented_metrics() -> set[str]:
    """Names in the first column of the tables of docs/metrics.md."""
    rows = re.findall(r"^\|\s*`(postwire_[a-z0-9_]+)`", METRICS_DOC.read_text(), re.MULTILINE)
    return set(rows)


def test_every_registered_metric_is_documented() -> None:
    registered = registered_metrics()
    assert len(registered) >= 40
    assert sorted(set(registered) - documented_metrics()) == []


def test_docs_list_no_metric_that_does_not_exist() -> None:
    assert sorted(documented_metrics() - set(registered_metrics())) == []


def test_documented_types_match() -> None:
    text = METRICS_DOC.read_text()
    for name, kind in registered_metrics().items():
        row = re.search(rf"^\|\s*`{name}`\s*\|\s*(\w+)\s*\|", text, re.MULTILINE)
        assert row is not None and row.group(1) == kind, (name, kind, row and row.group(1))


def test_scraped_metrics_are_documented(scraped: dict[str, list[Metric]]) -> None:
    families = [f for fs in scraped.values() for f in fs]
    names = {f.name for f in families}
    # the text format exposes a counter's or histogram's creation time as its own gauge family x_created
    running = {_doc_name(f.name, f.type) for f in families
               if not (f.name.endswith("_created") and f.name.removesuffix("_created") in names)}
    assert len(running) >= 40
    assert sorted(running - documented_metrics()) == []
