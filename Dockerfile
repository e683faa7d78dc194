# syntax=docker/dockerfile:1.7
# The image of every Postwire service: the build argument SERVICE names one (a folder in services/, so
# package postwire-$SERVICE, module postwire.<SERVICE with - as _>). Build context: the repository root.
#   docker build --build-arg SERVICE=dispatcher -t postwire/dispatcher .
# skaffold.yaml builds one artifact per service from this file, passing SERVICE in docker.buildArgs.

# the uv release this repository is locked with (uv.lock), as in the local toolchain
FROM ghcr.io/astral-sh/uv:0.13 AS uv

# ---- builder: locked dependencies, generated protobuf stubs, the workspace packages ---------------------
FROM python:3.11-slim AS builder
ARG SERVICE
RUN test -n "$SERVICE" || { echo "build with --build-arg SERVICE=<a folder of services/>" >&2; exit 1; }
COPY --from=uv /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv \
    POSTWIRE_SERVICE_MODULE=postwire.${SERVICE//-/_}
WORKDIR /src

# Third-party dependencies only: this layer is reused until uv.lock changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-workspace --package "postwire-${SERVICE}"

COPY pyproject.toml uv.lock ./
COPY proto/ proto/
COPY libs/ libs/
COPY services/ services/
# a workspace member too: uv reads every member of the workspace, though no service installs it
COPY cli/ cli/

# The stubs are generated, never committed: protoc from the grpcio-tools pinned in uv.lock, in a
# throw-away tool venv, so the generated code matches the protobuf runtime installed above.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv venv -q /tools \
 && VIRTUAL_ENV=/tools uv pip install -q $(uv export --frozen --only-group dev --no-hashes --no-emit-workspace \
        | grep -oE '^(grpcio-tools|grpcio|protobuf|setuptools)==[^ ;]+') \
 && /tools/bin/python -m grpc_tools.protoc -I proto --python_out=libs/proto/src \
        --grpc_python_out=libs/proto/src $(find proto -name '*.proto' | sort)

# The workspace packages, as wheels (not editable): the runtime stage copies only the venv. Then the
# build fails here, not at the pod's start, if the service has no module to run.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "postwire-${SERVICE}" \
 && /app/.venv/bin/python -c 'import importlib.util, sys; importlib.util.find_spec(sys.argv[1]) or sys.exit(f"no module {sys.argv[1]}")' \
        "$POSTWIRE_SERVICE_MODULE.__main__"

# ---- runtime: the venv on a clean slim image, non-root, read-only-rootfs friendly -----------------------
FROM python:3.11-slim
ARG SERVICE
LABEL org.opencontainers.image.title="postwire-${SERVICE}"
RUN groupadd --system --gid 10001 postwire \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin postwire \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/postwire
# root-owned code: the service cannot modify itself; it writes only to /tmp and POSTWIRE_DATA_DIR
COPY --from=builder /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POSTWIRE_DATA_DIR=/var/lib/postwire \
    POSTWIRE_SERVICE_MODULE=postwire.${SERVICE//-/_}
WORKDIR /var/lib/postwire
USER 10001:10001
# `python -m` the service's module; exec, so python replaces the shell as PID 1 and handles SIGTERM
# itself (drains in-flight work within POSTWIRE_SHUTDOWN_GRACE_S)
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"$POSTWIRE_SERVICE_MODULE\""]
