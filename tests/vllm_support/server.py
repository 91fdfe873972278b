"""Start and stop a real vLLM server (CPU build, tiny dots.ocr model, random weights)."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dotsocr.serve.launcher import _die_with_parent

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("DOTSOCR_VLLM_VENV", ROOT / ".venv-vllm"))
STARTUP_SECONDS = 300


@dataclass
class VLLMServer:
    """A real vLLM started by ``dotsocr serve``, whose readiness ``dotsocr wait`` reported."""

    url: str
    process: subprocess.Popen  # dotsocr serve
    log: Path  # vLLM's own log
    progress: Path  # dotsocr serve's progress lines
    waited: subprocess.CompletedProcess  # dotsocr wait, started before the server

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM dotsocr serve (it stops vLLM and its workers); SIGKILL the group if stuck."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def python() -> Path:
    return VENV / "bin" / "python"


def installed() -> bool:
    """Whether scripts/setup-vllm finished (it leaves a marker last)."""
    return python().is_file() and any(VENV.glob(".dotsocr-vllm-*"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dotsocr() -> list[str]:
    return [sys.executable, "-m", "dotsocr"]


def start(
    workdir: Path, *, max_model_len: int = 4096, restart: bool = False, max_pixels: int = 11289600
) -> VLLMServer:
    """Build the tiny model folder, start ``dotsocr wait``, then ``dotsocr serve`` on a free
    loopback port; return once the waiter says it is ready. ``restart``: dotsocr serve
    starts vLLM again after a crash, as it does by default; ``max_pixels``: the server's
    pixel cap (the model's own by default: tests send pages of any size)."""
    model = workdir / "tiny-dots-ocr"
    builder = Path(__file__).with_name("tiny_dots_model.py")
    built = subprocess.run([python(), builder, model], capture_output=True, text=True)
    if built.returncode:
        raise RuntimeError(f"building the tiny model failed:\n{built.stderr[-3000:]}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / "vllm.log"
    progress = workdir / "serve.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HOME": str(workdir / "hf"),
        "VLLM_CACHE_ROOT": str(workdir / "vllm-cache"),
    }
    waiter = subprocess.Popen(
        [*dotsocr(), "wait", "--server", url, "--model", "model", "--interval", "0.5",
         "--timeout", str(STARTUP_SECONDS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent,
    )  # fmt: skip
    # The console script fails for the vllm-cpu distribution; this module is `vllm serve`.
    vllm = f"{python()} -m vllm.entrypoints.launchers.api_server.entry"
    command = [
        *dotsocr(), "serve", "--device", "cpu", "--model", str(model),
        "--vllm-command", vllm, "--host", "127.0.0.1", "--port", str(port),
        "--max-pixels", str(max_pixels),
        *([] if restart else ["--no-restart"]), "--quiet", "--log", str(log),
        # Passed through to vLLM, over the plan's values:
        "--load-format", "dummy", "--max-model-len", str(max_model_len), "--skip-mm-profiling",
    ]  # fmt: skip
    with progress.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own group, so that stop() can reach everything
            preexec_fn=_die_with_parent,
        )
    try:
        stdout, stderr = waiter.communicate(timeout=STARTUP_SECONDS + 30)
    except BaseException:
        waiter.kill()
        _stop(process)
        raise
    server = VLLMServer(
        url, process, log, progress,
        subprocess.CompletedProcess(waiter.args, waiter.returncode, stdout, stderr),
    )  # fmt: skip
    atexit.register(server.stop)
    if waiter.returncode != 0 or process.poll() is not None:
        server.stop()
        raise RuntimeError(
            f"dotsocr wait exited {waiter.returncode}: {stderr[-500:]}\n"
            f"dotsocr serve:\n{progress.read_text(errors='replace')[-2000:]}\n"
            f"vLLM:\n{server.log_tail() if log.exists() else '(no log)'}"
        )
    # dotsocr serve polls on its own; let it say "ready" too before tests read its progress.
    deadline = time.monotonic() + 30
    while "ready in" not in progress.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    return server


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    process.wait()


def require() -> None:
    """Skip the test without vLLM's CPU build; in CI (which installs it) fail instead."""
    import pytest

    if not installed():
        message = f"no finished vLLM install at {VENV}: run scripts/setup-vllm"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def build_tiny(builder: str, folder: Path, *args: str) -> Path:
    """A tiny checkpoint folder made by tests/vllm_support/``builder`` with vLLM's Python."""
    script = Path(__file__).with_name(builder)
    built = subprocess.run(
        [python(), script, folder, *args], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return folder


@contextlib.contextmanager
def serve_folder(workdir: Path, url: str, args: list[str], env: dict[str, str] | None = None):
    """vLLM's CPU build with ``args`` (``--model`` among them), random weights and no
    start-up profiling of the vision towers, until /health answers at ``url``; stopped at
    the end. Fails the test with vLLM's log if it exits or is not ready in time."""
    import urllib.request

    import pytest

    environment = {
        **os.environ,
        **(env or {}),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "HF_HOME": str(workdir / "hf"),
        "VLLM_CACHE_ROOT": str(workdir / "vllm-cache"),
    }
    environment.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    command = [
        python(), "-m", "vllm.entrypoints.launchers.api_server.entry", *args,
        "--load-format", "dummy", "--skip-mm-profiling",
    ]  # fmt: skip
    log = workdir / "vllm.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=environment,
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"vLLM exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not ready in {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(process)
