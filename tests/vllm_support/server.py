"""Start and stop a real vLLM server (CPU build, tiny dots.ocr model, random weights)."""

from __future__ import annotations

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(workdir: Path, *, max_model_len: int = 4096) -> VLLMServer:
    """Build the tiny model folder, start ``vllm serve`` on a free loopback port, wait for it."""
    model = workdir / "tiny-dots-ocr"
    builder = Path(__file__).with_name("tiny_dots_model.py")
    subprocess.run([python(), builder, model], check=True, capture_output=True)
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
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = VLLMServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(1)
    server.stop()
    raise RuntimeError(f"vLLM not ready after {STARTUP_SECONDS} s:\n{server.log_tail()}")
