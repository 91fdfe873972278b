"""Pages as sent to a server: drawn at the model's size, in the fewest lossless bytes, and
prepared in a bounded window."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from dotsocr.document import DocumentOptions, Page, PageFailure, open_document
from dotsocr.document.encoding import bilevel, compact, encode
from dotsocr.engines.openai import OpenAIEngine, RetryPolicy
from dotsocr.host import usable_cores
from dotsocr.layout import PageStatus
from dotsocr.models import get_profile
from dotsocr.pipeline import DocumentDone, Pipeline, PipelineOptions, Source
from pdf_support import text_pdf
from test_document_inputs import form_pdf
from vllm_support.documents import book
from vllm_support.standin import StandIn, serving

PROFILE = get_profile("dots.ocr")
SAMPLE_ROWS = [(72, 700, "Sent at the size the model sees"), (72, 650, "second line 12345")]


def pages(data, **options) -> list[Page]:
    with open_document(data, DocumentOptions(**options), sent_size=PROFILE.model_size) as doc:
        return list(doc.pages())


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def coloured(width=300, height=200) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    image.paste((200, 30, 30), (20, 20, 120, 80))
    image.paste((90, 90, 90), (150, 100, 250, 150))
    return image


def grey(width=300, height=200) -> Image.Image:
    levels = np.tile(np.arange(width, dtype=np.uint8), (height, 1))
    return Image.fromarray(levels).convert("RGB")


def black_and_white(width=300, height=200) -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    image.paste((0, 0, 0), (10, 10, 200, 40))
    return image


@pytest.mark.parametrize("writer", ["opencv", "pillow"])
@pytest.mark.parametrize(("make", "mode"), [(coloured, "RGB"), (grey, "L"), (black_and_white, "1")])
def test_each_page_goes_in_the_fewest_channels_and_decodes_to_the_same_pixels(
    make, mode, writer, monkeypatch
):
    """OpenCV writes the PNGs; Pillow where OpenCV cannot load (no libGL)."""
    import dotsocr.document.encoding as encoding

    if writer == "pillow":
        monkeypatch.setattr(encoding, "_opencv", lambda: None)
    original = make()
    data, media_type = encode(compact(original))
    sent = decoded(data)
    assert (media_type, sent.format, sent.mode) == ("image/png", "PNG", mode)
    # vLLM converts every image to RGB: the model sees exactly the original pixels.
    assert np.array_equal(np.asarray(sent.convert("RGB")), np.asarray(original))


def test_grey_and_bilevel_pages_cost_a_fraction_of_the_bytes_of_rgb():
    page = grey()
    as_rgb, _ = encode(page)
    as_grey, _ = encode(compact(page))
    assert compact(page).mode == "L" and len(as_grey) < len(as_rgb) / 2
    assert bilevel(compact(black_and_white())) and not bilevel(compact(page))


def test_jpeg_only_when_asked():
    data, media_type = encode(coloured(), "jpeg")
    assert media_type == "image/jpeg" and decoded(data).format == "JPEG"


def test_a_pdf_page_is_drawn_at_the_models_size_in_the_frame_it_always_had():
    data = text_pdf(SAMPLE_ROWS)
    with open_document(data, DocumentOptions()) as doc:  # for the embedded engine: as before
        (full,) = list(doc.pages())
    (sent,) = pages(data)
    assert (sent.width, sent.height, sent.dpi) == (full.width, full.height, full.dpi)
    assert sent.image.size == PROFILE.model_size(full.width, full.height) != full.image.size
    assert (sent.image.mode, full.image.mode) == ("L", "RGB")  # black text: no colour
    # The same page, drawn at 1708x2212 rather than resized there from 1700x2200.
    resized = full.image.convert("L").resize(sent.image.size, Image.Resampling.BICUBIC)
    difference = np.abs(np.asarray(sent.image, np.int16) - np.asarray(resized, np.int16))
    assert difference.mean() < 2.0


def test_a_page_with_colour_stays_rgb_and_forms_are_still_drawn():
    page = text_pdf(SAMPLE_ROWS, image=coloured(), image_box=(300, 300, 200, 100))
    (sent,) = pages(page)
    assert sent.image.mode == "RGB"
    (form,) = pages(form_pdf())
    assert np.asarray(form.image.convert("L")).min() < 64  # the field's text


def test_an_image_is_resized_once_to_the_models_size_and_kept_grey():
    scan = grey(1700, 2200).convert("L")
    out = io.BytesIO()
    scan.save(out, "PNG")
    (page,) = pages(out.getvalue())
    assert (page.width, page.height) == (1700, 2200)
    assert page.image.size == PROFILE.model_size(1700, 2200) and page.image.mode == "L"
    big = io.BytesIO()
    coloured(6000, 4000).save(big, "PNG")
    (capped,) = pages(big.getvalue(), max_pixels=PROFILE.max_pixels)  # as the pipeline asks
    assert capped.image.size == PROFILE.model_size(*capped.image.size)
    assert capped.image.width * capped.image.height <= PROFILE.max_pixels
    assert any(note.startswith("downscaled from 6000x4000 to") for note in capped.notes)


@pytest.fixture
def server():
    with serving(StandIn(max_model_len=32768)) as state:
        yield state


def read(server, sources, **options):
    async def go():
        engine = OpenAIEngine(server.url, retry=RetryPolicy(attempts=1))
        async with engine:
            pipeline = Pipeline(engine, PROFILE, PipelineOptions(**options))
            return [e async for e in pipeline.run(sources) if isinstance(e, DocumentDone)]

    return asyncio.run(go())


def sent_images(server) -> list[Image.Image]:
    urls = [
        part["image_url"]["url"]
        for request in server.requests
        for message in request["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]
    return [decoded(base64.b64decode(url.split(",", 1)[1])) for url in urls]


def test_the_pipeline_sends_a_grey_page_as_one_channel_at_the_planned_size(server):
    (done,) = read(server, [Source("grey.pdf", text_pdf(SAMPLE_ROWS))])
    (page,) = done.result.pages
    (image,) = sent_images(server)
    assert page.status is PageStatus.OK
    assert (image.format, image.mode) == ("PNG", "L")
    assert image.size == tuple(page.reading.image_size) == PROFILE.model_size(1700, 2200)


def test_jpeg_pages_say_so_in_their_data_url(server):
    read(server, [Source("grey.pdf", text_pdf(SAMPLE_ROWS))], image_format="jpeg")
    url = server.requests[0]["messages"][-1]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")


def test_pages_rendered_and_not_yet_prepared_stay_within_the_window(server, tmp_path, monkeypatch):
    """However many pages are in flight to the server, the renderer runs at most
    render_ahead + one page per core ahead of the preparation."""
    import dotsocr.document.pdf as pdf
    import dotsocr.pipeline as pipeline_module

    drawn, prepared, most = [0], [0], [0]
    lock, go = threading.Lock(), threading.Event()
    draw = pdf.render

    def counted_render(*args, **kwargs):
        image = draw(*args, **kwargs)
        with lock:
            drawn[0] += 1
            most[0] = max(most[0], drawn[0] - prepared[0])
            if drawn[0] == 12:  # an unbounded renderer gets this far: let it be seen
                go.set()
        return image

    class Gated:
        """The preparation threads, held until the renderer has run as far ahead as it
        may (it waits for the window, or has drawn 12 pages)."""

        def __init__(self, executor):
            self.executor = executor

        def submit(self, fn, *args):
            def gated():
                go.wait()
                result = fn(*args)
                with lock:
                    prepared[0] += 1
                return result

            return self.executor.submit(gated)

    class Window(asyncio.Semaphore):
        async def acquire(self):
            if self.locked():  # the renderer waits: it has gone as far as it may
                go.set()
            return await super().acquire()

    real = pipeline_module._preparer()
    monkeypatch.setattr(pdf, "render", counted_render)
    monkeypatch.setattr(pipeline_module, "_preparer", lambda: Gated(real))

    async def run():
        engine = OpenAIEngine(server.url, retry=RetryPolicy(attempts=1))
        async with engine:
            pipeline = Pipeline(engine, PROFILE, PipelineOptions(concurrency=16))
            pipeline._window = Window(pipeline.options.render_ahead + usable_cores())
            source = Source("book.pdf", book(20, tmp_path).read_bytes())
            return [e async for e in pipeline.run([source]) if isinstance(e, DocumentDone)]

    (done,) = asyncio.run(run())
    assert len(done.result.pages) == 20
    assert 0 < most[0] <= 2 + usable_cores()


@pytest.fixture
def two_render_processes(monkeypatch):
    """Pages rendered and prepared in two worker processes, as on a machine of 4+ cores."""
    import dotsocr.sending as sending

    monkeypatch.setenv(sending.RENDER_PROCESSES_ENV, "2")
    sending.render_pool.cache_clear()
    pool = sending.render_pool()
    assert pool is not None and pool.processes == 2
    yield pool
    pool.close()
    sending.render_pool.cache_clear()


def test_worker_processes_send_what_this_process_would(server, tmp_path, two_render_processes):
    pdf = book(7, tmp_path)
    pool, asked = two_render_processes, []
    render = pool.render
    pool.render = lambda request: asked.append(request.index) or render(request)
    (by_pool,) = read(server, [Source(str(pdf), pdf)], keep_images=False)
    assert sorted(asked) == list(range(7))
    from_pool = sent_images(server)
    server.requests.clear()
    pool.render = None  # bytes never go to the pool: a call would fail the pages
    (here,) = read(server, [Source("book.pdf", pdf.read_bytes())], keep_images=False)
    from_here = sent_images(server)
    assert [p.status for p in by_pool.result.pages] == [PageStatus.OK] * 7
    assert [p.status for p in here.result.pages] == [PageStatus.OK] * 7
    pixels = lambda images: sorted(np.asarray(i).tobytes() for i in images)  # noqa: E731
    assert pixels(from_pool) == pixels(from_here)
    assert {i.mode for i in from_pool} == {"RGB", "L"}  # the sample has both kinds of page
    assert [p.reading.image_size for p in by_pool.result.pages] == [
        p.reading.image_size for p in here.result.pages
    ]


def test_a_page_that_fails_in_a_worker_fails_alone(server, tmp_path, two_render_processes):
    import pikepdf

    pdf = tmp_path / "broken.pdf"
    with pikepdf.open(book(3, tmp_path)) as document:
        document.pages[1].MediaBox = [0, 0, 200, 2**31 - 1]  # an absurd page box
        document.save(pdf)
    (done,) = read(server, [Source(str(pdf), pdf)])
    statuses = [p.status for p in done.result.pages]
    assert statuses == [PageStatus.OK, PageStatus.FAILED, PageStatus.OK]
    assert "page 2 has an absurd size" in done.result.pages[1].error


def test_render_processes_one_per_core_but_one_from_four_cores(monkeypatch):
    import dotsocr.sending as sending
    from dotsocr.errors import ConfigError

    monkeypatch.delenv(sending.RENDER_PROCESSES_ENV, raising=False)
    for cores, processes in ((1, 0), (2, 0), (3, 0), (4, 3), (16, 15)):
        monkeypatch.setattr(sending, "usable_cores", lambda cores=cores: cores)
        assert sending.render_processes() == processes
    monkeypatch.setenv(sending.RENDER_PROCESSES_ENV, "0")
    assert sending.render_processes() == 0
    monkeypatch.setenv(sending.RENDER_PROCESSES_ENV, "two")
    with pytest.raises(ConfigError, match="DOTSOCR_RENDER_PROCESSES='two': give a whole number"):
        sending.render_processes()


class Exploding:
    """A profile whose sizing kills the worker process that renders with it, as a PDFium
    crash on a page would."""

    name = "exploding"
    max_pixels = 1_000_000

    def model_size(self, width, height, max_pixels=None):
        import os

        os._exit(3)


def test_a_worker_that_dies_fails_only_its_own_page(tmp_path, two_render_processes):
    """Pages in the pool's hands when a worker dies (a library crashing on one page) are
    rendered again alone: only the page that kills its process fails."""
    import dotsocr.sending as sending

    pdf = book(7, tmp_path)
    options = DocumentOptions(dpi=72)

    def request(profile, index):
        return sending.RenderRequest(pdf, "book.pdf", options, index, profile, "png", True, False)

    async def render_all():
        pool = two_render_processes
        asked = [request(Exploding() if i == 3 else PROFILE, i) for i in range(7)]
        return await asyncio.gather(*(pool.render(r) for r in asked))

    results = asyncio.run(render_all())  # six good pages queued around the crash
    failed = [page for page, _ in results if isinstance(page, PageFailure)]
    assert [page.index for page in failed] == [3]
    assert "page 4: the process rendering it stopped abruptly" in str(failed[0].error)
    for page, sent in results:
        if page.index != 3:
            assert page.image is None  # only the encoded page came back
            size = decoded(base64.b64decode(sent.prepared.data_url().partition(",")[2])).size
            assert size == PROFILE.model_size(page.width, page.height)


@pytest.fixture(params=["here", "workers"])
def where(request, monkeypatch):
    """Pages rendered in this process, or by two worker processes."""
    if request.param == "workers":
        yield request.getfixturevalue("two_render_processes")
    else:
        yield None


def extreme_pdf(folder) -> Path:
    """Three pages, the second too thin for the model (10 x 2100 pt: over 200:1)."""
    document = pdfium.PdfDocument.new()
    for width, height in ((612, 792), (10, 2100), (612, 792)):
        document.new_page(width, height)
    path = folder / "extreme.pdf"
    document.save(path)
    return path


def test_a_page_the_model_cannot_take_fails_alone_saying_why(server, tmp_path, where):
    pdf = extreme_pdf(tmp_path)
    (done,) = read(server, [Source(str(pdf), pdf)], keep_images=False)
    statuses = [p.status for p in done.result.pages]
    assert statuses == [PageStatus.OK, PageStatus.FAILED, PageStatus.OK]
    error = done.result.pages[1].error
    assert error.startswith("aspect ratio of") and "crop or split the page" in error
    assert "report" not in error


def test_pages_that_fail_planning_leave_the_window(tmp_path, where):
    """A server whose context no page fits: every page fails, saying so, and the run ends
    (each failed page gives its place in the window back)."""
    pdf = book(9, tmp_path)

    async def go(state):
        return await asyncio.wait_for(
            asyncio.to_thread(read, state, [Source(str(pdf), pdf)], concurrency=16), 600
        )  # a guard against a stalled run, far beyond the second it takes

    with serving(StandIn(max_model_len=200)) as state:
        (done,) = asyncio.run(go(state))
    assert [p.status for p in done.result.pages] == [PageStatus.FAILED] * 9
    assert all("cannot fit the server's context" in p.error for p in done.result.pages)


def test_a_slow_consumer_holds_the_pages_back(server, tmp_path):
    """While the caller does not take finished pages (it is writing outputs), at most the
    window's worth of them wait, and the workers stop sending more pages."""
    answered = []
    server.on_answer = answered.append
    pdf = book(30, tmp_path)

    async def go():
        engine = OpenAIEngine(server.url, retry=RetryPolicy(attempts=1))
        async with engine:
            pipeline = Pipeline(engine, PROFILE, PipelineOptions(concurrency=4))
            events = pipeline.run([Source(str(pdf), pdf)])
            await anext(events)  # DocumentStarted; then the caller is busy
            while not pipeline._events.full() and len(answered) < 30:
                await asyncio.sleep(0.01)  # until the queue fills, or every page is read
            held_back = len(answered)
            rest = [e async for e in events]
            return held_back, rest

    held_back, rest = asyncio.run(go())
    assert held_back <= 2 + usable_cores() + 4 < 30  # queued, and one in each worker
    assert len([e for e in rest if isinstance(e, DocumentDone)]) == 1


def test_usable_cores_keep_within_a_containers_cpu_quota(tmp_path, monkeypatch):
    import dotsocr.host as host

    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(host, "CPU_MAX", cpu_max)
    monkeypatch.setattr(host.os, "sched_getaffinity", lambda pid: set(range(64)))
    assert host.usable_cores() == 64  # no cgroup file
    cpu_max.write_text("max 100000\n")
    assert host.usable_cores() == 64
    cpu_max.write_text("250000 100000\n")  # docker --cpus 2.5
    assert host.usable_cores() == 3
    cpu_max.write_text("50000 100000\n")
    assert host.usable_cores() == 1


@pytest.mark.parametrize("processes", ["0", "2"])
def test_ctrl_c_stops_a_run_at_once_and_quietly(tmp_path, processes):
    """Ctrl-C while pages wait for the server (a full window, finished pages queued):
    exit 130 with no traceback, also from render workers."""
    import os
    import signal
    import subprocess
    import sys

    answered = threading.Event()
    standin = StandIn(capacity=2, latency=2.0, max_model_len=32768, record=False)
    standin.on_answer = lambda body: answered.set()
    pdf = book(30, tmp_path)
    env = {**os.environ, "DOTSOCR_RENDER_PROCESSES": processes}
    with serving(standin) as state:
        command = [sys.executable, "-m", "dotsocr", "ocr", str(pdf), "--server", state.url]
        run = subprocess.Popen(
            [*command, "-o", str(tmp_path / "out"), "-f", "json"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
        )  # fmt: skip
        try:
            answered.wait()  # pages are in flight, others rendered and waiting
            os.killpg(run.pid, signal.SIGINT)  # the terminal's Ctrl-C goes to the whole group
            output = run.communicate(timeout=120)[0].decode()  # a guard against a hang
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, output
    assert "Traceback" not in output
