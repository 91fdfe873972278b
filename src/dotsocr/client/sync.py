"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
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


class Client(_Base):
    """A blocking client of ``dotsocr gateway``.

    Args:
        base_url: the gateway's root URL, such as ``http://127.0.0.1:8080``.
        api_key: the key the gateway was started with (``--api-key``), if any.
        timeout: seconds to wait for an answer; ``parse()`` waits while the pages are read.
        transport: an ``httpx`` transport, to route requests elsewhere (tests, proxies).

    Raises:
        ConfigError: ``base_url`` is not an http(s) URL.

    Example:
        >>> with Client("http://127.0.0.1:8080", api_key="secret") as client:
        ...     print(client.parse_markdown("scan.pdf", pages="1-3"))
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout)
        self._http = httpx.Client(transport=transport, **self._options)

    def _send(self, call: _Call[T]) -> T:
        with self._mapped():
            response = self._http.request(
                call.method, call.path, params=call.params, data=call.data, files=call.files
            )
        return self._answer(call, response)

    def parse(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
    ) -> ParseResult:
        """Read documents now: the answer comes when every page is read.

        Args:
            files: a path, bytes, a ``(name, bytes)`` pair, a binary file, or a list of them.
            task: ``layout`` (cells with boxes and text), ``layout-only`` or ``ocr``.
            pages: a selection such as ``1-3,7`` (1-based); all pages when None.
            dpi: PDF render resolution; the gateway's default when None.
            headers_footers: keep page headers and footers in the Markdown.

        Returns:
            The job's status, its Markdown and its layout JSON (one dict per file). A file
            that cannot be read is not an exception: see ``job.files[i].error`` and
            ``job.state`` (``failed`` when nothing could be read).

        Raises:
            RequestRefused: a bad option, or an upload over the gateway's limits.
            GatewayBusy: the queue is full, or the pages took longer than the gateway
                waits (HTTP 504: the job goes on; large documents belong in ``submit()``).
            Unauthorized, GatewayUnavailable: see the class docstrings.

        Example:
            >>> result = client.parse(["a.pdf", ("b.png", png_bytes)], task="ocr")
            >>> result.job.pages.done, result.markdown[:40]
        """
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        return self._send(_parse(files, options, "json", _model(ParseResult)))

    def parse_markdown(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
    ) -> str:
        """Like ``parse()``, but only the Markdown: ``client.parse_markdown("a.pdf")``."""
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        return self._send(_parse(files, options, "md", _text))

    def submit(
        self,
        files: Files,
        *,
        task: Task = "layout",
        pages: str | None = None,
        dpi: float | None = None,
        headers_footers: bool = False,
        webhook: str | None = None,
    ) -> JobStatus:
        """Start a job and return at once; pages are read in fair turns with other jobs.

        Args:
            files, task, pages, dpi, headers_footers: as for ``parse()``.
            webhook: an http(s) URL the gateway calls with the job's status when it ends.

        Returns:
            The new job's status; ``.id`` names it in the other calls.

        Raises:
            RequestRefused, GatewayBusy, Unauthorized, GatewayUnavailable: as ``parse()``.

        Example:
            >>> job = client.submit("book.pdf")
            >>> client.wait(job.id, on_progress=lambda e: print(e["done"], "/", e["total"]))
            >>> client.zip(job.id)
        """
        options = {"task": task, "pages": pages, "dpi": dpi, "headers_footers": headers_footers}
        return self._send(_submit(files, options, webhook))

    def status(self, job_id: str) -> JobStatus:
        """The job's state, queue position, pages done of total, timings and tokens."""
        return self._send(_status(job_id))

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        on_progress: OnProgress | None = None,
    ) -> JobStatus:
        """Block until the job ends, following its event stream (polling if it drops).

        Args:
            job_id: the id ``submit()`` returned.
            timeout: seconds to wait at most; None waits as long as the job runs.
            on_progress: called once per finished page with its event, a dict with
                ``file``, ``name``, ``page``, ``status``, ``error``, ``seconds``,
                ``done`` and ``total``.

        Returns:
            The job's final status: ``state`` is ``done`` or ``failed`` (not an exception).

        Raises:
            WaitTimeout: ``timeout`` passed first; the job goes on.
            JobNotFound: no such job, or it was deleted while waiting.

        Example:
            >>> status = client.wait(job.id, timeout=600, on_progress=print)
        """
        waiter = _Waiter(job_id, timeout, on_progress)
        while True:
            if waiter.streaming and self._follow(waiter):
                return self.status(job_id)
            status = self.status(job_id)
            if status.state in ENDED:
                if waiter.missed(status):
                    self._follow(waiter)  # the stream replays finished pages: report the rest
                return status
            time.sleep(waiter.pause())

    def _follow(self, waiter: _Waiter) -> bool:
        """Report page events until ``done`` (True) or until the stream fails (False)."""
        try:
            with closing(self._events(waiter.job_id, waiter.read_timeout())) as events:
                for event in events:
                    if waiter.new(event):
                        waiter.on_progress(event)  # type: ignore[misc]
                    if event["event"] == "done":
                        return True
                    waiter.check()
        except GatewayError as exc:
            waiter.dropped(exc)
        return False

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's events: each page finished so far, the rest as they finish, then
        ``{"event": "done", "state": ...}``.

        Example:
            >>> for event in client.events(job.id):
            ...     print(event["event"], event.get("page"))
        """
        yield from (e for e in self._events(job_id, None) if e["event"] != KEEP_ALIVE)

    def _events(self, job_id: str, read_timeout: float | None) -> Iterator[dict[str, Any]]:
        call = _Call("GET", _job_path(job_id, "/events"), _nothing)
        with self._mapped(), self._http.stream(
            call.method, call.path, timeout=self._limits(read_timeout)
        ) as response:  # fmt: skip
            if not response.is_success:
                response.read()
                self._answer(call, response)
            parser = _EventParser()
            for line in response.iter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event
                    if event["event"] == "done":
                        return
        raise self._stream_ended(job_id)

    def result(self, job_id: str) -> ParseResult:
        """The job's status, Markdown and layout JSON: partial while it runs, complete after."""
        return self._send(_result(job_id, "json", _model(ParseResult)))

    def markdown(self, job_id: str) -> str:
        """The job's Markdown (files separated by ``<!-- name -->`` comments)."""
        return self._send(_result(job_id, "md", _text))

    def zip(self, job_id: str) -> bytes:
        """A zip archive with one ``.md`` and one ``.json`` per file."""
        return self._send(_result(job_id, "zip", _bytes))

    def delete(self, job_id: str) -> None:
        """Cancel the job (pages not yet read are dropped) and remove its files."""
        self._send(_delete(job_id))

    def jobs(self, limit: int = 50) -> list[JobStatus]:
        """This key's jobs, newest first."""
        return self._send(_jobs(limit))

    def page(self, job_id: str, file: int, page: int) -> PageView:
        """One page (``file`` from 0, ``page`` as numbered in the document): pending, or its
        result as JSON, Markdown and sanitized HTML."""
        return self._send(_page(job_id, file, page))

    def page_image(self, job_id: str, file: int, page: int, width: int | None = None) -> bytes:
        """The page as the model saw it (JPEG; the frame its boxes are in), ``width`` wide."""
        return self._send(_page_image(job_id, file, page, width))

    def info(self) -> GatewayInfo:
        """The model, whether it is ready, the queue, whether keys are needed, the limits."""
        return self._send(INFO)

    def health(self) -> dict[str, Any]:
        """The gateway's liveness answer: ``{"status": "alive", "version": ...}``."""
        return self._send(HEALTH)

    def ready(self) -> bool:
        """Whether the gateway can read pages now (its model server is connected)."""
        return self._send(READY)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
