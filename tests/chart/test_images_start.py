"""Every image starts with the environment the rendered chart gives its pod, and the pods together carry
a message end to end.

No Docker engine and no cluster here, so a pod is stood in for by a process: the image's venv made as
the Dockerfile's builder makes it (images.ImageVenvs), run with the Dockerfile's ENTRYPOINT (the Job's
`command` for the migration Job), the runtime stage's ENV and WORKDIR, and the container's env from
`helm template` (default values, and ci/production-values.yaml). Only what names the cluster around the
pod is rewritten, by the rule tables below: the NATS and transformer Services → a local JetStream
cluster of the chart's size and the transformer process; Secrets → test values (the database URL: an
embedded PostgreSQL); listen hosts and container ports → loopback and free ports; paths inside a volume
mount → a folder standing in for that volume, filled from the rendered ConfigMap or a test certificate;
the pod-index label → the sender replica started. An env value that looks like an address and matches
no rule fails the test, so a new address in the chart cannot slip through. The world outside the
cluster is given as the local run gives it: a loopback DNS server (POSTWIRE_DNS_NAMESERVERS) whose MX
for the destination points at a loopback SMTP sink (POSTWIRE_MX_PORT).

Checked: the migration Job's command brings an empty database to Alembic's head; every workload answers
its chart probe (http /readyz on the probe port; the gRPC health protocol for the transformer); a mail
sent through the API and one submitted over SMTP with STARTTLS (the mounted certificate, in production)
arrive at the sink with their CSS inlined, and the recorder stores the delivery; every process stops
on SIGTERM with exit code 0 and leaves nothing behind.
Not checked (a real `docker build` and cluster would): the base image and its layers, user 10001 and
the read-only root filesystem, cluster DNS and Service routing, NetworkPolicies, probe timings, several
replicas of one workload (one pod each; one dispatcher sender: the one owning the destination's shard).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import re
import signal
import smtplib
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from postwire.core.sharding import shard_for
from postwire.db.engine import make_engine
from postwire.db.migrate import alembic_config
from postwire.testing.dns import DnsServer
from postwire.testing.fixtures import eventually
from postwire.testing.nats_cluster import NatsCluster
from postwire.testing.ports import free_ports
from postwire.testing.postgres import create_database
from postwire.testing.smtp import Received, SmtpSink

from .conftest import Rendered
from .images import ImageVenvs, instructions, runtime_env, runtime_stage

pytestmark = pytest.mark.slow  # every image's venv and pods started from the rendered chart

# ---- the rules: what in a pod's env names the cluster around it, and what stands in for it here ----------
# listen on every interface of the pod: loopback here
BIND_HOSTS = {"POSTWIRE_OPS_HOST", "POSTWIRE_HTTP_HOST", "POSTWIRE_GRPC_HOST", "POSTWIRE_SMTP_HOST",
              "POSTWIRE_BOUNCE_SMTP_HOST"}
# a container port of the pod (it must be one): a free loopback port here
LISTEN_PORTS = {"POSTWIRE_OPS_PORT", "POSTWIRE_HTTP_PORT", "POSTWIRE_GRPC_PORT", "POSTWIRE_SMTP_PORT",
                "POSTWIRE_SMTPS_PORT", "POSTWIRE_BOUNCE_SMTP_PORT"}
# [scheme://]<Service>:<port> of a chart component: that component's stand-in here
SERVICE_ADDRESSES = {"POSTWIRE_NATS_URL": "nats", "POSTWIRE_TRANSFORMER_ADDR": "transformer"}
# from a Secret (secretKeyRef): a test value (Local.secret)
SECRETS = {"POSTWIRE_DATABASE_URL", "POSTWIRE_VERP_SECRET"}
# names the services put in banners, mail and links and never connect to: kept
PUBLIC_NAMES = {"POSTWIRE_TRACKING_BASE_URL", "POSTWIRE_BOUNCE_DOMAIN", "POSTWIRE_SMTP_HOSTNAME",
                "POSTWIRE_EHLO_HOSTNAME", "POSTWIRE_MESSAGE_ID_DOMAIN", "POSTWIRE_SPF_INCLUDE"}
# absolute paths must lie inside a volume mount of the pod: the same path in that volume's folder here
# (fieldRef: only the StatefulSet's pod-index label, the index of the pod started)

# What python:3.11-slim sets (the runtime stage's base) before the Dockerfile's own ENV.
BASE_IMAGE_ENV = {"PATH": "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "LANG": "C.UTF-8", "HOME": "/nonexistent"}
IMAGE_VENV = "/app/.venv"  # the Dockerfile's UV_PROJECT_ENVIRONMENT, copied into the runtime stage
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"

DEST_DOMAIN = "images.test"
VERP_SECRET = "images-test-verp-secret-0123456789"
START_DEADLINE_S = 120.0  # a pod that is not ready by then is hung, not slow
HTML = ("<html><head><style>p.lead { color: #ff0000; font-size: 18px; }</style></head>"
        '<body><p class="lead">Hello from the images</p></body></html>')


def names_an_address(name: str, value: str) -> bool:
    """Whether an env entry looks like a host, a port, a URL or a path (it then needs a rule)."""
    if re.search(r"_(HOST|PORT|URL|ADDR|FILE|DIR|NAMESERVERS)$", name) or "://" in value:
        return True
    if value.startswith("/") or re.fullmatch(r"[\w.-]+:\d+", value):
        return True
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(value)
        return True
    return re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}", value.lower()) is not None


@dataclass
class Pod:
    """One pod of a rendered workload, as a process."""

    workload: dict[str, Any]
    component: str
    image: str  # the key of values.images, a folder of services/
    venv: Path
    root: Path  # the pod's volumes live in root/<volume name>
    ports: dict[int, int]  # container port → loopback port
    index: int = 0  # the StatefulSet ordinal
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.workload["spec"]["template"]["spec"])

    @property
    def container(self) -> dict[str, Any]:
        return container_of(self.workload)

    @property
    def log(self) -> Path:
        return self.root / "container.log"

    def local_path(self, path: str) -> str:
        """A path in the container → the same path inside the folder standing in for its volume."""
        for mount in sorted(self.container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"])):
            base = mount["mountPath"].rstrip("/")
            if path == base or path.startswith(base + "/"):
                return str(self.root / mount["name"]) + path[len(base):]
        raise AssertionError(f"{self.component}: {path} is in no volume mount of the pod "
                             "(the root filesystem is read-only and has no such file)")

    def port(self, name_or_number: str | int) -> int:
        """The loopback port of a container port, by its name (as probes name it) or number."""
        if isinstance(name_or_number, int):
            return self.ports[name_or_number]
        (number,) = [p["containerPort"] for p in self.container["ports"] if p["name"] == name_or_number]
        return self.ports[int(number)]

    def tail(self, lines: int = 25) -> str:
        text_ = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.component} ({self.log})\n" + "\n".join(text_.splitlines()[-lines:])


@dataclass
class Local:
    """The stand-ins for what surrounds the pods in a cluster."""

    rendered: Rendered
    nats_url: str
    database_url: str
    dns: DnsServer
    sink: SmtpSink
    tls_dir: Path
    pods: dict[str, Pod] = field(default_factory=dict)

    def secret(self, name: str, ref: dict[str, Any]) -> str:
        assert name in SECRETS, f"{name} comes from Secret {ref}: add a test value for it"
        return self.database_url if name == "POSTWIRE_DATABASE_URL" else VERP_SECRET

    def service_address(self, name: str, value: str) -> str:
        """``[scheme://]host:port`` naming a Service of the component SERVICE_ADDRESSES gives → its
        stand-in; the host and port must be that Service's, so the chart's wiring is checked too."""
        component = SERVICE_ADDRESSES[name]
        m = re.fullmatch(r"(?:(\w+)://)?([\w.-]+):(\d+)", value)
        assert m, f"{name}={value}: not [scheme://]host:port"
        scheme, host, port = m.group(1), m.group(2), int(m.group(3))
        services = [s for s in self.rendered.of_kind("Service") if self.rendered.component(s) == component
                    and s["metadata"]["name"] == host.split(".")[0]]
        assert services, f"{name}={value}: {host} is no Service of {component}"
        targets = [p["targetPort"] for p in services[0]["spec"]["ports"] if p["port"] == port]
        assert targets, f"{name}={value}: Service {host} has no port {port}"
        if component == "nats":
            assert scheme == "nats"
            return self.nats_url
        local = f"127.0.0.1:{self.pods[component].port(targets[0])}"
        return f"{scheme}://{local}" if scheme else local

    def outside(self) -> dict[str, str]:
        """The world outside the cluster, as the local run points at it (postwire.testing.stack): the
        node's resolver (the loopback DNS server) and the port MX hosts listen on (the sink's)."""
        return {"POSTWIRE_DNS_NAMESERVERS": self.dns.nameserver, "POSTWIRE_MX_PORT": str(self.sink.port)}

    def container_env(self, pod: Pod) -> dict[str, str]:
        """The base image's env, the Dockerfile's ENV, then the rendered container env, rewritten by the
        rule tables; an address no rule covers fails."""
        env = dict(BASE_IMAGE_ENV)
        for key, value in runtime_env(pod.image).items():
            env[key] = value.replace(IMAGE_VENV, str(pod.venv)).replace("$PATH", env.get("PATH", ""))
        for name, value in self.rendered.env_of(pod.workload).items():
            env[name] = self.rewrite(pod, name, value)
        outside = self.outside()
        assert not set(outside) & set(env), "the chart sets what the test gives as the outside world"
        tmp = [m for m in pod.container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        if tmp:  # the pod's /tmp is a volume: its stand-in folder is where Python makes temporary files
            env["TMPDIR"] = str(pod.root / tmp[0]["name"])
        return {**env, **outside}

    def rewrite(self, pod: Pod, name: str, value: Any) -> str:
        if isinstance(value, dict):
            if "secretKeyRef" in value:
                return self.secret(name, value["secretKeyRef"])
            assert value.get("fieldRef", {}).get("fieldPath") == POD_INDEX, f"{name}: no rule for {value}"
            return str(pod.index)
        plain = str(value)
        if name in SERVICE_ADDRESSES:
            return self.service_address(name, plain)
        if name in BIND_HOSTS:
            assert plain == "0.0.0.0", f"{name}={plain}"
            return "127.0.0.1"
        if name in LISTEN_PORTS:
            assert int(plain) in pod.ports, f"{pod.component}: {name}={plain} is no container port"
            return str(pod.ports[int(plain)])
        if plain.startswith("/"):
            return pod.local_path(plain)
        if name in PUBLIC_NAMES:
            return plain
        assert not names_an_address(name, plain), (
            f"{pod.component}: {name}={plain} looks like an address no rule of this test rewrites: add it "
            "to the tables at the top")
        return plain

    def fill_volumes(self, pod: Pod) -> None:
        """emptyDir → an empty folder; a ConfigMap → its rendered files; the SMTP TLS Secret → the test's
        certificate. Any other Secret volume has no stand-in: fail."""
        for volume in pod.spec.get("volumes", []):
            folder = pod.root / volume["name"]
            folder.mkdir(parents=True)
            if "configMap" in volume:
                data = self.rendered.get("ConfigMap", volume["configMap"]["name"])["data"]
                for key, content in data.items():
                    (folder / key).write_text(content)
            elif "secret" in volume:
                assert volume["name"] == "smtp-tls", f"no stand-in for {volume}"  # the chart's name for it
                for key in ("tls.crt", "tls.key"):
                    (folder / key).write_bytes((self.tls_dir / key).read_bytes())
            else:
                assert "emptyDir" in volume, f"no stand-in for {volume}"


def tls_files(folder: Path, hostname: str) -> None:
    """A self-signed certificate for the SMTP host name (and 127.0.0.1, where the test connects), in the
    layout of a kubernetes.io/tls Secret."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))


def container_of(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"]["containers"][0])


def image_of(rendered: Rendered, container: dict[str, Any]) -> str | None:
    """The key of values.images whose repository the container runs; None for a non-Postwire image."""
    repo = container["image"].rpartition(":")[0]
    found = [k for k, v in rendered.values["images"].items() if v["repository"] == repo]
    return found[0] if found else None


def make_pods(rendered: Rendered, base: Path, venvs: ImageVenvs) -> dict[str, Pod]:
    """A pod for every rendered workload that runs a Postwire image (NATS has its stand-in), each with a
    free loopback port for each container port; the sender is the replica owning the destination."""
    workloads = [(w, image) for w in rendered.workloads() if (image := image_of(rendered, container_of(w)))]
    numbers = [[int(p["containerPort"]) for p in container_of(w).get("ports", [])] for w, _ in workloads]
    free = iter(free_ports(sum(len(n) for n in numbers)))
    pods = {}
    for (w, image), ports in zip(workloads, numbers, strict=True):
        component = rendered.component(w)
        pods[component] = Pod(w, component, image, venvs(image), base / component,
                              {n: next(free) for n in ports})
    sender = pods["dispatcher-sender"]
    shard = shard_for(DEST_DOMAIN, int(rendered.values["config"]["POSTWIRE_SHARDS"]))
    sender.index = shard % int(sender.workload["spec"]["replicas"])
    return pods


def entrypoint(pod: Pod) -> list[str]:
    """The container's command (the Job sets one), else the Dockerfile's ENTRYPOINT."""
    if "command" in pod.container:
        return [*pod.container["command"], *pod.container.get("args", [])]
    (entry,) = [json.loads(args) for word, args in instructions() if word == "ENTRYPOINT"]
    return [*entry, *pod.container.get("args", [])]


def workdir(pod: Pod) -> str:
    """The image's WORKDIR: in the data volume where the pod mounts one; else the image's own folder (the
    Job's), stood in for by a folder of the pod."""
    (folder,) = [args for word, args in runtime_stage() if word == "WORKDIR"]
    with contextlib.suppress(AssertionError):
        return pod.local_path(folder)
    image_folder = pod.root / "image" / folder.lstrip("/")
    image_folder.mkdir(parents=True, exist_ok=True)
    return str(image_folder)


async def start(pod: Pod) -> None:
    """As the kubelet would start the container; a new session, so the pod's processes are one group."""
    with pod.log.open("ab") as out:
        pod.proc = await asyncio.create_subprocess_exec(
            *entrypoint(pod), env=pod.env, cwd=workdir(pod), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)


async def probe(pod: Pod) -> str:
    """The chart's readiness probe once: "" when it passes, else what it saw."""
    spec = pod.container["readinessProbe"]
    try:
        if "grpc" in spec:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{pod.port(int(spec['grpc']['port']))}") as ch:
                reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
            return "" if reply.status == health_pb2.HealthCheckResponse.SERVING else str(reply)
        get = spec["httpGet"]
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{pod.port(get['port'])}{get['path']}", timeout=3)
        return "" if r.status_code == 200 else f"{r.status_code} {r.text}"
    except (OSError, httpx.HTTPError, grpc.RpcError) as e:
        return f"{type(e).__name__}: {e}"


async def wait_ready(pod: Pod) -> None:
    deadline = asyncio.get_running_loop().time() + START_DEADLINE_S
    seen = "not probed yet"
    while asyncio.get_running_loop().time() < deadline:
        assert pod.proc is not None
        if pod.proc.returncode is not None:
            raise AssertionError(f"{pod.component} exited with {pod.proc.returncode}\n{pod.tail()}")
        seen = await probe(pod)
        if not seen:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{pod.component} not ready within {START_DEADLINE_S}s: {seen}\n{pod.tail()}")


async def stop(pod: Pod) -> int | None:
    """SIGTERM to the container's main process, as the kubelet sends it; after the pod's grace period,
    SIGKILL to whatever is left of its group (as the runtime ends a container). The exit code; None when
    the process had to be killed or left a process behind."""
    if pod.proc is None:
        return 0
    killed = False
    if pod.proc.returncode is None:
        pod.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(pod.proc.wait(), pod.spec.get("terminationGracePeriodSeconds", 30))
        except TimeoutError:
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.proc.pid, signal.SIGKILL)
            await pod.proc.wait()
    left = await _group_left(pod.proc.pid)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return None if killed or left else pod.proc.returncode


async def _group_left(pgid: int, deadline_s: float = 10.0) -> list[psutil.Process]:
    """The live processes of the group once they have had time to end after the main one (multiprocessing's
    resource tracker ends when it sees its pipe closed): the runtime would kill them with the container."""
    deadline = asyncio.get_running_loop().time() + deadline_s
    while True:
        left = [p for p in psutil.process_iter() if _in_group(p, pgid)]
        if not left or asyncio.get_running_loop().time() > deadline:
            return left
        await asyncio.sleep(0.1)


def _in_group(proc: psutil.Process, pgid: int) -> bool:
    with contextlib.suppress(psutil.Error, ProcessLookupError):  # gone while looked at
        return os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE
    return False


async def applied_revisions(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            return set((await conn.scalars(text("SELECT version_num FROM alembic_version"))).all())
    finally:
        await engine.dispose()


@dataclass
class Deployment:
    local: Local
    render: str
    migration_code: int | None = None
    schema: set[str] = field(default_factory=set)  # the Alembic revisions applied when the Job ended
    stopped: dict[str, int | None] = field(default_factory=dict)

    @property
    def pods(self) -> dict[str, Pod]:
        return self.local.pods

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.pods['api-gateway'].port('http')}"


@pytest_asyncio.fixture(scope="module", params=["default", "production"])
async def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                     image_venvs: ImageVenvs, pg_server: Any, dns_server: DnsServer
                     ) -> AsyncIterator[Deployment]:
    rendered: Rendered = request.getfixturevalue(f"{request.param}_render")
    base = tmp_path_factory.mktemp(f"pods-{request.param}")
    if (DEST_DOMAIN, "MX") not in dns_server.zone:
        dns_server.add_mail_domain(DEST_DOMAIN)
    pods = await asyncio.to_thread(make_pods, rendered, base, image_venvs)  # uv sync: seconds each
    tls_files(base / "tls", rendered.values["config"]["POSTWIRE_SMTP_HOSTNAME"])
    nats_size = int(rendered.values["nats"]["replicas"])
    async with contextlib.AsyncExitStack() as stack:
        sink = await SmtpSink().start()
        stack.push_async_callback(sink.stop)
        cluster = NatsCluster(base / "nats", size=nats_size)
        stack.push_async_callback(cluster.stop)
        await cluster.start()
        local = Local(rendered, cluster.url, create_database(pg_server), dns_server, sink, base / "tls", pods)
        for pod in pods.values():
            local.fill_volumes(pod)
        for pod in pods.values():
            pod.env = local.container_env(pod)

        job = pods.pop("migrations")  # the pre-install hook: runs to completion before any pod starts
        deployment = Deployment(local, request.param)

        async def stop_all() -> None:
            codes = await asyncio.gather(*(stop(p) for p in [job, *pods.values()]))
            deployment.stopped = dict(zip(["migrations", *pods], codes, strict=True))

        stack.push_async_callback(stop_all)
        await start(job)
        assert job.proc is not None
        deployment.migration_code = await asyncio.wait_for(
            job.proc.wait(), float(job.workload["spec"]["activeDeadlineSeconds"]))
        assert deployment.migration_code == 0, job.tail()
        deployment.schema = await applied_revisions(local.database_url)  # before any pod starts
        for pod in pods.values():
            await start(pod)
        async with asyncio.TaskGroup() as group:  # the first pod that fails cancels the wait for the rest
            for pod in pods.values():
                group.create_task(wait_ready(pod))
        yield deployment
    failed = {name: code for name, code in deployment.stopped.items() if code != 0}
    assert not failed, "exit codes on SIGTERM (None: killed after the grace period): " + str(failed) + "\n" \
        + "\n".join(({**pods, "migrations": job}[n]).tail() for n in failed)


# ---- the checks ------------------------------------------------------------------------------------------


def test_the_address_rule_sees_hosts_ports_urls_and_paths() -> None:
    """The guard that makes a new chart address fail: what it calls an address, and what it lets by."""
    for name, value in [("POSTWIRE_X", "nats://postwire-nats:4222"), ("POSTWIRE_X", "db.internal:5432"),
                        ("POSTWIRE_X", "10.0.0.7"), ("POSTWIRE_X", "relay.example.com"),
                        ("POSTWIRE_X", "/etc/postwire/x.pem"), ("POSTWIRE_RELAY_HOST", "relay"),
                        ("POSTWIRE_RELAY_PORT", "25")]:
        assert names_an_address(name, value), (name, value)
    for name, value in [("POSTWIRE_SHARDS", "32"), ("POSTWIRE_LOG_LEVEL", "INFO"),
                        ("POSTWIRE_RETURN_PATH_LABEL", "pm-bounces"), ("POSTWIRE_MX_TLS_VERIFY", "false"),
                        ("POSTWIRE_SHUTDOWN_GRACE_S", "20.5")]:
        assert not names_an_address(name, value), (name, value)


async def test_the_migration_job_brings_the_database_to_head(deployment: Deployment) -> None:
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config("")).get_heads())
    assert deployment.migration_code == 0 and deployment.schema == heads


async def test_every_workload_starts_and_answers_its_probe(deployment: Deployment) -> None:
    rendered = deployment.local.rendered
    postwire = {rendered.component(w) for w in rendered.workloads()
                if w["kind"] != "Job" and image_of(rendered, container_of(w))}
    assert set(deployment.pods) == postwire and len(postwire) == 8
    assert {name: await probe(pod) for name, pod in deployment.pods.items()} == dict.fromkeys(postwire, "")


async def _account(deployment: Deployment) -> dict[str, str]:
    """Made as docs/kubernetes.md says: the checkout's CLI, POSTWIRE_DATABASE_URL pointing at the
    database."""
    cli = Path(sys.executable).parent / "postwire"
    made = await asyncio.to_thread(
        subprocess.run, [str(cli), "account", "create", f"images-{deployment.render}", "--json",
                         "--allow-unverified-from"],
        env={**os.environ, "POSTWIRE_DATABASE_URL": deployment.local.database_url}, capture_output=True,
        text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    creds: dict[str, str] = json.loads(made.stdout)
    return creds


@pytest_asyncio.fixture(scope="module")
async def account(deployment: Deployment) -> dict[str, str]:
    return await _account(deployment)


def _inlined(received: Received) -> bool:
    part = received.message().get_body(preferencelist=("html",))
    assert part is not None
    html = str(part.get_content())
    return 'class="lead"' in html and re.search(r'style="[^"]*color: ?#ff0000', html) is not None


async def _events(deployment: Deployment, key: str, rcpt: str, type_: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=deployment.api, headers={"Authorization": f"Bearer {key}"}) as c:
        r = await c.get("/v1/events", params={"recipient": rcpt, "type": type_}, timeout=10)
    return list(r.json()["events"]) if r.status_code == 200 else []


async def test_a_message_through_the_api_arrives_with_inlined_css_and_is_recorded(
        deployment: Deployment, account: dict[str, str]) -> None:
    rcpt = f"api-{deployment.render}@{DEST_DOMAIN}"
    body = {"from": "Sender <sender@example.test>", "to": [rcpt], "subject": "through the images",
            "text": "plain", "html": HTML, "options": {"inline_css": True}}
    async with httpx.AsyncClient(base_url=deployment.api,
                                 headers={"Authorization": f"Bearer {account['api_key']}"}) as client:
        r = await client.post("/v1/messages", json=body, timeout=30)
    assert r.status_code == 202, r.text
    sink = deployment.local.sink
    [got] = await eventually(lambda: sink.handler.for_rcpt(rcpt), timeout=60)
    assert _inlined(got), got.data.decode(errors="replace")
    [event] = await eventually(lambda: _events(deployment, account["api_key"], rcpt, "delivered"), timeout=60)
    assert event["recipient"] == rcpt


def _submit(port: int, ctx: ssl.SSLContext, user: str, password: str, msg: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.starttls(context=ctx)
        smtp.login(user, password)
        smtp.send_message(msg)


async def test_a_message_over_smtp_with_starttls_arrives_with_inlined_css(
        deployment: Deployment, account: dict[str, str]) -> None:
    """AUTH needs TLS (the chart allows no plain-text AUTH): in production the certificate is the mounted
    Secret's, which the client trusts alone; by default ingest-smtp makes a self-signed one."""
    ingest = deployment.pods["ingest-smtp"]
    ctx = ssl.create_default_context()
    if "POSTWIRE_TLS_CERT_FILE" in deployment.local.rendered.env_of(ingest.workload):
        ctx.load_verify_locations(deployment.local.tls_dir / "tls.crt")
    else:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    rcpt = f"smtp-{deployment.render}@{DEST_DOMAIN}"
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "sender@example.test", rcpt, "through the images, by SMTP"
    msg.set_content("plain")
    msg.add_alternative(HTML, subtype="html")
    await asyncio.to_thread(_submit, ingest.port("smtp"), ctx, account["smtp_username"],
                            account["smtp_password"], msg)
    sink = deployment.local.sink
    [got] = await eventually(lambda: sink.handler.for_rcpt(rcpt), timeout=60)
    assert _inlined(got), got.data.decode(errors="replace")
