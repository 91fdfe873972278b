"""dotsocr compose with the gateway stack: the gateway, Prometheus and Grafana beside vLLM.

The Compose file is checked by Docker Compose itself where it is installed; the wiring
(names, ports, mounts) against the files under deploy/; and every metric the dashboard
queries against what the gateway exports (a real gateway's /metrics) and what vLLM
exports (tests/data/vllm_metrics, captured from vLLM 0.32.0).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

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
    replicas = ("--gpu-memory", "24GiB", "--compute-capability", "8.9", "--gpus", "2",
                "--multi-gpu", "replicas", "--api-key", "k")  # fmt: skip
    document, _ = _compose(tmp_path, *replicas)
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


def test_the_dockerfile_installs_the_package_and_serves_the_gateway():
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(line.startswith("RUN pip install .") for line in lines)
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


def test_prometheus_scrapes_the_gateway_and_vllm_by_service_name(stack):
    document, _ = stack
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for group in job["static_configs"] for t in group["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {"dotsocr-gateway": ["gateway:8080"], "vllm": ["vllm:8000"]}
    assert all(
        job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"]
    )
    # The targets are the services' ports inside the Compose network.
    for target in ("gateway:8080", "vllm:8000"):
        name, port = target.split(":")
        assert any(p.endswith(f":{port}") for p in document["services"][name]["ports"])


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
