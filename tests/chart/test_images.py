"""The service Dockerfiles (no Docker engine here, so their structure is checked, not built)."""

from __future__ import annotations

import importlib.util
import re
import tomllib

import pytest

from .conftest import REPO

SERVICES = sorted(p.name for p in (REPO / "services").iterdir() if (p / "pyproject.toml").exists())


def dockerfile(svc: str) -> str:
    return (REPO / "services" / svc / "Dockerfile").read_text()


def module_of(svc: str) -> str:
    meta = tomllib.loads((REPO / "services" / svc / "pyproject.toml").read_text())
    return str(meta["tool"]["uv"]["build-backend"]["module-name"])


def package_of(svc: str) -> str:
    return str(tomllib.loads((REPO / "services" / svc / "pyproject.toml").read_text())["project"]["name"])


@pytest.mark.parametrize("svc", SERVICES)
def test_dockerfile_structure(svc: str) -> None:
    text = dockerfile(svc)
    froms = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.M)
    assert ("python:3.11-slim", "builder") in froms
    assert froms[-1] == ("python:3.11-slim", "")  # the runtime stage is the last one
    assert f"uv sync --frozen --no-dev --no-install-workspace --package {package_of(svc)}" in text
    assert f"uv sync --frozen --no-dev --no-editable --package {package_of(svc)}" in text
    assert "--mount=type=cache,target=/root/.cache/uv" in text
    assert "grpc_tools.protoc" in text
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users == ["10001:10001"]
    assert "POSTWIRE_DATA_DIR=/var/lib/postwire" in text
    (entry,) = re.findall(r"^ENTRYPOINT (.+)$", text, re.M)
    assert entry == f'["python", "-m", "{module_of(svc)}"]'
    assert "HEALTHCHECK" not in text  # Kubernetes probes instead


@pytest.mark.parametrize("svc", SERVICES)
def test_entrypoint_module_is_runnable(svc: str) -> None:
    spec = importlib.util.find_spec(f"{module_of(svc)}.__main__")
    assert spec is not None and spec.origin and spec.origin.startswith(str(REPO / "services" / svc))


def test_dockerfiles_differ_only_by_service() -> None:
    """One shape for every image: replace the service's names and they are the same file."""

    def normalised(svc: str) -> str:
        return dockerfile(svc).replace(module_of(svc), "MODULE").replace(svc, "SVC")

    shapes = {normalised(svc) for svc in SERVICES}
    assert len(shapes) == 1


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[[ln for ln in lines if not ln.startswith("#")] and lines.index("**")] == "**"
    assert {"!uv.lock", "!libs/", "!services/", "!proto/", "**/.venv"} <= set(lines)
