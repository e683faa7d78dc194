"""What the one Dockerfile does, read from the file itself, and the image's venv made as its builder
stage makes it (no Docker engine here): shared by the image tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from .conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
SERVICES = sorted(p.name for p in (REPO / "services").iterdir() if (p / "pyproject.toml").exists())


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments and blank lines dropped."""
    text = re.sub(r"\\\n(?:\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def expand(value: str, service: str) -> str:
    """The Dockerfile's substitutions of the build argument, as BuildKit makes them: ${SERVICE} and
    ${SERVICE//old/new}."""
    value = re.sub(r"\$\{SERVICE//([^/}]*)/([^}]*)\}",
                   lambda m: service.replace(m.group(1), m.group(2)), value)
    return value.replace("${SERVICE}", service).replace("$SERVICE", service)


def runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage, the image that runs."""
    steps = instructions()
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    return steps[stages[-1]:]


def runtime_env(service: str) -> dict[str, str]:
    """The ENV of the image's last stage, for this service."""
    env: dict[str, str] = {}
    for word, args in runtime_stage():
        if word == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", args):
                env[key] = expand(value, service)
    return env


def package_name(folder: Path) -> str:
    return str(tomllib.loads((folder / "pyproject.toml").read_text())["project"]["name"])


def package_of(svc: str) -> str:
    return package_name(REPO / "services" / svc)


def workspace_packages() -> list[str]:
    """The names of the project's own packages: the members of the root pyproject's uv workspace."""
    members = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    return [package_name(folder) for pattern in members for folder in sorted(REPO.glob(pattern))
            if (folder / "pyproject.toml").exists()]


class ImageVenvs:
    """One venv per service, made as the builder makes /app/.venv (`uv sync --no-dev --no-editable
    --package postwire-$SERVICE`: the service's package and its declared dependencies as wheels), once
    per test session: the workspace venv, which has every package, cannot show a dependency the service
    forgot to declare, nor a file the wheel leaves out."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._made: dict[str, Path] = {}

    def __call__(self, svc: str) -> Path:
        if svc not in self._made:
            venv = self.base / svc
            env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON": sys.executable}
            # --offline: `make install` has put every locked package in uv's cache already. The project's
            # own packages are rebuilt from the tree: uv keys a local package's cached wheel on its
            # pyproject.toml, so a source change alone would install yesterday's wheel.
            rebuild = [arg for name in workspace_packages() for arg in ("--reinstall-package", name)]
            synced = subprocess.run([str(REPO / "scripts" / "uv"), "sync", "--quiet", "--frozen", "--offline",
                                     "--no-dev", "--no-editable", "--package", package_of(svc), *rebuild],
                                    cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            assert synced.returncode == 0, synced.stderr
            self._made[svc] = venv
        return self._made[svc]
