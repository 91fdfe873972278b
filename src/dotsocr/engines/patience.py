"""Waiting for a model server that does not answer: not yet up, restarting, a network blip.

Loading a model on a GPU takes minutes and ``dotsocr serve`` restarts a crashed server, so
a server that is silent pauses the run instead of failing its pages: requests wait with
backoff, a line says so every few seconds, and they fail only once the server has been
silent for ``timeout`` seconds. The silence is counted from the first unanswered request
after the last answer, for every request alike, so a long outage fails new pages at once
instead of making each wait its own timeout.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from dotsocr import defaults
from dotsocr.errors import EngineUnavailable

SERVER_TIMEOUT = defaults.SERVER_TIMEOUT
REPORT_EVERY = 5.0  # seconds between "waiting for the server" lines
MAX_DELAY = 5.0  # a restarted server is used within seconds of answering again

Report = Callable[[str], None]


class Patience:
    """The silence of one server (or of a pool as a whole), and what to do about it.

    Args:
        where: how reports name the server (its URL).
        timeout: seconds of silence after which requests fail.
        report: called with a line such as ``waiting for the server at URL (12 s:
            connection refused)`` at the first silence and every few seconds after.
    """

    def __init__(self, where: str, timeout: float = SERVER_TIMEOUT, report: Report | None = None):
        self.where = where
        self.timeout = timeout
        self.report = report
        self.silent_since: float | None = None
        self.reason: str | None = None  # why it is silent, while it is
        self._reported = 0.0

    def heard(self) -> None:
        """The server answered (anything, even an error): the silence is over."""
        if self.silent_since is not None and self.report:
            self.report(f"the server at {self.where} answers again")
        self.silent_since = self.reason = None

    @property
    def given_up(self) -> bool:
        """Silent for longer than the timeout: requests fail at once until it answers."""
        since = self.silent_since
        return since is not None and time.monotonic() - since >= self.timeout

    @property
    def waiting(self) -> str | None:
        """Why requests are waiting now, or None when the server answers."""
        if self.silent_since is None:
            return None
        return f"waiting for the server at {self.where} ({self._status()})"

    async def wait(self, retry: int, reason: str) -> None:
        """Sleep before retry number ``retry`` (0-based) of a request that got no answer.

        Raises:
            EngineUnavailable: the server has been silent for ``timeout`` seconds.
        """
        now = time.monotonic()
        if self.silent_since is None:
            self.silent_since = now
        self.reason = reason
        if now - self.silent_since >= self.timeout:
            raise EngineUnavailable(
                f"no answer from the server at {self.where} for {now - self.silent_since:.0f} s "
                f"({reason}): start it (dotsocr serve), check the URL, or raise --server-timeout"
            )
        if self.report and now - self._reported >= REPORT_EVERY:
            self._reported = now
            self.report(f"waiting for the server at {self.where} ({self._status()})")
        left = self.timeout - (now - self.silent_since)
        await asyncio.sleep(min(left, random.uniform(0.5, 1.0) * min(MAX_DELAY, 0.5 * 2**retry)))

    def _status(self) -> str:
        silent = time.monotonic() - (self.silent_since or time.monotonic())
        return f"{silent:.0f} s: {self.reason}"
