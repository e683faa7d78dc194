"""The service Dockerfiles (no Docker engine here, so their structure is checked, not built)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

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


@pytest.mark.parametrize("svc", SERVICES)
def test_an_image_installs_every_package_its_service_imports(svc: str, tmp_path: Path) -> None:
    """What the image's Dockerfile installs (its own package and its declared dependencies, no dev
    tools, not editable) imports every module of the service: the workspace venv, which has every
    package, cannot show a dependency the service forgot to declare."""
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON": sys.executable}
    # --offline: `make install` has put every locked package in uv's cache already
    synced = subprocess.run([str(REPO / "scripts" / "uv"), "sync", "--quiet", "--frozen", "--offline",
                             "--no-dev", "--no-editable", "--package", package_of(svc)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert synced.returncode == 0, synced.stderr
    walk = (f"import importlib, pkgutil; import {module_of(svc)} as p; "
            "[importlib.import_module(i.name) for i in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", walk], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1]
