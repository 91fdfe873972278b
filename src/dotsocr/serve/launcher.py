"""Run ``vllm serve`` as a supervised child: its log streamed with our own progress lines,
a clean stop on Ctrl-C or SIGTERM, and restarts with backoff after a crash."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dotsocr.errors import AuthenticationError, ServeError
from dotsocr.serve import probe
from dotsocr.serve.plan import LaunchPlan

STOP_GRACE = 30.0  # seconds vLLM gets to finish after SIGTERM before SIGKILL
POLL = 0.1
LOG_TAIL = 20

# vLLM's start-up, as its log tells it (0.11 to 0.32), in the order it happens.
PHASES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"Resolved architecture: (\S+)"), lambda m: f"configuring {m[1]}"),
    (re.compile(r"Starting to load model"), lambda m: "loading weights"),
    (
        re.compile(r"Model loading took ([\d.]+) GiB memory and ([\d.]+) seconds"),
        lambda m: f"weights loaded: {float(m[1]):.1f} GiB in {float(m[2]):.1f} s",
    ),
    (
        re.compile(r"(?:Loading weights|Initializing model) took ([\d.]+) s"),
        lambda m: f"weights loaded in {float(m[1]):.1f} s",
    ),
    (
        re.compile(
            r"KV cache size: ([\d,]+) tokens.*?concurrency for ([\d,]+) tokens[^:]*: ([\d.]+)x"
        ),
        lambda m: f"KV cache: {m[1]} tokens, {float(m[3]):.1f} requests of {m[2]} tokens at once",
    ),
    (re.compile(r"Capturing CUDA graph"), lambda m: "capturing CUDA graphs"),
    (
        re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+)"),
        lambda m: f"memory profiled and engine warmed up in {float(m[1]):.1f} s",
    ),
    (re.compile(r"Starting vLLM (?:API )?server on|Uvicorn running on"), lambda m: "listening"),
)


def vllm_argv(command: list[str], plan: LaunchPlan) -> list[str]:
    """``vllm serve MODEL flags``; module entry points (``python -m ...``) take ``--model``."""
    model = [plan.model] if command and command[-1] == "serve" else ["--model", plan.model]
    return [*command, *model, *plan.args()]


def default_command() -> list[str]:
    """``DOTSOCR_VLLM_COMMAND`` (e.g. ``python -m vllm.entrypoints.openai.api_server``) or
    ``vllm serve``."""
    configured = os.environ.get("DOTSOCR_VLLM_COMMAND")
    return shlex.split(configured) if configured else ["vllm", "serve"]


@dataclass
class SupervisorOptions:
    restart: bool = True
    max_restarts: int = 5
    backoff: float = 2.0  # first delay; doubles per crash
    max_backoff: float = 60.0
    stable_after: float = 600.0  # up this long: the crash count starts again
    echo: bool = True  # stream vLLM's own log lines
    log: Path | None = None  # also keep the full log here
    ready_poll: float = 1.0


@dataclass
class Supervisor:
    """Keeps one vLLM process running until stopped.

    ``report`` receives our progress lines; vLLM's own lines go to ``sink``. ``stop`` is
    safe to call from a signal handler: it only sets a flag and signals the process group;
    the main thread does the rest while it polls.
    """

    argv: list[str]
    env: dict[str, str]
    url: str
    options: SupervisorOptions = field(default_factory=SupervisorOptions)
    report: Callable[[str], None] = print
    sink: IO[str] | None = None
    api_key: str | None = None

    def __post_init__(self) -> None:
        self._stopping = False
        self._stop_asked = 0.0
        self._process: subprocess.Popen[str] | None = None
        self._tail: deque[str] = deque(maxlen=LOG_TAIL)
        self.starts = 0
        self.ready_at: float | None = None

    def stop(self, *_: object) -> None:
        """Ask vLLM to stop (SIGTERM); a second call, or STOP_GRACE seconds, kills it."""
        if self._stopping:
            self._signal(signal.SIGKILL)
            return
        self._stopping = True
        self._stop_asked = time.monotonic()
        self._signal(signal.SIGTERM)

    def run(self) -> int:
        """Run until stopped (exit 0) or out of restarts (exit 1)."""
        crashes = 0
        while not self._stopping:
            started = time.monotonic()
            code = self._run_once()
            if self._stopping:
                break
            up_for = time.monotonic() - started
            if self.ready_at is not None and up_for >= self.options.stable_after:
                crashes = 0
            crashes += 1
            what = f"vLLM exited with code {code} after {up_for:.0f} s"
            if not self.options.restart or crashes > self.options.max_restarts:
                tail = "\n".join(self._tail)
                self.report(f"{what}; giving up after {crashes - 1} restart(s). Its last lines:")
                self.report(tail)
                return 1
            delay = min(self.options.max_backoff, self.options.backoff * 2 ** (crashes - 1))
            self.report(
                f"{what}; restarting in {delay:.0f} s ({crashes}/{self.options.max_restarts})"
            )
            if self._sleep(delay):
                break
        self.report("stopped")
        return 0

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True when asked."""
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            time.sleep(min(POLL, max(end - time.monotonic(), 0)))
        return self._stopping

    def _run_once(self) -> int:
        self.ready_at = None
        self.starts += 1
        try:
            process = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,  # its own group: signals reach its engine and workers
                preexec_fn=_die_with_parent,
            )
        except FileNotFoundError:
            raise ServeError(
                f"cannot run {self.argv[0]!r}: install vLLM (pip install vllm), use --docker, "
                "or name the command with --vllm-command / DOTSOCR_VLLM_COMMAND"
            ) from None
        self._process = process
        started = time.monotonic()
        self.report(f"starting vLLM (pid {process.pid}): {_shown(self.argv)}")
        if self._stopping:  # a stop that came while we were starting it
            self._signal(signal.SIGTERM)
        log = self.options.log.open("a", encoding="utf-8") if self.options.log else None
        reader = threading.Thread(target=self._pump, args=(process, log), daemon=True)
        reader.start()
        threading.Thread(target=self._watch_ready, args=(process, started), daemon=True).start()
        try:
            while (code := process.poll()) is None:
                if self._stopping and time.monotonic() - self._stop_asked > STOP_GRACE:
                    self._signal(signal.SIGKILL)
                time.sleep(POLL)
            # Its engine and workers may outlive it, holding the GPU and the log pipe.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            reader.join(timeout=5)
        finally:
            if log:
                log.close()
        return code

    def _pump(self, process: subprocess.Popen[str], log: IO[str] | None) -> None:
        """Stream the log until the process group closes it; turn known lines into progress."""
        assert process.stdout
        for line in process.stdout:
            line = line.rstrip("\n")
            self._tail.append(line)
            if log and not log.closed:
                log.write(line + "\n")
                log.flush()
            if self.options.echo and self.sink is not None:
                self.sink.write(line + "\n")
                self.sink.flush()
            for pattern, describe in PHASES:
                if match := pattern.search(line):
                    self.report(describe(match))
                    break

    def _signal(self, signum: int) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)

    def _watch_ready(self, process: subprocess.Popen[str], started: float) -> None:
        """Poll /health and /v1/models until the server answers both, then say so once."""
        with probe.client(self.url, self.api_key) as http:
            while process.poll() is None and not self._stopping:
                try:
                    state = probe.look(http)
                except AuthenticationError as exc:
                    self.report(f"not ready: {exc}")
                    return
                if state.health == 200 and state.models:
                    self.ready_at = time.monotonic()
                    served = ", ".join(state.models)
                    self.report(f"ready in {self.ready_at - started:.0f} s at {self.url}: {served}")
                    return
                time.sleep(self.options.ready_poll)


def _shown(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def _prctl() -> Callable[..., int] | None:
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return None


_PRCTL = _prctl()  # looked up here: a forked child should call, not load


def _die_with_parent() -> None:
    """In the child: SIGTERM it when dotsocr dies, even by SIGKILL, so no server is orphaned."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
