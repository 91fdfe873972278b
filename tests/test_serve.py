"""dotsocr serve: the supervisor (through a fake vllm executable), Docker and Compose."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from compose_support import validate_compose
from vllm_support.server import free_port
from vllm_support.standin import StandIn, start

FAKE = Path(__file__).parent / "vllm_support" / "fake_vllm.py"
DOTSOCR = [sys.executable, "-m", "dotsocr"]


class Served:
    """``dotsocr serve`` running as a child; its stderr is read by a thread, so a test that
    waits for a line cannot hang past its timeout."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def until(self, needle: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return self.text()
            if not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} never came:\n{self.text()}")

    def finish(self, timeout: float = 60.0) -> str:
        """Wait for it to exit; all it wrote."""
        try:
            self.process.wait(timeout=timeout)
        finally:
            self.process.kill()
        self.reader.join(timeout=5)
        return self.text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    @property
    def returncode(self) -> int | None:
        return self.process.returncode


def _serve(tmp_path: Path, *extra: str, crashes: int = 0, env: dict | None = None) -> Served:
    port = free_port()
    env = {
        **os.environ,
        **(env or {}),
        "FAKE_VLLM_STATE": str(tmp_path / "state"),
        "FAKE_VLLM_CRASHES": str(crashes),
    }
    command = [
        *DOTSOCR, "serve", "--device", "cpu", "--model", str(tmp_path), *extra,
        "--vllm-command", f"{sys.executable} {FAKE}", "--host", "127.0.0.1",
        "--port", str(port), "--restart-delay", "0.05",
    ]  # fmt: skip
    return Served(
        subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
    )


def _starts(tmp_path: Path) -> list[list[str]]:
    files = sorted((tmp_path / "state").glob("argv-*.json"), key=lambda p: int(p.stem[5:]))
    return [json.loads(p.read_text()) for p in files]


def test_crashes_are_restarted_and_ctrl_c_stops_the_server_cleanly(tmp_path):
    served = _serve(tmp_path, crashes=2)
    seen = served.until("ready in")
    assert seen.count("vLLM exited with code 1") == 2
    assert "restarting in" in seen and "(2/5)" in seen
    assert "weights loaded in 0.5 s" in seen  # our progress, from vLLM's log
    assert "weights loaded: 5.7 GiB in 12.3 s" in seen
    assert "CUDA out of memory" in seen  # vLLM's own lines are streamed
    served.signal(signal.SIGINT)
    assert "stopped" in served.finish()
    assert served.returncode == 0
    assert len(_starts(tmp_path)) == 3
    assert (tmp_path / "state" / "signal-3").read_text() == "SIGTERM"  # vLLM was asked to stop


def test_a_second_ctrl_c_kills_a_server_that_will_not_stop(tmp_path):
    served = _serve(tmp_path, env={"FAKE_VLLM_STUCK": "1"})
    served.until("ready in")
    served.signal(signal.SIGINT)
    time.sleep(1)
    assert served.process.poll() is None  # still waiting for vLLM to finish
    served.signal(signal.SIGINT)
    rest = served.finish(timeout=10)  # well before the 30 s grace
    assert served.returncode == 0 and "stopped" in rest
    assert (tmp_path / "state" / "signal-1").read_text() == "SIGTERM"


def test_it_gives_up_after_max_restarts_with_the_last_log_lines(tmp_path):
    served = _serve(tmp_path, "--max-restarts", "2", crashes=10)
    err = served.finish()
    assert served.returncode == 1
    assert "giving up after 2 restart(s)" in err
    assert err.rstrip().endswith("Tried to allocate 74.00 GiB")
    assert len(_starts(tmp_path)) == 3


def test_a_crash_is_seen_even_when_a_worker_keeps_the_log_open(tmp_path):
    served = _serve(tmp_path, "--no-restart", env={"FAKE_VLLM_ORPHAN": "1"})
    err = served.finish(timeout=30)  # not the worker's 300 s
    assert served.returncode == 1 and "exited with code 3" in err
    worker = (tmp_path / "state" / "worker-pid").read_text()
    stat = Path(f"/proc/{worker}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_no_restart_means_one_try(tmp_path):
    served = _serve(tmp_path, "--no-restart", crashes=1)
    served.finish()
    assert served.returncode == 1
    assert len(_starts(tmp_path)) == 1


def test_extra_flags_pass_through_and_win_over_the_plan(tmp_path):
    served = _serve(tmp_path, "--max-model-len", "2048", "--load-format=dummy")
    _stop(served)
    (argv,) = _starts(tmp_path)
    assert argv.count("--max-model-len") == 1
    assert argv[argv.index("--max-model-len") + 1] == "2048"
    assert "--load-format" in argv and argv[argv.index("--load-format") + 1] == "dummy"
    assert argv[argv.index("--model") + 1] == str(tmp_path)  # a module entry takes --model
    assert "--no-enable-prefix-caching" in argv  # the rest of the plan is kept


def _stop(served: Served) -> None:
    served.until("ready in")
    served.signal(signal.SIGTERM)
    served.finish()


def test_a_cached_hub_model_is_served_offline_and_the_key_travels_in_the_environment(tmp_path):
    from test_cache import hf_repo, model_files

    hub = tmp_path / "hub"
    snapshot = hf_repo(hub, "rednote-hilab/dots.ocr", model_files(tmp_path))
    served = _serve(
        tmp_path, "--model", "rednote-hilab/dots.ocr", "--api-key", "sekrit",
        env={"HF_HUB_CACHE": str(hub), "VLLM_CPU_KVCACHE_SPACE": "3"},
    )  # fmt: skip
    _stop(served)
    (argv,) = _starts(tmp_path)
    env = json.loads((tmp_path / "state" / "env-1.json").read_text())
    assert argv[argv.index("--model") + 1] == str(snapshot)  # the complete revision itself
    assert argv[argv.index("--served-model-name") + 1] == "model"
    assert env == {"HF_HUB_OFFLINE": "1", "VLLM_API_KEY": "sekrit", "VLLM_CPU_KVCACHE_SPACE": "3"}
    assert "sekrit" not in argv


def test_an_uncached_hub_model_is_left_to_vllm_to_download(tmp_path):
    served = _serve(tmp_path, "--model", "org/not-here", env={"HF_HUB_CACHE": str(tmp_path)})
    _stop(served)
    env = json.loads((tmp_path / "state" / "env-1.json").read_text())
    assert env["HF_HUB_OFFLINE"] is None and env["VLLM_CPU_KVCACHE_SPACE"] == "2"


def test_a_missing_vllm_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [*DOTSOCR, "serve", "--device", "cpu", "--vllm-command", "no-such-vllm serve"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "error: cannot run 'no-such-vllm'" in result.stderr
    assert "Traceback" not in result.stderr


def _fake_docker(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(tmp_path / 'docker.json')!r}, 'w').write(json.dumps("
        "{'argv': sys.argv[1:], 'key': os.environ.get('VLLM_API_KEY'),"
        " 'offline': os.environ.get('HF_HUB_OFFLINE')}))\n"
        "print('0123456789abcdef')\n"
    )
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_docker_runs_the_official_image_with_gpus_cache_ipc_restart_and_health(tmp_path):
    state = StandIn()
    server = start(state)  # stands for the container's server, reached through the port mapping
    port = server.server_address[1]
    model = tmp_path / "my-dots"
    model.mkdir()
    (model / "config.json").write_text("{}")
    env = _fake_docker(tmp_path)
    result = subprocess.run(
        [*DOTSOCR, "serve", "--docker", "--gpu-memory", "24GiB", "--compute-capability", "8.9",
         "--port", str(port), "--model", str(model), "--api-key", "sekrit"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    server.shutdown()
    assert result.returncode == 0, result.stderr
    assert "ready" in result.stderr
    recorded = json.loads((tmp_path / "docker.json").read_text())
    argv = recorded["argv"]
    assert argv[:2] == ["run", "--detach"]
    assert "--gpus" in argv and argv[argv.index("--gpus") + 1] == "all"
    assert "--ipc=host" in argv
    assert argv[argv.index("--restart") + 1] == "unless-stopped"
    assert argv[argv.index("-p") + 1] == f"{port}:8000"
    assert any(v.endswith(":/root/.cache/huggingface") for v in argv)
    assert f"{model}:/models/my-dots:ro" in argv  # a local folder is mounted read-only
    assert "/health" in argv[argv.index("--health-cmd") + 1]
    image = argv.index("vllm/vllm-openai:v0.32.0")
    assert argv[image + 1] == "/models/my-dots"  # the image's entrypoint is `vllm serve`
    inside = argv[image + 2 :]
    assert inside[inside.index("--port") + 1] == "8000"
    assert "sekrit" not in " ".join(argv)  # the key travels in the environment
    assert recorded["key"] == "sekrit" and recorded["offline"] == "1"


def test_dry_run_prints_the_command_and_runs_nothing(tmp_path):
    result = subprocess.run(
        [*DOTSOCR, "serve", "--dry-run", "--gpu-memory", "80GiB", "--compute-capability", "9.0"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("vllm serve rednote-hilab/dots.ocr --dtype bfloat16")


def _compose(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "docker-compose.yml"
    result = subprocess.run(
        [*DOTSOCR, "compose", "-o", str(out), *args], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    validate_compose(out)
    return yaml.safe_load(out.read_text())


def test_compose_has_the_gpu_reservation_health_check_and_plan(tmp_path):
    document = _compose(
        tmp_path, "--gpu-memory", "80GiB", "--compute-capability", "9.0", "--api-key", "sekrit"
    )
    vllm = document["services"]["vllm"]
    assert vllm["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "capabilities": ["gpu"], "count": 1}
    ]
    assert vllm["healthcheck"]["start_period"] == "600s"
    assert "/health" in vllm["healthcheck"]["test"][1]
    assert vllm["restart"] == "unless-stopped" and vllm["ipc"] == "host"
    command = vllm["command"]
    assert command[0] == "rednote-hilab/dots.ocr"
    assert command[command.index("--max-model-len") + 1] == "31744"
    assert "sekrit" not in (tmp_path / "docker-compose.yml").read_text()
    assert vllm["environment"]["VLLM_API_KEY"].startswith("${DOTSOCR_API_KEY")


def test_compose_one_server_per_gpu(tmp_path):
    document = _compose(
        tmp_path, "--gpu-memory", "24GiB", "--compute-capability", "8.9", "--gpus", "2",
        "--multi-gpu", "replicas",
    )  # fmt: skip
    services = document["services"]
    assert [name for name in services if name.startswith("vllm")] == ["vllm-0", "vllm-1"]
    assert "router" in services  # in front of them, for the gateway
    assert services["vllm-1"]["ports"] == ["8001:8000"]
    devices = services["vllm-1"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["device_ids"] == ["1"]
