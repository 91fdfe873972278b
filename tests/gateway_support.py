"""`dotsocr gateway` as a real process on loopback, and the small clients tests drive it with.

Each gateway runs in its own process group (so a test can kill -9 all of it) with a
clean environment: only the ``DOTSOCR_*`` variables a test passes reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dotsocr.serve.launcher import _die_with_parent
from vllm_support.server import free_port

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "multi_page.pdf"  # 5 pages; page 1 is titled below
TITLE = "The Evolution of the Word Processor"
STARTUP_SECONDS = 60.0
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


@dataclass
class Process:
    """A ``python -m dotsocr`` process in a process group of its own, and its log."""

    process: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a clean shutdown), SIGKILL the group if it hangs; the exit status."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def spawn(command: str, args: list[str], log: Path, env: dict[str, str] | None) -> Process:
    """``python -m dotsocr COMMAND ARGS`` with only the given DOTSOCR_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DOTSOCR_")}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dotsocr", command, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**clean, **(env or {})},
            start_new_session=True,  # its own process group: kill() reaches all of it
            preexec_fn=_die_with_parent,
        )
    return Process(process, log)


@dataclass
class Gateway(Process):
    """A running ``dotsocr gateway``: its URL and data folder besides."""

    url: str = ""
    data_dir: Path = Path()
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, key: str | None = None, timeout: float = 60.0) -> httpx.Client:
        """An HTTP client for this gateway, sending ``key`` as a Bearer token when given."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.clients.append(client)
        return client

    def kill(self) -> None:
        super().kill()
        self._close_clients()

    def stop(self, timeout: float = 15.0) -> int:
        code = super().stop(timeout)
        self._close_clients()
        return code

    def _close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()


def start_gateway(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, ready: bool = False
) -> Gateway:
    """Start ``python -m dotsocr gateway`` on a free loopback port and wait for /health
    (and /ready too when ``ready``)."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}-gateway-{port}.log"
    args = ("--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir), *args)
    started = spawn("gateway", list(args), log, env)
    gateway = Gateway(started.process, log, f"http://127.0.0.1:{port}", data_dir)
    probe = gateway.client(timeout=5.0)
    process = gateway.process

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the gateway exited {process.returncode}:\n{gateway.log_tail()}")
        path = "/ready" if ready else "/health"
        try:
            return probe.get(path).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, STARTUP_SECONDS, f"{gateway.url} to start", every=0.1)
    except BaseException:
        gateway.stop()
        raise
    return gateway


@contextlib.contextmanager
def running_gateway(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, ready: bool = False
) -> Iterator[Gateway]:
    """``start_gateway`` for a ``with`` block: stopped at its end."""
    gateway = start_gateway(data_dir, *args, env=env, ready=ready)
    try:
        yield gateway
    finally:
        gateway.stop()


def start_worker(folder: Path, name: str, *args: str, env: dict[str, str]) -> Process:
    """Start ``python -m dotsocr worker --name NAME`` (no HTTP side; metrics off)."""
    folder.mkdir(parents=True, exist_ok=True)
    args = ("--name", name, "--metrics-port", "0", "--data-dir", str(folder / name), *args)
    return spawn("worker", list(args), folder / f"worker-{name}.log", env)


# Requests.
def upload(path: Path, name: str | None = None) -> tuple[str, tuple[str, bytes, str]]:
    """One multipart ``files`` part from a file on disk."""
    return ("files", (name or path.name, path.read_bytes(), "application/octet-stream"))


def status(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_job(
    client: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda s: s["state"] in ("done", "failed"),
    timeout: float = 90.0,
    what: str = "the job to end",
) -> dict[str, Any]:
    """Poll a job's status until ``until`` holds; return that status."""
    seen: dict[str, Any] = {}

    def check() -> dict[str, Any] | None:
        seen.update(status(client, job_id))
        return dict(seen) if until(seen) else None

    try:
        return wait_for(check, timeout, f"{what} (job {job_id})", every=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status: {json.dumps(seen)}") from None


def events(
    client: httpx.Client, path: str, opened: threading.Event | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Read a server-sent event stream to its end: (event, data) pairs in order; ``opened``
    is set once the server has answered the request."""
    out: list[tuple[str, dict[str, Any]]] = []
    name, data = "", ""
    with client.stream("GET", path) as response:
        assert response.status_code == 200, response.read().decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        if opened:
            opened.set()
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data += line.partition(":")[2].strip()
            elif not line and name:
                out.append((name, json.loads(data)))
                name, data = "", ""
    return out


def metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """The one error shape; returns its message."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"status", "code", "message"}, body
    assert body["error"]["status"] == status and body["error"]["code"] == code, body
    assert body["error"]["message"], body
    return body["error"]["message"]


# A webhook receiver.
@dataclass
class Receiver:
    """Records the JSON bodies POSTed to it; answers each path's queued statuses first,
    then 200."""

    url: str = ""
    failures: dict[str, deque[int]] = field(default_factory=dict)
    calls: dict[str, list[Any]] = field(default_factory=dict)  # path -> bodies (None: failed)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def delivered(self, path: str) -> list[Any]:
        with self.lock:
            return [body for body in self.calls.get(path, []) if body is not None]


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            with state.lock:
                queued = state.failures.get(self.path)
                code = queued.popleft() if queued else 200
                state.calls.setdefault(self.path, []).append(body if code < 300 else None)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
