"""The Kubernetes manifests in deploy/k8s: vLLM (a StatefulSet, one GPU a pod), vllm-router
in front of it, the gateway (one replica, its data on a volume) and an autoscaler.

Every manifest is checked against the Kubernetes schemas that kubernetes-validate bundles
(offline), and the wiring against the code: the vLLM flags are the launch plan's and parse
with vLLM's own parser, the router's with vllm-router's, the gateway's variables are its
settings, the autoscaler's metric is one the gateway exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dotsocr.config import GatewaySettings
from dotsocr.gateway.metrics import GatewayMetrics
from dotsocr.serve.docker import (
    CONTAINER_HF_HOME,
    CONTAINER_PORT,
    GATEWAY_PORT,
    IMAGE,
    ROUTER_POLICY,
    START_PERIOD,
)

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "dotsocr"
# The plan the vLLM flags were written down from (the comment in vllm.yaml says so).
PLAN = ["plan", "--gpu-memory", "24GiB", "--compute-capability", "8.9", "--json"]
OLDEST_CHECKED = "1.30"  # and the newest that kubernetes-validate bundles
KEY = {"name": "dotsocr-api-key", "key": "api-key"}  # the Secret in secret.yaml


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")
RESOURCES = [(path.name, doc) for path in MANIFESTS for doc in _documents(path)]
CLUSTER_WIDE = {"Namespace"}


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in RESOURCES if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _port(container: dict[str, Any], name: str = "http") -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return port


def _dev_dependency(module: str):
    """A dev dependency (scripts/setup installs it): skipped without it, failed in CI."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        message = f"{module} is not installed (a dev dependency): run scripts/setup"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


VLLM = _one("StatefulSet", "vllm")
ROUTER = _one("Deployment", "router")
GATEWAY = _one("StatefulSet", "gateway")
WORKLOADS = [VLLM, ROUTER, GATEWAY]


def test_the_kustomization_lists_exactly_the_manifests_here():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == [path.name for path in MANIFESTS]
    assert "kubectl apply -k deploy/k8s" in (K8S / "README.md").read_text()


@pytest.mark.parametrize("version", [OLDEST_CHECKED, "newest"])
def test_every_manifest_validates_against_the_kubernetes_schema(version):
    """Strict: an unknown or misspelt field fails too, not only a wrong type."""
    validate = _dev_dependency("kubernetes_validate")
    if version == "newest":
        version = validate.utils.latest_version()
    failures = []
    for name, doc in RESOURCES:
        try:
            checked = validate.validate(doc, version, strict=True)
        except validate.ValidationError as error:
            where = ".".join(str(part) for part in error.path)
            what = f"{doc['kind']}/{doc['metadata']['name']}"
            failures.append(f"{name}: {what}: {where}: {error.message}")
        except validate.SchemaNotFoundError as error:
            failures.append(f"{name}: {error.message}")
        else:
            assert checked == validate.utils.major_minor(version)
    assert not failures, "\n".join(failures)


def test_everything_is_in_the_dotsocr_namespace():
    assert _one("Namespace", NAMESPACE)
    for name, doc in RESOURCES:
        if doc["kind"] not in CLUSTER_WIDE:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: {doc['kind']}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_every_object():
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr[-2000:]
    objects = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == sorted(
        (doc["kind"], doc["metadata"]["name"]) for _, doc in RESOURCES
    )


def test_images_are_pinned():
    for workload in WORKLOADS:
        for container in workload["spec"]["template"]["spec"]["containers"]:
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag, f"{image}: no tag"
            assert tag != "latest", image
    assert _container(VLLM)["image"] == IMAGE  # the release the plan is tested against
    dockerfile = (ROOT / "deploy" / "router" / "Dockerfile").read_text()
    (pinned,) = re.findall(r"vllm-router==(\S+)", dockerfile)
    assert _container(ROUTER)["image"] == f"dotsocr-router:{pinned}"


def test_the_vllm_flags_are_the_launch_plan_for_a_24_gib_card():
    """Literally `dotsocr plan ... --json`; when the planner changes, regenerate them."""
    env = {k: v for k, v in os.environ.items() if k != "DOTSOCR_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "dotsocr", *PLAN], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    args = _container(VLLM)["args"]
    assert args == [plan["model"], *plan["args"]], (
        f"deploy/k8s/vllm.yaml is not the current plan: regenerate with dotsocr {' '.join(PLAN)}"
    )
    assert " ".join(PLAN) in (K8S / "vllm.yaml").read_text()  # the comment names the command
    env_vars = _env(_container(GATEWAY))
    assert env_vars["DOTSOCR_MODEL"]["value"] == plan["model"]
    assert env_vars["DOTSOCR_MAX_PIXELS"]["value"] == str(plan["max_pixels"])
    assert args[args.index("--port") + 1] == str(_port(_container(VLLM))) == str(CONTAINER_PORT)


@pytest.mark.vllm
def test_vllms_own_parser_accepts_the_flags():
    """The flags as the image's `vllm serve` reads them: the model first, positionally."""
    from vllm_support import server

    if not server.installed():
        pytest.skip("no vLLM install: run scripts/setup-vllm")
    args = _container(VLLM)["args"]
    script = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
ns = make_arg_parser(FlexibleArgumentParser()).parse_args(json.load(sys.stdin))
print(json.dumps([ns.model_tag, ns.max_model_len, ns.max_num_seqs, ns.mm_processor_kwargs,
                  ns.limit_mm_per_prompt, ns.enable_prefix_caching, ns.host, ns.port]))
"""
    result = subprocess.run(
        [server.python(), "-c", script], input=json.dumps(args), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    model, max_len, seqs, kwargs, limits, prefix, host, port = json.loads(result.stdout)
    assert model == args[0]
    assert max_len == int(args[args.index("--max-model-len") + 1])
    assert seqs == int(args[args.index("--max-num-seqs") + 1])
    assert kwargs == json.loads(args[args.index("--mm-processor-kwargs") + 1])
    assert limits == {"image": 1}
    assert prefix is False
    assert (host, port) == ("0.0.0.0", CONTAINER_PORT)


def test_each_vllm_pod_asks_for_one_gpu_and_nothing_else_does():
    container = _container(VLLM)
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    for workload in (ROUTER, GATEWAY):
        for other in workload["spec"]["template"]["spec"]["containers"]:
            for section in ("requests", "limits"):
                assert "nvidia.com/gpu" not in other.get("resources", {}).get(section, {})


def test_vllm_gets_shared_memory_a_model_cache_and_the_key():
    spec = VLLM["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in _container(VLLM)["volumeMounts"]}
    (shm,) = [v for v in spec["volumes"] if v["name"] == mounts["/dev/shm"]]
    assert shm["emptyDir"]["medium"] == "Memory"  # what --ipc=host gives under Docker
    claims = {t["metadata"]["name"] for t in VLLM["spec"]["volumeClaimTemplates"]}
    assert mounts[CONTAINER_HF_HOME] in claims  # weights survive a restart
    key = _env(_container(VLLM))["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key == KEY


def test_vllm_probes_use_health_and_allow_minutes_to_load():
    container = _container(VLLM)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health", probe
        assert get["port"] in ("http", CONTAINER_PORT), probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= int(START_PERIOD[:-1])


def test_the_headless_service_gives_each_vllm_pod_a_stable_name():
    service = _one("Service", VLLM["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= _labels(VLLM).items()
    # The static alternative in router.yaml names the pods through it.
    names = re.findall(r"http://(vllm-\d)\.(\S+?)\.(\w+)\.svc", (K8S / "router.yaml").read_text())
    assert names and all(
        (svc, ns) == (service["metadata"]["name"], NAMESPACE) for _, svc, ns in names
    )


def test_every_service_selects_one_workload_and_its_ports():
    for name, doc in RESOURCES:
        if doc["kind"] != "Service":
            continue
        selector = doc["spec"]["selector"].items()
        chosen = [w for w in WORKLOADS if selector <= _labels(w).items()]
        assert len(chosen) == 1, f"{name}: Service/{doc['metadata']['name']}"
        ports = {p["name"] for p in _container(chosen[0])["ports"]}
        for port in doc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{doc['metadata']['name']}: {port}"


def test_the_router_discovers_the_vllm_pods():
    """Its flags as vllm-router 0.1.17 parses them: the vLLM pods by label, in this
    namespace, on vLLM's port; probed on the endpoints that router serves."""
    launch = _dev_dependency("vllm_router.launch_router")
    container = _container(ROUTER)
    args = launch.parse_router_args(container["args"])
    assert args.service_discovery
    assert args.selector and args.selector.items() <= _labels(VLLM).items()
    assert not any(args.selector.items() <= _labels(w).items() for w in (ROUTER, GATEWAY))
    assert args.service_discovery_namespace == NAMESPACE
    assert args.service_discovery_port == _port(_container(VLLM))
    assert args.policy == ROUTER_POLICY
    assert args.health_check_endpoint == "/health"
    assert (args.host, args.port) == ("0.0.0.0", _port(container))
    assert args.prometheus_port == _port(container, "metrics")
    assert container["livenessProbe"]["httpGet"]["path"] == "/liveness"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readiness"


def test_the_router_may_list_and_watch_pods_and_nothing_more():
    account = ROUTER["spec"]["template"]["spec"]["serviceAccountName"]
    assert _one("ServiceAccount", account)
    bindings = [doc for _, doc in RESOURCES if doc["kind"] == "RoleBinding"]
    subject = {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    (binding,) = [b for b in bindings if subject in b["subjects"]]
    assert binding["roleRef"]["kind"] == "Role"  # this namespace only
    role = _one("Role", binding["roleRef"]["name"])
    (rule,) = role["rules"]
    assert rule["apiGroups"] == [""] and rule["resources"] == ["pods"]
    assert {"list", "watch"} <= set(rule["verbs"]) <= {"get", "list", "watch"}


def test_the_gateway_is_one_replica_with_its_data_on_a_volume():
    assert GATEWAY["spec"]["replicas"] == 1  # SQLite and a lock on the data folder
    container = _container(GATEWAY)
    env = _env(container)
    data = env["DOTSOCR_DATA_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {t["metadata"]["name"]: t for t in GATEWAY["spec"]["volumeClaimTemplates"]}
    assert mounts[data] in claims
    assert claims[mounts[data]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert GATEWAY["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 1000
    assert _port(container) == GATEWAY_PORT
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "PostgreSQL" in (K8S / "gateway.yaml").read_text()


def test_the_gateway_reads_through_the_router_with_real_settings(monkeypatch):
    container = _container(GATEWAY)
    env = _env(container)
    assert env["DOTSOCR_ENGINE"]["value"] == "server"
    router = _one("Service", "router")
    (http,) = [p for p in router["spec"]["ports"] if p["name"] == "http"]
    assert env["DOTSOCR_SERVER_URL"]["value"] == f"http://router:{http['port']}"
    for name in ("DOTSOCR_SERVER_API_KEY", "DOTSOCR_API_KEYS"):
        assert env[name]["valueFrom"]["secretKeyRef"] == KEY
    # Every variable is a setting, and together they make valid settings.
    fields = set(GatewaySettings.model_fields)
    for name, entry in env.items():
        assert name.startswith("DOTSOCR_") and name.removeprefix("DOTSOCR_").lower() in fields
        monkeypatch.setenv(name, entry.get("value", "a-key"))
    settings = GatewaySettings()
    assert settings.api_keys == ["a-key"] and settings.server_api_key == "a-key"
    # Enough pages in flight to keep every server the autoscaler may start busy.
    args = _container(VLLM)["args"]
    seqs = int(args[args.index("--max-num-seqs") + 1])
    hpa = _one("HorizontalPodAutoscaler", "vllm")
    assert settings.max_in_flight >= seqs * hpa["spec"]["maxReplicas"]


def test_secret_references_name_the_secret_template():
    for name, doc in RESOURCES:
        if doc["kind"] not in ("StatefulSet", "Deployment"):
            continue
        for entry in _container(doc).get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                secret = _one("Secret", ref["name"])
                assert ref["key"] in secret["stringData"], f"{name}: {entry['name']}"
    (value,) = _one("Secret", "dotsocr-api-key")["stringData"].values()
    assert "CHANGE-ME" in value  # a placeholder, not a key


def test_the_autoscaler_scales_vllm_on_a_metric_the_gateway_exports():
    hpa = _one("HorizontalPodAutoscaler", "vllm")
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": VLLM["apiVersion"],
        "kind": VLLM["kind"],
        "name": VLLM["metadata"]["name"],
    }
    assert spec["minReplicas"] == VLLM["spec"]["replicas"] < spec["maxReplicas"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Object"
    described = metric["object"]["describedObject"]
    gateway_service = _one(described["kind"], described["name"])
    assert gateway_service["spec"]["selector"].items() <= (_labels(GATEWAY).items())
    exported = {
        sample.name for family in GatewayMetrics().registry.collect() for sample in family.samples
    }
    assert metric["object"]["metric"]["name"] in exported
    assert "prometheus-adapter" in (K8S / "vllm-hpa.yaml").read_text()
