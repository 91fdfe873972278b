"""One page of a job, for people looking at it: its result as JSON, Markdown and HTML, and
the page image its boxes are drawn on. Blocking (files, PDFium): call from a thread."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from dotsocr.furniture import Lines, mark_running_furniture, running_lines
from dotsocr.gateway.models import PageLinks, PageView, ParseOptions
from dotsocr.gateway.store import PageKey
from dotsocr.layout import DocumentResult
from dotsocr.render import render_markdown
from dotsocr.render.html import markdown_html
from dotsocr.render.json import page_json

if TYPE_CHECKING:
    from dotsocr.gateway.jobs import JobManager

JPEG_QUALITY = 88  # the boxes need no lossless pixels; a page is a tenth of its PNG
RUNNING_KEPT = 64  # files whose running lines are remembered
_RUNNING: dict[tuple[str, int, int], Lines] = {}
_LOCK = threading.Lock()  # page views run in threads


@dataclass(frozen=True)
class _Found:
    key: PageKey
    name: str
    number: int
    options: ParseOptions


def _find(manager: JobManager, job_id: str, file: int, number: int) -> _Found | None:
    """Page ``number`` (1-based, in the document) of file ``file``, if the job reads it."""
    job = manager.store.job(job_id)
    files = manager.store.files(job_id)
    if job is None or not 0 <= file < len(files):
        return None
    options = json.loads(job["options"])
    numbers: list[int] = options.pop("page_numbers")[file]
    if number not in numbers:
        return None
    key = PageKey(job_id, file, numbers.index(number))
    return _Found(key, files[file]["name"], number, ParseOptions(**options))


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
    result = manager.store.result(found.key) if state != "pending" else None
    if result is None:
        return view
    mark_running_furniture([result], _running(manager, found.key))  # as /result does
    document = DocumentResult(source=found.name, pages=[result])
    markdown = render_markdown(
        document, include_furniture=found.options.headers_footers, pictures="omit"
    ).text
    return view.model_copy(
        update={"result": page_json(result), "markdown": markdown, "html": markdown_html(markdown)}
    )


def _running(manager: JobManager, key: PageKey) -> Lines:
    """The running headers and footers of the page's file, found on its pages read so far
    (kept until another page of the job finishes: a page view must not read them all)."""
    counts = manager.store.counts(key.job_id)
    version = (key.job_id, key.file_idx, counts["done"] + counts["failed"])
    with _LOCK:
        if version in _RUNNING:
            return _RUNNING[version]
    files = manager.store.files(key.job_id)
    pages = [
        result
        for idx in range(files[key.file_idx]["pages"])
        if (result := manager.store.result(PageKey(key.job_id, key.file_idx, idx)))
    ]
    lines = running_lines(pages)
    with _LOCK:
        while len(_RUNNING) >= RUNNING_KEPT:
            _RUNNING.pop(next(iter(_RUNNING)))
        _RUNNING[version] = lines
    return lines


def page_image(
    manager: JobManager, job_id: str, file: int, number: int, width: int | None
) -> bytes | None:
    """The page as the model saw it, as JPEG; at most ``width`` pixels wide when given."""
    found = _find(manager, job_id, file, number)
    if found is None:
        return None
    path = manager.store.input_path(job_id, file)
    image: Image.Image = manager.render_page(path, found.name, number, found.options).image
    if width and width < image.width:
        height = max(1, round(image.height * width / image.width))
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()
