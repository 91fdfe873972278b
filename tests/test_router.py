"""The vLLM project's router (PyPI vllm-router, as ``dotsocr compose`` runs it in front of
one server per GPU) with two stand-in servers behind it on loopback: one goes down mid-run
and no page is lost."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from dotsocr.serve.docker import ROUTER_POLICY
from test_ocr_cli import dotsocr
from vllm_support.documents import book
from vllm_support.server import free_port
from vllm_support.standin import StandIn, start

ROUTER = shutil.which("vllm-router", path=str(Path(sys.executable).parent))


@pytest.fixture
def routed(tmp_path):
    """Two stand-ins, and vllm-router in front of them; yields (router URL, stand-ins)."""
    if ROUTER is None:
        pytest.skip("vllm-router is not installed (a dev dependency): run scripts/setup")
    states = [StandIn(latency=0.1, capacity=4), StandIn(latency=0.1, capacity=4)]
    servers = [start(state) for state in states]
    port = free_port()
    log = (tmp_path / "router.log").open("wb")
    router = subprocess.Popen(
        [ROUTER, "--host", "127.0.0.1", "--port", str(port), "--policy", ROUTER_POLICY,
         "--worker-urls", *(s.url for s in states), "--health-check-endpoint", "/health",
         "--health-check-interval-secs", "1", "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert router.poll() is None and time.monotonic() < deadline, "the router did not start"
        time.sleep(0.2)
    yield url, states
    router.terminate()
    router.wait(timeout=15)
    log.close()
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_server_behind_the_router_going_down_loses_no_page(routed, tmp_path):
    url, (first, second) = routed
    pdf = book(30, tmp_path)

    def stop_second() -> None:  # once the run is under way
        while len(first.requests) + len(second.requests) < 8:
            time.sleep(0.02)
        second.down = True

    watcher = threading.Thread(target=stop_second, daemon=True)
    watcher.start()
    out = tmp_path / "out"
    result = dotsocr("ocr", pdf, "--dpi", "72", "--server", url, "--engine", "server",
                     "-o", out)  # fmt: skip
    watcher.join(timeout=5)
    assert result.returncode == 0, result.stderr
    pages = json.loads(next(out.glob("*.json")).read_text())["pages"]
    assert [p["number"] for p in pages] == list(range(1, 31))
    assert all(p["status"] == "ok" for p in pages)
    answered = [len(s.latencies) for s in (first, second)]  # what each answered
    assert sum(answered) == 30, answered  # every page once
    assert second.down and len(second.requests) > answered[1], answered  # it lost some
