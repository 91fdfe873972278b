"""Start and stop a real vLLM server (CPU build, tiny dots.ocr model, random weights)."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("DOTSOCR_VLLM_VENV", ROOT / ".venv-vllm"))
STARTUP_SECONDS = 300


@dataclass
class VLLMServer:
    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the server's process group (its engine core is a child), then SIGKILL."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def python() -> Path:
    return VENV / "bin" / "python"


def installed() -> bool:
    """Whether scripts/setup-vllm finished (it leaves a marker last)."""
    return python().is_file() and any(VENV.glob(".dotsocr-vllm-*"))


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the test process dies, even by SIGKILL."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(workdir: Path, *, max_model_len: int = 4096) -> VLLMServer:
    """Build the tiny model folder, start ``vllm serve`` on a free loopback port, wait for it."""
    model = workdir / "tiny-dots-ocr"
    builder = Path(__file__).with_name("tiny_dots_model.py")
    built = subprocess.run([python(), builder, model], capture_output=True, text=True)
    if built.returncode:
        raise RuntimeError(f"building the tiny model failed:\n{built.stderr[-3000:]}")
    port = free_port()
    log = workdir / "vllm.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HOME": str(workdir / "hf"),
        "VLLM_CACHE_ROOT": str(workdir / "vllm-cache"),
    }
    # The console script fails for the vllm-cpu distribution; this module is `vllm serve`.
    command = [
        python(),
        "-m",
        "vllm.entrypoints.launchers.api_server.entry",
        "--model", model,
        "--load-format", "dummy",
        "--trust-remote-code",
        "--served-model-name", "model",
        "--max-model-len", str(max_model_len),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--chat-template-content-format", "string",
        "--enforce-eager",
        "--skip-mm-profiling",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own group, so that stop() reaches its workers
            preexec_fn=_die_with_parent,
        )
    server = VLLMServer(f"http://127.0.0.1:{port}", process, log)
    atexit.register(server.stop)
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: VLLMServer) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"vLLM exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/v1/models", timeout=2) as response:
                served = [m.get("id") for m in json.load(response).get("data", [])]
        except (OSError, ValueError):
            served = []
        # Ours, not whoever else may have taken the port between probe and bind.
        if "model" in served and server.process.poll() is None:
            return
        time.sleep(1)
    raise RuntimeError(f"vLLM not ready after {STARTUP_SECONDS} s:\n{server.log_tail()}")
