"""Jobs from submission to result: stored first, then read page by page in fair turns.

Every page goes through the same ladder as ``dotsocr ocr`` (Pipeline.read_page). A
restart takes every unfinished job up again at its next unfinished page.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import time
import zipfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotsocr.config import GatewaySettings
from dotsocr.document import DocumentOptions, Page, open_document
from dotsocr.document.selection import as_ranges
from dotsocr.engines.base import reads_text_layer
from dotsocr.engines.openai import normalise_url
from dotsocr.engines.pool import server_urls
from dotsocr.errors import DotsOCRError
from dotsocr.furniture import mark_running_furniture
from dotsocr.gateway.errors import ApiError
from dotsocr.gateway.metrics import GatewayMetrics
from dotsocr.gateway.models import (
    TASKS,
    FileStatus,
    JobLinks,
    JobStatus,
    ParseOptions,
    ParseResult,
    Progress,
    model_task,
)
from dotsocr.gateway.scheduler import FairQueue, LeasedQueue, QueueFull
from dotsocr.gateway.store import ACTIVE, PageKey, StoreError, open_store
from dotsocr.layout import DocumentResult, PageResult, PageStatus
from dotsocr.models import capped_profile
from dotsocr.pipeline import Pipeline, PipelineOptions, read_by, sent_size
from dotsocr.render import render_json, render_markdown
from dotsocr.sending import RenderRequest, Sent, render_pool

log = logging.getLogger("dotsocr.gateway")
CLEAN_EVERY = 300.0  # seconds between sweeps of expired results and overdue jobs
CONNECT_PAUSE = 5.0  # seconds between attempts to open an engine that failed to open


@dataclass
class Upload:
    name: str
    data: bytes


@dataclass
class _Watchers:
    """Listeners of one job's events (server-sent events, waiting sync requests)."""

    queues: list[asyncio.Queue[dict[str, Any]]] = field(default_factory=list)


class JobManager:
    """Owns the queue, the workers, the engine and the job store."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = open_store(settings)
        self.queue: Any = (
            LeasedQueue(self.store, settings.max_queued_pages)  # type: ignore[arg-type]
            if self.store.shared
            else FairQueue(settings.max_queued_pages)
        )
        self.profile = capped_profile(self.settings.model, self.settings.max_pixels)
        self.engine: Any = None
        self._engine_error: str | None = "starting"
        self._stack = AsyncExitStack()
        self._tasks: list[asyncio.Task[Any]] = []  # each lives as long as the gateway
        self._connecting: asyncio.Task[Any] | None = None
        self._webhooks: set[asyncio.Task[Any]] = set()
        self._watchers: dict[str, _Watchers] = {}
        self._wakers: dict[str, set[asyncio.Event]] = {}  # shared jobs: streams to wake
        self._fetched: set[str] = set()  # jobs whose inputs this machine fetched from S3
        self._in_flight = 0
        self._probing = False  # a worker is asking a silent server whether it is back

    # Life.
    async def start(self) -> None:
        for job in self.store.active_jobs():  # taken up again after a restart
            if not self.store.shared:  # a shared queue lives in the database already
                self.queue.add(job["owner"], job["id"], self.store.pending(job["id"]), force=True)
            if not self.store.counts(job["id"])["pending"]:
                self._complete(job["id"])
        self._tasks.append(asyncio.create_task(self._sweeper()))
        if self.store.shared:
            self._tasks.append(asyncio.create_task(self.store.listen(self._notified)))
            self._tasks.append(asyncio.create_task(self.queue.keep_leases()))
        if self.settings.read_pages:
            self._connecting = asyncio.create_task(self._connect())
            self._tasks += [
                asyncio.create_task(self._worker()) for _ in range(self.settings.max_in_flight)
            ]
        else:
            self._engine_error = None  # nothing to connect: workers read the pages

    async def stop(self) -> None:
        if self._webhooks:  # only this process calls them: give them a moment to land
            await asyncio.wait(self._webhooks, timeout=10)
        tasks = [*self._tasks, self._connecting] if self._connecting else self._tasks
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for task, outcome in zip(tasks, outcomes, strict=True):
            if isinstance(outcome, Exception):
                log.error("%s had stopped on %r", task.get_name(), outcome)
        if self.store.shared and self.settings.read_pages:
            with contextlib.suppress(StoreError):  # others take our pages now, not at expiry
                self.store.release()  # type: ignore[attr-defined]
        await self._stack.aclose()
        self.store.close()

    async def drain(self, timeout: float) -> None:
        """Claim no more pages and wait up to ``timeout`` for those being read."""
        if isinstance(self.queue, LeasedQueue):
            self.queue.close()
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def _connect(self) -> None:
        """Open the engine, waiting while the model server is down; pages wait meanwhile."""
        from dotsocr.engines.choice import open_engine

        def waiting(message: str) -> None:  # while starting, and later while it is silent
            if self.engine is None:
                self._engine_error = self._private(message)
            log.warning("%s", message)

        while True:
            attempt = AsyncExitStack()  # what one failed attempt opened is closed with it
            try:
                engine = await open_engine(self.settings.engine_settings(), attempt, waiting)
            except DotsOCRError as exc:  # silent past its timeout: keep waiting, pages queued
                await attempt.aclose()
                self._engine_error = self._private(str(exc))
                log.warning("model server not ready (%s)", exc)
                await asyncio.sleep(CONNECT_PAUSE)
                continue
            self._stack.push_async_callback(attempt.aclose)
            self.engine, self._engine_error = engine, None
            return

    async def _until_answering(self) -> None:
        """Pages stay queued while the engine is not open, or its server is silent and
        pages are already waiting for it; with none waiting, one worker asks the server
        (so that the silence ends when it answers again) instead of taking a page."""
        while self.engine is None or getattr(self.engine, "waiting", None):
            if self.engine is None or self._in_flight or self._probing:
                await asyncio.sleep(0.2)
                continue
            self._probing = True
            try:
                await self.engine.probe()
            except DotsOCRError as exc:
                log.warning("model server not answering (%s)", self._private(str(exc)))
                await asyncio.sleep(CONNECT_PAUSE)
            finally:
                self._probing = False

    def _private(self, text: str) -> str:
        """``text`` without the model server's URLs: it may be internal, and results and
        statuses go to API clients."""
        for url in server_urls(self.settings.server_url or ""):
            for shown in (normalise_url(url), url):
                text = text.replace(f"the server at {shown}", "the model server")
                text = text.replace(shown, "the model server")
        return text

    @property
    def embedded(self) -> bool:
        """Pages go to the embedded CPU engine, not a model server."""
        # a gateway that reads nothing leaves it to workers
        return self.settings.engine_settings().kind == "cpu" and self.settings.read_pages

    @property
    def model(self) -> str:
        if self.embedded:
            return "embedded: text layer, tesseract, PP-OCRv6"
        info = getattr(self.engine, "info", None)
        return info.model if info else self.settings.served_model or self.profile.name

    @property
    def tasks(self) -> list[str]:
        """The tasks a request may ask: the common three, then the model's own (grounding
        needs a box the API does not take)."""
        if self.embedded:  # the CPU engine reads text and layout, nothing model-specific
            return list(TASKS)
        own = [t for t in self.profile.tasks if t not in TASKS.values() and t != "grounding"]
        return [*TASKS, *own]

    @property
    def reading(self) -> int:
        return self._in_flight

    @property
    def ready(self) -> bool:
        """Every task alive, and the engine open and answering when this process reads
        pages (while its server is silent, ``engine_error`` says why not)."""
        alive = all(not t.done() for t in self._tasks)
        if not self.settings.read_pages:
            return alive
        return alive and self.engine is not None and not getattr(self.engine, "waiting", None)

    @property
    def engine_error(self) -> str | None:
        """Why pages cannot be read now, without the server's URL; None when they can."""
        waiting = getattr(self.engine, "waiting", None)
        return self._private(waiting) if waiting else self._engine_error

    # Submission.
    async def submit(
        self, owner: str, uploads: list[Upload], options: ParseOptions, webhook: str | None
    ) -> str:
        if options.task not in self.tasks:
            raise ApiError(
                422, "invalid",
                f"task: {self.profile.name} has no task {options.task!r}: choose one of "
                f"{', '.join(self.tasks)}",
            )  # fmt: skip
        job_id = self.store.new_job_id()
        files: list[tuple[str, int, str | None]] = []
        numbers: list[list[int]] = []
        try:
            for idx, upload in enumerate(uploads):
                await asyncio.to_thread(self.store.save_input, job_id, idx, upload.data)
                selected, error = await asyncio.to_thread(
                    self._select, job_id, idx, upload, options
                )
                files.append((upload.name, len(selected), error))
                numbers.append(selected)
        except BaseException:  # a full disk, a client gone: leave no inputs without a job
            self.store.delete(job_id)
            raise
        total = sum(pages for _, pages, _ in files)
        if total > self.settings.max_pages_per_job:
            self.store.delete(job_id)
            raise ApiError(
                413, "too_many_pages",
                f"{total} pages: the limit is {self.settings.max_pages_per_job} per job; "
                "split the documents or select pages",
            )  # fmt: skip
        if total > self.queue.limit:  # waiting would never help
            self.store.delete(job_id)
            raise ApiError(
                413, "too_many_pages",
                f"{total} pages: more than the queue holds ({self.queue.limit}); split the "
                "documents or select pages",
            )  # fmt: skip
        record = {**options.model_dump(), "page_numbers": numbers}
        self._fetched.add(job_id)  # _select read the inputs: a copy here if they are in S3
        try:
            self.store.create(job_id, owner, record, files, webhook)
        except BaseException:  # the database is down: leave no inputs behind
            with contextlib.suppress(StoreError):
                self.store.delete(job_id)
            raise
        try:
            self.queue.add(owner, job_id, self.store.pending(job_id))
        except QueueFull:
            self.store.delete(job_id)
            raise ApiError(
                503, "queue_full",
                f"the queue is full ({len(self.queue)} pages waiting): try again later",
                retry_after=30,
            ) from None  # fmt: skip
        self.metrics.jobs.labels("queued").inc()
        self.metrics.queue_depth.set(len(self.queue))
        if not total:
            self._complete(job_id)
        return job_id

    def _select(
        self, job_id: str, idx: int, upload: Upload, options: ParseOptions
    ) -> tuple[list[int], str | None]:
        """The page numbers a file yields, or the one-line reason it cannot be read."""
        try:
            with open_document(
                self.store.input_file(job_id, idx), self._document_options(options, None),
                name=upload.name,
            ) as document:  # fmt: skip
                return [i + 1 for i in document.selected], None
        except DotsOCRError as exc:
            return [], str(exc)

    def _document_options(self, options: ParseOptions, number: int | None) -> DocumentOptions:
        return DocumentOptions(
            pages=str(number) if number else options.pages,
            dpi=options.dpi,
            max_image_pixels=self.settings.max_image_pixels,
        ).within(self.profile.max_pixels, reads_text_layer(self.engine))

    # Work.
    async def _worker(self) -> None:
        while True:
            await self._until_answering()
            key = await self.queue.get()
            self.metrics.queue_depth.set(len(self.queue))
            self._in_flight += 1
            self.metrics.in_flight.set(self._in_flight)
            settled = False  # recorded, or refused because another process settled it
            try:
                await self._read(key)
                settled = True
            except StoreError as exc:  # the page stays unfinished: read again once it is back
                log.warning("page %s put back: %s", key, exc)
            except Exception as exc:  # a bug of ours, or the disk: the page fails, not the job
                log.exception("page %s failed unexpectedly", key)
                settled = await self._record_failure(key, exc)
            finally:
                await self.queue.done(key, settled)
                self._in_flight -= 1
                self.metrics.in_flight.set(self._in_flight)

    async def _record_failure(self, key: PageKey, exc: Exception) -> bool:
        """Record the page as failed with the reason; False (the page goes back to the
        queue, logged) when even that cannot be done."""
        try:
            job = self.store.job(key.job_id)
            number = stored_options(job)[1][key.file_idx][key.page_idx] if job else 0
            failed = _failed(number, f"unexpected error ({_short(exc)})")
            if await self._keep(key, failed):
                name = self.store.files(key.job_id)[key.file_idx]["name"]
                await self._page_finished(key, name, number, failed)
        except Exception:
            log.exception("page %s: its failure could not be recorded; it goes back", key)
            return False
        return True

    async def _db(self, call: Any, *args: Any) -> Any:
        """A job-store call on a page's way: in a thread for a shared database (a network
        away), inline for SQLite, without yielding to the loop (see ``_page_finished``)."""
        if self.store.shared:
            return await asyncio.to_thread(call, *args)
        return call(*args)

    async def _read(self, key: PageKey) -> None:
        job = await self._db(self.store.job, key.job_id)
        if job is None or job["state"] not in ACTIVE:
            return
        await self._db(self.store.start, key.job_id)
        parse, numbers = stored_options(job)
        number = numbers[key.file_idx][key.page_idx]
        name = (await self._db(self.store.files, key.job_id))[key.file_idx]["name"]
        result = await self._page_result(key, name, number, parse)
        if await self._keep(key, result):
            await self._page_finished(key, name, number, result)

    async def _keep(self, key: PageKey, result: PageResult) -> bool:
        """Save the result file off the loop, then mark the page done on it."""
        if not await asyncio.to_thread(self.store.save_result, key, result):
            return False
        return await self._db(self.store.mark_done, key, result)

    async def _page_finished(
        self, key: PageKey, name: str, number: int, result: PageResult
    ) -> None:
        """Metrics, the page's event and, for the last page, the job's end. With SQLite
        nothing here or since marking the page done yields to the loop, so a page's event
        always comes before ``done``; shared jobs' events come from the database."""
        self.metrics.pages.labels(result.status.value).inc()
        if result.seconds:
            self.metrics.page_seconds.observe(result.seconds)
        if result.status is PageStatus.FAILED and result.error and "server" in result.error:
            self.metrics.engine_errors.inc()
        counts = await self._db(self.store.counts, key.job_id)
        done = counts["done"] + counts["failed"]
        event = _page_event(key, name, number, result, done, sum(counts.values()))
        self._publish(key.job_id, event)
        if not counts["pending"]:
            self._complete(key.job_id)

    async def _page_result(
        self, key: PageKey, name: str, number: int, options: ParseOptions
    ) -> PageResult:
        """The page's result, failed when it cannot be read: never an exception, since a
        page that raises would stay pending and its job would never end."""
        try:
            page, sent = await self._rendered(key, name, number, options)
        except DotsOCRError as exc:
            return _failed(number, str(exc))
        except Exception as exc:  # a bug below us: this page fails, the job goes on
            log.exception("page %d of %r (job %s) could not be rendered", number, name, key.job_id)
            return _failed(number, f"unexpected error rendering the page ({_short(exc)})")
        pipeline = Pipeline(
            self.engine, self.profile,
            PipelineOptions(
                task=model_task(options.task),
                keep_images=False,
                image_format=self.settings.image_format,
            ),
        )  # fmt: skip
        result = await pipeline.read_page(page, sent)  # never raises: a failed page is data
        if result.error:
            result.error = self._private(result.error)
        result.notes = [self._private(note) for note in result.notes]
        return result

    async def _rendered(
        self, key: PageKey, name: str, number: int, options: ParseOptions
    ) -> tuple[Page, Sent | None]:
        """The page to read: rendered and prepared by a worker process where there are
        cores for them (``sending.render_pool``), else rendered here."""
        pool = render_pool() if sent_size(self.engine, self.profile) else None
        if pool is None:
            page = await asyncio.to_thread(
                self.render_page, key.job_id, key.file_idx, name, number, options
            )
            return page, None
        path = await asyncio.to_thread(self._input_file, key.job_id, key.file_idx)
        request = RenderRequest(
            path, name, self._document_options(options, None), number - 1, self.profile,
            self.settings.image_format, encode=not self.engine.reads_pixels,
            pixels=self.engine.reads_pixels,
        )  # fmt: skip
        page, sent = await pool.render(request)
        if not isinstance(page, Page):
            raise DotsOCRError(str(page.error))
        return page, sent

    def _input_file(self, job_id: str, file_idx: int) -> Path:
        """A stored input's path (blocking: fetched from S3 the first time)."""
        path = self.store.input_file(job_id, file_idx)
        self._fetched.add(job_id)
        return path

    def render_page(
        self,
        job_id: str,
        file_idx: int,
        name: str,
        number: int,
        options: ParseOptions,
        for_model: bool = True,
    ) -> Page:
        """Page ``number`` of a stored input, as the model sees it (blocking: PDFium, and the
        input fetched from S3 the first time)."""
        path = self._input_file(job_id, file_idx)
        document = self._document_options(options, number)
        sized = sent_size(self.engine, self.profile) if for_model else None
        with open_document(path, document, name=name, sent_size=sized) as doc:
            page = next(doc.pages())
        if not isinstance(page, Page):
            raise DotsOCRError(str(page.error))
        return page

    def _complete(self, job_id: str) -> None:
        job = self.store.job(job_id)
        if job is None or job["state"] not in ACTIVE:
            return
        counts = self.store.counts(job_id)
        files = self.store.files(job_id)
        failed = counts["done"] == 0 and (counts["failed"] > 0 or all(f["error"] for f in files))
        state = "failed" if failed else "done"
        error = "every page failed" if failed and counts["failed"] else None
        if failed and not counts["failed"]:
            error = "no file could be read"
        self._end(job, state, error)

    def _end(self, job: dict[str, Any], state: str, error: str | None) -> None:
        """Record a job's end, then tell its watchers and its webhook: once, even when
        several processes see its last page."""
        if not self.store.finish(job["id"], state, error):
            return
        self._finish_metrics(job["id"], state)
        self._publish(job["id"], {"event": "done", "state": state})
        if job["webhook"]:
            task = asyncio.create_task(self._call_webhook(job["id"], job["webhook"]))
            self._webhooks.add(task)  # held until done, apart from the workers /ready watches
            task.add_done_callback(self._webhooks.discard)

    def _finish_metrics(self, job_id: str, state: str) -> None:
        job = self.store.job(job_id)
        if job is None:
            return
        self.metrics.jobs.labels(state).inc()
        self.metrics.job_tokens.labels("in").observe(job["prompt_tokens"])
        self.metrics.job_tokens.labels("out").observe(job["completion_tokens"])

    async def _call_webhook(self, job_id: str, url: str) -> None:
        from dotsocr.gateway.webhook import deliver

        status = self.status(job_id)
        if status is not None:
            await deliver(url, status.model_dump(mode="json"), self.settings)

    # Events.
    def _publish(self, job_id: str, event: dict[str, Any]) -> None:
        for queue in self._watchers.get(job_id, _Watchers()).queues:
            queue.put_nowait(event)

    def _notified(self, message: dict[str, str]) -> None:
        """A note from the shared database: new work wakes our takers, a finished page or
        job wakes that job's streams; a reconnection wakes all (notes may have been lost)."""
        if "work" in message or "connected" in message:
            self.queue.wake()
        job_id = message.get("page") or message.get("done")
        streams = self._wakers.values() if "connected" in message else [
            self._wakers.get(job_id or "", set())
        ]  # fmt: skip
        for wakers in streams:
            for wake in wakers:
                wake.set()

    async def events(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every page finished so far, then the rest as they finish, then ``done``."""
        if self.store.shared:
            async for event in self._shared_events(job_id):
                yield event
            return
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._watchers.setdefault(job_id, _Watchers()).queues.append(queue)
        try:
            job = self.store.job(job_id)
            if job is None:
                return
            replay = (await asyncio.to_thread(self._replay, job))[0]  # every result so far
            for event in replay:
                yield event
            seen = {(event["file"], event["page"]) for event in replay}
            if job["state"] not in ("queued", "running"):
                yield {"event": "done", "state": job["state"]}
                return
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), self.settings.event_keep_alive)
                except TimeoutError:
                    yield {"event": "keep-alive"}  # proxies cut streams that stay silent
                    continue
                if event["event"] == "page" and (event["file"], event["page"]) in seen:
                    continue
                yield event
                if event["event"] == "done":
                    return
        finally:
            watchers = self._watchers.get(job_id)
            if watchers:
                watchers.queues.remove(queue)
                if not watchers.queues:
                    del self._watchers[job_id]

    async def _shared_events(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """``events`` of a job that any process may be reading: the pages finished since
        the last one sent, each time the database announces one (or at each keep-alive,
        in case an announcement was lost)."""
        wake = asyncio.Event()
        self._wakers.setdefault(job_id, set()).add(wake)
        after = sent = 0
        known = False
        try:
            while True:
                wake.clear()
                job = await self._db(self.store.job, job_id)  # first: if it ended, all did
                if job is None:  # deleted, by a user or the retention sweep
                    if known:
                        yield {"event": "done", "state": "cancelled"}
                    return
                known = True
                new, after = await asyncio.to_thread(self._replay, job, after, sent)
                for event in new:
                    yield event
                sent += len(new)
                if job["state"] not in ACTIVE:
                    yield {"event": "done", "state": job["state"]}
                    return
                try:
                    await asyncio.wait_for(wake.wait(), self.settings.event_keep_alive)
                except TimeoutError:
                    yield {"event": "keep-alive"}
        finally:
            wakers = self._wakers.get(job_id, set())
            wakers.discard(wake)
            if not wakers:
                self._wakers.pop(job_id, None)

    def _replay(
        self, job: dict[str, Any], after: int = 0, sent: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """The events of a job's pages finished so far, in the order they finished; for a
        shared job only those after the one numbered ``after`` (and that number now)."""
        numbers = stored_options(job)[1]
        files = self.store.files(job["id"])
        total = sum(f["pages"] for f in files)
        if self.store.shared:
            rows = self.store.finished_after(job["id"], after)  # type: ignore[attr-defined]
        else:
            rows = [(key, state, 0) for key, state in self.store.finished_pages(job["id"])]
        events = []
        for done, (key, state, seq) in enumerate(rows, start=sent + 1):
            after = seq
            number = numbers[key.file_idx][key.page_idx]
            result = self.store.result(key) or _failed(number, f"page {state}, result lost")
            name = files[key.file_idx]["name"]
            events.append(_page_event(key, name, number, result, done, total))
        return events, after

    async def wait(self, job_id: str, timeout: float) -> bool:
        """Until the job ends; False when ``timeout`` passed first."""

        async def until_done() -> None:
            async for event in self.events(job_id):
                if event["event"] == "done":
                    return

        try:
            await asyncio.wait_for(until_done(), timeout)
        except TimeoutError:
            return False
        return True

    # Reading.
    def status(self, job_id: str) -> JobStatus | None:
        job = self.store.job(job_id)
        if job is None:
            return None
        counts = self.store.counts(job_id)
        numbers = stored_options(job)[1]
        files = [
            FileStatus(
                index=f["idx"],
                name=f["name"],
                pages=f["pages"],
                selected=as_ranges(numbers[f["idx"]]),
                error=f["error"],
            )
            for f in self.store.files(job_id)
        ]
        end = job["finished"] or time.time()
        return JobStatus(
            id=job_id,
            state=job["state"],
            queue_position=self.queue.position(job_id),
            pages=Progress(
                total=sum(counts.values()),
                done=counts["done"],
                failed=counts["failed"],
                pending=counts["pending"],
            ),
            files=files,
            created=job["created"],
            started=job["started"],
            finished=job["finished"],
            seconds=round(end - job["started"], 3) if job["started"] else None,
            prompt_tokens=job["prompt_tokens"],
            completion_tokens=job["completion_tokens"],
            error=job["error"],
            links=JobLinks(
                self=f"/v1/jobs/{job_id}",
                events=f"/v1/jobs/{job_id}/events",
                result=f"/v1/jobs/{job_id}/result",
            ),
        )

    def owner(self, job_id: str) -> str | None:
        job = self.store.job(job_id)
        return job["owner"] if job else None

    def documents(self, job_id: str) -> list[DocumentResult]:
        """The results so far, one document per file, pages in order."""
        job = self.store.job(job_id)
        if job is None:
            return []
        options = stored_options(job)[0]
        out = []
        for f in self.store.files(job_id):
            pages = [
                result
                for page_idx in range(f["pages"])
                if (result := self.store.result(PageKey(job_id, f["idx"], page_idx)))
            ]
            mark_running_furniture(pages)
            out.append(
                DocumentResult(
                    source=f["name"],
                    model=read_by(pages),
                    profile=self.profile.name,
                    task=model_task(options.task),
                    pages=pages,
                )
            )
        return out

    def render(self, job_id: str, fmt: str) -> Any:
        """The results so far as ``md`` text, ``zip`` bytes or a ParseResult, from one
        reading of the page files. Slow for big jobs: call it off the event loop."""
        job = self.store.job(job_id)
        if job is None:
            return None
        keep = stored_options(job)[0].headers_footers
        documents = self.documents(job_id)
        markdown = [
            render_markdown(d, include_furniture=keep, pictures="omit").text for d in documents
        ]
        if fmt == "zip":
            return self._zip(documents, markdown)
        text = (
            markdown[0]
            if len(documents) == 1
            else "\n\n".join(
                f"<!-- {d.source} -->\n\n{m}" for d, m in zip(documents, markdown, strict=True)
            )
        )
        if fmt == "md":
            return text
        layout = []
        for doc, file in zip(documents, self.store.files(job_id), strict=True):
            data = json.loads(render_json(doc, indent=None))
            if file["error"]:  # a file that could not be read says why
                data["error"] = file["error"]
            layout.append(data)
        return ParseResult(job=self.status(job_id), markdown=text, documents=layout)

    @staticmethod
    def _zip(documents: list[DocumentResult], markdown: list[str]) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for idx, (doc, text) in enumerate(zip(documents, markdown, strict=True)):
                stem = f"{idx:02d}-{_safe(doc.source)}"
                archive.writestr(f"{stem}.md", text)
                archive.writestr(f"{stem}.json", render_json(doc))
        return buffer.getvalue()

    # Ending.
    async def cancel(self, job_id: str) -> None:
        """Stop a job's waiting pages and forget it; pages in flight finish unseen."""
        self.queue.remove(job_id)
        self.metrics.queue_depth.set(len(self.queue))
        job = self.store.job(job_id)
        if job and job["state"] in ACTIVE and self.store.finish(job_id, "cancelled"):
            self.metrics.jobs.labels("cancelled").inc()
            self._publish(job_id, {"event": "done", "state": "cancelled"})
        self.store.delete(job_id)

    async def _sweeper(self) -> None:
        """Fail jobs past their time limit, end those whose last reader died between its
        last page and the job's end, and remove results past their retention time."""
        while True:
            try:
                self._sweep()
            except StoreError as exc:
                log.warning("sweep skipped: %s", exc)
            except Exception:  # the storage, a bug: the next sweep tries again
                log.exception("sweep failed")
            retention = self.settings.retention_hours * 3600
            await asyncio.sleep(min(CLEAN_EVERY, self.settings.job_timeout / 4, retention / 4))

    def _sweep(self) -> None:
        now = time.time()
        active = self.store.active_jobs()
        for job in active:
            if job["started"] and now - job["started"] > self.settings.job_timeout:
                self.queue.remove(job["id"])
                limit = f"over the time limit of {self.settings.job_timeout:g} s"
                self._end(job, "failed", limit)
            elif self.store.shared and not self.store.counts(job["id"])["pending"]:
                self._complete(job["id"])
        for job_id in self.store.expired(now - self.settings.retention_hours * 3600):
            self.store.delete(job_id)
        for job_id in self._fetched - {job["id"] for job in active}:
            self.store.forget_inputs(job_id)
            self._fetched.discard(job_id)
        self.metrics.queue_depth.set(len(self.queue))


def stored_options(job: dict[str, Any]) -> tuple[ParseOptions, list[list[int]]]:
    """A stored job's options, and for each file the page numbers it reads."""
    options = json.loads(job["options"])
    numbers = options.pop("page_numbers")
    return ParseOptions(**options), numbers


def _page_event(
    key: PageKey, name: str, number: int, result: PageResult, done: int, total: int
) -> dict[str, Any]:
    """What the event stream says of a finished page."""
    return {
        "event": "page", "file": key.file_idx, "name": name, "page": number,
        "status": result.status.value, "error": result.error, "seconds": result.seconds,
        "done": done, "total": total,
    }  # fmt: skip


def _failed(number: int, error: str, page: Page | None = None) -> PageResult:
    return PageResult(
        index=number - 1, width=page.width if page else 0, height=page.height if page else 0,
        status=PageStatus.FAILED, error=error,
    )  # fmt: skip


def _short(exc: Exception) -> str:
    """One line naming an unexpected exception, for a page's error."""
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _safe(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.rsplit("/", 1)[-1]).strip("._")
    return (stem or "document")[:80]
