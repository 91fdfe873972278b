"""Waiting for a model server to be ready, telling a slow start from a dead server."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from dotsocr.errors import EngineError
from dotsocr.serve.probe import client, look, ocr_check, why_not_ready

DEAD_AFTER = 2  # /health answering 503 this many times in a row: vLLM's engine is dead


class Outcome(IntEnum):
    """What ``dotsocr wait`` ends with; the value is its exit code."""

    READY = 0
    TIMEOUT = 3  # it answered, but was not ready in time
    REFUSED = 4  # nothing ever listened at that address
    DEAD = 5  # the engine died (/health 503) or the watched process exited


@dataclass
class WaitResult:
    outcome: Outcome
    seconds: float
    detail: str
    models: dict[str, int | None] = field(default_factory=dict)


def wait_ready(
    url: str,
    *,
    timeout: float = 600.0,
    model: str | None = None,
    api_key: str | None = None,
    ocr: bool = False,
    pid: int | None = None,
    poll: float = 1.0,
    on_tick: Callable[[float, str], None] | None = None,
) -> WaitResult:
    """Poll until /health is 200 and ``model`` (or any model) is listed, and with ``ocr``
    until a tiny OCR request completes."""
    started = time.monotonic()
    deadline = started + timeout
    connected = False
    dead_in_a_row = 0
    last = "not tried yet"
    with client(url, api_key, timeout=min(5.0, max(timeout, 0.1))) as http:
        while True:
            elapsed = time.monotonic() - started
            if pid is not None and not _alive(pid):
                return WaitResult(Outcome.DEAD, elapsed, f"process {pid} has exited")
            state = look(http)
            connected |= state.connected
            dead_in_a_row = dead_in_a_row + 1 if state.health == 503 else 0
            if dead_in_a_row >= DEAD_AFTER:
                return WaitResult(Outcome.DEAD, elapsed, "/health answers 503: the engine is dead")
            last = why_not_ready(state, model)
            if not last:
                last = "ready"
                if not ocr:
                    return WaitResult(Outcome.READY, elapsed, last, state.models)
                try:
                    left = max(deadline - time.monotonic(), 1.0)
                    check = ocr_check(url, api_key=api_key, model=model, timeout=left)
                    return WaitResult(
                        Outcome.READY, time.monotonic() - started,
                        f"ready; an OCR request took {check.seconds:.1f} s", state.models,
                    )  # fmt: skip
                except EngineError as exc:
                    last = f"listed, but an OCR request failed: {exc}"
            if on_tick:
                on_tick(elapsed, last)
            if time.monotonic() + poll > deadline:
                outcome = Outcome.TIMEOUT if connected else Outcome.REFUSED
                return WaitResult(outcome, time.monotonic() - started, last, state.models)
            time.sleep(poll)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead too: its parent has not collected it yet.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True
