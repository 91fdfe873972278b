"""The Kubernetes manifests in deploy/k8s: vLLM (a StatefulSet, one GPU a pod), vllm-router
in front of it, workers reading the queued pages through the router, gateways taking the
jobs (both stateless, sharing PostgreSQL and a bucket), autoscalers, and an optional
single PostgreSQL (the kustomize Component in deploy/k8s/postgres).

Every manifest is checked against the Kubernetes schemas that kubernetes-validate bundles
(offline), and the wiring against the code and against each other: the vLLM flags are the
launch plan's and parse with vLLM's own parser, the router's with vllm-router's, the
gateways' and workers' variables are settings and point at the Services and Secret keys
that exist, the autoscalers' metric is one the gateway exports.
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
from urllib.parse import urlsplit

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
POSTGRES_DIR = K8S / "postgres"  # the optional Component: one PostgreSQL pod
NAMESPACE = "dotsocr"
# The plan the vLLM flags were written down from (the comment in vllm.yaml says so).
PLAN = ["plan", "--gpu-memory", "24GiB", "--compute-capability", "8.9", "--json"]
OLDEST_CHECKED = "1.30"  # and the newest that kubernetes-validate bundles
KEY = {"name": "dotsocr-api-key", "key": "api-key"}  # the Secret in secret.yaml
# The bucket's endpoint and credentials, as the AWS SDK reads them.
AWS_ENV = {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
# How the main kustomization lists the Component, commented out (the README says uncomment).
COMPONENTS_OFF = "# components:\n#   - postgres\n"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests(folder: Path) -> list[Path]:
    return sorted(path for path in folder.glob("*.yaml") if path.name != "kustomization.yaml")


MANIFESTS = _manifests(K8S)
RESOURCES = [(path.name, doc) for path in MANIFESTS for doc in _documents(path)]
# postgres.yaml, and secret.yaml: a patch, merged into the Secret of ../secret.yaml.
OPTIONAL = [(f"postgres/{p.name}", doc) for p in _manifests(POSTGRES_DIR) for doc in _documents(p)]
CLUSTER_WIDE = {"Namespace"}


def _find(kind: str, name: str, resources=RESOURCES) -> list[dict[str, Any]]:
    return [doc for _, doc in resources if doc["kind"] == kind and doc["metadata"]["name"] == name]


def _one(kind: str, name: str, resources=RESOURCES) -> dict[str, Any]:
    found = _find(kind, name, resources)
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


def _resolve(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, by name or number, as the container's port number."""
    if isinstance(port, int):
        assert port in [p["containerPort"] for p in container["ports"]]
        return port
    return _port(container, port)


def _command(container: dict[str, Any]) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def _service_of(workload: dict[str, Any], resources=RESOURCES) -> dict[str, Any]:
    """The one Service that selects the workload's pods, whatever it is called."""
    (service,) = [
        doc
        for _, doc in resources
        if doc["kind"] == "Service" and doc["spec"]["selector"].items() <= _labels(workload).items()
    ]
    return service


def _secret_data(name: str, with_postgres: bool = False) -> dict[str, str]:
    """A Secret's keys, with the Component's patch merged in as kustomize merges it."""
    data = dict(_one("Secret", name)["stringData"])
    if with_postgres:
        for patch in _find("Secret", name, OPTIONAL):
            data.update(patch["stringData"])
    return data


def _value(entry: dict[str, Any], with_postgres: bool = False) -> str | None:
    """What a variable holds in the pod: its value, or what its reference names here."""
    if "value" in entry:
        return entry["value"]
    source = entry["valueFrom"]
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        return _secret_data(ref["name"], with_postgres).get(ref["key"])
    if "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        return _one("ConfigMap", ref["name"])["data"].get(ref["key"])
    assert source["fieldRef"]["fieldPath"] == "metadata.name", entry
    return "worker-5d9c7b-x2x7q"  # a pod's name


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
GATEWAY = _one("Deployment", "gateway")
WORKER = _one("Deployment", "worker")
WORKLOADS = [VLLM, ROUTER, GATEWAY, WORKER]
POSTGRES = _one("StatefulSet", "postgres", OPTIONAL)
DATABASE = _env(_container(WORKER))["DOTSOCR_DATABASE_URL"]["valueFrom"]["secretKeyRef"]


def test_the_kustomization_lists_exactly_the_manifests_here():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == [path.name for path in MANIFESTS]
    assert "components" not in kustomization  # PostgreSQL in the cluster is optional, off
    assert COMPONENTS_OFF in (K8S / "kustomization.yaml").read_text()
    assert "kubectl apply -k deploy/k8s" in (K8S / "README.md").read_text()


def test_the_postgres_component_lists_exactly_its_files():
    component = yaml.safe_load((POSTGRES_DIR / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    patches = [patch["path"] for patch in component["patches"]]
    assert sorted(component["resources"] + patches) == [p.name for p in _manifests(POSTGRES_DIR)]
    for path in patches:  # patches of objects the base has, not new ones
        for doc in _documents(POSTGRES_DIR / path):
            assert _one(doc["kind"], doc["metadata"]["name"])


@pytest.mark.parametrize("version", [OLDEST_CHECKED, "newest"])
def test_every_manifest_validates_against_the_kubernetes_schema(version):
    """Strict: an unknown or misspelt field fails too, not only a wrong type. The optional
    PostgreSQL Component's files too."""
    validate = _dev_dependency("kubernetes_validate")
    if version == "newest":
        version = validate.utils.latest_version()
    failures = []
    for name, doc in RESOURCES + OPTIONAL:
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
    for name, doc in RESOURCES + OPTIONAL:
        if doc["kind"] not in CLUSTER_WIDE:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{name}: {doc['kind']}"


def _kustomize(folder: Path) -> list[dict[str, Any]]:
    built = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr[-2000:]
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def _kinds_and_names(docs) -> list[tuple[str, str]]:
    return sorted((doc["kind"], doc["metadata"]["name"]) for doc in docs)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_every_object():
    objects = _kustomize(K8S)
    assert _kinds_and_names(objects) == _kinds_and_names(doc for _, doc in RESOURCES)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_postgres_in_when_the_component_is_uncommented(tmp_path):
    """As the README says: uncomment `components` in kustomization.yaml."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    text = (copy / "kustomization.yaml").read_text()
    on = COMPONENTS_OFF.replace("# components:", "components:").replace("#   -", "  -")
    (copy / "kustomization.yaml").write_text(text.replace(COMPONENTS_OFF, on))
    objects = _kustomize(copy)
    postgres = [doc for _, doc in OPTIONAL if not _find(doc["kind"], doc["metadata"]["name"])]
    assert _kinds_and_names(objects) == _kinds_and_names(
        [*(doc for _, doc in RESOURCES), *postgres]
    )
    (secret,) = _find("Secret", DATABASE["name"], [("built", o) for o in objects])
    assert secret["stringData"] == _secret_data(DATABASE["name"], with_postgres=True)


def test_images_are_pinned():
    for workload in [*WORKLOADS, POSTGRES]:
        for container in workload["spec"]["template"]["spec"]["containers"]:
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag, f"{image}: no tag"
            assert tag != "latest", image
    assert _container(VLLM)["image"] == IMAGE  # the release the plan is tested against
    dockerfile = (ROOT / "deploy" / "router" / "Dockerfile").read_text()
    (pinned,) = re.findall(r"vllm-router==(\S+)", dockerfile)
    assert _container(ROUTER)["image"] == f"dotsocr-router:{pinned}"
    assert _container(WORKER)["image"] == _container(GATEWAY)["image"]  # one dotsocr image
    assert _container(POSTGRES)["image"] == "postgres:16"


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
    for workload in (GATEWAY, WORKER):
        env_vars = _env(_container(workload))
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
    for workload in (ROUTER, GATEWAY, WORKER, POSTGRES):
        for other in workload["spec"]["template"]["spec"]["containers"]:
            for section in ("requests", "limits"):
                resources = other.get("resources", {}).get(section, {})
                assert not any("gpu" in name for name in resources), workload["metadata"]["name"]


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
    workloads = [*WORKLOADS, POSTGRES]
    for name, doc in RESOURCES + OPTIONAL:
        if doc["kind"] != "Service":
            continue
        selector = doc["spec"]["selector"].items()
        chosen = [w for w in workloads if selector <= _labels(w).items()]
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
    others = (ROUTER, GATEWAY, WORKER, POSTGRES)
    assert not any(args.selector.items() <= _labels(w).items() for w in others)
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


def test_the_router_service_is_what_workers_and_gateways_call():
    """By the Service's name and port: renaming either breaks the wiring."""
    router = _service_of(ROUTER)
    (http,) = [p for p in router["spec"]["ports"] if p["name"] == "http"]
    assert _resolve(_container(ROUTER), http["targetPort"]) == _port(_container(ROUTER))
    url = f"http://{router['metadata']['name']}:{http['port']}"
    for workload in (WORKER, GATEWAY):
        env = _env(_container(workload))
        assert env["DOTSOCR_ENGINE"]["value"] == "server"
        assert env["DOTSOCR_SERVER_URL"]["value"] == url, workload["metadata"]["name"]
        assert env["DOTSOCR_SERVER_API_KEY"]["valueFrom"]["secretKeyRef"] == KEY


def test_the_worker_runs_dotsocr_worker_with_a_liveness_probe_on_its_metrics():
    container = _container(WORKER)
    command = _command(container)
    assert command[:2] == ["dotsocr", "worker"]
    port = int(command[command.index("--metrics-port") + 1])
    assert port == _port(container, "metrics")
    get = container["livenessProbe"]["httpGet"]
    assert get["path"] == "/metrics"
    assert _resolve(container, get["port"]) == port
    annotations = WORKER["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert WORKER["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
    assert WORKER["spec"]["replicas"] >= 2


def test_the_worker_command_takes_the_manifests_flags():
    """Its own parser reads the manifest's flags, and it stops within the pod's grace."""
    from typer.main import get_command

    from dotsocr.cli import app

    worker = get_command(app).commands["worker"]
    context = worker.make_context("worker", _command(_container(WORKER))[2:])
    assert context.params["metrics_port"] == _port(_container(WORKER), "metrics")
    grace = WORKER["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert context.params["grace"] < grace  # SIGKILL comes after the pod's grace


def test_the_worker_claims_pages_as_its_pod_and_needs_no_gpu():
    container = _container(WORKER)
    env = _env(container)
    assert env["DOTSOCR_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    requests = container["resources"]["requests"]
    assert set(requests) == {"cpu", "memory"}
    assert "gpu" not in json.dumps(container["resources"])
    assert "tolerations" not in WORKER["spec"]["template"]["spec"]  # no GPU node pool


def test_gateways_and_workers_share_one_database_and_one_bucket():
    worker, gateway = _env(_container(WORKER)), _env(_container(GATEWAY))
    assert DATABASE == {"name": "dotsocr-storage", "key": "database-url"}
    for env in (worker, gateway):
        assert env["DOTSOCR_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == DATABASE
        assert urlsplit(_value(env["DOTSOCR_DATABASE_URL"])).scheme == "postgresql"
        assert _value(env["DOTSOCR_STORAGE_URL"]).startswith("s3://")
    shared = {"DOTSOCR_DATABASE_URL", "DOTSOCR_STORAGE_URL", *AWS_ENV}
    assert {n: worker[n] for n in shared} == {n: gateway[n] for n in shared}
    # The credentials are optional: without them the SDK uses the pod's cloud identity.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert worker[name]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_the_gateways_are_several_read_no_pages_and_keep_no_volume():
    assert GATEWAY["spec"]["replicas"] >= 2
    assert GATEWAY["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert not _find("StatefulSet", "gateway")
    spec = GATEWAY["spec"]["template"]["spec"]
    assert all("persistentVolumeClaim" not in volume for volume in spec.get("volumes", []))
    assert not [doc for _, doc in RESOURCES if doc["kind"] == "PersistentVolumeClaim"]
    container = _container(GATEWAY)
    env = _env(container)
    assert env["DOTSOCR_READ_PAGES"]["value"] == "false"
    assert "DOTSOCR_READ_PAGES" not in _env(_container(WORKER))  # a worker always reads
    assert _port(container) == GATEWAY_PORT
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert _resolve(container, get["port"]) == GATEWAY_PORT
    service = _service_of(GATEWAY)
    (http,) = service["spec"]["ports"]
    assert _resolve(container, http["targetPort"]) == GATEWAY_PORT


@pytest.mark.parametrize("workload", [GATEWAY, WORKER], ids=["gateway", "worker"])
def test_the_variables_are_real_settings(workload, monkeypatch):
    """Every DOTSOCR_ variable is a setting, and with the values the Secrets and the
    ConfigMap give them they make valid settings."""
    fields = set(GatewaySettings.model_fields)
    for name in [n for n in os.environ if n.startswith("DOTSOCR_")]:
        monkeypatch.delenv(name)
    env = _env(_container(workload))
    for name, entry in env.items():
        if name in AWS_ENV:
            continue
        field = name.removeprefix("DOTSOCR_").lower()
        assert name.startswith("DOTSOCR_") and field in fields, name
        value = _value(entry)
        assert value is not None, name
        monkeypatch.setenv(name, value)
    settings = GatewaySettings()
    assert settings.engine == "server"
    assert settings.server_api_key == _secret_data(KEY["name"])[KEY["key"]]
    assert settings.read_pages is (workload is not GATEWAY)
    if workload is WORKER:  # its metrics answer the kubelet's probe and Prometheus
        assert settings.host == "0.0.0.0"
    assert settings.database_url and settings.storage_url


def test_secret_and_config_references_name_keys_that_exist():
    for name, doc in RESOURCES + OPTIONAL:
        if doc["kind"] not in ("StatefulSet", "Deployment"):
            continue
        with_postgres = doc is POSTGRES
        for entry in _container(doc).get("env", []):
            source = entry.get("valueFrom", {})
            if ref := source.get("secretKeyRef"):
                data = _secret_data(ref["name"], with_postgres)
            elif ref := source.get("configMapKeyRef"):
                data = _one("ConfigMap", ref["name"])["data"]
            else:
                continue
            assert ref["key"] in data or ref.get("optional"), f"{name}: {entry['name']}"
    for name, doc in RESOURCES + OPTIONAL:
        if doc["kind"] == "Secret":
            for key, value in doc["stringData"].items():
                assert "CHANGE-ME" in value, f"{name}: {key}"  # a placeholder, not a secret


def test_the_optional_postgres_is_what_the_database_url_names():
    assert POSTGRES["spec"]["replicas"] == 1
    container = _container(POSTGRES)
    env = {name: _value(entry, with_postgres=True) for name, entry in _env(container).items()}
    service = _service_of(POSTGRES, OPTIONAL)
    (port,) = service["spec"]["ports"]
    assert _resolve(container, port["targetPort"]) == 5432
    url = urlsplit(_secret_data(DATABASE["name"], with_postgres=True)[DATABASE["key"]])
    assert url.scheme == "postgresql"
    assert (url.hostname, url.port) == (service["metadata"]["name"], port["port"])
    assert (url.username, url.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert url.path == f"/{env['POSTGRES_DB']}"
    # Ready when it takes connections, for that user and database.
    command = container["readinessProbe"]["exec"]["command"]
    assert command[0] == "pg_isready"
    assert command[command.index("-U") + 1] == env["POSTGRES_USER"]
    assert command[command.index("-d") + 1] == env["POSTGRES_DB"]
    # Its data on the volume: PGDATA inside the claim's mount.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (claim,) = POSTGRES["spec"]["volumeClaimTemplates"]
    assert env["PGDATA"].startswith(mounts[claim["metadata"]["name"]] + "/")


def _seqs() -> int:
    args = _container(VLLM)["args"]
    return int(args[args.index("--max-num-seqs") + 1])


def _scales_on_the_gateways_queue(hpa: dict[str, Any]) -> None:
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Object"
    described = metric["object"]["describedObject"]
    assert _one(described["kind"], described["name"]) == _service_of(GATEWAY)
    exported = {
        sample.name for family in GatewayMetrics().registry.collect() for sample in family.samples
    }
    assert metric["object"]["metric"]["name"] == "dotsocr_queue_pages"
    assert metric["object"]["metric"]["name"] in exported


def _targets(hpa: dict[str, Any], workload: dict[str, Any]) -> None:
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": workload["apiVersion"],
        "kind": workload["kind"],
        "name": workload["metadata"]["name"],
    }
    assert spec["minReplicas"] == workload["spec"]["replicas"] < spec["maxReplicas"]


def test_the_autoscaler_scales_vllm_on_a_metric_the_gateway_exports():
    hpa = _one("HorizontalPodAutoscaler", "vllm")
    _targets(hpa, VLLM)
    _scales_on_the_gateways_queue(hpa)
    assert "prometheus-adapter" in (K8S / "vllm-hpa.yaml").read_text()


def test_the_autoscaler_scales_the_workers_on_the_queue_and_can_fill_the_servers(monkeypatch):
    hpa = _one("HorizontalPodAutoscaler", "worker")
    _targets(hpa, WORKER)
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] >= 8
    _scales_on_the_gateways_queue(hpa)
    assert "prometheus-adapter" in (K8S / "worker-hpa.yaml").read_text()
    readme = (K8S / "README.md").read_text()
    assert "prometheus-adapter" in readme and "dotsocr_queue_pages" in readme
    # Enough pages in flight, all workers together, to keep every server busy.
    in_flight = _env(_container(WORKER))["DOTSOCR_MAX_IN_FLIGHT"]["value"]
    monkeypatch.setenv("DOTSOCR_MAX_IN_FLIGHT", in_flight)
    per_worker = GatewaySettings().max_in_flight
    servers = _one("HorizontalPodAutoscaler", "vllm")["spec"]["maxReplicas"]
    assert per_worker * hpa["spec"]["maxReplicas"] >= _seqs() * servers
