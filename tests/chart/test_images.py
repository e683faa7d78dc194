"""The one Dockerfile builds every service's image (the build argument SERVICE names it). There is no
Docker engine here, so what the build would do is checked offline: each service's image install (its
package as a wheel, no dev tools) imports, has the module the entry point runs, and, for the dispatcher,
its shipped shaping rules; the build context holds what the Dockerfile copies; its shell lines run on
the slim image's /bin/sh (dash)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO
from .images import SERVICES, ImageVenvs, instructions, runtime_env

pytestmark = pytest.mark.slow  # builds a venv per image


def test_the_dockerfile_builds_a_hardened_image_of_the_named_service() -> None:
    steps = instructions()
    froms = [args for word, args in steps if word == "FROM"]
    assert "python:3.11-slim AS builder" in froms and froms[-1] == "python:3.11-slim"  # runtime last
    runs = " ".join(args for word, args in steps if word == "RUN")
    assert 'uv sync --frozen --no-dev --no-install-workspace --package "postwire-${SERVICE}"' in runs
    assert 'uv sync --frozen --no-dev --no-editable --package "postwire-${SERVICE}"' in runs
    assert "--mount=type=cache,target=/root/.cache/uv" in runs and "grpc_tools.protoc" in runs
    # the build argument is declared in each stage that uses it (an ARG is scoped to its stage)
    assert [args for word, args in steps if word == "ARG"] == ["SERVICE", "SERVICE"]
    assert [args for word, args in steps if word == "USER"] == ["10001:10001"]
    assert not any(word == "HEALTHCHECK" for word, _ in steps)  # Kubernetes probes instead
    (entry,) = [json.loads(args) for word, args in steps if word == "ENTRYPOINT"]
    # exec: python replaces the shell as PID 1 and gets SIGTERM itself
    assert entry == ["/bin/sh", "-c", 'exec python -m "$POSTWIRE_SERVICE_MODULE"']


def test_its_shell_lines_run_on_dash() -> None:
    """RUN lines go to the slim image's /bin/sh (dash), which has no ${VAR//a/b}: BuildKit expands that
    in ENV and ARG only, and a RUN using it would fail with 'Bad substitution'."""
    for word, args in instructions():
        if word == "RUN":
            assert not re.search(r"\$\{\w+(//|/|\^|,)", args), args


@pytest.mark.parametrize("svc", SERVICES)
def test_the_image_env_names_the_service_and_its_data_dir(svc: str) -> None:
    env = runtime_env(svc)
    assert env["POSTWIRE_SERVICE_MODULE"] == f"postwire.{svc.replace('-', '_')}"
    assert env["POSTWIRE_DATA_DIR"] == "/var/lib/postwire"


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore excludes everything, then lets in the sources the builder copies or binds."""
    lines = [ln for ln in (REPO / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "**" and "**/.venv" in lines
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    steps = instructions()
    copied = {src.rstrip("/") for word, args in steps if word == "COPY" and "--from" not in args
              for src in args.split()[:-1]}
    bound = {m for word, args in steps if word == "RUN"
             for m in re.findall(r"type=bind,source=([^,\s]+)", args)}
    assert copied | bound <= allowed


@pytest.mark.parametrize("svc", SERVICES)
def test_an_image_installs_every_package_its_service_imports(svc: str, image_venvs: ImageVenvs,
                                                              tmp_path: Path) -> None:
    """The image's venv (ImageVenvs: what the builder installs) imports every module of the service and
    has the module the entry point runs."""
    venv = image_venvs(svc)
    module = runtime_env(svc)["POSTWIRE_SERVICE_MODULE"]
    walk = (f"import importlib, importlib.util, pkgutil; import {module} as p; "
            "[importlib.import_module(i.name) for i in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]; "
            f"assert importlib.util.find_spec('{module}.__main__').origin.startswith('{venv}')")
    if svc == "dispatcher":  # its shaping rules are package data: the image's default
        walk += "; from postwire.dispatcher.shaping import load_rules; print(sorted(load_rules().providers))"
    done = subprocess.run([str(venv / "bin" / "python"), "-c", walk], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1]
    if svc == "dispatcher":
        assert "google" in done.stdout
