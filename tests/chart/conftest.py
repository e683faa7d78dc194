"""Render charts/postwire offline (helm-python-sdk: Helm's own Go engine in a shared library, no helm
binary, no cluster) and hand the manifests to the tests."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import helm_python as helm
import pytest
import yaml

if TYPE_CHECKING:
    from .images import ImageVenvs

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "postwire"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
SHARED = REPO.parent / "shared"
RELEASE, NAMESPACE = "postwire", "mail"


@dataclass
class Rendered:
    values: dict[str, Any]  # the merged values the templates saw
    docs: list[dict[str, Any]]

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] in kinds]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        return self.of_kind("Deployment", "StatefulSet", "Job")

    def component(self, obj: dict[str, Any]) -> str:
        return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])

    def env_of(self, workload: dict[str, Any], container: int = 0) -> dict[str, Any]:
        """A container's environment: its envFrom ConfigMaps, then its env (values or valueFrom)."""
        c = workload["spec"]["template"]["spec"]["containers"][container]
        env: dict[str, Any] = {}
        for src in c.get("envFrom", []):
            env.update(self.get("ConfigMap", src["configMapRef"]["name"])["data"])
        for e in c.get("env", []):
            env[e["name"]] = e.get("value", e.get("valueFrom"))
        return env


def render(values: dict[str, Any] | None = None) -> Rendered:
    with helm.Chart.load(str(CHART)) as chart:
        merged = chart.merge_values(values or {})
        manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return Rendered(merged, docs)


def production_values() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(PRODUCTION_VALUES.read_text()))


@pytest.fixture(scope="session")
def default_render() -> Rendered:
    return render()


@pytest.fixture(scope="session")
def production_render() -> Rendered:
    return render(production_values())


@pytest.fixture(scope="session", params=["default", "production"])
def rendered(request: pytest.FixtureRequest) -> Iterator[Rendered]:
    yield request.getfixturevalue(f"{request.param}_render")


@pytest.fixture(scope="session")
def image_venvs(tmp_path_factory: pytest.TempPathFactory) -> ImageVenvs:
    """Each service's image venv, made on first use and shared by the session (images.ImageVenvs)."""
    from .images import ImageVenvs

    return ImageVenvs(tmp_path_factory.mktemp("images"))
