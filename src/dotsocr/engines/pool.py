"""Several model servers as one engine, for replicas started one per GPU with no router in
front: each request goes to the least busy server that answers; a server that stops
answering is left out for a while (its requests go to the others) and tried again later;
when none answers, requests wait for one (``Patience``), as with a single server."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Self

from dotsocr.engines.base import EngineAnswer
from dotsocr.engines.openai import OpenAIEngine, RetryPolicy, ServerInfo
from dotsocr.engines.patience import SERVER_TIMEOUT, Patience, Report
from dotsocr.errors import ConfigError, EngineUnavailable, ServerSilent
from dotsocr.models.base import ChatRequest, PreparedPage

COOLDOWN = 30.0  # seconds a server that stopped answering is left out
MEMBER_RETRY = RetryPolicy(attempts=2)  # then the next server: the pool is the retry


def server_urls(value: str) -> list[str]:
    """``URL`` or ``URL,URL,...`` as a list (empty entries ignored)."""
    return [url.strip() for url in value.split(",") if url.strip()]


def server_engine(
    url: str,
    *,
    api_key: str | None,
    model: str | None,
    concurrency: int,
    timeout: float = 600.0,
    server_timeout: float = SERVER_TIMEOUT,
    on_wait: Report | None = None,
) -> OpenAIEngine | ServerPool:
    """An engine for ``--server``: one server, or a pool of the comma-separated ones."""
    urls = server_urls(url)
    options: dict[str, Any] = {
        "api_key": api_key, "model": model, "concurrency": concurrency, "timeout": timeout,
        "server_timeout": server_timeout, "on_wait": on_wait,
    }  # fmt: skip
    if len(urls) == 1:
        return OpenAIEngine(urls[0], **options)
    return ServerPool(urls, **options)


class ServerPool:
    """OpenAIEngine's interface over several servers of the same model.

    Example:
        >>> async with ServerPool(["http://gpu0:8000", "http://gpu1:8000"]) as engine:
        ...     answer = await engine.infer(page, request)
    """

    reads_pixels = False

    def __init__(
        self,
        urls: list[str],
        *,
        api_key: str | None = None,
        model: str | None = None,
        concurrency: int = 64,
        retry: RetryPolicy | None = None,
        cooldown: float = COOLDOWN,
        timeout: float = 600.0,
        server_timeout: float = SERVER_TIMEOUT,
        on_wait: Report | None = None,
    ) -> None:
        if not urls:
            raise ConfigError("no server URL: give one, or several separated by commas")
        self.members = [
            OpenAIEngine(
                url,
                api_key=api_key,
                model=model,
                concurrency=concurrency,
                retry=retry or MEMBER_RETRY,
                timeout=timeout,
                server_timeout=None,  # the pool waits, when no server answers
            )
            for url in urls
        ]
        self.patience = Patience(
            ", ".join(m.base_url for m in self.members), server_timeout, on_wait
        )
        self.cooldown = cooldown
        self._busy = dict.fromkeys(self.members, 0)
        self._down_until = dict.fromkeys(self.members, 0.0)
        self._why: dict[OpenAIEngine, str] = {}
        self.info: ServerInfo | None = None

    @property
    def base_url(self) -> str:
        return ",".join(member.base_url for member in self.members)

    @property
    def model(self) -> str:
        if self.info is None:
            raise EngineUnavailable("the pool is not started: use it as 'async with ServerPool'")
        return self.info.model

    async def __aenter__(self) -> Self:
        try:
            infos = await self._first_answers()
        except BaseException:
            await self.__aexit__()
            raise
        lengths = [i.max_model_len for i in infos if i.max_model_len]
        first = infos[0]
        # Pages are planned once for any server: the shortest context bounds them all.
        self.info = ServerInfo(
            first.model, min(lengths) if lengths else None, first.served, first.engine
        )
        return self

    async def _first_answers(self) -> list[ServerInfo]:
        """The servers' models, once at least one answers (waiting for one meanwhile)."""
        retry = 0
        while True:
            found = await asyncio.gather(*(self._discover(m) for m in self.members))
            infos = [info for info in found if info is not None]
            if infos:
                self.patience.heard()
                return infos
            await self.patience.wait(retry, self._reasons())
            retry += 1

    @property
    def waiting(self) -> str | None:
        return self.patience.waiting

    async def probe(self) -> None:
        """Ask the servers for their models again: ends a silence when one answers."""
        await self._first_answers()

    async def __aexit__(self, *exc: object) -> None:
        for member in self.members:
            await member.__aexit__()

    async def _discover(self, member: OpenAIEngine) -> ServerInfo | None:
        try:
            member.info = await member.discover()
        except EngineUnavailable as exc:
            self._set_down(member, exc)
            return None
        return member.info

    def _set_down(self, member: OpenAIEngine, exc: Exception) -> None:
        self._down_until[member] = time.monotonic() + self.cooldown
        self._why[member] = str(exc)

    def _reasons(self) -> str:
        return "; ".join(self._why.get(m, f"{m.base_url}: not tried") for m in self.members)

    async def _pick(self, tried: set[OpenAIEngine]) -> OpenAIEngine | None:
        """The least busy server not tried yet that answers; one left out whose time is up
        is asked for its models first."""
        now = time.monotonic()
        for member in sorted(self.members, key=lambda m: self._busy[m]):
            if member in tried or self._down_until[member] > now:
                continue
            if member.info is None and await self._discover(member) is None:
                tried.add(member)
                continue
            return member
        return None

    async def _each(self, send: Any) -> Any:
        """``send(member)`` on the least busy server, then on the next when one fails, and
        when none answers, on the first that answers again."""
        tried: set[OpenAIEngine] = set()
        failing: EngineUnavailable | None = None  # a server that answered, with errors
        retry = 0
        while True:
            member = await self._pick(tried)
            if member is None and failing is not None:  # not silence: the request fails
                raise EngineUnavailable(f"no model server could answer: {self._reasons()}")
            if member is None:
                await self.patience.wait(retry, f"no server answers: {self._reasons()}")
                retry += 1
                tried.clear()
                self._down_until = dict.fromkeys(self.members, 0.0)  # ask each again
                continue
            tried.add(member)
            self._busy[member] += 1
            try:
                answer = await send(member)
                self.patience.heard()
                return answer
            except EngineUnavailable as exc:
                self._set_down(member, exc)
                member.info = None  # asked for its models again before it is used again
                if not isinstance(exc, ServerSilent):
                    failing = exc
            finally:
                self._busy[member] -= 1

    async def infer(self, page: PreparedPage, request: ChatRequest) -> EngineAnswer:
        return await self._each(lambda member: member.infer(page, request))

    async def text_tokens(self, prompt: str) -> int | None:
        return await self._each(lambda member: member.text_tokens(prompt))

    async def chat(self, text: str, **options: Any) -> EngineAnswer:
        return await self._each(lambda member: member.chat(text, **options))
