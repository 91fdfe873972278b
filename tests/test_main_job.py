"""`dotsocr ocr` under the ordinary events of real use: no outcome looks right and is not.

A parser bug, a server that is not up yet or drops connections, a server that resizes
pages behind the client's back, an empty answer, a document half read: each is a page
that says what happened to it, an exit code that tells, and a rerun that reads only
what is not done.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from dotsocr.engines.base import EngineAnswer
from dotsocr.layout import PageStatus
from dotsocr.models import get_profile
from dotsocr.models.dots_ocr import DotsOCR
from dotsocr.models.resize import smart_resize
from dotsocr.pipeline import NO_TEXT, DocumentDone, Pipeline, PipelineOptions, Source
from vllm_support.server import free_port
from vllm_support.standin import StandIn, start

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "multi_page.pdf"  # 5 pages of text


def dotsocr(*args: object, env: dict | None = None, timeout: float = 600):
    environment = {"PATH": os.environ["PATH"], "HOME": str(Path.home()), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dotsocr", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=environment,
    )  # fmt: skip


def summary_pages(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if line.startswith("pages: "))


# Failures are data.
@dataclass
class BrokenParser(DotsOCR):
    name: str = "broken-parser"

    def parse(self, answer, geometry, task, **kwargs):
        raise ValueError("the parser tripped")


def test_a_parser_that_raises_fails_its_page_with_the_reason(standin, tmp_path):
    from typer.testing import CliRunner

    from dotsocr import models
    from dotsocr.cli import app

    models.register("broken-parser", BrokenParser)
    try:
        result = CliRunner().invoke(
            app,
            ["ocr", str(SAMPLE), "--pages", "1-2", "--model", "broken-parser", "--server",
             standin.url, "-o", str(tmp_path)],
        )  # fmt: skip
    finally:
        models._FACTORIES.pop("broken-parser")
    assert result.exit_code == 1, result.output
    assert "pages: 2 (0 read, 0 kept, 2 failed)" in result.output
    reason = "unexpected ValueError while parsing the broken-parser answer: the parser tripped"
    assert reason in result.output
    doc = json.loads((tmp_path / "multi_page.json").read_text())
    assert doc["status"] == "failed"
    assert all(p["status"] == "failed" and reason in p["error"] for p in doc["pages"])
    assert all(p["raw"] for p in doc["pages"])  # the answer is kept for the report


# One engine choice.
def test_a_configured_server_that_never_answers_is_no_licence_to_use_tesseract(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    result = dotsocr("ocr", SAMPLE, "--pages", "1", "-o", tmp_path, "--server", dead,
                     "--server-timeout", "1")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"no answer from the server at {dead}" in result.stderr
    assert "connection refused" in result.stderr and "--server-timeout" in result.stderr
    assert "CPU engine" not in result.stderr and not (tmp_path / "multi_page.json").exists()


def test_fallback_to_the_cpu_engine_is_asked_for_and_said_on_every_page(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    result = dotsocr("ocr", SAMPLE, "--pages", "1-2", "-o", tmp_path, "--server", dead,
                     "--server-timeout", "1", "--fallback", "cpu")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "reading with the embedded CPU engine" in result.stderr
    doc = json.loads((tmp_path / "multi_page.json").read_text())
    assert doc["model"] == "text layer"  # a born-digital PDF: its own text, no OCR
    for page in doc["pages"]:
        assert page["reading"]["fallback"] and page["reading"]["engine"].startswith("pypdfium2 ")
        assert any(note.startswith("read by the embedded engine") for note in page["notes"])
    rerun = dotsocr("ocr", SAMPLE, "--pages", "1-2", "-o", tmp_path, "--server", dead,
                    "--server-timeout", "1", "--fallback", "cpu")  # fmt: skip
    assert "pages: 2 (2 read, 0 kept, 0 failed)" in rerun.stderr  # fallen back: read again


# Patience.
def test_a_run_started_before_its_server_waits_for_it(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "dotsocr", "ocr", str(SAMPLE), "--pages", "1-3",
               "-o", str(tmp_path), "--server", url]  # fmt: skip
    run = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    state = StandIn()
    server = None
    try:
        first = run.stderr.readline()  # piped, not a terminal: it must still say so
        assert first.startswith(f"waiting for the server at {url} (0 s: connection refused)")
        server = start(state, port=port)
        rest = run.communicate(timeout=600)[1]
    finally:
        run.kill()
        if server:
            server.shutdown()
            server.server_close()
    assert run.returncode == 0, rest
    assert f"the server at {url} answers again" in rest
    assert "pages: 3 (3 read, 0 kept, 0 failed)" in rest


def test_a_server_restarting_mid_run_pauses_the_run(tmp_path):
    """The server stops after its first answer (connections in flight dropped, new ones
    refused) and comes back once the run says it waits: no page fails."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    answered = threading.Event()
    state = StandIn(on_answer=lambda body: answered.set())
    server = start(state, port=port)
    command = [sys.executable, "-m", "dotsocr", "ocr", str(SAMPLE), "--pages", "1-4",
               "-o", str(tmp_path), "--server", url, "--concurrency", "1"]  # fmt: skip
    run = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert answered.wait(300)
        state.down = True  # the crash: what is in flight is dropped, then nothing listens
        server.shutdown()
        server.server_close()
        seen = []
        while not (line := run.stderr.readline()).startswith(f"waiting for the server at {url}"):
            assert line, "".join(seen)  # it ended without waiting
            seen.append(line)
        state.down = False
        server = start(state, port=port)
        rest = run.communicate(timeout=600)[1]
    finally:
        run.kill()
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, rest
    assert "pages: 4 (4 read, 0 kept, 0 failed)" in rest


def test_a_router_with_no_server_behind_it_is_waited_for_too(standin, tmp_path):
    standin.faults = deque(["503-bare"] * 8)  # more than the five tries an overload gets
    result = dotsocr("ocr", SAMPLE, "--pages", "1", "-o", tmp_path, "--server", standin.url)
    assert result.returncode == 0, result.stderr
    assert "waiting for the server at" in result.stderr and "HTTP 503" in result.stderr
    assert "pages: 1 (1 read, 0 kept, 0 failed)" in result.stderr


# What read each page.
def test_every_page_says_what_read_it_and_how(standin, tmp_path):
    result = dotsocr("ocr", SAMPLE, "--pages", "1", "-o", tmp_path, "--server", standin.url)
    assert result.returncode == 0, result.stderr
    assert f"reading with vllm stand-in at {standin.url} (model model)" in result.stderr
    doc = json.loads((tmp_path / "multi_page.json").read_text())
    assert (doc["model"], doc["profile"], doc["task"]) == ("model", "dots.ocr", "layout_all")
    reading = doc["pages"][0]["reading"]
    sent = standin.requests[0]["messages"][0]["content"]
    assert reading["engine"] == "vllm stand-in" and reading["model"] == "model"
    assert reading["task"] == "layout_all" and reading["prompt"] == sent[1]["text"]
    assert reading["image_size"] == list(Image.open(_sent_image(sent[0])).size)
    assert reading["served_size"] is None and reading["fallback"] is False
    assert standin.url not in json.dumps(doc)


def test_the_cpu_engine_says_its_recogniser_and_orientation(tmp_path):
    result = dotsocr("ocr", SAMPLE, "--pages", "1", "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "multi_page.json").read_text())
    reading = doc["pages"][0]["reading"]
    assert reading["engine"].startswith("pypdfium2 ") and doc["model"] == "text layer"
    assert reading["recogniser"] == "text layer" and reading["text_layer"] == "used"
    assert set(reading["steps"]) == {"text layer", "layout", "compose"}  # no OCR at all
    result = dotsocr("ocr", SAMPLE, "--pages", "1", "-o", tmp_path, "--text-layer", "never")
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "multi_page.json").read_text())
    reading = doc["pages"][0]["reading"]
    assert reading["engine"].startswith("tesseract 5") and doc["model"] == "tesseract"
    assert reading["recogniser"] == "tesseract lstm (eng)" and reading["orientation"] == 0
    assert reading["text_layer"] == "not read (--text-layer never)"
    assert set(reading["steps"]) == {"ocr", "layout", "compose"}  # read surely: no OSD


def _sent_image(part: dict):
    import base64
    import io

    return io.BytesIO(base64.b64decode(part["image_url"]["url"].split(",", 1)[1]))


# Page-level resume.
def test_failed_pages_are_read_again_and_finished_ones_kept(standin, tmp_path):
    args = ("ocr", SAMPLE, "-o", tmp_path, "--server", standin.url, "--concurrency", "1")
    standin.faults = deque(["500"] * 5)  # the first page's every retry
    first = dotsocr(*args)
    assert first.returncode == 1
    assert summary_pages(first.stderr) == "pages: 5 (4 read, 0 kept, 1 failed)"
    assert not (tmp_path / ".dotsocr/multi_page.done.json").exists()
    sent = len(standin.requests)
    second = dotsocr(*args)
    assert second.returncode == 0, second.stderr
    assert summary_pages(second.stderr) == "pages: 5 (1 read, 4 kept, 0 failed)"
    assert len(standin.requests) == sent + 1  # only the failed page went to the server
    doc = json.loads((tmp_path / "multi_page.json").read_text())
    assert [p["status"] for p in doc["pages"]] == ["ok"] * 5
    third = dotsocr(*args)
    assert "documents: 1 (1 skipped (done))" in third.stderr
    assert summary_pages(third.stderr) == "pages: 5 (0 read, 5 kept, 0 failed)"
    assert len(standin.requests) == sent + 1


# A server that resizes pages itself.
def test_a_server_with_a_lower_pixel_cap_is_found_out_and_its_boxes_placed(standin, tmp_path):
    standin.max_pixels = 500_000
    result = dotsocr("ocr", SAMPLE, "--pages", "1", "-o", tmp_path, "--server", standin.url)
    assert result.returncode == 0, result.stderr
    page = json.loads((tmp_path / "multi_page.json").read_text())["pages"][0]
    sent = page["reading"]["image_size"]
    height, width = smart_resize(sent[1], sent[0], max_pixels=500_000)
    assert page["reading"]["served_size"] == [width, height]
    assert any(f"--max-pixels {width * height}" in w for w in page["warnings"])
    assert "warnings: 1" in result.stderr and f"--max-pixels {width * height}" in result.stderr
    title = page["cells"][0]["bbox"]  # the stand-in's [10, 10, 200, 40], in its own frame
    assert title == [round(v * s) for v, s in zip(
        (10, 10, 200, 40), (page["width"] / width, page["height"] / height) * 2, strict=True
    )]  # fmt: skip


class FakeServer:
    """An engine answering like a server: a fixed answer, and prompt tokens as told."""

    reads_pixels = False
    info = None

    def __init__(self, answer: str, image_tokens=None, finish: str = "stop") -> None:
        self.answer, self.image_tokens, self.finish = answer, image_tokens, finish
        self.requests = []

    async def text_tokens(self, prompt: str) -> int:
        return 20

    async def infer(self, page, request) -> EngineAnswer:
        self.requests.append(request)
        tokens = self.image_tokens(page) if self.image_tokens else page.image_tokens
        return EngineAnswer(self.answer, self.finish, 20 - 1 + tokens, 5, 0.0, 1, "fake 1", "m")


def read_one(engine, image: Image.Image, task: str = "layout_all"):
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")

    async def go():
        options = PipelineOptions(task=task, keep_images=False)
        async for event in Pipeline(engine, get_profile("dots.ocr"), options).run(
            [Source("page.png", buffer.getvalue())]
        ):
            if isinstance(event, DocumentDone):
                return event.result.pages[0]

    return asyncio.run(go())


def text_page() -> Image.Image:
    image = Image.new("RGB", (1240, 1754), "white")
    draw = ImageDraw.Draw(image)
    for row in range(12):
        draw.text((120, 150 + 60 * row), "A line of words on a page " * 3, fill="black")
    return image


def test_prompt_tokens_no_pixel_cap_explains_fail_the_page():
    engine = FakeServer("[]", image_tokens=lambda page: page.image_tokens // 2 + 1)
    page = read_one(engine, text_page())
    assert page.status is PageStatus.FAILED and "no pixel cap explains it" in page.error


def test_a_cut_answer_with_no_cell_is_not_a_repaired_page():
    engine = FakeServer('[{"bbox": [10, 10, 300, 40], "category": "Te', finish="length")
    page = read_one(engine, text_page())
    assert page.status is not PageStatus.REPAIRED and len(engine.requests) == 4
    assert any("no complete cell" in note for note in page.notes)


def test_a_page_with_ink_and_no_text_says_so():
    empty = read_one(FakeServer("[]"), text_page())
    assert empty.status is PageStatus.OK and empty.warnings == [NO_TEXT]
    blank = read_one(FakeServer("[]"), Image.new("RGB", (1240, 1754), "white"))
    assert blank.status is PageStatus.OK and blank.warnings == []
    shapes = read_one(FakeServer("[]"), text_page(), task="layout_only")
    assert shapes.warnings == []  # no text was asked for
    photo = read_one(FakeServer('[{"bbox": [0, 0, 900, 900], "category": "Picture"}]'),
                     text_page())  # fmt: skip
    assert photo.warnings == []  # the picture is what the ink was


def test_the_summary_counts_warnings_without_changing_the_exit_code(standin, tmp_path):
    standin.answer = "[]"
    result = dotsocr("ocr", SAMPLE, "--pages", "1-2", "-o", tmp_path, "--server", standin.url)
    assert result.returncode == 0, result.stderr
    assert "warnings: 2 (in the pages' JSON)" in result.stderr
    assert f"warning: {SAMPLE}: page 1: {NO_TEXT}" in result.stderr


# Inputs that are not files.
def test_a_missing_input_costs_only_itself(tmp_path):
    missing = tmp_path / "missing.pdf"
    out = tmp_path / "out"
    result = dotsocr("ocr", SAMPLE, missing, "--pages", "1", "-o", out)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: {missing}: no such file: check the path" in result.stderr
    assert (out / "multi_page.json").is_file()


def test_a_fifo_input_gets_one_line_and_no_hang(tmp_path):
    fifo = tmp_path / "pipe.pdf"
    os.mkfifo(fifo)
    result = dotsocr("ocr", fifo, SAMPLE, "--pages", "1", "-o", tmp_path / "out", timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert sum(str(fifo) in line for line in result.stderr.splitlines()) == 1
    assert "named pipe" in result.stderr
    assert (tmp_path / "out" / "multi_page.json").is_file()


# The pipeline's own breakdowns.
def _read_all(sources, engine) -> list:
    async def go():
        events = []
        options = PipelineOptions(task="layout_all", keep_images=False)
        async for event in Pipeline(engine, get_profile("dots.ocr"), options).run(sources):
            events.append(event)
        return events

    return asyncio.run(asyncio.wait_for(go(), 300))  # a generous bound: a hang fails


def test_a_renderer_that_breaks_fails_the_rest_of_its_document(monkeypatch):
    from dotsocr.document import Document

    real = Document._pdf_page

    def breaks_on_page_2(self, index):
        if index == 1:
            raise MemoryError("renderer gave out")
        return real(self, index)

    monkeypatch.setattr(Document, "_pdf_page", breaks_on_page_2)
    events = _read_all([Source("a.pdf", SAMPLE), Source("b.png", _png(text_page()))],
                       FakeServer(LAYOUT))  # fmt: skip
    done = {e.result.source: e.result for e in events if isinstance(e, DocumentDone)}
    first = done["a.pdf"].pages
    assert [p.status for p in first] == [PageStatus.OK] + [PageStatus.FAILED] * 4
    assert "unexpected MemoryError while rendering it: renderer gave out" in first[1].error
    assert [p.status for p in done["b.png"].pages] == [PageStatus.OK]  # the next document


def test_a_consumer_that_stops_stops_the_pipeline():
    async def go():
        from contextlib import aclosing

        options = PipelineOptions(task="layout_all", keep_images=False, concurrency=2)
        pipeline = Pipeline(FakeServer(LAYOUT), get_profile("dots.ocr"), options)
        async with aclosing(pipeline.run([Source("a.pdf", SAMPLE)])) as events:
            async for _ in events:
                raise KeyError("the consumer's bug")

    with pytest.raises(KeyError):
        asyncio.run(asyncio.wait_for(go(), 300))


def test_a_journal_cut_by_a_kill_keeps_its_whole_lines(tmp_path):
    from dotsocr.layout import Cell, PageResult
    from dotsocr.output import ResultWriter

    writer = ResultWriter(tmp_path, frozenset({"json"}), "settings", False)
    writer.start("doc", "stamp", {})
    for index in range(2):
        cell = Cell(bbox=(0, 0, 10, 10), category="Text", text="中文 page")
        writer.page("doc", PageResult(index=index, width=10, height=10, cells=[cell]), None)
    journal = tmp_path / ".dotsocr" / "doc.pages.jsonl"
    data = journal.read_bytes()
    journal.write_bytes(data[: data.rindex("中".encode()) + 1])  # cut inside a character
    assert list(writer.kept_pages("doc", "stamp")) == [0]
    assert writer.kept_pages("doc", "another input") == {}


LAYOUT = '[{"bbox": [10, 10, 300, 40], "category": "Text", "text": "Read."}]'


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
