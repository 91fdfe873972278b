"""The plan as a ``docker run`` of the official vLLM image, or as a Compose service."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

from dotsocr.serve.plan import LaunchPlan

# The release whose argument parser the tests check the plan against (dots.ocr is built in
# since v0.11.0); --image picks another.
IMAGE = "vllm/vllm-openai:v0.32.0"
CONTAINER_PORT = 8000
CONTAINER_HF_HOME = "/root/.cache/huggingface"
CONTAINER_MODELS = PurePosixPath("/models")
# The image has Python but not necessarily curl.
HEALTH_COMMAND = (
    "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')\""
)
START_PERIOD = "600s"  # download, load, profile and compile can take minutes


def hf_home() -> Path:
    """The host's Hugging Face folder, mounted so weights are downloaded once."""
    configured = os.environ.get("HF_HOME")
    return Path(configured) if configured else Path.home() / ".cache" / "huggingface"


def _container_args(plan: LaunchPlan) -> tuple[list[str], list[str]]:
    """The model argument and flags inside the container, and the extra volume it needs.

    Inside, vLLM listens on 8000 on all interfaces; the host port is a port mapping.
    A local model folder is mounted read-only under /models.
    """
    volumes: list[str] = []
    model = plan.model
    local = Path(model).expanduser()
    if local.is_dir():
        inside = CONTAINER_MODELS / local.name
        volumes.append(f"{local.resolve()}:{inside}:ro")
        model = str(inside)
    args: list[str] = []
    skip = {"--host", "--port"}
    for choice in plan.choices:
        if choice.flag in skip:
            continue
        args.append(choice.flag)
        if choice.value is not None:
            args.append(choice.value)
    return [model, *args, "--host", "0.0.0.0", "--port", str(CONTAINER_PORT)], volumes


def docker_run_argv(
    plan: LaunchPlan, *, image: str = IMAGE, name: str = "dotsocr-vllm", offline: bool = False
) -> list[str]:
    """``docker run`` with the GPUs, the HF cache, shared memory, a restart policy and a
    health check; detached, so Docker restarts it after a crash."""
    model_args, volumes = _container_args(plan)
    port = plan.servers[0].port
    devices = plan.card.devices
    # The inner quotes are Docker's syntax for a list: --gpus '"device=2,3"'.
    gpus = "all" if devices is None else f'"device={",".join(devices)}"'
    argv = [
        "docker", "run", "--detach", "--name", name,
        "--gpus", gpus, "--ipc=host",
        "--restart", "unless-stopped",
        "-p", f"{port}:{CONTAINER_PORT}",
        "-v", f"{hf_home()}:{CONTAINER_HF_HOME}",
        "--health-cmd", HEALTH_COMMAND,
        "--health-interval", "30s", "--health-timeout", "10s", "--health-retries", "3",
        "--health-start-period", START_PERIOD,
    ]  # fmt: skip
    for volume in volumes:
        argv += ["-v", volume]
    env = dict(plan.env)
    if offline:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    for key in sorted(env):
        argv += ["-e", key]  # the value comes from our environment, not the process list
    return [*argv, image, *model_args]


def compose(plan: LaunchPlan, *, image: str = IMAGE, offline: bool = False) -> dict[str, Any]:
    """A docker-compose document with the vLLM service; later services join ``services``."""
    model_args, volumes = _container_args(plan)
    environment: dict[str, str] = {}
    if "VLLM_API_KEY" in plan.env:  # the key itself stays out of the file
        environment["VLLM_API_KEY"] = "${DOTSOCR_API_KEY:?set DOTSOCR_API_KEY}"
    if offline:
        environment.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    services: dict[str, Any] = {}
    for server in plan.servers:
        device: dict[str, Any] = {"driver": "nvidia", "capabilities": ["gpu"]}
        if server.devices is not None:  # one server per GPU
            device["device_ids"] = [server.devices]
        elif plan.card.devices is not None:
            device["device_ids"] = list(plan.card.devices)
        else:
            device["count"] = max(1, plan.card.count)
        service: dict[str, Any] = {
            "image": image,
            "command": model_args,
            "ipc": "host",
            "ports": [f"{server.port}:{CONTAINER_PORT}"],
            "volumes": [f"${{HF_HOME:-~/.cache/huggingface}}:{CONTAINER_HF_HOME}", *volumes],
            "restart": "unless-stopped",
            "healthcheck": {
                "test": ["CMD-SHELL", HEALTH_COMMAND],
                "interval": "30s",
                "timeout": "10s",
                "retries": 3,
                "start_period": START_PERIOD,
            },
            "deploy": {"resources": {"reservations": {"devices": [device]}}},
        }
        if environment:
            service["environment"] = environment
        name = "vllm" if len(plan.servers) == 1 else f"vllm-{server.devices}"
        services[name] = service
    return {"services": services}


# The gateway stack: the REST gateway in front of vLLM, Prometheus scraping both, and
# Grafana showing them. The images are pinned, as vLLM's is.
GATEWAY_PORT = 8080
PROMETHEUS_IMAGE = "prom/prometheus:v3.5.0"
GRAFANA_IMAGE = "grafana/grafana:11.6.0"
GATEWAY_HEALTH = (
    "python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ready')\""
)


ROUTER_POLICY = "power_of_two"  # the less loaded of two servers picked at random
ROUTER_HEALTH = (  # /readiness: 503 until a server behind it is healthy (/health is always 200)
    "python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readiness')\""
)


def _router(workers: list[str], deploy: str) -> dict[str, Any]:
    """vllm-router in front of the per-GPU servers: least-loaded routing, retries, health
    checks (a server that fails them gets no requests until it passes again). It passes the
    client's Authorization header on, so the servers' key needs no setting of its own."""
    command = [
        "--host", "0.0.0.0", "--port", str(CONTAINER_PORT), "--policy", ROUTER_POLICY,
        "--worker-urls", *(f"http://{name}:{CONTAINER_PORT}" for name in workers),
        "--health-check-endpoint", "/health", "--worker-startup-timeout-secs", "1800",
    ]  # fmt: skip
    service: dict[str, Any] = {
        "build": {"context": f"{deploy}/router"},
        "image": "dotsocr-router",
        "command": command,
        "depends_on": {name: {"condition": "service_healthy"} for name in workers},
        "restart": "unless-stopped",
        "healthcheck": {
            "test": ["CMD-SHELL", ROUTER_HEALTH],
            "interval": "15s",
            "timeout": "5s",
            "retries": 3,
        },
    }
    return service


# Shared jobs (--workers): PostgreSQL holds the queue, the named volume dotsocr-data at /data
# in the gateway and every worker holds the inputs and results (DOTSOCR_STORAGE_URL defaults
# to the data folder, so one volume is the shared folder).
POSTGRES_IMAGE = "postgres:16"
POSTGRES_PASSWORD = "${POSTGRES_PASSWORD:-dotsocr}"  # Compose fills it in; URL-safe characters
DATABASE_URL = f"postgresql://dotsocr:{POSTGRES_PASSWORD}@postgres:5432/dotsocr"
# Over TCP: the image's first-start initdb runs a server on the Unix socket only, which a
# socket pg_isready would call ready before the real server listens.
POSTGRES_HEALTH = "pg_isready -h 127.0.0.1 -U dotsocr -d dotsocr"
WORKER_GRACE = "45s"  # past `dotsocr worker`'s own --grace (30 s) to finish its pages


def _postgres() -> dict[str, Any]:
    """The job store the gateway and the workers share; not published on the host."""
    return {
        "image": POSTGRES_IMAGE,
        "environment": {
            "POSTGRES_USER": "dotsocr",
            "POSTGRES_DB": "dotsocr",
            "POSTGRES_PASSWORD": POSTGRES_PASSWORD,
        },
        "volumes": ["postgres-data:/var/lib/postgresql/data"],
        "restart": "unless-stopped",
        "healthcheck": {
            "test": ["CMD-SHELL", POSTGRES_HEALTH],
            "interval": "5s",
            "timeout": "5s",
            "retries": 10,
            "start_period": "30s",
        },
    }


def _in_flight(plan: LaunchPlan, workers: int) -> int | None:
    """Pages each worker keeps in flight so that the workers together fill every server's
    batch: the servers' --max-num-seqs (per data-parallel rank) over the workers, rounded up.
    None when the plan sets no --max-num-seqs."""
    seqs = plan.value("--max-num-seqs")
    if seqs is None:
        return None
    ranks = int(plan.value("--data-parallel-size") or 1)  # each rank batches on its own
    total = int(seqs) * ranks * len(plan.servers)
    return max(1, math.ceil(total / workers))


def add_gateway(
    document: dict[str, Any],
    plan: LaunchPlan,
    *,
    source: str = ".",
    port: int = GATEWAY_PORT,
    workers: int = 0,
) -> dict[str, Any]:
    """Add the gateway, Prometheus and Grafana to a ``compose()`` document, in place.

    Args:
        document: what ``compose()`` returned, with its one vLLM service.
        plan: the same plan; the gateway learns the server's pixel cap and key from it.
        source: the dotsocr source tree, relative to the compose file: it holds the
            Dockerfile the gateway is built from and ``deploy/`` (Prometheus and Grafana).
        port: the gateway's port on the host.
        workers: how many ``dotsocr worker`` replicas read the pages; from 1 the jobs move
            to a ``postgres`` service, and the gateway only takes and serves them, so that
            page reading scales apart from the API (``docker compose up --scale worker=N``).

    Returns:
        ``document``, with services ``gateway``, ``prometheus`` and ``grafana`` (and
        ``postgres`` and ``worker`` with workers) and their named volumes.

    With one server per GPU, a ``router`` service (vllm-router, built from
    deploy/router) spreads requests over them and the gateway talks to it.
    """
    # Compose reads a bind-mount source as a path only when it starts with . or /; a bare
    # deploy/... would be taken for a named volume.
    root = str(PurePosixPath(source))
    deploy = f"{root if root.startswith(('/', '.')) else './' + root}/deploy"
    services = document["services"]
    backends = [name for name in services if name.startswith("vllm")]
    server = "vllm"
    if backends != ["vllm"]:
        services["router"] = _router(backends, deploy)
        server = "router"
    environment: dict[str, Any] = {
        "DOTSOCR_ENGINE": "server",
        "DOTSOCR_SERVER_URL": f"http://{server}:{CONTAINER_PORT}",
        "DOTSOCR_MODEL": plan.model,  # the profile the gateway reads pages with
        "DOTSOCR_DATA_DIR": "/data",
    }
    if plan.max_pixels:
        environment["DOTSOCR_MAX_PIXELS"] = plan.max_pixels
    # What reading pages needs; the workers get it too (they take no client keys).
    reading = dict(environment)
    if "VLLM_API_KEY" in plan.env:
        # One key for the stack, from the environment: the gateway sends it to vLLM and
        # asks it of its own clients.
        key = "${DOTSOCR_API_KEY:?set DOTSOCR_API_KEY}"
        environment.update(DOTSOCR_SERVER_API_KEY=key, DOTSOCR_API_KEYS=key)
        reading["DOTSOCR_SERVER_API_KEY"] = key
    depends_on: dict[str, Any] = {server: {"condition": "service_healthy"}}
    if workers:
        services["postgres"] = _postgres()
        depends_on["postgres"] = {"condition": "service_healthy"}
        # The gateway takes jobs and serves results; the workers read the pages.
        environment.update(DOTSOCR_DATABASE_URL=DATABASE_URL, DOTSOCR_READ_PAGES="false")
    build = {"context": source, "dockerfile": "Dockerfile"}
    services["gateway"] = {
        "build": build,
        "image": "dotsocr-gateway",
        "environment": environment,
        "ports": [f"{port}:{GATEWAY_PORT}"],
        "volumes": ["dotsocr-data:/data"],
        "depends_on": depends_on,
        "restart": "unless-stopped",
        "healthcheck": {
            "test": ["CMD-SHELL", GATEWAY_HEALTH],
            "interval": "15s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "30s",
        },
    }
    if workers:
        reading.update(DOTSOCR_DATABASE_URL=DATABASE_URL, DOTSOCR_HOST="0.0.0.0")
        in_flight = _in_flight(plan, workers)
        if in_flight is not None:  # else the default, as the gateway's (16)
            reading["DOTSOCR_MAX_IN_FLIGHT"] = in_flight
        # Copies, not the gateway's objects: YAML would write shared ones as &anchors.
        services["worker"] = {
            "build": dict(build),
            "image": "dotsocr-gateway",  # the gateway's image has `dotsocr worker` too
            "command": ["dotsocr", "worker"],  # metrics on 9090: deploy/prometheus.yml
            "environment": reading,
            "volumes": ["dotsocr-data:/data"],  # the gateway's: the shared inputs and results
            "depends_on": copy.deepcopy(depends_on),
            "deploy": {"replicas": workers},
            "restart": "unless-stopped",
            "stop_grace_period": WORKER_GRACE,
        }
    services["prometheus"] = {
        "image": PROMETHEUS_IMAGE,
        "command": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--storage.tsdb.retention.time=15d",
        ],
        "ports": ["127.0.0.1:9090:9090"],  # dashboards: this machine only
        "volumes": [
            f"{deploy}/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
            "prometheus-data:/prometheus",
        ],
        "depends_on": ["gateway"],
        "restart": "unless-stopped",
    }
    services["grafana"] = {
        "image": GRAFANA_IMAGE,
        "environment": {
            "GF_SECURITY_ADMIN_PASSWORD": "${GRAFANA_ADMIN_PASSWORD:-admin}",
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": "/etc/dotsocr/dashboards/dotsocr.json",
        },
        "ports": ["127.0.0.1:3000:3000"],
        "volumes": [
            f"{deploy}/grafana/provisioning:/etc/grafana/provisioning:ro",
            f"{deploy}/grafana/dashboards:/etc/dotsocr/dashboards:ro",
            "grafana-data:/var/lib/grafana",
        ],
        "depends_on": ["prometheus"],
        "restart": "unless-stopped",
    }
    volumes = {"dotsocr-data": {}, "prometheus-data": {}, "grafana-data": {}}
    if workers:
        volumes["postgres-data"] = {}
    document.setdefault("volumes", {}).update(volumes)
    return document
