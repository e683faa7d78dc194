"""NetworkPolicies allow exactly the flows of ../shared/DESIGN.md (docs/kubernetes.md lists them), no more."""

from __future__ import annotations

import json
from typing import Any

from .conftest import Rendered

ANY = "any"
SCRAPE = "prometheus"
POSTWIRE = [
    "ingest-smtp",
    "api-gateway",
    "transformer",
    "dispatcher-router",
    "dispatcher-sender",
    "bounce-receiver",
    "webhook-notifier",
    "recorder",
]
NATS_CLIENTS = [c for c in POSTWIRE if c != "transformer"]
DB_CLIENTS = [
    "ingest-smtp",
    "api-gateway",
    "dispatcher-router",
    "bounce-receiver",
    "webhook-notifier",
    "recorder",
    "migrations",
]
METRICS_PORT = {c: 9090 for c in POSTWIRE} | {"api-gateway": 8080}


def expected_flows(db: str = ANY, transformer_clients: tuple[str, ...] = ()) -> set[tuple[Any, ...]]:
    """(direction, pod, port, protocol, peer) of every allowed connection."""
    flows: set[tuple[Any, ...]] = set()
    for pod in [*POSTWIRE, "nats", "migrations"]:  # DNS for everyone
        flows |= {("out", pod, 53, "UDP", ANY), ("out", pod, 53, "TCP", ANY)}
    # the public endpoints: SMTP submission, the API (behind the Ingress controller), the bounce MX
    flows |= {
        ("in", "ingest-smtp", 2587, "TCP", ANY),
        ("in", "ingest-smtp", 2465, "TCP", ANY),
        ("in", "api-gateway", 8080, "TCP", ANY),
        ("in", "bounce-receiver", 2525, "TCP", ANY),
    }
    # everything → NATS; NATS servers ↔ each other (routes)
    for pod in NATS_CLIENTS:
        flows |= {("out", pod, 4222, "TCP", "nats"), ("in", "nats", 4222, "TCP", pod)}
    flows |= {("out", "nats", 6222, "TCP", "nats"), ("in", "nats", 6222, "TCP", "nats")}
    # router → transformer (and whoever the operator allows)
    flows |= {
        ("out", "dispatcher-router", 50051, "TCP", "transformer"),
        ("in", "transformer", 50051, "TCP", "dispatcher-router"),
    }
    flows |= {("in", "transformer", 50051, "TCP", peer) for peer in transformer_clients}
    # services → PostgreSQL (external)
    flows |= {("out", pod, 5432, "TCP", db) for pod in DB_CLIENTS}
    # senders → any MX on 25; notifier → any webhook URL (forwarded bounces go through the pipeline:
    # the receiver and the recorder talk to NATS and PostgreSQL only)
    flows |= {
        ("out", "dispatcher-sender", 25, "TCP", ANY),
        ("out", "webhook-notifier", 443, "TCP", ANY),
        ("out", "webhook-notifier", 80, "TCP", ANY),
    }
    # Prometheus → every metrics port
    flows |= {("in", pod, port, "TCP", SCRAPE) for pod, port in METRICS_PORT.items()}
    return flows


def peer_name(peer: dict[str, Any], scrape_from: list[dict[str, Any]]) -> str:
    if "podSelector" in peer and "namespaceSelector" not in peer:
        return str(peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"])
    if "ipBlock" in peer:
        return str(peer["ipBlock"]["cidr"])
    if peer in scrape_from:
        return SCRAPE
    return json.dumps(peer, sort_keys=True)


def actual_flows(r: Rendered) -> set[tuple[Any, ...]]:
    ports_of = {}
    for w in r.workloads():
        for c in w["spec"]["template"]["spec"]["containers"]:
            ports_of[r.component(w)] = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    scrape_from = r.values["metrics"]["scrapeFrom"]
    flows: set[tuple[Any, ...]] = set()
    policies = r.of_kind("NetworkPolicy")
    assert {p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in policies} == {
        *POSTWIRE,
        "nats",
        "migrations",
    }, "every pod is isolated by a policy"
    for pol in policies:
        pod = pol["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        assert sorted(pol["spec"]["policyTypes"]) == ["Egress", "Ingress"]
        for direction, key, peers_key in (("in", "ingress", "from"), ("out", "egress", "to")):
            for rule in pol["spec"].get(key) or []:
                assert rule.get("ports"), f"{pod}: a rule without ports allows every port"
                peers = [peer_name(p, scrape_from) for p in rule.get(peers_key, [])] or [ANY]
                for port in rule["ports"]:
                    number = port["port"]
                    if isinstance(number, str):
                        number = ports_of[pod][number]
                    flows |= {(direction, pod, number, port["protocol"], peer) for peer in peers}
    return flows


def test_default_flows_are_exactly_the_design(default_render: Rendered) -> None:
    actual, expected = actual_flows(default_render), expected_flows()
    assert sorted(actual - expected, key=str) == [], "allowed but not in the design"
    assert sorted(expected - actual, key=str) == [], "in the design but not allowed"


def test_production_flows_narrow_the_database_and_scrapers(production_render: Rendered) -> None:
    client_ns = json.dumps(
        {"namespaceSelector": {"matchLabels": {"postwire.io/transformer-client": "true"}}}, sort_keys=True
    )
    expected = expected_flows(db="10.20.0.0/16", transformer_clients=(client_ns,))
    actual = actual_flows(production_render)
    assert sorted(actual ^ expected, key=str) == []
