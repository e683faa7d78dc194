"""Every rendered manifest is valid Kubernetes, and every pod keeps the chart's promises."""

from __future__ import annotations

import base64
import re
import tarfile
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from .conftest import Rendered, render

# a recent Kubernetes (the newest schemas kubernetes-validate ships), strict: unknown fields fail
K8S_VERSION = kubernetes_validate.utils.latest_version()
# custom resources we render on purpose; checked structurally below, anything else unknown fails
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}

EXPECTED_WORKLOADS = {
    ("Deployment", "ingest-smtp"),
    ("Deployment", "api-gateway"),
    ("Deployment", "transformer"),
    ("Deployment", "dispatcher-router"),
    ("StatefulSet", "dispatcher-sender"),
    ("Deployment", "bounce-receiver"),
    ("Deployment", "webhook-notifier"),
    ("Deployment", "recorder"),
    ("StatefulSet", "nats"),
    ("Job", "migrations"),
}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_every_manifest_validates_strictly(rendered: Rendered) -> None:
    assert rendered.docs
    for doc in rendered.docs:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue
        # raises SchemaNotFoundError for an unknown apiVersion/kind, ValidationError for a bad field
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
        kubernetes_validate.validate(
            {"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "x"}},
            K8S_VERSION,
            strict=True,
        )


def test_expected_workloads(default_render: Rendered) -> None:
    found = {(w["kind"], default_render.component(w)) for w in default_render.workloads()}
    assert found == EXPECTED_WORKLOADS


def test_every_container_is_hardened_probed_and_sized(rendered: Rendered) -> None:
    for w in rendered.workloads():
        pod = w["spec"]["template"]["spec"]
        name = f"{w['kind']}/{w['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in containers(w):
            sc = c["securityContext"]
            assert c.get("image") and ":" in c["image"], name
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"], name
            if w["kind"] != "Job":
                for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                    assert probe in c, f"{name}: no {probe}"
            # read-only root: every writable path is a volume
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts or rendered.component(w) == "nats", name


def test_http_probes_use_healthz_and_readyz_and_grpc_for_the_transformer(default_render: Rendered) -> None:
    for w in default_render.of_kind("Deployment", "StatefulSet"):
        c = w["spec"]["template"]["spec"]["containers"][0]
        comp = default_render.component(w)
        if comp == "nats":
            continue
        if comp == "transformer":
            assert c["livenessProbe"]["grpc"]["port"] == 50051
            assert c["readinessProbe"]["grpc"]["port"] == 50051
            continue
        ports = {p["name"] for p in c["ports"]}
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["port"] in ports


def _grace(env: dict[str, Any]) -> float:
    return float(env.get("POSTWIRE_SHUTDOWN_GRACE_S", 20))


def test_termination_grace_exceeds_shutdown_grace(rendered: Rendered) -> None:
    for w in rendered.of_kind("Deployment", "StatefulSet"):
        if rendered.component(w) == "nats":
            continue
        grace = _grace(rendered.env_of(w))
        tgp = w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert tgp > grace, f"{w['metadata']['name']}: {tgp} <= POSTWIRE_SHUTDOWN_GRACE_S {grace}"
    for comp in ("ingest-smtp", "dispatcher-sender"):  # SMTP sessions get the longest
        w = next(w for w in rendered.workloads() if rendered.component(w) == comp)
        assert w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60


def test_sender_statefulset_owns_shards_by_ordinal(rendered: Rendered) -> None:
    sts = rendered.get("StatefulSet", "postwire-dispatcher-sender")
    env = rendered.env_of(sts)
    assert env["POSTWIRE_DISPATCHER_ROLE"] == "sender"
    assert env["POSTWIRE_REPLICA_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert env["POSTWIRE_REPLICA_COUNT"] == str(sts["spec"]["replicas"])
    router = rendered.env_of(rendered.get("Deployment", "postwire-dispatcher-router"))
    assert router["POSTWIRE_DISPATCHER_ROLE"] == "router"
    assert router["POSTWIRE_TRANSFORMER_ADDR"] == "postwire-transformer:50051"


def test_each_bounce_stage_runs_its_own_image(default_render: Rendered) -> None:
    """The bounce MX, the recorder and the webhook notifier are three services, each its own image."""
    images = {default_render.component(w): w["spec"]["template"]["spec"]["containers"][0]["image"]
              for w in default_render.of_kind("Deployment")}
    for stage in ("bounce-receiver", "recorder", "webhook-notifier"):
        assert images[stage].startswith(f"ghcr.io/postwire/{stage}:"), images[stage]


def test_public_services(default_render: Rendered) -> None:
    smtp = default_render.get("Service", "postwire-ingest-smtp-public")
    assert smtp["spec"]["type"] == "LoadBalancer"
    assert {p["port"]: p["targetPort"] for p in smtp["spec"]["ports"]} == {
        587: "smtp",
        2525: "smtp",
        25: "smtp",
        465: "smtps",  # implicit TLS listener (POSTWIRE_SMTPS_PORT)
    }
    bounce = default_render.get("Service", "postwire-bounce-receiver-public")
    assert bounce["spec"]["type"] == "LoadBalancer"
    assert [p["port"] for p in bounce["spec"]["ports"]] == [25]
    grpc = default_render.get("Service", "postwire-transformer")
    assert grpc["spec"]["type"] == "ClusterIP"
    assert any(p["port"] == 50051 and p.get("appProtocol") == "grpc" for p in grpc["spec"]["ports"])
    ing = default_render.get("Ingress", "postwire-api-gateway")
    assert ing["spec"]["tls"][0]["hosts"] == ["api.example.com"]
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "postwire-api-gateway"


def test_service_ports_point_at_container_ports(rendered: Rendered) -> None:
    by_component = {rendered.component(w): w for w in rendered.of_kind("Deployment", "StatefulSet")}
    for svc in rendered.of_kind("Service"):
        w = by_component[svc["metadata"]["labels"]["app.kubernetes.io/component"]]
        names = {p["name"] for p in w["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in names, f"{svc['metadata']['name']}: {p}"


def test_hpa_and_pdb_target_existing_stateless_workloads(rendered: Rendered) -> None:
    names = {(w["kind"], w["metadata"]["name"]) for w in rendered.workloads()}
    hpas = rendered.of_kind("HorizontalPodAutoscaler")
    assert hpas
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in names and ref["kind"] == "Deployment"
        target = rendered.get("Deployment", ref["name"])
        assert "replicas" not in target["spec"]  # the HPA owns it
    assert len(rendered.of_kind("PodDisruptionBudget")) >= 9


def test_migration_job_is_a_pre_install_hook(rendered: Rendered) -> None:
    job = rendered.get("Job", "postwire-migrations")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["python", "-m", "postwire.db.migrate"]
    assert "/api-gateway:" in c["image"]
    env = {e["name"]: e for e in c["env"]}
    assert "secretKeyRef" in env["POSTWIRE_DATABASE_URL"]["valueFrom"]


def test_database_secret_is_created_before_the_hook_job() -> None:
    r = render({"database": {"existingSecret": "", "url": "postgresql://pw:secret@db:5432/postwire"}})
    secret = r.get("Secret", "postwire-database")
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
    assert secret["stringData"]["url"] == "postgresql://pw:secret@db:5432/postwire"


def test_existing_secrets_are_used(production_render: Rendered) -> None:
    names = {s["metadata"]["name"] for s in production_render.of_kind("Secret")}
    assert names == set()  # database, VERP key and SMTP certificate all come from existing Secrets
    ingest = production_render.env_of(production_render.get("Deployment", "postwire-ingest-smtp"))
    assert ingest["POSTWIRE_DATABASE_URL"] == {"secretKeyRef": {"name": "postwire-db-app", "key": "uri"}}
    assert ingest["POSTWIRE_TLS_CERT_FILE"] == "/etc/postwire/tls/tls.crt"
    router = production_render.env_of(production_render.get("Deployment", "postwire-dispatcher-router"))
    assert router["POSTWIRE_VERP_SECRET"] == {"secretKeyRef": {"name": "postwire-verp", "key": "verp-secret"}}


def test_generated_verp_secret_is_long_and_kept(default_render: Rendered) -> None:
    secret = default_render.get("Secret", "postwire-verp")
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(base64.b64decode(secret["data"]["verp-secret"])) >= 16


def test_nats_cluster(default_render: Rendered) -> None:
    sts = default_render.get("StatefulSet", "postwire-nats")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == "postwire-nats-headless"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    conf = default_render.get("ConfigMap", "postwire-nats")["data"]["nats.conf"]
    assert "store_dir: /data/jetstream" in conf
    routes = re.findall(r"nats://(postwire-nats-\d)\.postwire-nats-headless:6222", conf)
    assert routes == ["postwire-nats-0", "postwire-nats-1", "postwire-nats-2"]
    headless = default_render.get("Service", "postwire-nats-headless")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    for w in default_render.of_kind("Deployment", "StatefulSet"):
        if default_render.component(w) != "nats":
            env = default_render.env_of(w)
            assert env["POSTWIRE_NATS_URL"] == "nats://postwire-nats:4222"
            assert env["POSTWIRE_STREAM_REPLICAS"] == "3"


def test_single_nats_for_development() -> None:
    r = render({"nats": {"replicas": 1}})
    conf = r.get("ConfigMap", "postwire-nats")["data"]["nats.conf"]
    assert "cluster {" not in conf
    assert r.env_of(r.get("Deployment", "postwire-recorder"))["POSTWIRE_STREAM_REPLICAS"] == "1"
    assert not [p for p in r.of_kind("PodDisruptionBudget") if p["metadata"]["name"] == "postwire-nats"]


def test_external_nats() -> None:
    r = render(
        {
            "nats": {
                "external": {
                    "url": "nats://nats.nats.svc:4222",
                    "streamReplicas": 3,
                    "cidrs": ["10.30.0.0/16"],
                }
            }
        }
    )
    assert not [d for d in r.docs if d["metadata"]["name"].startswith("postwire-nats")]
    env = r.env_of(r.get("Deployment", "postwire-ingest-smtp"))
    assert env["POSTWIRE_NATS_URL"] == "nats://nats.nats.svc:4222"
    pol = r.get("NetworkPolicy", "postwire-ingest-smtp")
    assert {
        "ports": [{"port": 4222, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.30.0.0/16"}}],
    } in pol["spec"]["egress"]


def test_statefulset_cannot_autoscale() -> None:
    with pytest.raises(helm.HelmError, match="cannot autoscale"):
        render(
            {
                "services": {
                    "dispatcher-sender": {
                        "autoscaling": {
                            "enabled": True,
                            "minReplicas": 2,
                            "maxReplicas": 4,
                            "targetCPUUtilizationPercentage": 50,
                        }
                    }
                }
            }
        )


def test_service_monitor_and_rules_are_well_formed(production_render: Rendered) -> None:
    sm = production_render.get("ServiceMonitor", "postwire")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    selector = sm["spec"]["selector"]["matchLabels"]
    scraped = [
        s for s in production_render.of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()
    ]
    components = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped}
    assert components == {c for _, c in EXPECTED_WORKLOADS} - {"nats", "migrations"}
    for s in scraped:
        assert "metrics" in {p["name"] for p in s["spec"]["ports"]}
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"]
    rule = production_render.get("PrometheusRule", "postwire")
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}
            assert r["alert"][0].isupper() and r["expr"].strip()
            assert r["labels"]["severity"] in {"warning", "critical"}


def test_monitoring_crds_are_off_by_default(default_render: Rendered) -> None:
    assert not default_render.of_kind("ServiceMonitor", "PrometheusRule")
    dash = default_render.get("ConfigMap", "postwire-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_helm_lint_strict() -> None:
    from .conftest import CHART

    report = helm.lint(str(CHART), strict=True, kube_version="v1.33.0")
    assert not report["errors"]
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_the_packaged_chart_carries_the_dispatchers_shaping_rules(tmp_path: Path) -> None:
    """Users install the packaged chart: its shaping file, a link to the dispatcher package's rules in
    the repository, must be in the archive as the rules themselves."""
    from .conftest import CHART, REPO

    archive = helm.package(str(CHART), destination=str(tmp_path))
    with tarfile.open(archive) as tar:
        member = tar.getmember("postwire/files/shaping.yaml")
        assert member.isfile()
        packaged = tar.extractfile(member).read()  # type: ignore[union-attr]
    shipped = REPO / "services" / "dispatcher" / "src" / "postwire" / "dispatcher" / "shaping.yaml"
    assert packaged == shipped.read_bytes()
