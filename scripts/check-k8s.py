#!/usr/bin/env python3
"""Checks the Kubernetes manifests under deploy/k8s, offline.

Renders each overlay (deploy/k8s/overlays/dev and .../prod) with
`kubectl kustomize`, and checks what the rendered objects promise against what
the real binaries do:

* every Deployment of a service: its gRPC probes use the port the binary
  listens on (GRPC_ADDR as configured, else the default that `--help`
  prints), readiness asks the health service "" and liveness asks "liveness"
  (the names of the public contract, docs/contract.md "Health"), the startup
  probe allows enough time, terminationGracePeriodSeconds outlasts the preStop pause plus SHUTDOWN_TIMEOUT_SECS, the security context
  is the restricted one, resources have requests and limits;
* the configuration: every variable set is one that `--help` lists (the
  binaries ignore unknown variables, so a typo would pass silently), and the
  binary itself accepts the values (it is run with the rendered environment
  plus one deliberately bad variable: it must reject that one and no other,
  which it reports before it connects anywhere; files it reads from mounted
  Secrets, like NATS_PASSWORD_FILE, are given as local copies, and the
  Secrets the operator creates (OPERATOR_SECRETS: the NATS passwords, never
  in the repository) get stand-in values);
* each Deployment has a Service (port named grpc, appProtocol grpc), a
  PodDisruptionBudget that allows a drain, and an autoscaling/v2
  HorizontalPodAutoscaler on CPU;
* NATS: the image is the nats-server version CI pins (scripts/install-tools.sh),
  its configuration (with the auth.conf it includes, and stand-ins for the
  passwords its environment gets from the Secret) passes `nats-server -t`,
  every service's NATS_USER is a user of it, JetStream stores on a volume,
  readiness asks /healthz; NATS_URL names servers that the overlay runs and
  STREAM_REPLICAS fits them; prod has a three-node cluster with routes to
  every pod, a PodDisruptionBudget keeping two, NATS_URL listing all three
  and STREAM_REPLICAS=3.

Before those, every rendered object is validated against the Kubernetes API's
JSON schemas of each pinned Kubernetes version (KUBERNETES_SCHEMA_VERSIONS in
scripts/install-tools.sh) by kubernetes-validate (PyPI, pinned there too; it
bundles the schemas, so nothing is fetched), in strict mode: a field of the
wrong type, a missing required field or a field the API does not know fails,
as `kubectl apply` would refuse it. The schemas know the Kubernetes API, not
the promises above, which are orderflow's and are checked against its own
binaries.

kubectl is required (it has kustomize built in); no cluster is contacted. The
rendered YAML is turned into JSON by `kubectl label --local` (which never
talks to a server), so no YAML library is needed. Needs the debug binaries:
run `cargo build --workspace --bins` first. nats-server (installed by
scripts/install-tools.sh) checks the NATS configuration; without it that check
is skipped.

Prints one line per check and `k8s: N passed, N failed`; exits 1 when any
check fails.

Usage: scripts/check-k8s.py [--dir deploy/k8s] [--overlay dev --overlay prod]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The Deployments, each named after the binary it runs and the image
# orderflow/<name> that deploy/docker/Dockerfile builds.
SERVICES = ("order-service", "payment-service")
# Health service names of the public contract (docs/contract.md "Health"):
# "" follows readiness (NATS connected, streams reachable), "liveness" follows
# the process and stays SERVING through a broker outage.
READINESS_SERVICE = ""
LIVENESS_SERVICE = "liveness"
# Variables the manifests set ahead of the code that reads them; the binaries
# ignore them until then. (None at the moment.)
FUTURE_VARS: dict[str, str] = {}
# Secrets the operator creates in the cluster, so that no secret value is in
# the repository (deploy/k8s/README.md says how), with the keys the manifests
# read. The checks give their keys stand-in values.
OPERATOR_SECRETS = {
    "nats-credentials": {"order-service-password", "payment-service-password", "ops-password",
                         "events-reader-password"},
}
# The uid of the distroless nonroot user the images run as.
NONROOT_UID = 65532
# A startup probe must give a cold start at least this long.
MIN_STARTUP_SECONDS = 60
# nats-server minor versions the deployment may use (2.11 to 2.13 are avoided).
NATS_ALLOWED_MINORS = {(2, 10), (2, 15)}
# Ports of nats-server.
NATS_CLIENT_PORT, NATS_CLUSTER_PORT, NATS_MONITOR_PORT = 4222, 6222, 8222
# The oldest kubectl whose built-in kustomize (v5) renders these
# kustomizations (`labels` with includeTemplates, inline `patches`); the
# manifests use native gRPC probes (Kubernetes 1.27+), and kubectl is
# supported within one minor version of the cluster.
MIN_KUBECTL = (1, 27)
KUBECTL_HINT = (
    "install kubectl {min} or later (https://kubernetes.io/docs/tasks/tools/; Debian's "
    "kubernetes-client package works only where it is that new: bookworm's is 1.20)"
)
# What each overlay promises.
EXPECT = {
    # dev ships every ConfigMap and Secret it reads but OPERATOR_SECRETS;
    # prod may also read optional ones created in the cluster.
    "dev": {"nats_replicas": 1, "stream_replicas": 1, "service_min_replicas": (1, 1), "all_refs_in_overlay": True},
    "prod": {"nats_replicas": 3, "stream_replicas": 3, "service_min_replicas": (2, None), "all_refs_in_overlay": False},
}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def check(self, ok: bool, name: str, detail: str) -> bool:
        if ok:
            self.passed += 1
            print(f"ok    {name}: {detail}")
        else:
            self.failed += 1
            print(f"FAIL  {name}: {detail}")
        return ok

    def skip(self, name: str, detail: str) -> None:
        self.skipped += 1
        print(f"skip  {name}: {detail}")

    def summary(self) -> int:
        line = f"k8s: {self.passed} passed, {self.failed} failed"
        if self.skipped:
            line += f", {self.skipped} skipped"
        print(line)
        return 1 if self.failed else 0


# --------------------------------------------------------------------------
# Inputs: kubectl, the binaries, the pinned nats-server version.


def render(kubectl: str, overlay: Path) -> list[dict]:
    """The overlay's objects, as kubectl parses them."""
    built = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    if built.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed:\n{built.stderr.strip()}")
    # `label --local` parses the YAML like `kubectl apply` does and prints
    # JSON, without contacting a cluster; removing a label that is not there
    # changes nothing but an empty `labels` map.
    converted = subprocess.run(
        [kubectl, "label", "--local", "-f", "-", "-o", "json", "orderflow-check-k8s-"],
        input=built.stdout,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if converted.returncode != 0:
        raise RuntimeError(f"kubectl could not parse the rendered YAML:\n{converted.stderr.strip()}")
    objects, text, pos = [], converted.stdout, 0
    decoder = json.JSONDecoder()
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        obj, pos = decoder.raw_decode(text, pos)
        objects.extend(obj.get("items", []) if obj.get("kind") == "List" else [obj])
    return objects


def kubectl_version(kubectl: str) -> tuple[str, tuple[int, int] | None, str]:
    """kubectl's version, as text and (major, minor), and its kustomize's."""
    out = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30)
    try:
        info = json.loads(out.stdout)
    except json.JSONDecodeError:
        return "unknown version", None, "unknown"
    client = info.get("clientVersion") or {}
    try:
        number = (int(client.get("major", "")), int(re.sub(r"\D.*", "", client.get("minor", ""))))
    except ValueError:
        number = None
    return client.get("gitVersion", "unknown version"), number, info.get("kustomizeVersion", "unknown")


def binary_help(binary: Path) -> dict[str, str | None]:
    """Every variable `binary --help` lists, with its default (or None)."""
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"{binary} --help exited {out.returncode}: {out.stderr.strip()}")
    variables = {}
    for line in out.stdout.splitlines():
        match = re.match(r"^  ([A-Z][A-Z0-9_]+)\s{2,}(.*)$", line)
        if match:
            default = re.search(r"\[default: ([^\]]*)\]\s*$", match.group(2))
            variables[match.group(1)] = default.group(1) if default else None
    if "GRPC_ADDR" not in variables:
        raise RuntimeError(f"{binary} --help lists no GRPC_ADDR; cannot tell its port")
    return variables


def pinned_schema_versions() -> list[str]:
    text = (ROOT / "scripts" / "install-tools.sh").read_text()
    match = re.search(r'^KUBERNETES_SCHEMA_VERSIONS="([^"]*)"', text, re.M)
    return match.group(1).split() if match else []


def check_schemas(report: Report, overlay: str, objects: list[dict], versions: list[str]) -> None:
    """Every object against the API schemas of each pinned Kubernetes version."""
    hint = "run scripts/install-tools.sh's ensure_kubernetes_validate (scripts/test.sh does)"
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import VersionNotSupportedError
    except ImportError as error:
        report.check(False, f"{overlay}: API schemas", f"kubernetes-validate is not importable ({error}): {hint}")
        return
    if not versions:
        report.check(False, f"{overlay}: API schemas",
                     "KUBERNETES_SCHEMA_VERSIONS names no Kubernetes version in scripts/install-tools.sh")
        return
    for version in versions:
        problems = []
        for obj in objects:
            what = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path) or "(the object)"
                problems.append(f"{what}: {path}: {error.message}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError,
                    VersionNotSupportedError) as error:
                problems.append(f"{what}: {error.message}")
        report.check(not problems, f"{overlay}: Kubernetes {version} API schemas",
                     f"{len(objects)} objects valid (kubernetes-validate "
                     f"{kubernetes_validate.__version__}, strict)" if not problems
                     else "; ".join(problems))


def pinned_nats_version() -> str | None:
    text = (ROOT / "scripts" / "install-tools.sh").read_text()
    match = re.search(r"^NATS_SERVER_VERSION=(\S+)", text, re.M)
    return match.group(1) if match else None


# --------------------------------------------------------------------------
# Helpers over rendered objects.


def index(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o.get("kind", ""), o.get("metadata", {}).get("name", "")): o for o in objects}


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o.get("kind") == kind]


def name_of(obj: dict) -> str:
    return obj.get("metadata", {}).get("name", "?")


def pod_labels(workload: dict) -> dict:
    return workload.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def selects(selector: dict | None, labels: dict) -> bool:
    """Whether a label selector (matchLabels/matchExpressions, or a plain map
    as Services use) selects a pod with these labels."""
    if not selector:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        return all(labels.get(k) == v for k, v in selector.items())
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def parse_quantity(value, memory: bool) -> float | None:
    """A Kubernetes quantity in cores or bytes."""
    if value is None:
        return None
    text = str(value)
    suffixes = {
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
        "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3,
    }
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    if not match or (match.group(2) and match.group(2) not in suffixes):
        return None
    number = float(match.group(1))
    if match.group(2) == "m" and memory:
        return number / 1000
    return number * suffixes.get(match.group(2), 1)


def port_number(container: dict, port) -> int | None:
    """A probe's or Service's target port as a number (names resolved)."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def resolve_env(objs: dict, workload: dict, container: dict) -> tuple[dict, list[str], list[str], set[str]]:
    """The container's environment as the kubelet would build it: envFrom
    first, then env (which wins), with $(VAR) references expanded. Values the
    pod supplies at run time (fieldRef) get a stand-in. Returns the
    environment, the references that do not resolve, the optional ones that
    do not, and the names that are referenced as $(NAME)."""
    namespace = workload.get("metadata", {}).get("namespace", "default")
    env: dict[str, str] = {}
    problems: list[str] = []
    absent_optional: list[str] = []

    def source(kind: str, name: str, optional: bool) -> dict | None:
        obj = operator_secret(objs, kind, name)
        if obj is None:
            (absent_optional if optional else problems).append(f"{kind} {name}")
        return obj

    def data_of(obj: dict) -> dict:
        if obj.get("kind") == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
            data.update(obj.get("stringData") or {})
            return data
        return dict(obj.get("data") or {})

    for entry in container.get("envFrom") or []:
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = entry.get(key)
            if ref:
                obj = source(kind, ref.get("name", ""), bool(ref.get("optional")))
                if obj:
                    for k, v in data_of(obj).items():
                        env[entry.get("prefix", "") + k] = v
    referenced: set[str] = set()
    stand_ins = {
        "metadata.name": f"{name_of(workload)}-0",
        "metadata.namespace": namespace,
    }
    for entry in container.get("env") or []:
        name = entry.get("name", "")
        if "value" in entry:
            value = entry["value"]
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
                referenced.add(ref)
            env[name] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value
            )
            continue
        value_from = entry.get("valueFrom") or {}
        if "fieldRef" in value_from:
            path = value_from["fieldRef"].get("fieldPath", "")
            env[name] = stand_ins.get(path, f"stand-in-for-{path}")
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            ref = value_from.get(key)
            if ref:
                optional = bool(ref.get("optional"))
                obj = source(kind, ref.get("name", ""), optional)
                if obj:
                    data = data_of(obj)
                    if ref.get("key") in data:
                        env[name] = data[ref["key"]]
                    elif not optional:
                        problems.append(f"{kind} {ref.get('name')} has no key {ref.get('key')}")
    return env, problems, absent_optional, referenced


def operator_secret(objs: dict, kind: str, name: str) -> dict | None:
    """The object `kind`/`name` of the overlay; for a Secret of
    OPERATOR_SECRETS that the overlay does not hold, a stand-in with its
    documented keys (the real one is created in the cluster)."""
    obj = objs.get((kind, name))
    if obj is None and kind == "Secret" and name in OPERATOR_SECRETS:
        obj = {"kind": "Secret", "metadata": {"name": name},
               "stringData": {key: f"stand-in-{key}" for key in sorted(OPERATOR_SECRETS[name])}}
    return obj


def mounted_files(objs: dict, pod: dict, container: dict) -> tuple[dict[str, str], list[str]]:
    """The files the container sees from Secret and ConfigMap volumes (plain
    or projected), by path, with their content (stand-ins for
    OPERATOR_SECRETS), and the references that do not resolve."""
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    files: dict[str, str] = {}
    problems: list[str] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name"), {})
        sources = [s for s in (volume.get("projected") or {}).get("sources") or []]
        for kind, key in (("Secret", "secret"), ("ConfigMap", "configMap")):
            if key in volume:
                sources.append({key: volume[key]})
        for source in sources:
            for kind, key, name_key in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
                ref = source.get(key)
                if ref is None:
                    continue
                # A plain secret volume names it secretName; a projected one, name.
                name = ref.get(name_key) or ref.get("name", "")
                obj = operator_secret(objs, kind, name)
                if obj is None:
                    if not ref.get("optional"):
                        problems.append(f"{kind} {name}")
                    continue
                if kind == "Secret":
                    data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
                    data.update(obj.get("stringData") or {})
                else:
                    data = dict(obj.get("data") or {})
                items = ref.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item.get("key") not in data:
                        problems.append(f"{kind} {name} has no key {item.get('key')}")
                        continue
                    path = mount.get("mountPath", "").rstrip("/") + "/" + item.get("path", item["key"])
                    files[path] = data[item["key"]]
    return files, problems


def binary_accepts(binary: Path, env: dict[str, str], help_vars: dict,
                   files: dict[str, str] | None = None) -> tuple[bool, str]:
    """Runs the binary with `env` plus one variable set to a bad value: a
    binary that accepts everything else reports exactly that variable, with
    exit code 2, before it connects anywhere. A variable naming a file the
    pod mounts (`files`, by path: a password file, say) names a local copy
    instead, so the binary can read it."""
    sentinel = next(
        (v for v in ("OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SDK_DISABLED", "LOG_FORMAT")
         if v in help_vars and v not in env),
        None,
    )
    if sentinel is None:
        return False, "no unset variable is left to use as the deliberately bad one"
    run_env = dict(env)
    run_env[sentinel] = "not-a-valid-value-orderflow-check"
    # An empty directory, so no .env file is read.
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as mounted:
        for index, (path, content) in enumerate(sorted((files or {}).items())):
            local = Path(mounted) / f"file-{index}"
            local.write_text(content)
            for name, value in env.items():
                if value == path:
                    run_env[name] = str(local)
        try:
            out = subprocess.run(
                [str(binary)], env=run_env, cwd=empty, capture_output=True, text=True, timeout=20
            )
        except subprocess.TimeoutExpired:
            return False, f"the binary kept running although {sentinel} was invalid"
    bad = [line[4:].split(":", 1)[0] for line in out.stderr.splitlines() if line.startswith("  - ")]
    if out.returncode == 2 and bad == [sentinel]:
        return True, f"{binary.name} accepts the rendered environment ({len(env)} variables)"
    others = [line[4:] for line in out.stderr.splitlines() if line.startswith("  - ") and sentinel not in line]
    return False, f"{binary.name} exited {out.returncode} and rejects: {'; '.join(others) or out.stderr.strip()}"


def image_parts(image: str) -> tuple[str, str | None]:
    """An image reference's repository and tag (None without one)."""
    image = image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    if ":" in last:
        last, tag = last.split(":", 1)
        return (f"{head}/{last}" if head else last), tag
    return image, None


def effective(pod_sc: dict, container_sc: dict, key: str):
    return container_sc[key] if key in container_sc else pod_sc.get(key)


# --------------------------------------------------------------------------
# Checks.


def check_service_deployment(
    report: Report, overlay: str, objects: list[dict], objs: dict, name: str,
    binary: Path, help_vars: dict,
) -> dict | None:
    """Checks one service's Deployment and the objects around it; returns
    its resolved environment."""
    label = f"{overlay}: {name}"
    deployment = objs.get(("Deployment", name))
    if not report.check(deployment is not None, label, "Deployment exists" if deployment else
                        f"no Deployment named {name} in the overlay"):
        return None
    pod = deployment["spec"]["template"]["spec"]
    containers = pod.get("containers") or []
    container = next((c for c in containers
                      if image_parts(c.get("image", ""))[0].endswith(f"orderflow/{name}")), None)
    if not report.check(container is not None, f"{label} image",
                        f"container runs {container['image']}" if container else
                        f"no container runs the image orderflow/{name}"):
        return None
    image = container["image"]
    tag = image_parts(image)[1]
    report.check(tag not in (None, "latest"), f"{label} image tag",
                 f"{image} names its tag" if tag not in (None, "latest")
                 else f"{image}: set a tag other than latest (the overlays' `images:`)")

    env, problems, absent_optional, referenced = resolve_env(objs, deployment, container)
    if EXPECT.get(overlay, {}).get("all_refs_in_overlay"):
        problems, absent_optional = problems + absent_optional, []
    report.check(not problems, f"{label} env references",
                 "every ConfigMap and Secret it reads is in the overlay"
                 + (f" (optional, created in the cluster: {', '.join(absent_optional)})" if absent_optional else "")
                 if not problems else "not in the overlay: " + ", ".join(problems))
    unknown = sorted(v for v in env if v not in help_vars and v not in FUTURE_VARS and v not in referenced)
    extras = [f"{', '.join(sorted(set(FUTURE_VARS) & set(env)))} wired ahead for a later issue"] if set(
        FUTURE_VARS) & set(env) else []
    extras += [f"{', '.join(sorted(referenced & set(env) - set(help_vars)))} only fill $(...) references"] if (
        referenced & set(env) - set(help_vars)) else []
    report.check(not unknown, f"{label} variable names",
                 f"every variable is one `{name} --help` lists" + (f" ({'; '.join(extras)})" if extras else "")
                 if not unknown else f"{', '.join(unknown)}: not known to the binary, which would ignore them")
    files, missing = mounted_files(objs, pod, container)
    report.check(not missing, f"{label} volume references",
                 f"every Secret and ConfigMap it mounts is in the overlay or one you create ({', '.join(sorted(OPERATOR_SECRETS))})"
                 if not missing else "not in the overlay: " + ", ".join(missing))
    accepted, detail = binary_accepts(binary, env, help_vars, files)
    report.check(accepted, f"{label} configuration", detail)

    # The port: GRPC_ADDR as configured, else the binary's default.
    addr = env.get("GRPC_ADDR") or help_vars.get("GRPC_ADDR") or ""
    try:
        grpc_port = int(addr.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        report.check(False, f"{label} grpc port", f"cannot read a port from GRPC_ADDR {addr!r}")
        return env
    named = [p for p in container.get("ports") or [] if p.get("name") == "grpc"]
    report.check(len(named) == 1 and named[0].get("containerPort") == grpc_port, f"{label} container port",
                 f"port named grpc is {grpc_port}, where GRPC_ADDR {addr} listens" if named
                 and named[0].get("containerPort") == grpc_port else
                 f"expected a containerPort {grpc_port} named grpc (GRPC_ADDR {addr}), found {container.get('ports')}")

    def grpc_probe(kind: str, services: tuple[str, ...]) -> dict | None:
        probe = container.get(kind)
        grpc = (probe or {}).get("grpc")
        if not grpc:
            report.check(False, f"{label} {kind}", f"expected a native grpc probe, found {probe}")
            return None
        service = grpc.get("service", "")  # unset is "" for the Kubernetes API
        ok = grpc.get("port") == grpc_port and service in services
        report.check(ok, f"{label} {kind}",
                     f"grpc port {grpc.get('port')} service {service!r}" if ok else
                     f"grpc port {grpc.get('port')} service {service!r}; expected port {grpc_port} and "
                     f"service {' or '.join(repr(s) for s in services)}")
        return probe

    grpc_probe("readinessProbe", (READINESS_SERVICE,))
    grpc_probe("livenessProbe", (LIVENESS_SERVICE,))
    startup = grpc_probe("startupProbe", (LIVENESS_SERVICE, READINESS_SERVICE))
    if startup:
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        report.check(budget >= MIN_STARTUP_SECONDS, f"{label} startup budget",
                     f"periodSeconds x failureThreshold = {budget} s"
                     + (f" (at least {MIN_STARTUP_SECONDS} s)" if budget >= MIN_STARTUP_SECONDS
                        else f", less than the {MIN_STARTUP_SECONDS} s a cold start may take"))

    # Grace: preStop pause + serving delay + drain must end before SIGKILL.
    drain = env.get("SHUTDOWN_TIMEOUT_SECS") or help_vars.get("SHUTDOWN_TIMEOUT_SECS") or "20"
    delay = env.get("SHUTDOWN_DELAY_SECS") or help_vars.get("SHUTDOWN_DELAY_SECS") or "0"
    pre_stop = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    try:
        ok = grace > pre_stop + int(delay) + int(drain)
    except ValueError:
        ok = False
    spent = (f"preStop {pre_stop} s + SHUTDOWN_DELAY_SECS {delay} s + "
             f"SHUTDOWN_TIMEOUT_SECS {drain} s")
    report.check(ok, f"{label} termination grace",
                 f"terminationGracePeriodSeconds {grace} > {spent}"
                 if ok else f"terminationGracePeriodSeconds {grace} must exceed {spent}, "
                            "or the drain is cut short by SIGKILL")

    # Restricted security context.
    pod_sc, sc = pod.get("securityContext") or {}, container.get("securityContext") or {}
    issues = []
    if pod_sc.get("runAsNonRoot") is not True:
        issues.append("pod runAsNonRoot is not true")
    if effective(pod_sc, sc, "runAsNonRoot") is not True:
        issues.append("container runAsNonRoot is not true")
    if effective(pod_sc, sc, "runAsUser") != NONROOT_UID:
        issues.append(f"runAsUser is {effective(pod_sc, sc, 'runAsUser')}, not {NONROOT_UID}")
    if sc.get("readOnlyRootFilesystem") is not True:
        issues.append("readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        issues.append("allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        issues.append("capabilities do not drop ALL")
    if (sc.get("capabilities") or {}).get("add"):
        issues.append(f"capabilities add {sc['capabilities']['add']}")
    if (effective(pod_sc, sc, "seccompProfile") or {}).get("type") != "RuntimeDefault":
        issues.append("seccompProfile is not RuntimeDefault")
    report.check(not issues, f"{label} securityContext",
                 f"non-root uid {NONROOT_UID}, read-only root, no privilege escalation, drop ALL, RuntimeDefault"
                 if not issues else "; ".join(issues))

    # Resources.
    resources = container.get("resources") or {}
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    issues = []
    for kind in ("cpu", "memory"):
        request = parse_quantity(requests.get(kind), kind == "memory")
        limit = parse_quantity(limits.get(kind), kind == "memory")
        if request is None:
            issues.append(f"no {kind} request")
        if limit is None:
            issues.append(f"no {kind} limit")
        if request is not None and limit is not None and request > limit:
            issues.append(f"{kind} request {requests[kind]} above its limit {limits[kind]}")
    memory_limit = parse_quantity(limits.get("memory"), True)
    if memory_limit is not None and memory_limit < 64 * 2**20:
        issues.append(f"memory limit {limits['memory']} leaves too little room above the ~10 MB idle RSS")
    report.check(not issues, f"{label} resources",
                 f"requests {requests}, limits {limits}" if not issues else "; ".join(issues))

    labels = pod_labels(deployment)
    # Service.
    services = [s for s in of_kind(objects, "Service") if selects(s["spec"].get("selector"), labels)]
    grpc_ports = [
        (s, p) for s in services for p in s["spec"].get("ports") or []
        if p.get("name") == "grpc"
        and port_number(container, p.get("targetPort", p.get("port"))) == grpc_port
    ]
    ok = bool(grpc_ports) and all(p.get("appProtocol") == "grpc" for _, p in grpc_ports)
    report.check(ok, f"{label} Service",
                 ", ".join(f"{name_of(s)} port {p.get('port')} named grpc, appProtocol {p.get('appProtocol')}"
                           for s, p in grpc_ports)
                 if ok else f"expected a Service selecting the pods with a port named grpc to {grpc_port} "
                            f"and appProtocol grpc, found {[(name_of(s), p) for s, p in grpc_ports] or 'none'}")

    # HorizontalPodAutoscaler.
    hpas = [h for h in of_kind(objects, "HorizontalPodAutoscaler")
            if (h["spec"].get("scaleTargetRef") or {}).get("kind") == "Deployment"
            and h["spec"]["scaleTargetRef"].get("name") == name]
    hpa = hpas[0] if len(hpas) == 1 else None
    issues = []
    if hpa is None:
        issues.append(f"expected one HorizontalPodAutoscaler targeting Deployment {name}, found {len(hpas)}")
    else:
        if hpa.get("apiVersion") != "autoscaling/v2":
            issues.append(f"apiVersion is {hpa.get('apiVersion')}, not autoscaling/v2")
        cpu = [m for m in hpa["spec"].get("metrics") or [] if m.get("type") == "Resource"
               and (m.get("resource") or {}).get("name") == "cpu"
               and ((m["resource"].get("target") or {}).get("type") == "Utilization")]
        if not cpu:
            issues.append("no CPU utilization metric")
        low, high = hpa["spec"].get("minReplicas", 1), hpa["spec"].get("maxReplicas", 0)
        if not 1 <= low <= high:
            issues.append(f"replicas {low}..{high}")
    report.check(not issues, f"{label} HorizontalPodAutoscaler",
                 f"{name_of(hpa)}: {hpa['spec'].get('minReplicas', 1)} to {hpa['spec']['maxReplicas']} replicas "
                 f"on CPU utilization" if not issues else "; ".join(issues))

    # Replicas: the autoscaler's bounds; a fixed count would fight it.
    low_expected, high_expected = EXPECT[overlay]["service_min_replicas"] if overlay in EXPECT else (1, None)
    if hpa is not None:
        low, high = hpa["spec"].get("minReplicas", 1), hpa["spec"].get("maxReplicas", 0)
        fixed = deployment["spec"].get("replicas")
        ok = low >= low_expected and (high_expected is None or high <= high_expected) and (
            fixed is None or low <= fixed <= high)
        want = f"{low_expected}" if high_expected == low_expected else f"at least {low_expected}"
        report.check(ok, f"{label} replicas",
                     f"{low} to {high} (expected {want})"
                     + (f", Deployment replicas {fixed}" if fixed is not None else ", Deployment leaves the count to the autoscaler"))

    # PodDisruptionBudget.
    pdbs = [p for p in of_kind(objects, "PodDisruptionBudget") if selects(p["spec"].get("selector"), labels)]
    if len(pdbs) != 1:
        report.check(False, f"{label} PodDisruptionBudget", f"expected one selecting the pods, found {len(pdbs)}")
    else:
        spec = pdbs[0]["spec"]
        low = hpa["spec"].get("minReplicas", 1) if hpa else 1
        if "maxUnavailable" in spec:
            value = spec["maxUnavailable"]
            ok = (isinstance(value, int) and value >= 1) or (isinstance(value, str) and value.rstrip("%") not in ("", "0"))
            detail = f"maxUnavailable {value}"
        elif isinstance(spec.get("minAvailable"), int):
            ok = spec["minAvailable"] < low
            detail = f"minAvailable {spec['minAvailable']} with at least {low} replicas"
        else:
            ok, detail = False, f"unsupported budget {spec}"
        report.check(ok, f"{label} PodDisruptionBudget",
                     f"{name_of(pdbs[0])}: {detail}, a drain can proceed" if ok else f"{detail} blocks every drain")
    return env


def check_nats(report: Report, overlay: str, objects: list[dict], objs: dict,
               envs: dict[str, dict], pinned: str | None) -> None:
    label = f"{overlay}: nats"
    workloads = [w for w in of_kind(objects, "StatefulSet") + of_kind(objects, "Deployment")
                 if any(image_parts(c.get("image", ""))[0].split("/")[-1] == "nats"
                        for c in w["spec"]["template"]["spec"].get("containers") or [])]
    if not report.check(len(workloads) == 1, label,
                        f"{workloads[0]['kind']} {name_of(workloads[0])} runs nats-server" if len(workloads) == 1
                        else f"expected one workload running the nats image, found {len(workloads)}"):
        return
    nats = workloads[0]
    spec, pod = nats["spec"], nats["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if image_parts(c.get("image", ""))[0].split("/")[-1] == "nats")
    replicas = spec.get("replicas", 1)
    expected = EXPECT.get(overlay, {})

    # Image version.
    tag = image_parts(container["image"])[1] or ""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", tag)
    version = match.group(0) if match else None
    ok = bool(match) and (int(match.group(1)), int(match.group(2))) in NATS_ALLOWED_MINORS and (
        pinned is None or version == pinned)
    report.check(ok, f"{label} image",
                 f"{container['image']} is nats-server {version}"
                 + (f", the version CI pins (scripts/install-tools.sh)" if pinned else "")
                 if ok else f"{container['image']}: expected a 2.10.x or 2.15.x tag equal to NATS_SERVER_VERSION"
                            f" {pinned} of scripts/install-tools.sh")

    # Replicas.
    if "nats_replicas" in expected:
        report.check(replicas == expected["nats_replicas"], f"{label} replicas",
                     f"{replicas} (expected {expected['nats_replicas']})")

    # Security context (uid is the image's choice, not 65532).
    pod_sc, sc = pod.get("securityContext") or {}, container.get("securityContext") or {}
    issues = [k for k, bad in (
        ("runAsNonRoot", effective(pod_sc, sc, "runAsNonRoot") is not True),
        ("readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem") is not True),
        ("allowPrivilegeEscalation", sc.get("allowPrivilegeEscalation") is not False),
        ("capabilities drop ALL", "ALL" not in ((sc.get("capabilities") or {}).get("drop") or [])),
        ("seccompProfile RuntimeDefault", (effective(pod_sc, sc, "seccompProfile") or {}).get("type") != "RuntimeDefault"),
    ) if bad]
    report.check(not issues, f"{label} securityContext",
                 "non-root, read-only root, no privilege escalation, drop ALL, RuntimeDefault"
                 if not issues else "not set: " + ", ".join(issues))

    # Configuration file: from a mounted ConfigMap (or a projected volume of
    # ConfigMaps) named by --config, with the files next to it that it
    # includes.
    args = (container.get("command") or []) + (container.get("args") or [])
    conf_path = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config", "-c")), None)
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
    mounts = container.get("volumeMounts") or []
    files, missing = mounted_files(objs, pod, container)
    conf_text = files.get(conf_path or "")
    conf_dir = (conf_path or "").rsplit("/", 1)[0]
    siblings = {path.rsplit("/", 1)[1]: text for path, text in files.items() if path.rsplit("/", 1)[0] == conf_dir}
    if not report.check(conf_text is not None and not missing, f"{label} config",
                        f"{conf_path} comes from a ConfigMap in the overlay"
                        + (f", with {', '.join(sorted(set(siblings) - {conf_path.rsplit('/', 1)[1]}))} beside it"
                           if len(siblings) > 1 else "") if conf_text is not None and not missing
                        else f"cannot find the file given to --config ({conf_path}) in a mounted ConfigMap"
                        + (f"; missing: {', '.join(missing)}" if missing else "")):
        return
    # The whole configuration, includes inlined, for the checks below.
    full_text = conf_text + "".join(f"\n{text}" for name, text in siblings.items()
                                    if re.search(rf"^\s*include\s+[\"']?{re.escape(name)}", conf_text, re.M))
    # The environment the server gets: its `$VARIABLE`s must all resolve.
    env_problems: list[str] = []
    server_env = {"PATH": os.environ.get("PATH", "")}
    for entry in container.get("env") or []:
        value_from = entry.get("valueFrom") or {}
        ref = value_from.get("secretKeyRef") or value_from.get("configMapKeyRef")
        if "value" in entry:
            server_env[entry["name"]] = entry["value"]
        elif "fieldRef" in value_from:
            server_env[entry["name"]] = f"{name_of(nats)}-0"
        elif ref:
            kind = "Secret" if "secretKeyRef" in value_from else "ConfigMap"
            obj = operator_secret(objs, kind, ref.get("name", ""))
            data = {**(obj or {}).get("data", {}), **(obj or {}).get("stringData", {})}
            if ref.get("key") in data:
                server_env[entry["name"]] = f"stand-in-{ref['key']}"
            elif not ref.get("optional"):
                env_problems.append(f"{entry['name']}: {kind} {ref.get('name')} key {ref.get('key')}")
    report.check(not env_problems, f"{label} env references",
                 "every Secret it reads is in the overlay or one you create" if not env_problems
                 else "not found: " + ", ".join(env_problems))
    nats_server = shutil.which("nats-server")
    if nats_server:
        with tempfile.TemporaryDirectory() as work:
            for name, text in siblings.items():
                (Path(work) / name).write_text(text)
            conf_file = Path(work) / conf_path.rsplit("/", 1)[1]
            out = subprocess.run([nats_server, "--config", str(conf_file), "-t"], env=server_env, cwd=work,
                                 capture_output=True, text=True, timeout=30)
        report.check(out.returncode == 0, f"{label} config valid",
                     "`nats-server -t` accepts it" if out.returncode == 0
                     else f"`nats-server -t`: {(out.stderr or out.stdout).strip()}")
    else:
        report.skip(f"{label} config valid", "nats-server is not on PATH (scripts/install-tools.sh installs it)")

    def conf_value(key: str) -> str | None:
        found = re.search(rf"^\s*{key}\s*[:=]?\s*([^\s#]+)", full_text, re.M)
        return found.group(1).strip("\"'") if found else None

    # JetStream on a volume.
    store = conf_value("store_dir")
    has_js = re.search(r"^\s*jetstream\s*[:=]?\s*(\{|enabled|true)", conf_text, re.M) is not None
    store_mount = next((m for m in mounts if store and (store + "/").startswith(m["mountPath"].rstrip("/") + "/")), None)
    kind = None
    if store_mount:
        kind = ("PersistentVolumeClaim" if store_mount["name"] in claims
                else "emptyDir" if "emptyDir" in volumes.get(store_mount["name"], {})
                else "PersistentVolumeClaim" if "persistentVolumeClaim" in volumes.get(store_mount["name"], {})
                else None)
    ok = has_js and kind is not None and (overlay != "prod" or kind == "PersistentVolumeClaim")
    report.check(ok, f"{label} JetStream store",
                 f"JetStream on, store_dir {store} on a {kind}" if ok
                 else f"expected a jetstream block whose store_dir is on a volume{' claim' if overlay == 'prod' else ''}"
                      f" (store_dir {store}, volume {kind})")

    # Ports and the readiness probe on /healthz.
    ports = {p.get("containerPort") for p in container.get("ports") or []}
    needed = {NATS_CLIENT_PORT, NATS_MONITOR_PORT} | ({NATS_CLUSTER_PORT} if replicas > 1 else set())
    report.check(needed <= ports, f"{label} ports", f"container ports {sorted(p for p in ports if p)}"
                 + ("" if needed <= ports else f", missing {sorted(needed - ports)}"))
    http_port = conf_value("http_port") or conf_value("http")
    readiness = (container.get("readinessProbe") or {}).get("httpGet") or {}
    probe_port = port_number(container, readiness.get("port"))
    ok = readiness.get("path", "").startswith("/healthz") and probe_port == NATS_MONITOR_PORT and (
        http_port is not None and http_port.rsplit(":", 1)[-1] == str(NATS_MONITOR_PORT))
    report.check(ok, f"{label} readinessProbe",
                 f"GET {readiness.get('path')} on {probe_port}, the monitoring port (http_port {http_port})"
                 if ok else f"expected httpGet /healthz on {NATS_MONITOR_PORT} with http_port {NATS_MONITOR_PORT}"
                            f" in the config, found {readiness or 'none'} and http_port {http_port}")

    # Services that reach the NATS pods.
    labels = pod_labels(nats)
    nats_services = {name_of(s): s for s in of_kind(objects, "Service") if selects(s["spec"].get("selector"), labels)}
    headless = nats_services.get(spec.get("serviceName", "")) if nats["kind"] == "StatefulSet" else None
    if nats["kind"] == "StatefulSet":
        ok = headless is not None and headless["spec"].get("clusterIP") == "None" and headless["spec"].get(
            "publishNotReadyAddresses") is True
        report.check(ok, f"{label} headless Service",
                     f"{spec.get('serviceName')}: clusterIP None, publishNotReadyAddresses" if ok
                     else f"serviceName {spec.get('serviceName')!r} must be a headless Service selecting the pods, "
                          "with publishNotReadyAddresses: true")
    pod_hosts = {f"{name_of(nats)}-{i}.{spec.get('serviceName')}": i for i in range(replicas)} if headless else {}

    # Cluster: routes to every pod through the headless Service.
    if replicas > 1:
        cluster = re.search(r"^\s*cluster\s*[:=]?\s*\{(.*?)^\s*\}", conf_text, re.M | re.S)
        body = cluster.group(1) if cluster else ""
        routes = re.findall(r"nats(?:-route)?://([A-Za-z0-9.-]+):(\d+)", body)
        covered = {pod_hosts.get(host) for host, port in routes if int(port) == NATS_CLUSTER_PORT}
        ok = bool(re.search(r"^\s*name\s*[:=]", body, re.M)) and covered == set(range(replicas))
        report.check(ok, f"{label} cluster",
                     f"cluster {conf_value('name')} with routes to {', '.join(h for h, _ in routes)}" if ok
                     else f"expected a named cluster with routes to exactly the {replicas} pods "
                          f"({', '.join(f'{h}:{NATS_CLUSTER_PORT}' for h in pod_hosts)}), found "
                          f"{', '.join(f'{h}:{p}' for h, p in routes) or 'none'}")
        if nats["kind"] == "StatefulSet":
            report.check(spec.get("podManagementPolicy") == "Parallel", f"{label} podManagementPolicy",
                         f"{spec.get('podManagementPolicy', 'OrderedReady')} (Parallel: no server waits for another"
                         " to be ready before it starts)")
    pdbs = [p for p in of_kind(objects, "PodDisruptionBudget") if selects(p["spec"].get("selector"), labels)]
    if overlay == "prod":
        ok = len(pdbs) == 1 and pdbs[0]["spec"].get("minAvailable") == 2
        report.check(ok, f"{label} PodDisruptionBudget",
                     f"{name_of(pdbs[0])}: minAvailable 2" if ok else
                     f"expected one PodDisruptionBudget with minAvailable 2, found {[p['spec'] for p in pdbs]}")

    # What the services connect to.
    for service, env in envs.items():
        slabel = f"{overlay}: {service}"
        urls = [u.strip() for u in (env.get("NATS_URL") or "").split(",") if u.strip()]
        reached, unknown = set(), []
        for url in urls:
            found = re.fullmatch(r"(?:nats|tls)://(?:[^@/]*@)?([A-Za-z0-9.-]+)(?::(\d+))?/?", url)
            host, port = (found.group(1), int(found.group(2) or NATS_CLIENT_PORT)) if found else (url, None)
            short = host.removesuffix(".svc.cluster.local")
            if short in pod_hosts and port == NATS_CLIENT_PORT:
                reached.add(pod_hosts[short])
            elif short.split(".")[0] in nats_services and not short.split(".")[0] in pod_hosts and any(
                    port == p.get("port") and port_number(container, p.get("targetPort", p.get("port"))) == NATS_CLIENT_PORT
                    for p in nats_services[short.split(".")[0]]["spec"].get("ports") or []):
                reached.update(range(replicas))
            else:
                unknown.append(url)
        ok = urls and not unknown and (overlay != "prod" or (len(urls) == replicas and reached == set(range(replicas))))
        report.check(bool(ok), f"{slabel} NATS_URL",
                     f"{len(urls)} server URL(s), all served by {name_of(nats)}" if ok
                     else f"{env.get('NATS_URL')!r}: "
                          + (f"not served by the overlay's NATS: {unknown}" if unknown
                             else f"expected one URL per server ({replicas}) through {spec.get('serviceName')}"))
        user = env.get("NATS_USER")
        known = user is not None and re.search(
            rf"^\s*user\s*[:=]\s*[\"']?{re.escape(user)}[\"']?\s*$", full_text, re.M) is not None
        report.check(known, f"{slabel} NATS user",
                     f"NATS_USER {user} is a user of the NATS configuration" if known
                     else f"NATS_USER {user!r} is not a user of the NATS configuration (deploy/nats/auth.conf)")
        stream_replicas = env.get("STREAM_REPLICAS", "1")
        want = expected.get("stream_replicas")
        ok = stream_replicas.isdigit() and 1 <= int(stream_replicas) <= replicas and (
            want is None or int(stream_replicas) == want)
        report.check(ok, f"{slabel} STREAM_REPLICAS",
                     f"{stream_replicas} with {replicas} NATS server(s)"
                     + (f" (expected {want})" if want is not None else ""))


def check_overlay(report: Report, overlay_dir: Path, kubectl: str, binaries: dict, helps: dict,
                  pinned: str | None, schema_versions: list[str]) -> None:
    overlay = overlay_dir.name
    try:
        objects = render(kubectl, overlay_dir)
    except (RuntimeError, json.JSONDecodeError, subprocess.TimeoutExpired) as error:
        report.check(False, f"{overlay}: render", str(error))
        return
    kinds = sorted({o.get("kind") for o in objects})
    report.check(bool(objects), f"{overlay}: render",
                 f"`kubectl kustomize {overlay_dir.relative_to(ROOT) if overlay_dir.is_relative_to(ROOT) else overlay_dir}`"
                 f" gives {len(objects)} objects ({', '.join(kinds)})")
    check_schemas(report, overlay, objects, schema_versions)
    objs = index(objects)
    envs = {}
    for name in SERVICES:
        env = check_service_deployment(report, overlay, objects, objs, name, binaries[name], helps[name])
        if env is not None:
            envs[name] = env
    check_nats(report, overlay, objects, objs, envs, pinned)


def check_image(report: "Report", runs_as: int) -> None:
    """The image the manifests run: its final stages run as the numeric
    non-root user the pods demand, and its health check is the built-in probe."""
    dockerfile = ROOT / "deploy" / "docker" / "Dockerfile"
    try:
        lines = dockerfile.read_text().splitlines()
    except OSError as error:
        report.check(False, "image", f"cannot read {dockerfile}: {error}")
        return
    stage, users, healthchecks = None, {}, {}
    for line in lines:
        words = line.split()
        if not words:
            continue
        keyword = words[0].upper()
        if keyword == "FROM":
            stage = words[-1] if len(words) >= 4 and words[-2].upper() == "AS" else words[1]
            users[stage] = users.get(words[1])  # a stage inherits its base's user
            healthchecks[stage] = healthchecks.get(words[1])
        elif keyword == "USER" and stage is not None:
            users[stage] = words[1]
        elif keyword == "HEALTHCHECK" and stage is not None:
            healthchecks[stage] = line
    # cargo reads every workspace member's manifest before it builds any, so
    # the builder must copy every top-level directory that holds one.
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    copied = {line.split()[1].rstrip("/") for line in lines
              if line.split()[:1] == ["COPY"] and len(line.split()) >= 3}
    for top in sorted({m.split("/")[0] for m in members if m != "."}):
        report.check(top in copied, f"image copies {top}/",
                     f"workspace members live under {top}/, and the builder does not COPY it")
    # The last stage is `FROM orderflow-${SERVICE}`: check each service's stage.
    for name in SERVICES:
        user = users.get(f"orderflow-{name}") or ""
        uid = user.split(":")[0]
        report.check(uid.isdigit() and int(uid) == runs_as, f"image user ({name})",
                     f"its stage runs as {user!r}; pods require the non-root runAsUser {runs_as}")
    # The HEALTHCHECK line may continue on the next line; the stage's text says it all.
    text = "\n".join(lines)
    report.check("probe" in text.split("HEALTHCHECK", 1)[-1].split("\nFROM", 1)[0],
                 "image health check", "HEALTHCHECK runs the binary's built-in `probe`")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=str(ROOT / "deploy" / "k8s"),
                        help="the kustomize tree (default: deploy/k8s)")
    parser.add_argument("--overlay", action="append",
                        help="overlay name under DIR/overlays (default: dev and prod)")
    options = parser.parse_args()
    report = Report()

    hint = KUBECTL_HINT.format(min=".".join(map(str, MIN_KUBECTL)))
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        report.check(False, "kubectl", f"not on PATH; it renders the manifests offline: {hint}")
        return report.summary()
    version, number, kustomize = kubectl_version(kubectl)
    ok = number is None or number >= MIN_KUBECTL  # an unknown version gets its chance to render
    if not report.check(ok, "kubectl",
                        f"{kubectl} is {version} with kustomize {kustomize}" if ok
                        else f"{kubectl} is {version}, too old to render these kustomizations: {hint}"):
        return report.summary()

    check_image(report, 65532)

    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug"
    binaries, helps = {}, {}
    for name in SERVICES:
        binary = target / name
        if not binary.is_file():
            report.check(False, name, f"{binary} is missing; run `cargo build --workspace --bins` first")
            continue
        try:
            helps[name] = binary_help(binary)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as error:
            report.check(False, name, str(error))
            continue
        binaries[name] = binary
        report.check(True, name, f"`{name} --help` lists {len(helps[name])} variables, "
                                 f"GRPC_ADDR default {helps[name]['GRPC_ADDR']}")
    if len(binaries) != len(SERVICES):
        return report.summary()

    pinned = pinned_nats_version()
    schema_versions = pinned_schema_versions()
    k8s_dir = Path(options.dir).resolve()
    for overlay in options.overlay or ["dev", "prod"]:
        check_overlay(report, k8s_dir / "overlays" / overlay, kubectl, binaries, helps, pinned,
                      schema_versions)
    return report.summary()


if __name__ == "__main__":
    sys.exit(main())
