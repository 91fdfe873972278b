"""dotsocr wait and dotsocr health: against the stand-in, dead addresses and the real vLLM."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from dotsocr.serve.probe import TEST_TEXT, make_test_image
from vllm_support.server import free_port

DOTSOCR = [sys.executable, "-m", "dotsocr"]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*DOTSOCR, *args], capture_output=True, text=True, timeout=timeout)


def test_wait_returns_at_once_for_a_ready_server(standin):
    result = _run("wait", "--server", standin.url, "--timeout", "10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ready after")
    assert "model (max_model_len 4096)" in result.stdout


def test_wait_for_a_model_that_is_not_served_times_out(standin):
    result = _run("wait", "--server", standin.url, "--model", "other", "--timeout", "1",
                  "--interval", "0.2")  # fmt: skip
    assert result.returncode == 3
    assert "not ready after" in result.stderr and "not 'other'" in result.stderr


def test_wait_with_nothing_listening_is_refused():
    result = _run("wait", "--server", f"http://127.0.0.1:{free_port()}", "--timeout", "1",
                  "--interval", "0.2")  # fmt: skip
    assert result.returncode == 4
    assert "nothing answered" in result.stderr


def test_wait_on_a_silent_listener_times_out():
    with socket.socket() as listener:  # accepts connections, never answers: a loading server
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        result = _run("wait", "--server", f"http://127.0.0.1:{port}", "--timeout", "1",
                      "--interval", "0.2")  # fmt: skip
    assert result.returncode == 3


def test_wait_on_a_dead_engine(standin):
    standin.health = 503
    result = _run("wait", "--server", standin.url, "--timeout", "10", "--interval", "0.1")
    assert result.returncode == 5
    assert "engine is dead" in result.stderr


def test_wait_stops_when_the_watched_process_exits():
    gone = subprocess.Popen(["true"])
    gone.wait()
    result = _run("wait", "--server", f"http://127.0.0.1:{free_port()}", "--pid",
                  str(gone.pid), "--timeout", "30")  # fmt: skip
    assert result.returncode == 5
    assert f"process {gone.pid} has exited" in result.stderr


def test_wait_with_ocr_sends_a_real_request(standin):
    result = _run("wait", "--server", standin.url, "--ocr", "--timeout", "10")
    assert result.returncode == 0, result.stderr
    assert "an OCR request took" in result.stdout
    (request,) = standin.requests
    assert request["messages"][0]["content"][0]["type"] == "image_url"


def test_the_test_image_is_readable(tmp_path):
    """The health check's image says TEST OCR 123 to a real OCR engine (the embedded one)."""
    make_test_image().save(tmp_path / "test.png")
    result = _run("ocr", str(tmp_path / "test.png"), "--engine", "cpu")
    assert result.returncode == 0, result.stderr
    assert TEST_TEXT in result.stdout


def test_health_of_a_model_that_reads_the_test_text(standin):
    standin.answer = "TEST OCR 123"
    result = _run("health", "--server", standin.url, "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout
    assert report["verdict"] == "healthy"
    assert report["ready"] and report["version"] == "stand-in"
    assert report["models"] == {"model": 4096}
    assert report["ocr"]["found_test_text"] is True and report["ocr"]["seconds"] >= 0


def test_health_of_a_model_that_misreads_is_degraded(standin):
    result = _run("health", "--server", standin.url)
    assert result.returncode == 3
    assert "verdict    degraded" in result.stdout
    assert "does not contain 'TEST OCR 123'" in result.stdout
    assert _run("health", "--server", standin.url, "--no-check-text").returncode == 0


def test_health_of_a_dead_server():
    result = _run("health", "--server", f"http://127.0.0.1:{free_port()}", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["verdict"] == "down" and not report["reachable"]
    assert report["problems"] == ["connection refused"]


def test_health_with_a_wrong_api_key_is_one_line(standin):
    standin.api_key = "right"
    result = _run("health", "--server", standin.url, "--api-key", "wrong")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "refused the API key" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.vllm
def test_the_waiter_started_before_the_server_saw_it_become_ready(vllm_server):
    waited = vllm_server.waited
    assert waited.returncode == 0
    assert "connection refused" in waited.stderr  # it was waiting before vLLM listened
    assert "ready after" in waited.stdout and "model (max_model_len 4096)" in waited.stdout


@pytest.mark.vllm
def test_serve_reported_the_real_start_up(vllm_server):
    progress = vllm_server.progress.read_text()
    for step in ("configuring DotsOCRForCausalLM", "weights loaded in", "KV cache:", "ready in"):
        assert step in progress
    assert "--no-enable-prefix-caching" in progress  # the plan's flags reached vLLM
    assert "Resolved architecture" in vllm_server.log.read_text()  # and its log was kept


@pytest.mark.vllm
def test_health_of_the_real_server(vllm_server):
    result = _run("health", "--server", vllm_server.url, "--json", "--no-check-text")
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout
    assert report["version"] == "0.32.0"
    assert report["models"] == {"model": 4096}
    assert report["metrics"]["requests_finished"] >= 1  # counting our own OCR request or more
    assert report["ocr"]["prompt_tokens"] > 100  # the test image's tokens and the prompt
    # Random weights do not read: with the text check on, the verdict says so.
    strict = _run("health", "--server", vllm_server.url)
    assert strict.returncode == 3 and "does not contain" in strict.stdout
