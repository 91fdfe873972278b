"""The asyncio client: ``Client``'s twin."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Self

import httpx

from dotsocr.client.calls import (
    DEFAULT_TIMEOUT,
    ENDED,
    HEALTH,
    INFO,
    KEEP_ALIVE,
    READY,
    Files,
    OnProgress,
    T,
    Task,
    _Base,
    _bytes,
    _Call,
    _delete,
    _EventParser,
    _job_path,
    _jobs,
    _model,
    _nothing,
    _page,
    _page_image,
    _parse,
    _result,
    _status,
    _submit,
    _text,
    _Waiter,
)
from dotsocr.client.errors import (
    GatewayError,
)
from dotsocr.gateway.models import GatewayInfo, JobStatus, PageView, ParseResult


class AsyncClient(_Base):
    """The async twin of ``Client``: the same methods, awaited; ``aclose()`` for ``close()``.

    Example:
        >>> async with AsyncClient("http://127.0.0.1:8080") as client:
        ...     job = await client.submit("book.pdf")
        ...     await client.wait(job.id, on_progress=print)
        ...     text = await client.markdown(job.id)
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = httpx.AsyncClient(transport=transport, **self._options)

    async def _send(self, call: _Call[T]) -> T:
        with self._mapped():
            response = await self._http.request(
                call.method, call.path, params=call.params, data=call.data, files=call.files
            )
        return self._answer(call, response)

    async def parse(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
    ) -> ParseResult:
        """See ``Client.parse``. Local files are read in a worker thread."""
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        call = await asyncio.to_thread(_parse, files, options, "json", _model(ParseResult))
        return await self._send(call)

    async def parse_markdown(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
    ) -> str:
        """See ``Client.parse_markdown``."""
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        return await self._send(await asyncio.to_thread(_parse, files, options, "md", _text))

    async def submit(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
        webhook: str | None = None,
    ) -> JobStatus:
        """See ``Client.submit``."""
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        return await self._send(await asyncio.to_thread(_submit, files, options, webhook))

    async def status(self, job_id: str) -> JobStatus:
        """See ``Client.status``."""
        return await self._send(_status(job_id))

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> JobStatus:
        """See ``Client.wait``; ``on_progress`` may also be a coroutine function."""
        waiter = _Waiter(job_id, timeout, on_progress)
        while True:
            if waiter.streaming and await self._follow(waiter):
                return await self.status(job_id)
            status = await self.status(job_id)
            if status.state in ENDED:
                if waiter.missed(status):
                    await self._follow(waiter)
                return status
            await asyncio.sleep(waiter.pause())

    async def _follow(self, waiter: _Waiter) -> bool:
        """See ``Client._follow``."""
        try:
            async with aclosing(self._events(waiter.job_id, waiter.read_timeout())) as events:
                async for event in events:
                    if waiter.new(event):
                        outcome = waiter.on_progress(event)  # type: ignore[misc]
                        if inspect.isawaitable(outcome):
                            await outcome
                    if event["event"] == "done":
                        return True
                    waiter.check()
        except GatewayError as exc:
            waiter.dropped(exc)
        return False

    async def events(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """See ``Client.events``: ``async for event in client.events(job.id): ...``."""
        async with aclosing(self._events(job_id, None)) as events:
            async for event in events:
                if event["event"] != KEEP_ALIVE:
                    yield event

    async def _events(
        self, job_id: str, read_timeout: float | None
    ) -> AsyncIterator[dict[str, Any]]:
        call = _Call("GET", _job_path(job_id, "/events"), _nothing)
        with self._mapped():
            async with self._http.stream(
                call.method, call.path, timeout=self._limits(read_timeout)
            ) as response:
                if not response.is_success:
                    await response.aread()
                    self._answer(call, response)
                parser = _EventParser()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
                        if event["event"] == "done":
                            return
        raise self._stream_ended(job_id)

    async def result(self, job_id: str) -> ParseResult:
        """See ``Client.result``."""
        return await self._send(_result(job_id, "json", _model(ParseResult)))

    async def markdown(self, job_id: str) -> str:
        """See ``Client.markdown``."""
        return await self._send(_result(job_id, "md", _text))

    async def zip(self, job_id: str) -> bytes:
        """See ``Client.zip``."""
        return await self._send(_result(job_id, "zip", _bytes))

    async def delete(self, job_id: str) -> None:
        """See ``Client.delete``."""
        await self._send(_delete(job_id))

    async def jobs(self, limit: int = 50) -> list[JobStatus]:
        """See ``Client.jobs``."""
        return await self._send(_jobs(limit))

    async def page(self, job_id: str, file: int, page: int) -> PageView:
        """See ``Client.page``."""
        return await self._send(_page(job_id, file, page))

    async def page_image(
        self, job_id: str, file: int, page: int, width: int | None = None
    ) -> bytes:
        """See ``Client.page_image``."""
        return await self._send(_page_image(job_id, file, page, width))

    async def info(self) -> GatewayInfo:
        """See ``Client.info``."""
        return await self._send(INFO)

    async def health(self) -> dict[str, Any]:
        """See ``Client.health``."""
        return await self._send(HEALTH)

    async def ready(self) -> bool:
        """See ``Client.ready``."""
        return await self._send(READY)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
