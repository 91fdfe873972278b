"""One page of a job, for people looking at it: its result as JSON, Markdown and HTML, and
the page image its boxes are drawn on. Blocking (files, PDFium): call from a thread."""

from __future__ import annotations

import io
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from PIL import Image

from dotsocr.furniture import Line, Lines, edge_lines, mark_running_furniture, running
from dotsocr.gateway.jobs import JobManager, stored_options
from dotsocr.gateway.models import PageLinks, PageView, ParseOptions
from dotsocr.gateway.store import PageKey
from dotsocr.layout import DocumentResult
from dotsocr.render import render_markdown
from dotsocr.render.html import markdown_html
from dotsocr.render.json import page_json

JPEG_QUALITY = 88  # the boxes need no lossless pixels; a page is half its PNG
FILES_KEPT = 64  # files whose edge lines are tallied


@dataclass(frozen=True)
class _Found:
    key: PageKey
    name: str
    options: ParseOptions


def _find(manager: JobManager, job_id: str, file: int, number: int) -> _Found | None:
    """Page ``number`` (1-based, in the document) of file ``file``, if the job reads it."""
    job = manager.store.job(job_id)
    files = manager.store.files(job_id)
    if job is None or not 0 <= file < len(files):
        return None
    options, numbers = stored_options(job)
    if number not in numbers[file]:
        return None
    key = PageKey(job_id, file, numbers[file].index(number))
    return _Found(key, files[file]["name"], options)


def page_view(manager: JobManager, job_id: str, file: int, number: int) -> PageView | None:
    found = _find(manager, job_id, file, number)
    state = found and manager.store.page_state(found.key)
    if found is None or state is None:
        return None
    base = f"/v1/jobs/{job_id}/files/{file}/pages/{number}"
    view = PageView(
        job=job_id, file=file, name=found.name, page=number, state=state,  # type: ignore[arg-type]
        links=PageLinks(self=base, image=f"{base}/image"),
    )  # fmt: skip
    if state == "pending":
        return view
    result = manager.store.result(found.key)
    if result is None:  # deleted meanwhile
        return None
    mark_running_furniture([result], _TALLIES.running(manager, found.key))  # as /result does
    document = DocumentResult(source=found.name, pages=[result])
    markdown = render_markdown(
        document, include_furniture=found.options.headers_footers, pictures="omit"
    ).text
    return view.model_copy(
        update={"result": page_json(result), "markdown": markdown, "html": markdown_html(markdown)}
    )


@dataclass
class _Tally:
    pages: set[int] = field(default_factory=set)
    lines: Counter[Line] = field(default_factory=Counter)


class _Tallies:
    """Running headers and footers per file, as /result finds them on every page read so
    far; each page's result is read once, not on every view of a large running job."""

    def __init__(self) -> None:
        self._files: OrderedDict[tuple[str, int], _Tally] = OrderedDict()
        self._lock = threading.Lock()  # page views run in threads

    def running(self, manager: JobManager, key: PageKey) -> Lines:
        where = (key.job_id, key.file_idx)
        finished = {
            k.page_idx
            for k, _ in manager.store.finished_pages(key.job_id)
            if k.file_idx == key.file_idx
        }
        with self._lock:
            tally = self._files.setdefault(where, _Tally())
            self._files.move_to_end(where)
            while len(self._files) > FILES_KEPT:
                self._files.popitem(last=False)
            new = finished - tally.pages
        found = {}
        for idx in new:
            result = manager.store.result(PageKey(key.job_id, key.file_idx, idx))
            if result is not None:
                found[idx] = edge_lines(result)
        with self._lock:
            for idx, lines in found.items():
                if idx not in tally.pages:  # another view may have counted it meanwhile
                    tally.pages.add(idx)
                    tally.lines.update(lines)
            return running(tally.lines, len(tally.pages))


_TALLIES = _Tallies()


def page_image(
    manager: JobManager, job_id: str, file: int, number: int, width: int | None
) -> bytes | None:
    """The page as JPEG, in the frame its boxes are measured in (the model saw it sized
    to its own multiples, a few pixels more or less); at most ``width`` pixels wide when
    given."""
    found = _find(manager, job_id, file, number)
    if found is None:
        return None
    page = manager.render_page(job_id, file, found.name, number, found.options, for_model=False)
    image: Image.Image = page.image
    if width and width < image.width:
        height = max(1, round(image.height * width / image.width))
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()
