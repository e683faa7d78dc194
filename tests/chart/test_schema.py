"""values.schema.json accepts the shipped values files and refuses obvious mistakes; skaffold.yaml
validates against the skaffold v4beta13 schema."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from .conftest import CHART, REPO, SHARED, render

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
VALUES_FILES = sorted((CHART / "ci").glob("*.yaml"))


def merged(override: dict[str, Any]) -> dict[str, Any]:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.merge_values(override)


def test_schema_is_draft_07() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_defaults_validate() -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(DEFAULTS)


@pytest.mark.parametrize("path", VALUES_FILES, ids=lambda p: p.name)
def test_values_files_validate_and_render(path: Any) -> None:
    values = yaml.safe_load(path.read_text())
    jsonschema.Draft7Validator(SCHEMA).validate(merged(values))
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)  # Helm's own validator agrees
    assert render(values).docs


MISTAKES = {
    "misspelt top-level key": {"ingres": {"enabled": True}},
    "misspelt service field": {"services": {"ingest-smtp": {"replica": 3}}},
    "replicas as a string": {"services": {"dispatcher-sender": {"replicas": "4"}}},
    "privileged container port": {
        "services": {"ingest-smtp": {"ports": [{"name": "smtp", "containerPort": 25}]}}
    },
    "even NATS cluster": {"nats": {"replicas": 2}},
    "NATS URL without scheme": {"nats": {"external": {"url": "nats.example:4222"}}},
    "wiring in config": {"config": {"POSTWIRE_NATS_URL": "nats://elsewhere:4222"}},
    "non-POSTWIRE config": {"config": {"LOG_LEVEL": "DEBUG"}},
    "unknown flow": {"services": {"recorder": {"talksTo": ["nats", "internet"]}}},
    "short VERP secret": {"secrets": {"verp": {"value": "short"}}},
    "no database at all": {"database": {"existingSecret": "", "url": ""}},
    "root user": {"securityContext": {"runAsUser": 0}},
    "grpc probe without port": {"services": {"transformer": {"probes": {"type": "grpc", "port": None}}}},
    "bad pull policy": {"imagePullPolicy": "Sometimes"},
}


@pytest.mark.parametrize("override", MISTAKES.values(), ids=MISTAKES.keys())
def test_schema_rejects_mistakes(override: dict[str, Any]) -> None:
    values = merged(override)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(SCHEMA).validate(_drop_nulls(copy.deepcopy(values)))
    with pytest.raises(helm.HelmError):
        render(override)


def _drop_nulls(value: Any) -> Any:
    """Helm deletes keys set to null when merging; mirror that for the probe-without-port case."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def test_skaffold_yaml_validates() -> None:
    schema = SHARED / "schemas" / "skaffold-v4beta13.json"
    if not schema.exists():
        pytest.skip(f"{schema} is not present")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(schema), str(REPO / "skaffold.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_skaffold_builds_every_service_image_for_the_chart_once() -> None:
    """One artifact per service (a workspace member in services/), each from the one Dockerfile with
    the service as its SERVICE build argument, and the chart takes an image for each."""
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    services = sorted(p.parent.name for p in REPO.glob("services/*/pyproject.toml"))
    artifacts = config["build"]["artifacts"]
    built = [a["docker"]["buildArgs"]["SERVICE"] for a in artifacts]
    assert sorted(built) == services  # each once
    for a in artifacts:
        svc = a["docker"]["buildArgs"]["SERVICE"]
        assert a["image"] == f"postwire/{svc}" and a["context"] == "."
        assert a["docker"].get("dockerfile", "Dockerfile") == "Dockerfile"
        assert (REPO / a["context"] / "Dockerfile").is_file()
    for profile in config["profiles"]:
        assert "artifacts" not in profile.get("build", {})  # profiles build the same images
    assert sorted(DEFAULTS["images"]) == services
    releases = [config["deploy"]["helm"]["releases"]] + [
        p["deploy"]["helm"]["releases"] for p in config["profiles"]
    ]
    for rels in releases:
        (release,) = rels
        assert release["chartPath"] == "charts/postwire"
        templates = release["setValueTemplates"]
        for svc in services:
            key = svc.replace("-", "_")
            assert templates[f"images.{svc}.repository"] == f"{{{{.IMAGE_REPO_postwire_{key}}}}}"
            assert f"IMAGE_DIGEST_postwire_{key}" in templates[f"images.{svc}.tag"]
    assert {p["name"] for p in config["profiles"]} == {"dev", "ci"}
