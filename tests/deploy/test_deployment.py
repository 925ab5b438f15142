"""The Dockerfile and deploy/kubernetes/ checked against the code, without a
cluster or a Docker daemon: every setting they name exists, the ports,
probes, volume and shutdown timing agree with the configuration they give,
and that configuration passes `paygrid-server check-config`. One opt-in test
(PAYGRID_DOCKER_TEST=1) builds and runs the image."""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paygrid_server.config import API_KEYS_ENV, SETTINGS, load_config
from paygrid_server.transport.grpc_server import SERVICE_NAMES
from tests.support.certificates import TestCa

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy" / "kubernetes"
TLS_COMPONENT = DEPLOY / "tls"
SECRET_EXAMPLE = DEPLOY / "secret.example.yaml"
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


# ---------------------------------------------------------------- Dockerfile

def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage; continued lines joined."""
    stages: list[list[tuple[str, str]]] = []
    logical = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        if logical.strip():
            instruction, _, arguments = logical.strip().partition(" ")
            if instruction.upper() == "FROM":
                stages.append([])
            stages[-1].append((instruction.upper(), arguments.strip()))
        logical = ""
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for instruction, arguments in stage if instruction == name]


def image_env() -> dict[str, str]:
    env = {}
    for arguments in instructions(dockerfile_stages()[-1], "ENV"):
        for item in shlex.split(arguments):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def image_user() -> tuple[int, int]:
    [user] = instructions(dockerfile_stages()[-1], "USER")
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


def in_build_context(relative: str) -> bool:
    """.dockerignore as Docker reads it: the last matching line wins, and a
    line matching a parent folder matches everything in it."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    included = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        pattern = rule.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            included = rule.startswith("!")
    return included


def copied_sources(stage: list[tuple[str, str]]) -> list[str]:
    sources = []
    for arguments in instructions(stage, "COPY"):
        words = shlex.split(arguments)
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w.rstrip("/") for w in words[:-1] if not w.startswith("--")]
    return sources


def test_image_runs_paygrid_serve_as_a_non_root_user() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: the runtime image carries no build tools"
    assert all(stage[0][1].split()[0] == "python:3.11-slim" for stage in stages)
    final = stages[-1]
    [entrypoint] = instructions(final, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["paygrid-server", "serve"]
    assert instructions(final, "STOPSIGNAL") == ["SIGTERM"]
    uid, gid = image_user()
    assert uid != 0 and gid != 0
    env = image_env()
    assert env["PAYGRID_LISTEN"] == "0.0.0.0:50051", "in a container, loopback is unreachable"
    assert env["PAYGRID_METRICS_LISTEN"] == "0.0.0.0:9464"
    assert env["PAYGRID_DATABASE"] == "/var/lib/paygrid/paygrid.sqlite3"
    exposed = {int(p.split("/")[0]) for e in instructions(final, "EXPOSE") for p in e.split()}
    assert exposed == {port(env["PAYGRID_LISTEN"]), port(env["PAYGRID_METRICS_LISTEN"])}
    volumes = {v for e in instructions(final, "VOLUME") for v in json.loads(e)}
    assert str(PurePosixPath(env["PAYGRID_DATABASE"]).parent) in volumes


def test_image_build_has_what_the_package_needs() -> None:
    build = dockerfile_stages()[0]
    sources = copied_sources(build)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert in_build_context(source), f"COPY {source}: excluded by .dockerignore"
        files = [ROOT / source] if (ROOT / source).is_file() else (ROOT / source).rglob("*")
        for file in files:
            if file.suffix in (".py", ".sql", ".proto", ".toml"):
                relative = file.relative_to(ROOT).as_posix()
                assert in_build_context(relative), f"{relative}: excluded by .dockerignore"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for folder in pyproject["tool"]["setuptools"]["packages"]["find"]["where"]:
        assert any(folder == s or folder.startswith(s + "/") for s in sources), (
            f"pyproject finds packages in {folder}/, which the Dockerfile does not copy")
    # The stubs are not in git: the image must make them.
    assert "scripts/generate_protos.py" in sources
    assert any("generate_protos.py" in r for r in instructions(build, "RUN"))
    for source in copied_sources(dockerfile_stages()[-1]):
        assert in_build_context(source), f"COPY {source}: excluded by .dockerignore"


# ----------------------------------------------------------- the manifests

def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d
            for file in kustomization()["resources"] for d in yaml_documents(DEPLOY / file)}


def the(kind: str) -> dict[str, Any]:
    [document] = [d for (k, _), d in resources().items() if k == kind]
    return document


def secret_examples() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["stringData"] for d in yaml_documents(SECRET_EXAMPLE)}


def merge_by(items: list[dict], patch: list[dict], key: str) -> None:
    for item in patch:
        index = next((i for i, old in enumerate(items) if old[key] == item[key]), None)
        if index is None:
            items.append(item)
        else:
            items[index] = item


def with_tls(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Deployment as the tls component patches it (what kustomize's
    strategic merge does with these fields; test_kustomize_renders_... checks
    it against kustomize itself where kubectl is installed)."""
    result = copy.deepcopy(deployment)
    component = yaml.safe_load((TLS_COMPONENT / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    for entry in component["patches"]:
        [patch] = yaml_documents(TLS_COMPONENT / entry["path"])
        assert (patch["kind"], patch["metadata"]["name"]) == ("Deployment",
                                                              deployment["metadata"]["name"])
        pod, pod_patch = result["spec"]["template"]["spec"], patch["spec"]["template"]["spec"]
        merge_by(pod.setdefault("volumes", []), pod_patch.get("volumes", []), "name")
        for container_patch in pod_patch["containers"]:
            [container] = [c for c in pod["containers"] if c["name"] == container_patch["name"]]
            for key, value in container_patch.items():
                if key == "env":
                    merge_by(container.setdefault("env", []), value, "name")
                elif key == "volumeMounts":
                    merge_by(container.setdefault("volumeMounts", []), value, "mountPath")
                elif key in PROBES:
                    # Without it kustomize would merge the patch's probe into
                    # the grpc one, and a probe with two handlers is invalid.
                    assert value.get("$patch") == "replace", f"{key}: needs $patch: replace"
                    container[key] = {k: v for k, v in value.items() if k != "$patch"}
                else:
                    assert key == "name", f"this test does not know how {key} is merged"
    return result


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = pod_spec(deployment)["containers"]
    return only


def container_port(deployment: dict[str, Any], name: str) -> int:
    [number] = [p["containerPort"] for p in container(deployment)["ports"] if p["name"] == name]
    return number


def port(host_port: str) -> int:
    return int(host_port.rpartition(":")[2])


def variants() -> list[tuple[str, dict[str, Any]]]:
    deployment = the("Deployment")
    return [("plaintext", deployment), ("tls", with_tls(deployment))]


@pytest.fixture(scope="module")
def cli_help() -> str:
    result = subprocess.run([sys.executable, "-m", "paygrid_server", "serve", "--help"],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The image's environment, then the container's: envFrom, then env
    (Secrets as in secret.example.yaml)."""
    sources = {("configMap", name): d["data"]
               for (kind, name), d in resources().items() if kind == "ConfigMap"}
    sources |= {("secret", name): values for name, values in secret_examples().items()}
    spec = container(deployment)
    env = image_env()
    for source in spec.get("envFrom", []):
        [(kind, ref)] = source.items()
        env |= sources[(kind.removesuffix("Ref"), ref["name"])]
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            [(kind, ref)] = var["valueFrom"].items()
            env[var["name"]] = sources[(kind.removesuffix("KeyRef"), ref["name"])][ref["key"]]
    return env


def test_every_variable_and_flag_is_one_the_server_knows(cli_help: str) -> None:
    known_env = ({s.env for s in SETTINGS} | {API_KEYS_ENV}
                 | set(re.findall(r"env\s+(PAYGRID_[A-Z0-9_]+)", cli_help)))
    known_flags = set(re.findall(r"(--[a-z0-9-]+)", cli_help))
    used_env: set[str] = set()
    used_flags = {w.split("=")[0] for w in json.loads(instructions(dockerfile_stages()[-1],
                                                                   "ENTRYPOINT")[0])
                  if w.startswith("--")}
    for _, deployment in variants():
        spec = container(deployment)
        used_env |= {name for name in container_env(deployment) if name.startswith("PAYGRID_")}
        used_flags |= {w.split("=")[0] for w in spec.get("command", []) + spec.get("args", [])
                       if w.startswith("--")}
    for values in secret_examples().values():
        used_env |= {key for key in values if key.startswith("PAYGRID_")}
    assert used_env <= known_env, f"not paygrid-server settings: {sorted(used_env - known_env)}"
    assert used_flags <= known_flags, f"not paygrid-server flags: {used_flags - known_flags}"
    assert {"PAYGRID_CONFIG", "PAYGRID_LOG_LEVEL"} <= known_env
    # check-config does not read the log level; serve refuses a bad one.
    [choices] = set(re.findall(r"--log-level \{([A-Z,]+)\}", cli_help))
    for _, deployment in variants():
        level = container_env(deployment).get("PAYGRID_LOG_LEVEL", "INFO")
        assert level.upper() in choices.split(","), level


def test_config_map_loads_and_sets_nothing_the_environment_overrides(tmp_path: Path) -> None:
    data = the("ConfigMap")["data"]
    path = tmp_path / "paygrid.toml"
    path.write_text(data["paygrid.toml"])
    load_config(path, environ={})
    table = tomllib.loads(data["paygrid.toml"])
    env = container_env(the("Deployment"))
    for setting in SETTINGS:
        if setting.env in env:
            assert setting.key not in table.get(setting.section, {}), (
                f"[{setting.section}] {setting.key} in the ConfigMap is overridden by "
                f"{setting.env}: set it in one place")


def write_mounts(deployment: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Every volume the container mounts, as a local folder: ConfigMap and
    Secret volumes with their files (TLS files from a throw-away CA)."""
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    configmaps = {name: d["data"] for (kind, name), d in resources().items() if kind == "ConfigMap"}
    mounts = {}
    for mount in container(deployment)["volumeMounts"]:
        local = folder / mount["name"]
        local.mkdir()
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            for file, text in configmaps[volume["configMap"]["name"]].items():
                (local / file).write_text(text)
        elif "secret" in volume:
            assert volume["secret"]["secretName"] == "paygrid-tls"
            assert set(secret_examples()["paygrid-tls"]) == {"tls.crt", "tls.key", "ca.crt"}
            ca = TestCa(folder)
            server = ca.issue("server", "paygrid", server=True)
            shutil.copy(server.cert, local / "tls.crt")
            shutil.copy(server.key, local / "tls.key")
            shutil.copy(ca.files.cert, local / "ca.crt")
        mounts[mount["mountPath"]] = local
    return mounts


def local_path(value: str, mounts: dict[str, Path]) -> str:
    for mount_path in sorted(mounts, key=len, reverse=True):
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(mounts[mount_path]) + value[len(mount_path):]
    return value


def container_path(value: str, mounts: dict[str, Path]) -> str:
    for mount_path, local in mounts.items():
        if value == str(local) or value.startswith(str(local) + "/"):
            return mount_path + value[len(str(local)):]
    return value


def effective_config(deployment: dict[str, Any], mounts: dict[str, Path]) -> dict[str, Any]:
    """`paygrid-server check-config` with the container's environment and
    arguments, the mounted files in local folders."""
    env = container_env(deployment)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PAYGRID_")}
    environ |= {k: local_path(v, mounts) for k, v in env.items() if k.startswith("PAYGRID_")}
    arguments = [local_path(a, mounts) for a in container(deployment).get("args", [])]
    # --log-level belongs to serve only; the rest are the same options.
    arguments = [a for i, a in enumerate(arguments)
                 if not a.startswith("--log-level")
                 and not (i and arguments[i - 1] == "--log-level")]
    result = subprocess.run([sys.executable, "-m", "paygrid_server", "check-config", *arguments],
                            env=environ, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("variant", ["plaintext", "tls"])
def test_the_deployment_configuration_is_valid_and_agrees_with_the_pod(
        variant: str, tmp_path: Path) -> None:
    deployment = dict(variants())[variant]
    mounts = write_mounts(deployment, tmp_path)
    config = effective_config(deployment, mounts)
    spec = container(deployment)
    grpc_port = container_port(deployment, "grpc")

    assert config["listen"] == f"0.0.0.0:{grpc_port}"
    assert config["observability"]["metrics_listen"] == \
        f"0.0.0.0:{container_port(deployment, 'metrics')}"

    # The database is on the PersistentVolumeClaim, which is writable.
    database = PurePosixPath(container_path(config["database_path"], mounts))
    [data] = [m for m in spec["volumeMounts"] if m["mountPath"] == str(database.parent)]
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    pvc = the("PersistentVolumeClaim")["metadata"]["name"]
    assert volumes[data["name"]]["persistentVolumeClaim"]["claimName"] == pvc
    assert not data.get("readOnly")

    # SIGTERM: drain delay, then up to the grace for calls, then up to the
    # grace again for the payments they started (PaygridApp.stop).
    worst_case_s = (config["shutdown_drain_delay_ms"] + 2 * config["shutdown_grace_ms"]) / 1000
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > worst_case_s
    assert config["shutdown_drain_delay_ms"] > 0, "endpoints take a moment to drop the pod"

    tenants = {e.partition(":")[0]
               for e in secret_examples()["paygrid-api-keys"][API_KEYS_ENV].split(",")}
    assert {k["tenant_id"] for k in config["auth"]["api_keys"]} == tenants

    tls = {k: v and container_path(v, mounts) for k, v in config["tls"].items()}
    if variant == "plaintext":
        assert tls == {"cert_file": None, "key_file": None, "client_ca_file": None}
        for probe in PROBES:
            assert spec[probe]["grpc"]["port"] in (grpc_port, "grpc"), probe
            assert spec[probe]["grpc"].get("service", "") in ("", *SERVICE_NAMES), probe
        assert spec["readinessProbe"]["grpc"]["service"] in SERVICE_NAMES
    else:
        assert tls == {"cert_file": "/etc/paygrid/tls/tls.crt",
                       "key_file": "/etc/paygrid/tls/tls.key",
                       "client_ca_file": "/etc/paygrid/tls/ca.crt"}
        # kubelet's gRPC probes cannot speak TLS.
        for probe in PROBES:
            assert set(spec[probe]) & {"grpc", "tcpSocket", "exec", "httpGet"} == {"tcpSocket"}
            assert spec[probe]["tcpSocket"]["port"] in (grpc_port, "grpc"), probe


def test_one_replica_never_two_and_a_locked_down_pod() -> None:
    deployment = the("Deployment")
    assert deployment["spec"]["replicas"] == 1, "SQLite: one writer"
    assert deployment["spec"]["strategy"]["type"] == "Recreate", "no second pod on the file"
    pod = pod_spec(deployment)
    spec = container(deployment)
    uid, gid = image_user()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (uid, gid)
    assert pod["securityContext"]["fsGroup"] == gid, "the volume must be writable by paygrid"
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False
    writable = {m["mountPath"] for m in spec["volumeMounts"] if not m.get("readOnly")}
    assert "/tmp" in writable, "SQLite's temporary files"
    # A Service named paygrid would inject PAYGRID_SERVICE_HOST & co.
    assert pod["enableServiceLinks"] is False
    assert {"requests", "limits"} <= set(spec["resources"])
    assert "memory" in spec["resources"]["limits"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    configmap = the("ConfigMap")["metadata"]["name"]
    assert any(v.get("configMap", {}).get("name") == configmap for v in volumes.values())
    for var in spec["env"]:
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secret_examples()[ref["name"]]


def test_service_and_scrape_annotations_point_at_the_container_ports() -> None:
    deployment = the("Deployment")
    service = the("Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    for name, service_port in ports.items():
        assert service_port["targetPort"] in (name, container_port(deployment, name))
    assert ports["grpc"]["appProtocol"] == "grpc"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container_port(deployment, "metrics")
    assert annotations["prometheus.io/path"] == "/metrics"


def test_kustomization_applies_every_manifest_but_the_secret_examples() -> None:
    manifests = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == manifests - {SECRET_EXAMPLE.name}
    assert (TLS_COMPONENT / "kustomization.yaml").is_file()


def kustomize(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    result = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout) if d}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_what_these_tests_check(tmp_path: Path) -> None:
    assert kustomize(DEPLOY) == resources()
    copy_ = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, copy_)
    text = (copy_ / "kustomization.yaml").read_text()
    enabled = re.sub(r"^# components:\n#   - tls$", "components:\n  - tls", text, flags=re.M)
    assert enabled != text, "kustomization.yaml lost its commented-out tls component"
    (copy_ / "kustomization.yaml").write_text(enabled)
    rendered = kustomize(copy_)
    assert unordered(rendered[("Deployment", "paygrid")]) == unordered(with_tls(the("Deployment")))


def unordered(deployment: dict[str, Any]) -> dict[str, Any]:
    """Where kustomize puts a patch's new list items does not matter here."""
    result = copy.deepcopy(deployment)
    pod_spec(result)["volumes"].sort(key=lambda v: v["name"])
    container(result)["env"].sort(key=lambda v: v["name"])
    container(result)["volumeMounts"].sort(key=lambda m: m["mountPath"])
    return result


# ------------------------------------------------------ opt-in: a real image

@pytest.mark.timeout(1800)
@pytest.mark.skipif(os.environ.get("PAYGRID_DOCKER_TEST") != "1",
                    reason="opt-in: PAYGRID_DOCKER_TEST=1 builds and runs the image")
def test_image_builds_serves_and_stops_cleanly() -> None:
    if shutil.which("docker") is None or subprocess.run(
            ["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no Docker daemon")
    from paygrid.type.v1 import money_pb2
    from paygrid.v1 import payment_service_pb2 as pb
    from paygrid.v1 import payment_service_pb2_grpc as pb_grpc

    def docker(*arguments: str, timeout: float = 60) -> str:
        return subprocess.run(["docker", *arguments], capture_output=True, text=True,
                              timeout=timeout, check=True).stdout.strip()

    tag = f"paygrid:test-{uuid.uuid4().hex[:8]}"
    docker("build", "-t", tag, str(ROOT), timeout=1500)
    try:
        container_id = docker("run", "-d", "-p", "127.0.0.1::50051", tag)
        try:
            address = docker("port", container_id, "50051/tcp").splitlines()[0]
            with grpc.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                deadline = time.monotonic() + 60
                while True:
                    try:
                        reply = health.Check(health_pb2.HealthCheckRequest(
                            service="paygrid.v1.PaymentService"), timeout=2)
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.RpcError:
                        pass
                    assert time.monotonic() < deadline, docker("logs", container_id)
                    time.sleep(0.5)
                reply = pb_grpc.PaymentServiceStub(channel).Pay(pb.PayRequest(
                    idempotency_key="image-1", payer="acct_000012345678",
                    legs=[pb.PayLeg(payee="hotel_4711", amount=money_pb2.Money(
                        currency="EUR", amount_minor=100))]),
                    metadata=[("authorization", "Bearer paygrid-dev-key")], timeout=10)
                assert reply.payment.status == pb.PAYMENT_STATUS_SUCCEEDED
            docker("stop", "-t", "30", container_id, timeout=60)
            assert docker("inspect", "-f", "{{.State.ExitCode}}", container_id) == "0"
        finally:
            subprocess.run(["docker", "rm", "-f", container_id], capture_output=True)
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
