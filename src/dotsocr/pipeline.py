"""Documents -> pages -> engine -> results, with bounded memory and a per-page ladder.

Pages of every document share one in-flight limit; rendering runs ahead of the engine
in a bounded window; each page climbs a ladder (parse, repair, retry warmer, fall back
to the plain-text prompt, fail with the raw answer kept) and every step is recorded on
its PageResult. The pipeline yields events and knows nothing of terminals or files.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from dotsocr.document import Document, DocumentOptions, Page, open_document
from dotsocr.engines.base import Engine
from dotsocr.errors import DocumentError, DotsOCRError, EngineError, PageTooExtreme
from dotsocr.furniture import mark_running_furniture
from dotsocr.layout import BBox, DocumentResult, PageResult, PageStatus
from dotsocr.models import ModelProfile, estimate_text_tokens
from dotsocr.models.base import Geometry, PreparedPage


@dataclass(frozen=True)
class Source:
    """One input: a path, or bytes with a name."""

    name: str
    data: Path | bytes


@dataclass(frozen=True)
class PipelineOptions:
    task: str = "layout_all"
    box: BBox | None = None  # grounding box, in page pixels
    concurrency: int = 64  # pages in flight to the engine
    temperatures: tuple[float, ...] = (0.1, 0.3, 0.6)  # one attempt each, warmer each time
    fallback_task: str | None = "ocr"  # plain text when layout answers stay unusable
    document: DocumentOptions = field(default_factory=DocumentOptions)
    render_ahead: int = 2  # pages rendered and waiting for a free slot: memory stays flat
    keep_images: bool = True  # hand page images on with PageDone (for crops and drawings)


@dataclass
class DocumentStarted:
    key: int  # the source's position in the input: names may repeat
    source: str
    pages: int


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
    error: DocumentError | None = None


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

    async def run(self, sources: Iterable[Source]) -> AsyncIterator[Event]:
        """Yield events as pages finish; every source ends with one DocumentDone."""
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        work: asyncio.Queue[_Work | None] = asyncio.Queue(maxsize=self.options.render_ahead)
        pending: dict[int, dict[str, Any]] = {}
        workers = [
            asyncio.create_task(self._worker(work, events, pending))
            for _ in range(self.options.concurrency)
        ]
        producer = asyncio.create_task(self._produce(sources, work, events, pending))
        try:
            running = len(workers)
            while running:
                event = await events.get()
                if event is None:
                    running -= 1
                    continue
                yield event
        finally:
            for task in (producer, *workers):
                task.cancel()
            for task in (producer, *workers):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _produce(self, sources, work, events, pending) -> None:
        """Open documents and render pages one at a time, at most a window ahead."""
        try:
            for key, source in enumerate(sources):
                try:
                    document = await asyncio.to_thread(self._open, source)
                except Exception as exc:  # a bug of ours must not cost the other documents
                    message = (
                        str(exc)
                        if isinstance(exc, DotsOCRError)
                        else (
                            f"{source.name}: unexpected {type(exc).__name__}: {exc} (please report)"
                        )
                    )
                    await events.put(DocumentDone(key, DocumentResult(source=source.name), message))
                    continue
                with document:
                    pending[key] = {"total": len(document.selected), "pages": []}
                    await events.put(DocumentStarted(key, source.name, len(document.selected)))
                    pages = document.pages()
                    while (page := await asyncio.to_thread(next, pages, None)) is not None:
                        if isinstance(page, Page):
                            await work.put(_Work(key, source.name, page, page.index))
                        else:
                            await work.put(_Work(key, source.name, None, page.index, page.error))
        finally:
            for _ in range(self.options.concurrency):
                await work.put(None)

    def _open(self, source: Source) -> Document:
        options = self.options.document
        if options.max_pixels is None:
            options = options.model_copy(update={"max_pixels": self.profile.max_pixels})
        return open_document(source.data, options, name=source.name)

    async def _worker(self, work, events, pending) -> None:
        try:
            while (item := await work.get()) is not None:
                result = await self._page(item)
                keep = item.page is not None and self.options.keep_images
                image = item.page.image if keep else None
                await events.put(PageDone(item.key, item.source, result, image))
                item.page = None  # let the image go as soon as nothing needs it
                state = pending[item.key]
                state["pages"].append(result)
                if len(state["pages"]) == state["total"]:
                    del pending[item.key]
                    pages = sorted(state["pages"], key=lambda r: r.index)
                    mark_running_furniture(pages)
                    document = DocumentResult(
                        source=item.source,
                        model=self.profile.name,
                        task=self.options.task,
                        pages=pages,
                    )
                    await events.put(DocumentDone(item.key, document))
        finally:
            await events.put(None)

    async def read_page(self, page: Page) -> PageResult:
        """One page through the ladder, timed: for callers that schedule pages themselves."""
        return await self._page(_Work(0, "", page, page.index))

    async def _page(self, item: _Work) -> PageResult:
        if item.page is None:
            return PageResult(
                index=item.index, width=0, height=0, status=PageStatus.FAILED,
                error=str(item.error), notes=["the page could not be rendered"],
            )  # fmt: skip
        started = time.perf_counter()
        result = await self._ladder(item.page)
        result.seconds = round(time.perf_counter() - started, 3)
        return result

    async def _ladder(self, page: Page) -> PageResult:
        """Parse, repair, retry warmer, fall back to plain text, or fail keeping the answer."""
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
        base = {"index": page.index, "width": page.width, "height": page.height, "dpi": page.dpi}
        tokens = [0, 0]
        raw = None
        try:
            prepared, max_tokens = await self._prepare(page, {task for task, _ in steps})
        except (EngineError, PageTooExtreme) as exc:
            return PageResult(**base, status=PageStatus.FAILED, error=str(exc), notes=notes)
        if not self.options.keep_images and prepared.image is None:
            page.image = None  # type: ignore[assignment]  # all that is sent is encoded
        for attempt, (task, temperature) in enumerate(steps, start=1):
            box = self.options.box if task == "grounding" else None
            request = self.profile.build_request(
                prepared, task, box=box, temperature=temperature, max_tokens=max_tokens
            )
            try:
                answer = await self.engine.infer(prepared, request)
            except EngineError as exc:
                return PageResult(**base, status=PageStatus.FAILED, error=str(exc),
                                  attempts=attempt, notes=notes, raw=raw)  # fmt: skip
            raw = answer.text
            tokens[0] += answer.prompt_tokens or 0
            tokens[1] += answer.completion_tokens or 0
            parsed = self.profile.parse(
                answer.text, prepared.geometry, task, finish_reason=answer.finish_reason, box=box
            )
            usable = parsed.status is not PageStatus.FALLBACK if task == main else parsed.cells
            if not usable:
                detail = "; ".join(parsed.notes) or "nothing usable"
                notes.append(f"attempt {attempt} ({task}, temperature {temperature}): {detail}")
                continue
            if attempt > 1:
                notes.append(f"answered at attempt {attempt} ({task}, temperature {temperature})")
            return PageResult(
                **base, cells=parsed.cells, raw=raw, notes=notes + parsed.notes, attempts=attempt,
                status=parsed.status if task == main else PageStatus.FALLBACK,
                prompt_tokens=tokens[0] or None, completion_tokens=tokens[1] or None,
            )  # fmt: skip
        return PageResult(
            **base, raw=raw, status=PageStatus.FAILED, notes=notes, attempts=len(steps),
            error="no usable answer after every attempt: the raw answer is kept",
            prompt_tokens=tokens[0] or None, completion_tokens=tokens[1] or None,
        )  # fmt: skip

    async def _prepare(self, page: Page, tasks: set[str]) -> tuple[PreparedPage, int | None]:
        """Size and encode the page once for every step of its ladder.

        Planned for each task the ladder may ask, keeping the smallest budgets, so that
        one image and one answer budget fit them all.
        """
        profile = self.profile
        max_model_len = getattr(getattr(self.engine, "info", None), "max_model_len", None)
        max_pixels: int | None = None
        max_tokens: int | None = None
        if max_model_len:
            size = profile.model_size(page.image.width, page.image.height)
            geometry = Geometry(page.width, page.height, *size)
            counter = getattr(self.engine, "text_tokens", None)
            for task in sorted(tasks):
                box = self.options.box if task == "grounding" else None
                text = profile.request_text(task, geometry, box)
                counted = await counter(text) if counter else None
                plan = profile.plan(
                    page.image.width, page.image.height,
                    text_tokens=counted or estimate_text_tokens(text), max_model_len=max_model_len,
                )  # fmt: skip
                max_pixels = min(max_pixels or plan.max_pixels, plan.max_pixels)
                max_tokens = min(max_tokens or plan.max_tokens, plan.max_tokens)

        def build() -> PreparedPage:
            prepared = profile.prepare(page.image, page.width, page.height, max_pixels, page.dpi)
            if self.engine.reads_pixels:
                return prepared
            prepared.data_url()  # encode now, off the event loop
            return dataclasses.replace(prepared, image=None)  # the data URL is what is sent

        return await asyncio.to_thread(build), max_tokens
