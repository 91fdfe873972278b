"""The OpenAI engine, the planner and our token arithmetic against a real vLLM server.

The server runs vLLM's own DotsOCRForCausalLM with random weights (see
tests/vllm_support): its answers are meaningless, everything else is vLLM's.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from dotsocr.document.encoding import compact
from dotsocr.engines.openai import OpenAIEngine, RetryPolicy
from dotsocr.errors import ContextTooLong, ImageRefused, ModelNotServed
from dotsocr.models import estimate_text_tokens, get_profile
from dotsocr.models.base import Geometry
from dotsocr.models.dots_ocr import IMAGE_PREFIX
from vllm_support.standin import StandIn, start

pytestmark = pytest.mark.vllm
PROFILE = get_profile("dots.ocr")
NO_RETRY = RetryPolicy(attempts=1)


def run(coro):
    return asyncio.run(coro)


def blank(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), "white")


async def infer_planned(
    engine: OpenAIEngine, width: int, height: int, task: str = "ocr", profile=PROFILE
):
    """Plan, prepare and send one page as the pipeline will."""
    box = (0, 0, width // 2, height // 2) if task == "grounding" else None
    probe = profile.prepare(blank(width, height), width, height)
    prompt = profile.request_text(task, probe.geometry, box)
    text_tokens = await engine.text_tokens(prompt)
    plan = profile.plan(
        width, height, text_tokens=text_tokens, max_model_len=engine.info.max_model_len
    )
    page = profile.prepare(blank(width, height), width, height, plan.max_pixels)
    request = profile.build_request(page, task, box=box, max_tokens=plan.max_tokens)
    return plan, page, await engine.infer(page, request)


def test_all_four_prompt_modes_are_accepted(vllm_server):
    async def go():
        async with OpenAIEngine(vllm_server.url, retry=NO_RETRY) as engine:
            return [await infer_planned(engine, 600, 800, task) for task in PROFILE.tasks]

    for plan, _, answer in run(go()):
        assert answer.finish_reason in ("stop", "length")
        assert answer.prompt_tokens == plan.prompt_tokens


def test_dots_mocr_tasks_are_accepted_with_the_tokens_we_predict(vllm_server):
    """dots.mocr is dots.ocr's architecture: its web, spotting and SVG prompts go to the same
    server, each request costing exactly the prompt tokens its plan predicts."""
    mocr = get_profile("dots.mocr")

    async def go():
        async with OpenAIEngine(vllm_server.url, retry=NO_RETRY) as engine:
            return [await infer_planned(engine, 700, 900, task, mocr) for task in mocr.tasks]

    results = run(go())
    assert len(results) == len(mocr.tasks) >= 7
    for plan, _, answer in results:
        assert answer.prompt_tokens == plan.prompt_tokens


SIZES = [
    (600, 800),
    (800, 600),
    (1000, 1000),
    (333, 777),
    (1200, 300),
    (300, 1200),
    (40, 40),  # grows to the minimum pixels
    (100, 3000),  # 30:1
    (28, 4200),  # 150:1
    (1111, 999),
    (850, 1100),
    (574, 560),  # a half-way rounding case
]


def test_prompt_tokens_equal_our_image_token_arithmetic(vllm_server):
    """vLLM's count is text + our image tokens - the one placeholder, for every size."""

    async def go():
        async with OpenAIEngine(vllm_server.url, retry=NO_RETRY) as engine:
            text_tokens = await engine.text_tokens(IMAGE_PREFIX + PROFILE.prompt("ocr"))
            results = []
            for width, height in SIZES:
                page = PROFILE.prepare(blank(width, height), width, height)
                answer = await engine.infer(page, PROFILE.build_request(page, "ocr", max_tokens=1))
                results.append((width, height, page.image_tokens, answer.prompt_tokens))
            return text_tokens, results

    text_tokens, results = run(go())
    mismatches = [r for r in results if r[3] != text_tokens - 1 + r[2]]
    assert not mismatches, f"text tokens {text_tokens}; (w, h, ours, vLLM's): {mismatches}"


def pattern(width: int, height: int, kind: str) -> Image.Image:
    """An RGB image whose pixels take one of the ways a page is sent: ``colour`` (stays
    RGB), ``grey`` (four grey levels: one channel), ``bilevel`` (black and white: 1 bit)."""
    y, x = np.indices((height, width))
    if kind == "colour":
        pixels = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1)
    else:
        levels = (0, 255) if kind == "bilevel" else (0, 70, 150, 230)
        grey = np.asarray(levels)[(x // 9 + y // 7) % len(levels)]
        pixels = np.repeat(grey[..., None], 3, axis=-1)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


# How pages are sent (document.encoding): the pixels, the format asked for, and the mode
# and format the bytes must open as, so that no case passes by sending RGB every time.
ENCODINGS = {
    "RGB PNG": ("colour", "png", "RGB", "PNG"),
    "L PNG": ("grey", "png", "L", "PNG"),
    "1-bit PNG": ("bilevel", "png", "1", "PNG"),
    "RGB JPEG": ("colour", "jpeg", "RGB", "JPEG"),
    "L JPEG": ("grey", "jpeg", "L", "JPEG"),  # a grey page asked for as JPEG
}


def sent_bytes(page) -> bytes:
    return base64.b64decode(page.data_url().partition(",")[2])


def encoded_page(width: int, height: int, encoding: str):
    """A page of ``width`` x ``height`` prepared and encoded as the pipeline does: drawn at
    the model's size (as PDF pages now are), compacted, sent in the format asked for."""
    kind, image_format, _, _ = ENCODINGS[encoding]
    image = pattern(*PROFILE.model_size(width, height), kind)
    page = PROFILE.prepare(image, width, height)
    assert page.image is image  # already at the model's size: nothing resized
    return dataclasses.replace(page, image=compact(page.image), image_format=image_format)


def test_prompt_tokens_equal_our_arithmetic_for_every_encoding(vllm_server):
    """Each way a page is sent (RGB, grey and 1-bit PNG, RGB and grey JPEG) decodes to an
    image vLLM counts exactly our image tokens for, at every size."""

    async def go():
        async with OpenAIEngine(vllm_server.url, retry=NO_RETRY) as engine:
            text_tokens = await engine.text_tokens(IMAGE_PREFIX + PROFILE.prompt("ocr"))
            results = []
            for width, height in SIZES:
                for encoding, (kind, _, mode, image_format) in ENCODINGS.items():
                    page = encoded_page(width, height, encoding)
                    where = (width, height, encoding)
                    assert page.data_url().startswith(f"data:image/{image_format.lower()};")
                    with Image.open(io.BytesIO(sent_bytes(page))) as opened:
                        assert (opened.format, opened.mode) == (image_format, mode), where
                        if image_format == "PNG":  # lossless: the pixels of an RGB PNG
                            rgb = pattern(*page.image.size, kind)
                            assert opened.convert("RGB").tobytes() == rgb.tobytes(), where
                    request = PROFILE.build_request(page, "ocr", max_tokens=1)
                    answer = await engine.infer(page, request)
                    results.append((*where, page.image_tokens, answer.prompt_tokens))
            return text_tokens, results

    text_tokens, results = run(go())
    assert len(results) == len(SIZES) * len(ENCODINGS)
    mismatches = [r for r in results if r[4] != text_tokens - 1 + r[3]]
    assert not mismatches, f"text tokens {text_tokens}; (w, h, sent as, ours, vLLM's): {mismatches}"


def pillow_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def test_palette_and_one_bit_pngs_are_accepted_with_the_tokens_planned(vllm_server):
    """PNGs in modes we do not write ourselves: vLLM converts them to RGB (a palette with
    a transparent entry over white), at the size sent, for the tokens planned."""
    width, height = 700, 500
    size = PROFILE.model_size(width, height)
    colour = pattern(*size, "colour")
    transparent = colour.quantize(16)
    transparent.info["transparency"] = 0
    images = {
        "P": colour.quantize(16),
        "P with a transparent entry": transparent,
        "1": pattern(*size, "bilevel").convert("1"),
    }

    async def go():
        async with OpenAIEngine(vllm_server.url, retry=NO_RETRY) as engine:
            text_tokens = await engine.text_tokens(IMAGE_PREFIX + PROFILE.prompt("ocr"))
            answers = {}
            for name, image in images.items():
                page = PROFILE.prepare(pattern(*size, "colour"), width, height)
                request = PROFILE.build_request(page, "ocr", max_tokens=1)
                url = pillow_png(image)
                with Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))) as sent:
                    assert sent.mode == image.mode and sent.size == size, name
                request.messages[0]["content"][0]["image_url"]["url"] = url
                answers[name] = (page.image_tokens, await engine.infer(page, request))
            return text_tokens, answers

    text_tokens, answers = run(go())
    for name, (image_tokens, answer) in answers.items():
        assert answer.finish_reason in ("stop", "length"), name
        assert answer.prompt_tokens == text_tokens - 1 + image_tokens, name


def test_planner_never_overflows_a_4096_context(vllm_server):
    sizes = [(1654, 2339), (1700, 2200), (2339, 1654), (3000, 3000), (400, 6000), (900, 1200)]

    async def go():
        async with OpenAIEngine(vllm_server.url, retry=NO_RETRY) as engine:
            assert engine.info.max_model_len == 4096
            return [await infer_planned(engine, w, h, "layout_all") for w, h in sizes]

    # vLLM refuses a prompt longer than the context (a 400 would have raised); the answer
    # budget it does not check, so that the planner's sum is checked here.
    for plan, _, answer in run(go()):
        assert answer.prompt_tokens == plan.prompt_tokens
        assert plan.prompt_tokens + plan.max_tokens <= 4096


def test_estimate_bounds_the_servers_count_for_every_prompt(vllm_server):
    """Where /tokenize is missing the planner uses the estimate: it must never undercount."""

    async def go():
        async with OpenAIEngine(vllm_server.url, retry=NO_RETRY) as engine:
            geometry = PROFILE.prepare(blank(600, 800), 600, 800).geometry
            counts = {}
            for task in PROFILE.tasks:
                box = (10, 10, 300, 300) if task == "grounding" else None
                prompt = IMAGE_PREFIX + PROFILE.prompt(task, geometry, box)
                counts[task] = (await engine.text_tokens(prompt), estimate_text_tokens(prompt))
            return counts

    for task, (real, estimate) in run(go()).items():
        assert real < estimate, task


def test_oversized_request_maps_to_context_too_long(vllm_server):
    page = PROFILE.prepare(blank(1654, 2339), 1654, 2339)  # 4,956 image tokens, unplanned

    async def go():
        async with OpenAIEngine(vllm_server.url, retry=NO_RETRY) as engine:
            await engine.infer(page, PROFILE.build_request(page, "ocr", max_tokens=16))

    with pytest.raises(ContextTooLong, match=r"maximum context length \(4096\)"):
        run(go())


def test_corrupt_image_and_unknown_model_map_to_our_errors(vllm_server):
    page = PROFILE.prepare(blank(300, 300), 300, 300)
    request = PROFILE.build_request(page, "ocr", max_tokens=8)
    request.messages[0]["content"][0]["image_url"]["url"] = "data:image/png;base64,aGVsbG8="

    async def corrupt():
        async with OpenAIEngine(vllm_server.url, retry=NO_RETRY) as engine:
            await engine.infer(page, request)

    async def unknown():
        async with OpenAIEngine(vllm_server.url, model="dots.ocr", retry=NO_RETRY):
            pass

    with pytest.raises(ImageRefused, match="Failed to load image"):
        run(corrupt())
    with pytest.raises(ModelNotServed, match=r"Unknown model 'dots\.ocr' at .* Served: model"):
        run(unknown())


def test_sixteen_concurrent_requests_all_succeed(vllm_server):
    page = PROFILE.prepare(blank(560, 560), 560, 560)
    request = PROFILE.build_request(page, "ocr", max_tokens=32)

    async def go():
        async with OpenAIEngine(vllm_server.url, concurrency=16) as engine:
            return await asyncio.gather(*(engine.infer(page, request) for _ in range(16)))

    answers = run(go())
    assert len(answers) == 16 and all(a.prompt_tokens for a in answers)


def test_finish_reason_length_surfaces(vllm_server):
    page = PROFILE.prepare(blank(300, 300), 300, 300)

    async def go():
        async with OpenAIEngine(vllm_server.url, retry=NO_RETRY) as engine:
            request = PROFILE.build_request(page, "layout_all", max_tokens=3, temperature=0.0)
            return await engine.infer(page, request)

    answer = run(go())
    assert answer.finish_reason == "length" and answer.completion_tokens == 3


def shape(value):
    """The keys of a JSON value, recursively; lists by their first item."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def fetch(url: str, body: dict | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def contained(small, big) -> bool:
    """Whether every key path of ``small`` exists in ``big`` with the same leaf type."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and contained(v, big[k]) for k, v in small.items()
        )
    if isinstance(small, list):
        return isinstance(big, list) and (not small or (big and contained(small[0], big[0])))
    return small == big or big == "NoneType" or small == "NoneType"


def test_stand_in_answers_in_the_real_servers_shapes(vllm_server):
    state = StandIn(max_model_len=4096)
    httpd = start(state)
    try:
        page = PROFILE.prepare(blank(300, 300), 300, 300)
        good = PROFILE.build_request(page, "ocr", max_tokens=4).to_openai("model")
        chat = [{"role": "user", "content": "hi"}]
        cases = {
            "models": ("/v1/models", None),
            "chat": ("/v1/chat/completions", good),
            "bad image": (
                "/v1/chat/completions",
                {**good, "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
                    {"type": "text", "text": "x"},
                ]}]},
            ),
            "unknown model": ("/v1/chat/completions", {**good, "model": "nope"}),
            "max_tokens": ("/v1/chat/completions", {**good, "max_tokens": 5000}),
            "tokenize": ("/tokenize", {"model": "model", "messages": chat}),
        }  # fmt: skip
        for name, (path, body) in cases.items():
            real_status, real = fetch(vllm_server.url + path, body)
            ours_status, ours = fetch(state.url + path, body)
            assert ours_status == real_status, name
            assert contained(shape(ours), shape(real)), (name, shape(ours), shape(real))
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_ocr_command_through_the_real_server(vllm_server, tmp_path):
    """Random weights answer gibberish, so the ladder's later steps run for real."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    data = Path(__file__).parent / "data"
    result = subprocess.run(
        [sys.executable, "-m", "dotsocr", "ocr", data / "multi_page.pdf", "--pages", "1-2",
         "--server", vllm_server.url, "-o", tmp_path, "--concurrency", "4"],
        capture_output=True, text=True, timeout=600,
        env={"PATH": os.environ["PATH"], "HOME": str(Path.home())},
    )  # fmt: skip
    assert "Traceback" not in result.stderr and "CPU engine" not in result.stderr
    doc = json.loads((tmp_path / "multi_page.json").read_text())
    for page in doc["pages"]:  # the server's cap is the model's: it resizes nothing
        assert page["reading"]["served_size"] is None and not page["warnings"]
        assert "no pixel cap explains" not in (page["error"] or "")
        assert page["status"] in ("ok", "repaired", "fallback", "failed")
        assert page["prompt_tokens"] and page["attempts"] >= 1
        if page["status"] == "fallback":  # it climbed the whole ladder
            assert page["attempts"] == 4 and page["notes"][0].startswith("attempt 1 (layout_all")
    assert any(page["attempts"] > 1 for page in doc["pages"])  # gibberish is not layout JSON
    assert result.returncode == (1 if any(p["status"] == "failed" for p in doc["pages"]) else 0)


PAGE_SIZES_PT = [(612, 792), (595.28, 841.89), (792, 612), (180, 300)]  # letter, A4, ...


def pages_of_several_sizes() -> bytes:
    """A PDF of a letter page with black text (sent as grey), an A4 page with a coloured
    picture (RGB), a blank landscape letter page (black and white: 1 bit) and a small
    180 x 300 pt page with text."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    from pdf_support import draw_picture, draw_text, saved

    document = pdfium.PdfDocument.new()
    font = raw.FPDFText_LoadStandardFont(document.raw, b"Helvetica")
    pages = []
    for number, (width, height) in enumerate(PAGE_SIZES_PT, start=1):
        page = document.new_page(width, height)
        if number == 2:
            draw_picture(document, page, pattern(64, 48, "colour"), (72, 400, 240, 180))
        if number != 3:
            draw_text(document, page, font, (20, height - 40), f"Page {number}: hello")
        pages.append(page)
    return saved(document, *pages)


@pytest.mark.parametrize("task", ["ocr", None], ids=["ocr", "default-task"])
def test_pages_of_several_sizes_are_sent_as_before_at_our_token_count(vllm_server, tmp_path, task):
    """PDF pages are drawn straight at the model's size and sent as compactly as their
    pixels allow: `dotsocr ocr` sends each page at the size the old path gave (the 200-DPI
    frame sized by the model under the planner's cap, which a 4096-token context sets for
    letter and A4 pages), and the server counts exactly our tokens for every attempt.
    ``ocr`` answers in one step; the default task (layout_all, a 450-token prompt, so a
    lower cap) climbs the ladder to ocr on random weights."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from dotsocr.document import open_document

    pdf = tmp_path / "sizes.pdf"
    pdf.write_bytes(pages_of_several_sizes())
    with open_document(pdf, sent_size=PROFILE.model_size) as document:  # all three ways
        modes = [page.image.mode for page in document.pages()]
    assert modes == ["L", "RGB", "L", "L"]
    result = subprocess.run(
        [sys.executable, "-m", "dotsocr", "ocr", pdf, *(["--task", task] if task else []),
         "-f", "json", "--server", vllm_server.url, "-o", tmp_path / "out",
         "--concurrency", "4"],
        capture_output=True, text=True, timeout=600,
        env={"PATH": os.environ["PATH"], "HOME": str(Path.home())},
    )  # fmt: skip
    assert "Traceback" not in result.stderr and "CPU engine" not in result.stderr
    doc = json.loads((tmp_path / "out" / "sizes.json").read_text())
    pages = doc["pages"]
    assert len(pages) == len(PAGE_SIZES_PT)
    main = task or PROFILE.default_task
    steps = [main] * 3 + ([] if main == "ocr" else ["ocr"])  # the ladder: 3 warmer, then ocr

    async def text_tokens(geometry):
        async with OpenAIEngine(vllm_server.url, retry=NO_RETRY) as engine:
            return {t: await engine.text_tokens(PROFILE.request_text(t, geometry)) for t in steps}

    moved = []
    for page in pages:
        width, height = page["width"], page["height"]
        where = f"page {page['index'] + 1} ({width}x{height})"
        assert page["status"] != "failed", (where, page["error"])
        assert page["reading"]["served_size"] is None, where
        assert not any("resized" in warning for warning in page["warnings"]), where
        sent = tuple(page["reading"]["image_size"])
        counts = run(text_tokens(Geometry(width, height, *sent)))
        # The server counts the image sent at our tokens, at every attempt.
        taken = steps[: page["attempts"]]
        ours = sum(counts[t] - 1 + PROFILE.image_tokens(*sent) for t in taken)
        assert page["prompt_tokens"] == ours, (where, taken)
        # What the page was sent at before it was drawn at the model's size: the frame,
        # sized by the model under the lowest cap the ladder's tasks plan for.
        cap = min(
            PROFILE.plan(width, height, text_tokens=counts[t], max_model_len=4096).max_pixels
            for t in steps
        )
        before = PROFILE.model_size(width, height, cap)
        if sent != before:
            moved.append(f"{where}: sent at {sent}, at {before} before")
    assert not moved, moved
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_main_job_waits_out_a_crash_and_restart_of_the_real_server(tmp_path):
    """vLLM killed mid-run: dotsocr serve starts it again, and the run waits for it rather
    than failing its pages or reading them with another engine. The server's pixel cap is
    lower than the client's: every page says the size vLLM resized it to."""
    import os
    import re
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from vllm_support import server

    server.require()
    cap = 1_000_000
    served = server.start(tmp_path / "vllm", restart=True, max_pixels=cap)
    out = tmp_path / "out"
    data = Path(__file__).parent / "data"
    run = None
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "dotsocr", "ocr", data / "multi_page.pdf", "--pages", "1-3",
             "--server", served.url, "-o", out, "--concurrency", "2"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
            env={"PATH": os.environ["PATH"], "HOME": str(Path.home())},
        )  # fmt: skip
        first = run.stderr.readline()
        assert first.startswith(f"reading with vllm 0.32.0 at {served.url}"), first
        vllm = re.search(r"starting vLLM \(pid (\d+)\)", served.progress.read_text())
        os.killpg(int(vllm.group(1)), signal.SIGKILL)  # its engine and workers with it
        rest = run.communicate(timeout=900)[1]
    finally:
        if run:
            run.kill()
        served.stop()
    assert "Traceback" not in rest and "CPU engine" not in rest
    assert f"waiting for the server at {served.url}" in rest
    assert f"the server at {served.url} answers again" in rest
    assert served.progress.read_text().count("starting vLLM") == 2
    doc = json.loads((out / "multi_page.json").read_text())
    assert len(doc["pages"]) == 3 and doc["model"] == "model"
    for page in doc["pages"]:  # random weights: any status but one caused by the outage
        assert "no answer from the server" not in (page["error"] or "")
        reading = page["reading"]
        assert reading["engine"] == "vllm 0.32.0"
        width, height = reading["served_size"]
        assert width * height <= cap < reading["image_size"][0] * reading["image_size"][1]
        assert any(f"--max-pixels {width * height}" in w for w in page["warnings"])
    assert run.returncode == (1 if any(p["status"] == "failed" for p in doc["pages"]) else 0)
