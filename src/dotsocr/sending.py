"""Pages made ready for a model server: sized, checked for ink and encoded once, here or
in worker processes.

PDFium is not thread-safe (``document.pdf`` serialises every call behind one lock), so
PDF pages render in parallel only in processes. A worker opens the document itself (it
keeps the last few open) and does the page's whole preparation, so that what comes back
is the encoded page (a few hundred KB), not its pixels (4 to 11 MB); pixels come too
only where something here needs them (crops, annotated pages, the embedded engine).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import multiprocessing
import os
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from dotsocr.document import Document, DocumentOptions, Page, PageFailure, open_document
from dotsocr.document.encoding import ImageFormat, compact
from dotsocr.document.ink import has_ink
from dotsocr.errors import ConfigError
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
    """Size ``page`` for the model (nothing to do when it was drawn at the model's size),
    check it for ink and encode it; the encoded data URL is what is kept."""
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
    """Worker processes that render and prepare PDF pages, one call a page."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        methods = multiprocessing.get_all_start_methods()
        # Never fork: the parent has threads (the event loop's, the preparing threads).
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        return ProcessPoolExecutor(self.processes, mp_context=context, initializer=_started)

    def submit(self, request: RenderRequest) -> Future:
        """A future of the page (or its failure) and, when encoded, how it is sent. A
        worker that died (PDFium crashing on a page) fails the pages it was given; the
        workers are then started afresh for the pages after them."""
        try:
            return self._executor.submit(_render, request)
        except BrokenProcessPool:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()
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


def lost_worker(exc: BaseException) -> str | None:
    """Why a page failed, when the process rendering it died rather than raised."""
    if isinstance(exc, BrokenProcessPool):
        return (
            "the process rendering it stopped abruptly (PDFium crashing on this page, or "
            "killed for memory): try this page on its own, or re-export the PDF"
        )
    return None


def _started() -> None:
    from dotsocr.memory import tune_malloc

    tune_malloc()


def _render(request: RenderRequest) -> tuple[Page | PageFailure, Sent | None]:
    document = _document(request)
    page = document.page(request.index)
    if isinstance(page, PageFailure) or not request.encode:
        return page, None
    sent = prepare_to_send(page, request.profile, None, request.image_format)
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
