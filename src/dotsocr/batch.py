"""``dotsocr ocr``: inputs to sources, the engine to use, the pipeline to outputs, a summary.

What the command does, without the terminal: the CLI gives it options and a reporter
and prints what it is told.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dotsocr.document import DocumentOptions
from dotsocr.document.sources import walk_folder
from dotsocr.engines.base import Engine
from dotsocr.errors import ConfigError, EngineError, NotADocument
from dotsocr.layout import BBox, PageStatus
from dotsocr.models import ModelProfile
from dotsocr.output import ResultWriter
from dotsocr.pipeline import (
    DocumentDone,
    DocumentStarted,
    PageDone,
    Pipeline,
    PipelineOptions,
    Source,
)

FORMATS = frozenset({"md", "json", "txt", "png"})


@dataclass(frozen=True)
class BatchOptions:
    inputs: list[str]
    output: Path | None = None
    formats: frozenset[str] = frozenset({"md", "json"})
    task: str = "layout_all"
    box: BBox | None = None
    document: DocumentOptions = field(default_factory=DocumentOptions)
    engine: str = "auto"  # auto | server | cpu
    server: str | None = None
    served_model: str | None = None  # the model's name on the server; default: found
    api_key: str | None = None
    concurrency: int | None = None
    languages: str = "eng"
    include_furniture: bool = False
    force: bool = False


class Reporter(Protocol):
    def note(self, message: str) -> None: ...
    def started(self, source: str, pages: int) -> None: ...
    def page(self, source: str, status: PageStatus) -> None: ...
    def document(self, source: str, status: str) -> None: ...


@dataclass
class Summary:
    documents: Counter = field(default_factory=Counter)
    pages: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    markdown: str = ""  # for stdout, when there is no output folder

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        pages = sum(self.pages.values())
        rate = pages / self.seconds if self.seconds else 0.0
        docs = ", ".join(f"{n} {k}" for k, n in sorted(self.documents.items())) or "none"
        by_status = ", ".join(f"{n} {k}" for k, n in sorted(self.pages.items())) or "none"
        out = [
            f"documents: {sum(self.documents.values())} ({docs})",
            f"pages: {pages} ({by_status})",
            f"time: {self.seconds:.1f} s, {rate:.2f} pages/s",
        ]
        if self.prompt_tokens or self.completion_tokens:
            out.append(f"tokens: {self.prompt_tokens:,} in, {self.completion_tokens:,} out")
        return out


def expand_inputs(inputs: list[str]) -> Iterator[tuple[Source, str] | NotADocument]:
    """Sources with their output names: files, folders (mirrored), globs and ``-``."""
    for raw in inputs:
        if raw == "-":
            yield Source("<stdin>", sys.stdin.buffer.read()), "stdin"
            continue
        path = Path(raw)
        if not path.exists() and glob.has_magic(raw):
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True) if Path(m).is_file())
            if not matches:
                yield NotADocument(raw, "no file matches this pattern")
            for match in matches:
                yield Source(str(match), match), match.stem
            continue
        if path.is_dir():
            found = False
            for child in walk_folder(path):
                found = True
                yield Source(str(child), child), str(child.relative_to(path).with_suffix(""))
            if not found:
                yield NotADocument(raw, "no PDF or image files in this folder")
            continue
        yield Source(raw, path), path.stem


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate)
    return candidate


def _stamp(source: Source) -> str:
    """What identifies an input's content cheaply: size and modification time, or a hash."""
    if isinstance(source.data, bytes):
        return hashlib.sha256(source.data).hexdigest()
    stat = source.data.stat()
    return f"{source.data.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


async def open_engine(options: BatchOptions, stack: AsyncExitStack, reporter: Reporter) -> Engine:
    """The server when one is configured and answers (or asked for), else the CPU engine."""
    from dotsocr.engines.cpu import CPUEngine
    from dotsocr.engines.pool import server_engine

    url = options.server or os.environ.get("DOTSOCR_SERVER_URL")
    if options.engine in ("auto", "server") and url:
        engine = server_engine(
            url,
            api_key=options.api_key or os.environ.get("DOTSOCR_API_KEY"),
            model=options.served_model,
            concurrency=options.concurrency or 64,
        )
        try:
            return await stack.enter_async_context(engine)
        except EngineError as exc:
            if options.engine == "server":
                raise
            reporter.note(f"server {url} did not answer ({exc}): using the embedded CPU engine")
    elif options.engine == "server":
        raise ConfigError(
            "no server configured: pass --server URL or set DOTSOCR_SERVER_URL, or use --engine cpu"
        )
    elif options.engine == "auto":
        reporter.note(
            "no server configured (--server or DOTSOCR_SERVER_URL): using the embedded CPU "
            "engine (Tesseract)"
        )
    return await stack.enter_async_context(CPUEngine(options.languages, options.concurrency))


@dataclass(frozen=True)
class _Input:
    label: str  # as the user named it
    name: str  # its outputs' name in the output folder
    stamp: str  # what identifies its content, for resume


async def run_batch(options: BatchOptions, profile: ModelProfile, reporter: Reporter) -> Summary:
    """Run every input through the pipeline; write outputs or collect Markdown for stdout."""
    unknown = options.formats - FORMATS
    if unknown:
        raise ConfigError(f"unknown format {', '.join(sorted(unknown))}: use md, json, txt, png")
    if options.task not in profile.tasks:
        raise ConfigError(
            f"unknown task {options.task!r} for {profile.name}: choose one of "
            f"{', '.join(profile.tasks)}"
        )
    summary = Summary()
    started = time.perf_counter()
    writer = None
    if options.output:
        fingerprint = _fingerprint(options, profile)
        writer = ResultWriter(
            options.output, options.formats, fingerprint, options.include_furniture
        )
        writer.clean_leftovers()
    inputs: list[_Input] = []
    sources: list[Source] = []
    taken: set[str] = set()
    for item in expand_inputs(options.inputs):
        if isinstance(item, NotADocument):
            summary.failures.append(str(item))
            continue
        source, name = item
        planned = _Input(source.name, _unique(name, taken), _stamp(source) if writer else "")
        if writer and not options.force and writer.is_done(planned.name, planned.stamp):
            summary.documents["skipped (done)"] += 1
            reporter.document(source.name, "skipped")
            continue
        inputs.append(planned)
        sources.append(source)
    if writer is None and len(sources) > 1:
        raise ConfigError("several inputs need an output folder: pass -o DIR")
    if not sources:
        summary.seconds = time.perf_counter() - started
        return summary
    async with AsyncExitStack() as stack:
        engine = await open_engine(options, stack, reporter)
        pipeline_options = PipelineOptions(
            task=options.task,
            box=options.box,
            concurrency=options.concurrency or getattr(engine, "threads", None) or 64,
            document=options.document,
            keep_images=writer is not None and bool({"md", "png"} & options.formats),
        )
        pipeline = Pipeline(engine, profile, pipeline_options)
        async for event in pipeline.run(sources):
            _handle(event, inputs[event.key], writer, summary, reporter)
    summary.seconds = time.perf_counter() - started
    return summary


def _handle(
    event: DocumentStarted | PageDone | DocumentDone,
    item: _Input,
    writer: ResultWriter | None,
    summary: Summary,
    reporter: Reporter,
) -> None:
    if isinstance(event, DocumentStarted):
        reporter.started(item.label, event.pages)
    elif isinstance(event, PageDone):
        result = event.result
        summary.pages[result.status.value] += 1
        summary.prompt_tokens += result.prompt_tokens or 0
        summary.completion_tokens += result.completion_tokens or 0
        if writer:
            writer.page(item.name, result, event.image)
        reporter.page(item.label, result.status)
    elif event.error:
        summary.documents["failed"] += 1
        summary.failures.append(event.error)
        reporter.document(item.label, "failed")
    else:
        document = event.result
        summary.documents[document.status] += 1
        for page in document.pages:
            if page.status is PageStatus.FAILED:
                summary.failures.append(f"{item.label}: page {page.number}: {page.error}")
        if writer:
            writer.document(item.name, document, item.stamp)
        else:
            from dotsocr.render import render_markdown

            summary.markdown += render_markdown(document, pictures="omit").text
        reporter.document(item.label, document.status)


def _fingerprint(options: BatchOptions, profile: ModelProfile) -> str:
    settings = {
        "task": options.task,
        "box": options.box,
        "document": options.document.model_dump(exclude={"password"}),
        "formats": sorted(options.formats),
        "model": profile.name,
        "served_model": options.served_model,
        "engine": options.engine,
        "server": options.server,
        "furniture": options.include_furniture,
    }
    return json.dumps(settings, sort_keys=True, default=str)
