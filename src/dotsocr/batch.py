"""``dotsocr ocr``: inputs to sources, the engine to use, the pipeline to outputs, a summary.

What the command does, without the terminal: the CLI gives it options and a reporter
and prints what it is told. With an output folder every page is journalled as it
finishes, so a rerun reads only what is not done yet (see ``ResultWriter``).
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dotsocr.document import DocumentOptions
from dotsocr.document.encoding import ImageFormat
from dotsocr.document.sources import input_problem, walk_folder
from dotsocr.engines.choice import EngineSettings, open_engine
from dotsocr.errors import ConfigError, NotADocument, OutputError
from dotsocr.layout import BBox, DocumentResult, PageResult, PageStatus
from dotsocr.models import ModelProfile
from dotsocr.output import ResultWriter
from dotsocr.pipeline import (
    DocumentDone,
    DocumentStarted,
    PageDone,
    Pipeline,
    PipelineOptions,
    Source,
    unexpected,
)

FORMATS = frozenset({"md", "json", "txt", "png"})
MAX_WARNING_LINES = 20


@dataclass(frozen=True)
class BatchOptions:
    inputs: list[str]
    output: Path | None = None
    formats: frozenset[str] = frozenset({"md", "json"})
    task: str = "layout_all"
    box: BBox | None = None
    document: DocumentOptions = field(default_factory=DocumentOptions)
    engine: EngineSettings = field(default_factory=EngineSettings)
    include_furniture: bool = False
    force: bool = False
    image_format: ImageFormat = "png"  # how pages go to a server


class Reporter(Protocol):
    def note(self, message: str) -> None: ...
    def started(self, source: str, pages: int) -> None: ...
    def page(self, source: str, status: PageStatus) -> None: ...
    def document(self, source: str, status: str) -> None: ...


@dataclass
class Summary:
    documents: Counter = field(default_factory=Counter)
    pages: Counter = field(default_factory=Counter)  # read in this run, by status
    kept: int = 0  # read by an earlier run
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    markdown: str = ""  # for stdout, when there is no output folder

    @property
    def ok(self) -> bool:
        return not self.failures

    def lines(self) -> list[str]:
        read = sum(self.pages.values())
        failed = self.pages[PageStatus.FAILED.value]
        rate = read / self.seconds if self.seconds else 0.0
        docs = ", ".join(f"{n} {k}" for k, n in sorted(self.documents.items())) or "none"
        out = [
            f"documents: {sum(self.documents.values())} ({docs})",
            f"pages: {read + self.kept} ({read - failed} read, {self.kept} kept, {failed} failed)",
        ]
        if read - failed:
            by_status = ", ".join(
                f"{n} {k}" for k, n in sorted(self.pages.items()) if k != PageStatus.FAILED.value
            )
            out.append(f"read: {by_status}")
        if self.warnings:
            out.append(f"warnings: {len(self.warnings)} (in the pages' JSON)")
        out.append(f"time: {self.seconds:.1f} s, {rate:.2f} pages/s")
        if self.prompt_tokens or self.completion_tokens:
            out.append(f"tokens: {self.prompt_tokens:,} in, {self.completion_tokens:,} out")
        return out

    def warning_lines(self) -> list[str]:
        shown = self.warnings[:MAX_WARNING_LINES]
        if len(self.warnings) > len(shown):
            shown.append(f"... and {len(self.warnings) - len(shown)} more")
        return shown


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
        problem = input_problem(path)
        if problem:
            yield NotADocument(raw, problem)
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
    planned = _plan(options, summary)
    if options.output is None and len(planned) > 1:
        raise ConfigError("several inputs need an output folder: pass -o DIR")
    if not planned:
        summary.seconds = time.perf_counter() - started
        return summary
    async with AsyncExitStack() as stack:
        engine = await open_engine(options.engine, stack, reporter.note)
        reporter.note(_reading_with(options.engine, engine))
        writer = None
        if options.output:
            writer = ResultWriter(
                options.output, options.formats, _fingerprint(options, profile, engine),
                options.include_furniture,
            )  # fmt: skip
            writer.clean_leftovers()
        inputs, sources = _resume(planned, writer, options.force, summary, reporter)
        pipeline_options = PipelineOptions(
            task=options.task,
            box=options.box,
            concurrency=options.engine.concurrency or getattr(engine, "threads", None) or 64,
            document=options.document,
            keep_images=writer is not None and bool({"md", "png"} & options.formats),
            image_format=options.image_format,
        )
        pipeline = Pipeline(engine, profile, pipeline_options)
        async with aclosing(pipeline.run(sources)) as events:  # stopped before the engine
            async for event in events:
                # Writing (JSON, crops, the fsynced journal) is off the event loop, which
                # meanwhile keeps the server's requests going; events are handled in order.
                item, source = inputs[event.key], sources[event.key]
                await asyncio.to_thread(_handle, event, item, source, writer, summary, reporter)
    summary.seconds = time.perf_counter() - started
    return summary


def _plan(options: BatchOptions, summary: Summary) -> list[tuple[Source, _Input]]:
    """The inputs that can be read, each with its output name; the others as failures."""
    planned: list[tuple[Source, _Input]] = []
    taken: set[str] = set()
    for item in expand_inputs(options.inputs):
        if isinstance(item, NotADocument):
            summary.documents["failed"] += 1
            summary.failures.append(str(item))
            continue
        source, name = item
        try:
            stamp = _stamp(source) if options.output else ""
        except OSError as exc:  # gone or unreadable since it was listed
            summary.documents["failed"] += 1
            summary.failures.append(f"{source.name}: cannot be read ({exc.strerror or exc})")
            continue
        planned.append((source, _Input(source.name, _unique(name, taken), stamp)))
    return planned


def _resume(
    planned: list[tuple[Source, _Input]],
    writer: ResultWriter | None,
    force: bool,
    summary: Summary,
    reporter: Reporter,
) -> tuple[list[_Input], list[Source]]:
    """Leave out the documents done before; hand each other one the pages it kept."""
    inputs: list[_Input] = []
    sources: list[Source] = []
    for source, item in planned:
        if writer and not force:
            done = writer.done_pages(item.name, item.stamp)
            if done is not None:
                summary.documents["skipped (done)"] += 1
                summary.kept += done
                reporter.document(source.name, "skipped")
                continue
            kept = writer.kept_pages(item.name, item.stamp)
            source = Source(source.name, source.data, kept)
        inputs.append(item)
        sources.append(source)
    return inputs, sources


def _reading_with(settings: EngineSettings, engine: Any) -> str:
    """The run's first line: what reads the pages (the server's URL is for this user only)."""
    own_text = "a PDF's own text, " if settings.text_layer != "never" else ""
    cpu = f"reading with the embedded CPU engine ({own_text}Tesseract, PP-OCRv6)"
    if settings.kind == "cpu":
        unset = "no server configured (--server or DOTSOCR_SERVER_URL): "
        return cpu if settings.engine == "cpu" else unset + cpu
    why_down = getattr(engine, "why_down", None)
    if why_down:  # --fallback cpu, and the server never answered
        return f"the server does not answer ({why_down}): {cpu}"
    info = engine.info
    line = f"reading with {info.engine} at {settings.server_url} (model {info.model})"
    if settings.fallback:
        line += "; pages it cannot read go to the embedded CPU engine"
    return line


def _handle(
    event: DocumentStarted | PageDone | DocumentDone,
    item: _Input,
    source: Source,
    writer: ResultWriter | None,
    summary: Summary,
    reporter: Reporter,
) -> None:
    if isinstance(event, DocumentStarted):
        summary.kept += event.kept
        if writer:
            writer.start(item.name, item.stamp, dict(source.kept))
        reporter.started(item.label, event.pages)
    elif isinstance(event, PageDone):
        result = event.result
        if writer:
            result = _write_page(writer, item.name, result, event.image)
        summary.pages[result.status.value] += 1
        summary.prompt_tokens += result.prompt_tokens or 0
        summary.completion_tokens += result.completion_tokens or 0
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
            summary.warnings += [f"{item.label}: page {page.number}: {w}" for w in page.warnings]
        if writer:
            _write_document(writer, item, document, summary)
        else:
            from dotsocr.render import render_markdown

            summary.markdown += render_markdown(document, pictures="omit").text
        reporter.document(item.label, document.status)


def _write_page(writer: ResultWriter, name: str, result: PageResult, image: Any) -> PageResult:
    """Write the page's files and journal it; a page whose outputs cannot be made fails
    with the reason (a full disk stops the run: nothing else could be written either)."""
    try:
        writer.page(name, result, image)
    except OutputError:
        raise
    except Exception as exc:  # a renderer's bug: the page fails, the others go on
        result.status = PageStatus.FAILED  # the same object the document will hold
        result.error = unexpected(exc, "writing its outputs")
        writer.page(name, result, None)
    return result


def _write_document(
    writer: ResultWriter, item: _Input, document: DocumentResult, summary: Summary
) -> None:
    """Write the document's files; a renderer's bug fails the document (its pages stay in
    its journal), a full disk stops the run."""
    try:
        writer.document(item.name, document, item.stamp)
    except OutputError:
        raise
    except Exception as exc:
        summary.failures.append(f"{item.label}: {unexpected(exc, 'writing its outputs')}")


def _fingerprint(options: BatchOptions, profile: ModelProfile, engine: Any) -> str:
    """The settings a result depends on: what reads (the engine's kind and the served
    model, not the URL, so that replicas share results), and what is asked."""
    info = getattr(engine, "info", None)
    settings = {
        "task": options.task,
        "box": options.box,
        "document": options.document.model_dump(exclude={"password"}),
        "formats": sorted(options.formats),
        "model": profile.name,
        "engine": options.engine.kind,
        "served_model": info.model
        if info
        else f"embedded {options.engine.languages} text layer {options.engine.text_layer}",
        "furniture": options.include_furniture,
    }
    if options.image_format != "png":  # lossy pages read differently; png keeps old outputs
        settings["image_format"] = options.image_format
    return json.dumps(settings, sort_keys=True, default=str)
