"""Documents -> pages -> engine -> results, with bounded memory and a per-page ladder.

Pages of every document share one in-flight limit; rendering runs ahead of the engine
in a bounded window; each page climbs a ladder (parse, repair, retry warmer, fall back
to the plain-text prompt, fail with the raw answer kept) and every step is recorded on
its PageResult, with what read it. Any exception while reading a page becomes a failed
page with the reason. The pipeline yields events and knows nothing of terminals or files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from dotsocr.document import Document, DocumentOptions, Page, PageFailure, SentSize, open_document
from dotsocr.document.encoding import ImageFormat, decode_data_url
from dotsocr.document.images import resized
from dotsocr.document.ink import has_ink
from dotsocr.engines.base import Engine, EngineAnswer, reads_text_layer
from dotsocr.errors import DotsOCRError, EngineError, PageTooExtreme
from dotsocr.furniture import mark_running_furniture
from dotsocr.host import usable_cores
from dotsocr.layout import BBox, Cell, DocumentResult, PageResult, PageStatus, Reading
from dotsocr.models import ModelProfile, estimate_text_tokens
from dotsocr.models.base import ChatRequest, Geometry, PreparedPage
from dotsocr.sending import (
    RenderPool,
    RenderRequest,
    Sent,
    prepare_to_send,
    render_pool,
)

NO_TEXT = (
    "the page has ink but no text was read: look at it (a picture of text, a page turned "
    "sideways, or an answer lost)"
)


@dataclass(frozen=True)
class Source:
    """One input: a path, or bytes with a name; ``kept``: its pages read by an earlier run,
    by index, which are not read again."""

    name: str
    data: Path | bytes
    kept: Mapping[int, PageResult] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class PipelineOptions:
    task: str = "layout_all"
    box: BBox | None = None  # grounding box, in page pixels
    concurrency: int = 64  # pages in flight to the engine
    temperatures: tuple[float, ...] = (0.1, 0.3, 0.6)  # one attempt each, warmer each time
    fallback_task: str | None = "ocr"  # plain text when layout answers stay unusable
    document: DocumentOptions = field(default_factory=DocumentOptions)
    render_ahead: int = 2  # pages rendered and waiting to be prepared: memory stays flat
    keep_images: bool = True  # hand page images on with PageDone (for crops and drawings)
    image_format: ImageFormat = "png"  # how pages are sent to a server (document.encoding)


@dataclass
class DocumentStarted:
    key: int  # the source's position in the input: names may repeat
    source: str
    pages: int  # to read now
    kept: int = 0  # read by an earlier run


@dataclass
class PageDone:
    key: int
    source: str
    result: PageResult
    image: Image.Image | None  # the page, for outputs that crop or draw on it


@dataclass
class DocumentDone:
    key: int
    result: DocumentResult
    error: str | None = None  # the document could not be opened at all


Event = DocumentStarted | PageDone | DocumentDone


@dataclass
class _Work:
    key: int  # the source's position: names may repeat
    source: str
    page: Page | None
    index: int
    error: str | None = None  # why the page could not be rendered
    sent: Sent | None = None  # prepared by a worker process


@dataclass
class _Open:
    """A document whose pages are being read."""

    source: str
    todo: int  # pages still to read
    pages: list[PageResult]


@dataclass
class _Plan:
    """A page prepared once for every step of its ladder."""

    prepared: PreparedPage
    max_tokens: int | None
    text_tokens: dict[str, int]  # the server's count of each task's prompt, when it counts
    ink: bool  # the page shows marks, so a result with no text is suspect


class _Misread(Exception):
    """The answer cannot be placed on the page (the server resized it beyond explaining)."""


def sent_size(engine: Engine, profile: ModelProfile) -> SentSize | None:
    """The model's sizing, for pages drawn straight at the size they are sent at.

    Only for profiles sized by smart_resize, which keeps any size it gave: ``prepare``
    then has nothing left to do, and the tokens are those of the page at its frame size.
    Other families size pages their own way, and the embedded engine reads any size: they
    get the frame.
    """
    if getattr(engine, "reads_any_size", False):
        return None
    return profile.model_size if getattr(profile, "server_smart_resizes", False) else None


def unexpected(exc: BaseException, doing: str) -> str:
    """The reason a page failed on an exception of ours (a bug): enough to report it."""
    return f"unexpected {type(exc).__name__} while {doing}: {exc} (please report this bug)"


def read_by(pages: list[PageResult]) -> str | None:
    """What read the pages: the models (or engines) their readings name, in order."""
    readers = [p.reading.model or p.reading.engine for p in pages if p.reading]
    return ", ".join(dict.fromkeys(readers)) or None


class Pipeline:
    """Run documents through an engine.

    Example:
        >>> async with CPUEngine() as engine:
        ...     async for event in Pipeline(engine, profile).run(sources):
        ...         ...
    """

    def __init__(
        self, engine: Engine, profile: ModelProfile, options: PipelineOptions | None = None
    ) -> None:
        self.engine = engine
        self.profile = profile
        self.options = options or PipelineOptions()
        # Pages rendered and not yet prepared (sized and encoded): those waiting, and one
        # being prepared on each core. Held from before a page is rendered until then.
        self._window_size = self.options.render_ahead + usable_cores()
        self._window = asyncio.Semaphore(self._window_size)
        self._in_window: set[int] = set()  # id() of the pages holding a place
        self._pool: RenderPool | None = None  # worker processes that render, in run()

    async def run(self, sources: Iterable[Source]) -> AsyncIterator[Event]:
        """Yield events as pages finish; every source ends with one DocumentDone."""
        self._pool = render_pool() if sent_size(self.engine, self.profile) else None
        # Finished pages wait here for the caller, holding their images: as few as the
        # window's, so that a slow consumer (writing outputs) holds the workers back.
        events: asyncio.Queue[Event | None] = asyncio.Queue(self._window_size)
        self._events = events
        work: asyncio.Queue[_Work | None] = asyncio.Queue(maxsize=self.options.render_ahead)
        documents: dict[int, _Open] = {}
        workers = [
            asyncio.create_task(self._worker(work, events, documents))
            for _ in range(self.options.concurrency)
        ]
        producer = asyncio.create_task(self._produce(sources, work, events, documents))
        tasks = (producer, *workers)
        try:
            running = len(workers)
            while running:
                event = await events.get()
                if event is None:
                    running -= 1
                    continue
                yield event
        finally:
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        crashed = [o for o in outcomes if isinstance(o, Exception)]
        if crashed:  # every page's failure is caught below: this is a bug in the loop itself
            raise DotsOCRError(unexpected(crashed[0], "running the pipeline")) from crashed[0]

    async def _produce(self, sources, work, events, documents: dict[int, _Open]) -> None:
        """Open documents and render their pages (here one at a time, or several at once
        by worker processes), at most a window ahead of their preparation; then tell each
        worker there is no more (not when cancelled: the workers are gone too)."""
        try:
            await self._produce_all(sources, work, events, documents)
        finally:
            if not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                for _ in range(self.options.concurrency):
                    await work.put(None)

    async def _produce_all(self, sources, work, events, documents: dict[int, _Open]) -> None:
        for key, source in enumerate(sources):
            try:
                document = await asyncio.to_thread(self._open, source)
            except Exception as exc:  # a bug of ours must not cost the other documents
                message = (
                    str(exc)
                    if isinstance(exc, DotsOCRError)
                    else f"{source.name}: {unexpected(exc, 'opening it')}"
                )
                await events.put(DocumentDone(key, DocumentResult(source=source.name), message))
                continue
            with document:
                await self._render(key, source, document, work, events, documents)

    async def _render(self, key, source: Source, document: Document, work, events, documents):
        """Queue the document's pages not read before; a renderer that breaks down fails
        the pages it did not give."""
        selected = set(document.selected)
        kept = {i: r for i, r in source.kept.items() if i in selected}
        todo = [i for i in document.selected if i not in kept]
        documents[key] = _Open(source.name, len(todo), list(kept.values()))
        await events.put(DocumentStarted(key, source.name, len(todo), len(kept)))
        if not todo:
            await events.put(self._finished(key, documents))
            return
        if self._pool is not None and isinstance(source.data, Path):
            await self._render_in(self._pool, key, source, document, todo, work)
            return
        pages = document.pages(skip=kept)
        for position in range(len(todo)):
            await self._window.acquire()
            try:
                page = await asyncio.to_thread(next, pages, None)
            except Exception as exc:  # the renderer broke down: no page comes after this
                page = exc
            if isinstance(page, Page):
                self._in_window.add(id(page))
            else:  # nothing to prepare
                self._window.release()
            if page is None or isinstance(page, Exception):
                why = unexpected(page, "rendering it") if page else "the document gave no such page"
                for lost in todo[position:]:
                    error = f"{source.name}: page {lost + 1}: {why}"
                    await work.put(_Work(key, source.name, None, lost, error))
                return
            if isinstance(page, Page):
                await work.put(_Work(key, source.name, page, page.index))
            else:
                await work.put(_Work(key, source.name, None, page.index, str(page.error)))

    async def _render_in(self, pool: RenderPool, key, source, document, todo, work) -> None:
        """The pages rendered and prepared by worker processes, several at once (as many
        as the window holds), and queued in order."""
        reads_pixels = self.engine.reads_pixels
        request = functools.partial(
            RenderRequest, source.data, source.name, document.options,
            profile=self.profile, image_format=self.options.image_format,
            encode=not reads_pixels, pixels=reads_pixels or self.options.keep_images,
        )  # fmt: skip
        pending: deque[tuple[int, asyncio.Task]] = deque()

        async def queue_oldest() -> None:
            index, rendering = pending.popleft()
            try:
                page, sent = await rendering
            except Exception as exc:  # a bug of ours: this page fails
                page, sent = exc, None
            if isinstance(page, Page):
                self._in_window.add(id(page))
                await work.put(_Work(key, source.name, page, index, sent=sent))
                return
            self._window.release()  # nothing to prepare
            if isinstance(page, PageFailure):
                error = str(page.error)
            else:
                error = f"{source.name}: page {index + 1}: {unexpected(page, 'rendering it')}"
            await work.put(_Work(key, source.name, None, index, error))

        try:
            for index in todo:
                while pending and (self._window.locked() or pending[0][1].done()):
                    await queue_oldest()
                await self._window.acquire()
                rendering = asyncio.ensure_future(pool.render(request(index=index)))
                pending.append((index, rendering))
            while pending:
                await queue_oldest()
        finally:
            for _, rendering in pending:  # cancelled: the workers need not draw them
                rendering.cancel()

    def _open(self, source: Source) -> Document:
        options = self.options.document.within(
            self.profile.max_pixels, reads_text_layer(self.engine)
        )
        sized = sent_size(self.engine, self.profile)
        return open_document(source.data, options, name=source.name, sent_size=sized)

    async def _worker(self, work, events, documents: dict[int, _Open]) -> None:
        try:
            while (item := await work.get()) is not None:
                result = await self._page(item)
                keep = item.page is not None and self.options.keep_images
                image = item.page.image if keep else None
                await events.put(PageDone(item.key, item.source, result, image))
                item.page = None  # let the image go as soon as nothing needs it
                document = documents[item.key]
                document.pages.append(result)
                document.todo -= 1
                if not document.todo:
                    await events.put(self._finished(item.key, documents))
        finally:  # this worker is done; when cancelled, nobody reads events any more
            if not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                await events.put(None)

    def _finished(self, key: int, documents: dict[int, _Open]) -> DocumentDone:
        document = documents.pop(key)
        pages = sorted(document.pages, key=lambda r: r.index)
        mark_running_furniture(pages)
        result = DocumentResult(
            source=document.source,
            model=read_by(pages),
            profile=self.profile.name,
            task=self.options.task,
            pages=pages,
        )
        return DocumentDone(key, result)

    async def read_page(self, page: Page, sent: Sent | None = None) -> PageResult:
        """One page through the ladder, timed: for callers that schedule pages themselves
        (``sent``: the page as a worker process prepared it, ``sending.RenderPool``)."""
        return await self._page(_Work(0, "", page, page.index, sent=sent))

    async def _page(self, item: _Work) -> PageResult:
        """The page's result; never an exception."""
        if item.page is None:
            return PageResult(
                index=item.index, width=0, height=0, status=PageStatus.FAILED,
                error=item.error, notes=["the page could not be rendered"],
            )  # fmt: skip
        started = time.perf_counter()
        try:
            result = await self._ladder(item.page, item.sent)
        except Exception as exc:  # a bug of ours: this page fails with the reason, not the run
            page = item.page
            result = PageResult(
                index=page.index, width=page.width, height=page.height, dpi=page.dpi,
                status=PageStatus.FAILED, error=unexpected(exc, "reading the page"),
            )  # fmt: skip
        result.seconds = round(time.perf_counter() - started, 3)
        return result

    def _steps(self) -> tuple[str, list[tuple[str, float]], list[str]]:
        """The main task, the ladder's (task, temperature) steps, and notes about them."""
        main = self.options.task
        notes: list[str] = []
        if main not in self.profile.tasks:  # e.g. layout asked of a model that gives no boxes
            fallback_main = self.profile.default_task
            notes.append(f"{self.profile.name} has no {main} task: asked {fallback_main}")
            main = fallback_main
        own = getattr(self.profile, "task_temperatures", {}).get(main)  # e.g. SVG loops cold
        steps = [(main, t if own is None else own) for t in self.options.temperatures]
        fallback = self.options.fallback_task
        if fallback and fallback != main and fallback in self.profile.tasks:
            steps.append((fallback, self.profile.temperature))
        return main, steps, notes

    async def _ladder(self, page: Page, sent: Sent | None = None) -> PageResult:
        """Parse, repair, retry warmer, fall back to plain text, or fail keeping the answer."""
        main, steps, notes = self._steps()
        notes = [*page.notes, *notes]  # what rendering did: repaired, rendered smaller
        base = {"index": page.index, "width": page.width, "height": page.height, "dpi": page.dpi}
        tokens = [0, 0]
        try:
            plan = await self._prepare(page, {task for task, _ in steps}, sent)
        except (EngineError, PageTooExtreme) as exc:
            return PageResult(**base, status=PageStatus.FAILED, error=str(exc), notes=notes)
        prepared = plan.prepared
        if not self.options.keep_images and prepared.image is None:
            page.image = None  # type: ignore[assignment]  # all that is sent is encoded
        answer: EngineAnswer | None = None
        reading: Reading | None = None
        for attempt, (task, temperature) in enumerate(steps, start=1):
            box = self.options.box if task == "grounding" else None
            request = self.profile.build_request(
                prepared, task, box=box, temperature=temperature, max_tokens=plan.max_tokens
            )
            try:
                answer = await self.engine.infer(prepared, request)
            except EngineError as exc:
                return PageResult(**base, status=PageStatus.FAILED, error=str(exc),
                                  attempts=attempt, notes=notes, reading=reading,
                                  raw=answer.text if answer else None)  # fmt: skip
            tokens[0] += answer.prompt_tokens or 0
            tokens[1] += answer.completion_tokens or 0
            counts = {"prompt_tokens": tokens[0] or None, "completion_tokens": tokens[1] or None}
            warnings: list[str] = []
            try:
                geometry, served = self._served_geometry(plan, answer, task, warnings)
            except _Misread as exc:
                reading = self._reading(answer, request, prepared, None)
                return PageResult(**base, status=PageStatus.FAILED, error=str(exc), notes=notes,
                                  attempts=attempt, raw=answer.text, reading=reading,
                                  **counts)  # fmt: skip
            reading = self._reading(answer, request, prepared, served)
            if "fallback" in answer.details:
                notes.append(f"read by the embedded engine: {answer.details['fallback']}")
            try:
                parsed = self.profile.parse(
                    answer.text, geometry, task, finish_reason=answer.finish_reason, box=box
                )
            except Exception as exc:  # a parser bug: the answer is kept for the report
                return PageResult(**base, status=PageStatus.FAILED, notes=notes, reading=reading,
                                  error=unexpected(exc, f"parsing the {self.profile.name} answer"),
                                  attempts=attempt, raw=answer.text, **counts)  # fmt: skip
            if task == main:  # cells lost to a broken answer are no reading of the page
                usable = parsed.status is not PageStatus.FALLBACK and (
                    bool(parsed.cells) or parsed.status is PageStatus.OK
                )
            else:
                usable = bool(parsed.cells)
            if not usable:
                detail = "; ".join(parsed.notes) or "nothing usable"
                notes.append(f"attempt {attempt} ({task}, temperature {temperature}): {detail}")
                continue
            if attempt > 1:
                notes.append(f"answered at attempt {attempt} ({task}, temperature {temperature})")
            if plan.ink and task != "layout_only" and not _read_something(parsed.cells):
                warnings.append(NO_TEXT)
            return PageResult(
                **base, cells=parsed.cells, raw=answer.text, notes=notes + parsed.notes,
                attempts=attempt, warnings=warnings, reading=reading,
                status=parsed.status if task == main else PageStatus.FALLBACK, **counts,
            )  # fmt: skip
        return PageResult(
            **base, raw=answer.text if answer else None, status=PageStatus.FAILED, notes=notes,
            attempts=len(steps), reading=reading,
            error="no usable answer after every attempt: the raw answer is kept",
            prompt_tokens=tokens[0] or None, completion_tokens=tokens[1] or None,
        )  # fmt: skip

    def _reading(
        self,
        answer: EngineAnswer,
        request: ChatRequest,
        prepared: PreparedPage,
        served: tuple[int, int] | None,
    ) -> Reading:
        details = answer.details
        recogniser = details.get("recogniser")  # an engine that reads no prompt
        return Reading(
            engine=answer.engine or type(self.engine).__name__,
            model=answer.model,
            profile=self.profile.name,
            task=request.task,
            prompt=None if recogniser else _prompt_text(request),
            image_size=prepared.geometry.model_size,
            served_size=served,
            recogniser=f"{recogniser} ({details['languages']})"
            if recogniser and details.get("languages")
            else recogniser,
            orientation=details.get("orientation"),
            text_layer=details.get("text_layer"),
            steps=details.get("steps"),
            fallback="fallback" in details,
        )

    def _served_geometry(
        self, plan: _Plan, answer: EngineAnswer, task: str, warnings: list[str]
    ) -> tuple[Geometry, tuple[int, int] | None]:
        """The frame the answer's boxes are in: the image sent, or the size a server with a
        lower pixel cap than ours resized it to, found from the prompt tokens it counted.

        Raises:
            _Misread: the server saw fewer image tokens than sent, and no cap explains it.
        """
        geometry = plan.prepared.geometry
        text = plan.text_tokens.get(task)
        checks = getattr(self.profile, "server_smart_resizes", False)
        if not checks or text is None or answer.prompt_tokens is None:
            return geometry, None
        seen = answer.prompt_tokens - (text - 1)  # the placeholder becomes the image's tokens
        if seen >= plan.prepared.image_tokens:
            return geometry, None
        sent = geometry.model_size
        size = self.profile.served_size(*sent, seen) if seen > 0 else None  # type: ignore[attr-defined]
        if size is None:
            raise _Misread(
                f"the server counted {answer.prompt_tokens} prompt tokens where "
                f"{text - 1 + plan.prepared.image_tokens} were planned, and no pixel cap "
                "explains it, so its boxes cannot be placed: pass the server's --max-pixels"
            )
        warnings.append(
            f"the server resized the image from {sent[0]}x{sent[1]} to {size[0]}x{size[1]} "
            "(its pixel cap is lower than ours): boxes were mapped from its size; pass "
            f"--max-pixels {size[0] * size[1]} to send pages at that size"
        )
        return Geometry(geometry.width, geometry.height, *size), size

    async def _prepare(self, page: Page, tasks: set[str], sent: Sent | None) -> _Plan:
        """Size and encode the page once for every step of its ladder (``sent``: a worker
        process did, for the model's own budget); the page leaves the window however
        this ends.

        Planned for each task the ladder may ask, keeping the smallest budgets, so that
        one image and one answer budget fit them all.
        """
        try:
            return await self._plan_and_prepare(page, tasks, sent)
        finally:
            self._leave_window(page)

    async def _plan_and_prepare(self, page: Page, tasks: set[str], sent: Sent | None) -> _Plan:
        profile = self.profile
        max_model_len = getattr(getattr(self.engine, "info", None), "max_model_len", None)
        counter = getattr(self.engine, "text_tokens", None)
        image_size = sent.prepared.geometry.model_size if sent else page.image.size
        base = page.sized_from or image_size  # where the model's sizing starts from
        max_pixels: int | None = None
        max_tokens: int | None = None
        counted: dict[str, int] = {}
        if max_model_len or counter:
            geometry = Geometry(page.width, page.height, *profile.model_size(*base))
            for task in sorted(tasks):
                box = self.options.box if task == "grounding" else None
                text = profile.request_text(task, geometry, box)
                count = await counter(text) if counter else None
                if count is not None:
                    counted[task] = count
                if not max_model_len:
                    continue
                plan = profile.plan(
                    *base, text_tokens=count or estimate_text_tokens(text),
                    max_model_len=max_model_len,
                )  # fmt: skip
                max_pixels = min(max_pixels or plan.max_pixels, plan.max_pixels)
                max_tokens = min(max_tokens or plan.max_tokens, plan.max_tokens)
        # Under a lower cap than the model's, the page is sized from where its sizing
        # started, so that it goes at the size it had before pages were drawn at the
        # model's (the pixels are the drawn page's, resized).
        smaller = None
        if page.sized_from and max_pixels:
            smaller = profile.model_size(*base, max_pixels)
            smaller = smaller if smaller != image_size else None
        if sent and smaller is None:
            return _Plan(sent.prepared, max_tokens, counted, sent.ink)

        def build() -> tuple[PreparedPage, bool]:
            if page.image is None:  # prepared elsewhere, for more pixels than the plan's
                page.image = decode_data_url(sent.prepared.data_url())  # type: ignore[union-attr]
            if smaller:
                page.image = resized(page.image, smaller)
            if not self.engine.reads_pixels:
                ready = prepare_to_send(page, profile, max_pixels, self.options.image_format)
                return ready.prepared, ready.ink
            if getattr(self.engine, "reads_any_size", False):  # no model's size to fit
                geometry = Geometry(page.width, page.height, *page.image.size)
                prepared = PreparedPage(page.image, geometry, 0, page.dpi)
            else:
                prepared = profile.prepare(
                    page.image, page.width, page.height, max_pixels, page.dpi
                )
            if page.text_layer is not None:
                prepared = dataclasses.replace(prepared, text_layer=page.text_layer)
            return prepared, has_ink(page.image)

        loop = asyncio.get_running_loop()
        prepared, ink = await loop.run_in_executor(_preparer(), build)
        return _Plan(prepared, max_tokens, counted, ink)

    def _leave_window(self, page: Page) -> None:
        """The page is prepared: another may be rendered."""
        if id(page) in self._in_window:
            self._in_window.discard(id(page))
            self._window.release()


@functools.cache
def _preparer() -> ThreadPoolExecutor:
    """The threads that size, check and encode pages, one per core, shared by every
    pipeline of the process (the gateway makes one a page). The work is in Pillow, NumPy
    and OpenCV, which let go of Python's lock, so the threads run in parallel."""
    return ThreadPoolExecutor(usable_cores(), thread_name_prefix="dotsocr-prepare")


def _read_something(cells: list[Cell]) -> bool:
    """Whether the cells account for a page's ink: text, or a picture found there."""
    return any((c.text and c.text.strip()) or c.category == "Picture" for c in cells)


def _prompt_text(request: ChatRequest) -> str | None:
    """The text of the request's last message, as sent (its image aside)."""
    content = request.messages[-1]["content"] if request.messages else None
    if isinstance(content, str):
        return content
    texts = [p.get("text", "") for p in content or [] if p.get("type") == "text"]
    return "".join(texts) or None
