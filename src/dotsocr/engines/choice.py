"""Which engine reads the pages: the one place that decides, for every entry point.

The rule: ``server`` sends pages to the configured server only (an error when none is
configured); ``cpu`` to the embedded engine only; ``auto`` to the server when one is
configured, and to nothing else, or to the embedded engine when none is. A server that
does not answer is waited for (``Patience``); only ``fallback="cpu"`` lets pages the
server cannot read go to the embedded engine, and each such page says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal, Self

from dotsocr.engines.base import Engine, EngineAnswer
from dotsocr.engines.patience import SERVER_TIMEOUT, Report
from dotsocr.errors import ConfigError, EngineUnavailable
from dotsocr.models.base import ChatRequest, PreparedPage

EngineKind = Literal["auto", "server", "cpu"]
TextLayerUse = Literal["auto", "never", "only"]
RETRY_DOWN = 30.0  # seconds between asking a server that never answered again


@dataclass(frozen=True)
class EngineSettings:
    """What the CLI, the gateway, the worker and the classic client say about engines."""

    engine: EngineKind = "auto"
    server_url: str | None = None  # one URL, or replicas separated by commas
    api_key: str | None = None
    served_model: str | None = None  # the model's name on the server; default: found
    languages: str = "eng"  # the embedded engine's
    text_layer: TextLayerUse = "auto"  # the embedded engine's use of a PDF's own text
    concurrency: int | None = None  # pages in flight; default: 64 to a server, cores on CPU
    server_timeout: float = SERVER_TIMEOUT
    answer_timeout: float = 600.0  # seconds for one answer: a dense page can take minutes
    fallback: Literal["cpu"] | None = None

    def __post_init__(self) -> None:
        if self.engine == "server" and not self.server_url:
            raise ConfigError(
                "no server configured: pass --server URL or set DOTSOCR_SERVER_URL, or use "
                "--engine cpu"
            )

    @property
    def kind(self) -> Literal["server", "cpu"]:
        """Where pages go, by the rule above."""
        if self.engine == "cpu" or not self.server_url:
            return "cpu"
        return "server"


async def open_engine(
    settings: EngineSettings, stack: AsyncExitStack, on_wait: Report | None = None
) -> Any:
    """The engine the settings choose, started and owned by ``stack``.

    A server is waited for until it answers, up to ``settings.server_timeout`` seconds of
    silence (``on_wait`` hears about it every few seconds).

    Raises:
        ConfigError: ``server`` asked with no server configured, or a bad URL.
        EngineError: the server never answered, refused the key, or does not serve the model.
    """
    from dotsocr.engines.cpu import CPUEngine
    from dotsocr.engines.pool import server_engine

    def embedded() -> CPUEngine:
        return CPUEngine(settings.languages, settings.concurrency, settings.text_layer)

    if settings.kind == "cpu":
        return await stack.enter_async_context(embedded())

    def server(server_timeout: float) -> Any:
        return server_engine(
            settings.server_url or "",
            api_key=settings.api_key,
            model=settings.served_model,
            concurrency=settings.concurrency or 64,
            timeout=settings.answer_timeout,
            server_timeout=server_timeout,
            on_wait=on_wait,
        )

    if settings.fallback is None:
        return await stack.enter_async_context(server(settings.server_timeout))
    backup = await stack.enter_async_context(embedded())
    return await stack.enter_async_context(FallbackEngine(server, settings.server_timeout, backup))


class FallbackEngine:
    """A server, and the embedded engine for the pages the server cannot read.

    Only unavailability falls back (the server silent past its timeout, or failing through
    every retry); a refused request is the server's word on the page and stays a failure.
    A server that never answered is asked again every ``RETRY_DOWN`` seconds, with one
    connection attempt, so that pages go back to it once it is up.
    """

    reads_pixels = True  # the embedded engine reads the image itself

    def __init__(self, server: Callable[[float], Any], timeout: float, backup: Engine) -> None:
        self._server = server
        self._timeout = timeout
        self.primary = server(timeout)
        self.backup = backup
        self.reads_text_layer = backup.reads_text_layer  # a PDF's own text, where trusted
        self.why_down: str | None = None  # the server does not answer: why
        self._asked = 0.0
        self._lock = asyncio.Lock()
        self.info = None

    async def __aenter__(self) -> Self:
        await self._connect(self.primary)
        return self

    async def _connect(self, primary: Any) -> None:
        self._asked = time.monotonic()
        try:
            await primary.__aenter__()
        except EngineUnavailable as exc:
            self.why_down = str(exc)
            return
        self.primary, self.info, self.why_down = primary, primary.info, None
        patience = getattr(primary, "patience", None)
        if patience is not None:  # asked again with one attempt; from now on as patient
            patience.timeout = self._timeout

    async def __aexit__(self, *exc: object) -> None:
        if self.info is not None:
            await self.primary.__aexit__(*exc)

    @property
    def waiting(self) -> str | None:
        """Why pages wait for the server, while they do (not once they go to the backup)."""
        patience = getattr(self.primary, "patience", None)
        if self.info is None or patience is None or patience.given_up:
            return None
        return patience.waiting

    async def text_tokens(self, prompt: str) -> int | None:
        if self.info is None:
            return None
        try:
            return await self.primary.text_tokens(prompt)
        except EngineUnavailable:
            return None

    async def infer(self, page: PreparedPage, request: ChatRequest) -> EngineAnswer:
        if self.info is None and time.monotonic() - self._asked >= RETRY_DOWN:
            async with self._lock:  # one attempt for all the pages waiting to know
                if self.info is None and time.monotonic() - self._asked >= RETRY_DOWN:
                    await self._connect(self._server(0.0))
        if self.info is not None:
            try:
                return await self.primary.infer(page, request)
            except EngineUnavailable as exc:
                reason = str(exc)
        else:
            reason = self.why_down or "the server did not answer"
        answer = await self.backup.infer(page, request)
        return dataclasses.replace(answer, details={**answer.details, "fallback": reason})
