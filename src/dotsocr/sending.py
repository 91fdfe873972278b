"""Pages made ready for a model server: sized, checked for ink and encoded once, here or
in worker processes.

PDFium is not thread-safe (``document.pdf`` serialises every call behind one lock), so
PDF pages render in parallel only in processes. A worker opens the document itself (it
keeps the last few open) and does the page's whole preparation, so that what comes back
is the encoded page (a few hundred KB), not its pixels (4 to 11 MB); pixels come too
only where something here needs them (crops, annotated pages, the embedded engine).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import multiprocessing
import os
import signal
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from dotsocr.document import Document, DocumentOptions, Page, PageFailure, open_document
from dotsocr.document.encoding import ImageFormat, compact
from dotsocr.document.ink import has_ink
from dotsocr.errors import ConfigError, CorruptDocument, PageTooExtreme
from dotsocr.host import usable_cores
from dotsocr.models import ModelProfile
from dotsocr.models.base import PreparedPage

RENDER_PROCESSES_ENV = "DOTSOCR_RENDER_PROCESSES"
MIN_CORES_FOR_PROCESSES = 4
"""Below this, pages are rendered in this process: on two cores, two more processes
measured slower than threads (bench/throughput.py) and cost their memory."""


@dataclass(frozen=True)
class Sent:
    """A page as it will be sent: its encoded image (``prepared.image`` is None), and
    whether it shows ink (a result with no text is then suspect)."""

    prepared: PreparedPage
    ink: bool


def prepare_to_send(
    page: Page, profile: ModelProfile, max_pixels: int | None, image_format: ImageFormat
) -> Sent:
    """Size ``page`` for the model under ``max_pixels`` (a page drawn at the model's size
    needs nothing more), check it for ink and encode it; the encoded data URL is what is
    kept."""
    ink = has_ink(page.image)
    prepared = profile.prepare(page.image, page.width, page.height, max_pixels, page.dpi)
    image = prepared.image
    if image is not page.image:  # resized here: the document compacted only the page's
        image = compact(image)  # type: ignore[arg-type]
    prepared = dataclasses.replace(prepared, image=image, image_format=image_format)
    prepared.data_url()
    return Sent(dataclasses.replace(prepared, image=None), ink)


def render_processes() -> int:
    """How many processes render pages: ``DOTSOCR_RENDER_PROCESSES``, else one per core
    but one (which runs the event loop, the requests and the encoding threads' share)
    on machines of at least MIN_CORES_FOR_PROCESSES cores, else none."""
    chosen = os.environ.get(RENDER_PROCESSES_ENV, "").strip()
    if chosen:
        if not chosen.isdigit():
            raise ConfigError(
                f"{RENDER_PROCESSES_ENV}={chosen!r}: give a whole number of processes (0: "
                "pages are rendered in this process)"
            )
        return int(chosen)
    cores = usable_cores()
    return cores - 1 if cores >= MIN_CORES_FOR_PROCESSES else 0


@dataclass(frozen=True)
class RenderRequest:
    """One page to render and prepare in a worker process."""

    path: Path
    name: str
    options: DocumentOptions
    index: int
    profile: ModelProfile
    image_format: ImageFormat
    encode: bool  # False: the engine reads the pixels (the embedded engine, as fallback)
    pixels: bool  # keep the page's image (outputs crop or draw on it)


class RenderPool:
    """Worker processes that render and prepare pages of PDFs and images, one call a page."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._executor = self._start(processes)

    @staticmethod
    def _start(processes: int) -> ProcessPoolExecutor:
        methods = multiprocessing.get_all_start_methods()
        # Never fork: the parent has threads (the event loop's, the preparing threads).
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        return ProcessPoolExecutor(processes, mp_context=context, initializer=_started)

    async def render(self, request: RenderRequest) -> tuple[Page | PageFailure, Sent | None]:
        """The page (or why it cannot be rendered) and, when encoded, how it is sent.

        A worker that dies (the PDF or image library crashing on a page, or the process
        killed for memory) takes every page in the pool's hands with it. Each of those
        is rendered again alone, in a process of its own, so that only the page that
        kills its process fails; the workers start afresh for the pages after.
        """
        try:
            return await asyncio.wrap_future(self._submit(request))
        except BrokenProcessPool:
            pass
        alone = self._start(1)
        try:
            return await asyncio.wrap_future(alone.submit(_render, request))
        except BrokenProcessPool:
            why = (
                f"page {request.index + 1}: the process rendering it stopped abruptly (a "
                "crash in the PDF or image library on this page, or killed for memory): "
                "re-export the file, or leave this page out with --pages"
            )
            return PageFailure(
                request.name, request.index, CorruptDocument(request.name, why)
            ), None
        finally:
            alone.shutdown(wait=False)

    def _submit(self, request: RenderRequest) -> Future:
        try:
            return self._executor.submit(_render, request)
        except BrokenProcessPool:  # broken by an earlier page: start afresh
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start(self.processes)
            return self._executor.submit(_render, request)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


@functools.cache
def render_pool() -> RenderPool | None:
    """The process's render pool, started on first use; None where pages render here."""
    processes = render_processes()
    if not processes:
        return None
    pool = RenderPool(processes)
    atexit.register(pool.close)
    return pool


# In the worker processes.
_OPEN_DOCUMENTS = 4
_documents: OrderedDict[tuple, Document] = OrderedDict()


def _started() -> None:
    from dotsocr.memory import tune_malloc

    tune_malloc()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def _render(request: RenderRequest) -> tuple[Page | PageFailure, Sent | None]:
    document = _document(request)
    page = document.page(request.index)
    if isinstance(page, PageFailure) or not request.encode:
        return page, None
    try:
        sent = prepare_to_send(page, request.profile, None, request.image_format)
    except PageTooExtreme:  # the pipeline fails the page, saying why, from its pixels
        return page, None
    if not request.pixels:
        page.image = None  # type: ignore[assignment]  # the encoded page is what goes back
    return page, sent


def _document(request: RenderRequest) -> Document:
    """The request's document, opened here once (a worker renders many of its pages)."""
    stat = request.path.stat()
    profile = (request.profile.name, request.profile.max_pixels)
    key = (request.path, stat.st_mtime_ns, stat.st_size, request.options, profile)
    document = _documents.pop(key, None)
    if document is None:
        document = open_document(
            request.path, request.options, name=request.name, sent_size=request.profile.model_size
        )
    _documents[key] = document
    while len(_documents) > _OPEN_DOCUMENTS:
        _documents.popitem(last=False)[1].close()
    return document
