"""dotsocr compose with the gateway stack: the gateway, Prometheus and Grafana beside vLLM.

The Compose file is checked by Docker Compose itself where it is installed; the wiring
(names, ports, mounts) against the files under deploy/; and every metric the dashboard
queries against what the gateway exports (a real gateway's /metrics) and what vLLM
exports (tests/data/vllm_metrics, captured from vLLM 0.32.0).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from compose_support import validate_compose
from gateway_support import running_gateway

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "dotsocr.json"
VLLM_METRICS = ROOT / "tests" / "data" / "vllm_metrics" / "vllm-0.32.0.txt"
DOTSOCR = [sys.executable, "-m", "dotsocr"]
CARD = ("--gpu-memory", "80GiB", "--compute-capability", "9.0")
REPLICAS = ("--gpu-memory", "24GiB", "--compute-capability", "8.9", "--gpus", "2",
            "--multi-gpu", "replicas", "--api-key", "k")  # fmt: skip
# A metric name in PromQL: ours and vLLM's share these prefixes, nothing else does.
METRIC = re.compile(r"\b(?:dotsocr_[a-z0-9_]+|vllm:[a-z0-9_:]+)")


def _compose(tmp_path: Path, *args: str, code: int = 0) -> tuple[dict, str]:
    """Run ``dotsocr compose`` from the source tree; the document and what it said on stderr."""
    out = tmp_path / "docker-compose.yml"
    result = subprocess.run(
        [*DOTSOCR, "compose", "-o", str(out), *args], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == code, result.stderr
    if code:
        return {}, result.stderr
    validate_compose(out)
    return yaml.safe_load(out.read_text()), result.stderr


def _mounts(service: dict, base: Path) -> dict[str, Path]:
    """A service's bind mounts as {path inside: path on the host}."""
    out = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = (base / source).resolve()
    return out


def test_written_in_the_source_tree_the_mounts_are_paths_not_volume_names(tmp_path):
    tree = tmp_path / "dotsocr"
    shutil.copytree(ROOT / "deploy", tree / "deploy")
    shutil.copy(ROOT / "Dockerfile", tree / "Dockerfile")
    out = tree / "docker-compose.yml"
    result = subprocess.run(
        [*DOTSOCR, "compose", "-o", str(out), *CARD], capture_output=True, text=True, cwd=tree
    )
    assert result.returncode == 0, result.stderr
    validate_compose(out)
    services = yaml.safe_load(out.read_text())["services"]
    for name in ("prometheus", "grafana"):
        mounts = [v.split(":")[0] for v in services[name]["volumes"] if "/" in v.split(":")[0]]
        assert mounts and all(m.startswith("./deploy/") for m in mounts), mounts
    assert services["gateway"]["build"]["context"] == "."


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("compose")
    document, _ = _compose(folder, *CARD)
    return document, folder


def test_the_gateway_stack_is_wired_to_vllm(stack):
    document, folder = stack
    services = document["services"]
    assert list(services) == ["vllm", "gateway", "prometheus", "grafana"]
    gateway = services["gateway"]
    assert (folder / gateway["build"]["context"]).resolve() == ROOT
    assert (ROOT / gateway["build"]["dockerfile"]).is_file()
    env = gateway["environment"]
    assert env["DOTSOCR_SERVER_URL"] == "http://vllm:8000"
    assert env["DOTSOCR_ENGINE"] == "server"
    assert env["DOTSOCR_MAX_PIXELS"] > 0  # the plan's pixel cap, so pages fit the server
    assert "DOTSOCR_API_KEYS" not in env  # no key planned: an open stack, as vLLM is
    assert gateway["ports"] == ["8080:8080"]
    assert gateway["depends_on"] == {"vllm": {"condition": "service_healthy"}}
    assert "/ready" in gateway["healthcheck"]["test"][1]
    assert "dotsocr-data:/data" in gateway["volumes"] and env["DOTSOCR_DATA_DIR"] == "/data"
    assert set(document["volumes"]) == {"dotsocr-data", "prometheus-data", "grafana-data"}

    prometheus = services["prometheus"]
    assert _mounts(prometheus, folder) == {
        "/etc/prometheus/prometheus.yml": DEPLOY / "prometheus.yml"
    }
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    grafana = services["grafana"]
    mounts = _mounts(grafana, folder)
    assert mounts["/etc/grafana/provisioning"] == DEPLOY / "grafana" / "provisioning"
    dashboards = mounts["/etc/dotsocr/dashboards"]
    assert dashboards == DASHBOARD.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"/etc/dotsocr/dashboards/{DASHBOARD.name}"
    assert all(path.exists() for path in mounts.values())


def test_the_key_stays_out_of_the_file_and_guards_both_ends(tmp_path):
    document, _ = _compose(tmp_path, *CARD, "--api-key", "sekrit")
    assert "sekrit" not in (tmp_path / "docker-compose.yml").read_text()
    env = document["services"]["gateway"]["environment"]
    assert env["DOTSOCR_SERVER_API_KEY"].startswith("${DOTSOCR_API_KEY:?")
    assert env["DOTSOCR_API_KEYS"] == env["DOTSOCR_SERVER_API_KEY"]
    assert document["services"]["vllm"]["environment"]["VLLM_API_KEY"].startswith(
        "${DOTSOCR_API_KEY"
    )


def test_no_gateway_writes_vllm_alone(tmp_path):
    document, _ = _compose(tmp_path, *CARD, "--no-gateway")
    assert list(document["services"]) == ["vllm"]
    assert "volumes" not in document


def test_one_server_per_gpu_gets_vllm_router_in_front(tmp_path):
    """Replicas: vllm-router spreads requests over them (least loaded of two, health
    checks), and the gateway talks to it; the file passes docker-compose's own check."""
    document, _ = _compose(tmp_path, *REPLICAS)
    services = document["services"]
    assert {"vllm-0", "vllm-1", "router", "gateway"} <= set(services)
    router = services["router"]
    command = router["command"]
    workers = command[command.index("--worker-urls") + 1 : command.index("--health-check-endpoint")]
    assert workers == ["http://vllm-0:8000", "http://vllm-1:8000"]
    assert command[command.index("--policy") + 1] == "power_of_two"
    assert router["build"]["context"].endswith("deploy/router")
    assert set(router["depends_on"]) == {"vllm-0", "vllm-1"}
    assert "environment" not in router  # it passes the gateway's key header on
    gateway = services["gateway"]
    assert gateway["environment"]["DOTSOCR_SERVER_URL"] == "http://router:8000"
    assert gateway["depends_on"] == {"router": {"condition": "service_healthy"}}
    assert (ROOT / "deploy" / "router" / "Dockerfile").read_text().count("vllm-router==") == 1


def _plan_in_flight(*args: str) -> int:
    """What the servers of the plan batch together: --max-num-seqs per data-parallel rank,
    over every server."""
    result = subprocess.run(
        [*DOTSOCR, "plan", *args, "--json"], capture_output=True, text=True, check=True
    )
    plan = json.loads(result.stdout)
    flags = {c["flag"]: c["value"] for c in plan["choices"]}
    ranks = int(flags.get("--data-parallel-size") or 1)
    return int(flags["--max-num-seqs"]) * ranks * len(plan["servers"])


@pytest.fixture(scope="module", params=[CARD, REPLICAS], ids=["one-gpu", "replicas"])
def worker_stack(request, tmp_path_factory) -> tuple[dict, tuple[str, ...]]:
    folder = tmp_path_factory.mktemp("compose-workers")
    document, _ = _compose(folder, *request.param, "--workers", "3")
    return document, request.param


def test_workers_read_the_pages_of_jobs_shared_through_postgres(worker_stack):
    """--workers: a PostgreSQL service holds the jobs, the gateway only takes and serves
    them, and N `dotsocr worker` replicas of the gateway's image read the pages through
    the same server the gateway would use; the file passes docker-compose's own check."""
    document, args = worker_stack
    services = document["services"]
    gateway, worker, postgres = services["gateway"], services["worker"], services["postgres"]
    server = "router" if "router" in services else "vllm"
    assert server == ("router" if "replicas" in args else "vllm")

    assert worker["command"] == ["dotsocr", "worker"]
    assert worker["deploy"]["replicas"] == 3
    assert worker["image"] == gateway["image"] and worker["build"] == gateway["build"]
    assert "ports" not in worker  # replicas cannot share a host port

    env, gateway_env = worker["environment"], gateway["environment"]
    url = urlsplit(env["DOTSOCR_DATABASE_URL"])
    assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
    assert url.path == "/dotsocr" and url.username == "dotsocr"
    assert url.password == "${POSTGRES_PASSWORD:-dotsocr}"  # Compose fills it in
    assert gateway_env["DOTSOCR_DATABASE_URL"] == env["DOTSOCR_DATABASE_URL"]
    assert postgres["environment"]["POSTGRES_PASSWORD"] == url.password
    assert postgres["environment"]["POSTGRES_USER"] == url.username
    assert postgres["environment"]["POSTGRES_DB"] == url.path[1:]
    assert postgres["image"].startswith("postgres:")
    assert "ports" not in postgres  # the Compose network only

    # The server the gateway would read with, by service name and container port.
    assert env["DOTSOCR_SERVER_URL"] == gateway_env["DOTSOCR_SERVER_URL"]
    assert env["DOTSOCR_SERVER_URL"] == f"http://{server}:8000"
    if server == "router":
        command = services["router"]["command"]
        assert command[command.index("--port") + 1] == "8000"
        assert env["DOTSOCR_SERVER_API_KEY"] == gateway_env["DOTSOCR_SERVER_API_KEY"]
        assert "DOTSOCR_API_KEYS" not in env  # clients talk to the gateway only
    else:
        assert services["vllm"]["ports"][0].endswith(":8000")
    for key in ("DOTSOCR_ENGINE", "DOTSOCR_MODEL", "DOTSOCR_MAX_PIXELS"):
        assert env[key] == gateway_env[key], key
    assert env["DOTSOCR_HOST"] == "0.0.0.0"  # the metrics port, reachable by Prometheus
    assert gateway_env["DOTSOCR_READ_PAGES"] == "false"
    assert "DOTSOCR_READ_PAGES" not in env

    # Three workers together keep every server's batch full, and not much more.
    total = _plan_in_flight(*[a for a in args if a not in ("--api-key", "k")])
    in_flight = env["DOTSOCR_MAX_IN_FLIGHT"]
    assert in_flight == math.ceil(total / 3)
    assert 3 * in_flight >= total > 3 * (in_flight - 1)

    # The inputs and results: one named volume, at the same path, in both.
    named = {v.split(":")[0]: v.split(":")[1] for v in gateway["volumes"]}
    assert {v.split(":")[0]: v.split(":")[1] for v in worker["volumes"]} == named
    assert named == {"dotsocr-data": "/data"} and "dotsocr-data" in document["volumes"]
    assert env["DOTSOCR_DATA_DIR"] == gateway_env["DOTSOCR_DATA_DIR"] == "/data"
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert "postgres-data" in document["volumes"]

    # Started in order: PostgreSQL and the server healthy first.
    assert "pg_isready" in postgres["healthcheck"]["test"][1]
    healthy = {"condition": "service_healthy"}
    assert worker["depends_on"] == {server: healthy, "postgres": healthy}
    assert gateway["depends_on"] == {server: healthy, "postgres": healthy}
    assert worker["restart"] == postgres["restart"] == "unless-stopped"
    # Longer than the worker's own --grace (30 s), so it finishes its pages before a SIGKILL.
    assert int(worker["stop_grace_period"].removesuffix("s")) > 30


def test_without_workers_the_gateway_keeps_its_own_jobs(stack):
    document, _ = stack
    services = document["services"]
    assert "postgres" not in services and "worker" not in services
    env = services["gateway"]["environment"]
    assert "DOTSOCR_DATABASE_URL" not in env and "DOTSOCR_READ_PAGES" not in env
    assert "postgres-data" not in document["volumes"]


def test_workers_without_the_gateway_is_a_usage_error(tmp_path):
    _, stderr = _compose(tmp_path, *CARD, "--workers", "2", "--no-gateway", code=2)
    assert stderr.startswith("error: --workers") and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "docker-compose.yml").exists()


def test_the_dockerfile_installs_the_package_and_serves_the_gateway():
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    # The package with the PostgreSQL driver: the same image runs `dotsocr worker`.
    install = next(line for line in lines if line.startswith("RUN pip install "))
    assert install.split()[3].strip("\"'") == ".[cluster]"
    cmd = next(line for line in lines if line.startswith("CMD "))
    assert json.loads(cmd[4:]) == ["dotsocr", "gateway", "--host", "0.0.0.0"]
    assert "EXPOSE 8080" in lines
    # What the wheel build reads must be copied in: the sources, the readme, the shim.
    copied = {source for line in lines if line.startswith("COPY ") for source in line.split()[1:-1]}
    assert all((ROOT / source).exists() for source in copied)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    hatch = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {project["project"]["readme"], *hatch["force-include"], "src", "pyproject.toml"}
    assert needed <= copied
    cluster = project["project"]["optional-dependencies"]["cluster"]
    assert any(requirement.startswith("psycopg[") for requirement in cluster)


def test_prometheus_scrapes_the_gateway_and_vllm_by_service_name(stack):
    document, _ = stack
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for group in job["static_configs"] for t in group["targets"]]
        for job in config["scrape_configs"]
        if "static_configs" in job
    }
    assert targets == {"dotsocr-gateway": ["gateway:8080"], "vllm": ["vllm:8000"]}
    assert all(
        job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"]
    )
    # The targets are the services' ports inside the Compose network.
    for target in ("gateway:8080", "vllm:8000"):
        name, port = target.split(":")
        assert any(p.endswith(f":{port}") for p in document["services"][name]["ports"])


def test_prometheus_finds_every_worker_replica_by_dns():
    """One scrape job over all the ``worker`` replicas: Compose's DNS answers the service
    name with each replica's address; without workers the name resolves to nothing."""
    from dotsocr.config import GatewaySettings

    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert list(jobs) == ["dotsocr-gateway", "vllm", "dotsocr-worker"]
    worker = jobs["dotsocr-worker"]
    assert "static_configs" not in worker
    (sd,) = worker["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert sd["port"] == GatewaySettings().metrics_port == 9090  # the worker's default
    assert worker.get("metrics_path", "/metrics") == "/metrics"


def test_grafana_reads_prometheus_and_the_dashboard_from_its_mounts(stack):
    document, _ = stack
    provisioning = DEPLOY / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert document["services"]["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]  # local only
    assert document["services"]["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    providers = yaml.safe_load((provisioning / "dashboards" / "dotsocr.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["options"]["path"] == "/etc/dotsocr/dashboards"
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    assert panels
    assert {p["datasource"]["uid"] for p in panels} == {source["uid"]}


def _exported(text: str) -> set[str]:
    """The series names a /metrics page has, or would have once its labelled series appear."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    return names


@pytest.fixture(scope="module")
def gateway_metrics(tmp_path_factory) -> str:
    """/metrics of a real gateway (CPU engine, empty data folder)."""
    folder = tmp_path_factory.mktemp("gateway-metrics") / "data"
    with running_gateway(folder, "--engine", "cpu") as gateway:
        return httpx.get(f"{gateway.url}/metrics", timeout=10).text


def test_every_dashboard_query_uses_exported_metrics(gateway_metrics):
    gateway = _exported(gateway_metrics)
    vllm = _exported(VLLM_METRICS.read_text())
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            names = set(METRIC.findall(expr))
            assert names, f"{panel['title']}: no metric in {expr}"
            assert names <= gateway | vllm, f"{panel['title']}: {names - gateway - vllm}"
            for open_, close in ("()", "[]", "{}"):
                assert expr.count(open_) == expr.count(close), expr
            used |= names
    # Every metric family the gateway has shows on a panel (``_created``: the client's
    # timestamps of counters and histograms, not metrics of their own).
    families = {
        family.name
        for family in text_string_to_metric_families(gateway_metrics)
        if not family.name.endswith("_created")
    }
    assert len(families) == 9
    shown = {name for family in families for name in used if name.startswith(family)}
    assert {name for name in families if not any(n.startswith(name) for n in shown)} == set()
