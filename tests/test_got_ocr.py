"""The GOT-OCR 2.0 profile: the fixed 1024 square (and multi-crop grids), its prompts and
requests, and transcripts read into one cell, loops collapsed and cut LaTeX closed.

The answers below are written in the formats the model's documentation shows: plain
lines, and Mathpix Markdown (``\\title{...}``, ``\\(...\\)``, ``\\begin{tabular}``)."""

from __future__ import annotations

import base64
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dotsocr.errors import ConfigError, ContextTooLong, PageTooExtreme
from dotsocr.layout import PageStatus
from dotsocr.models import Geometry, ModelProfile
from dotsocr.models.got_ocr import (
    CROP_PROMPTS,
    GOT_OCR2,
    PROMPTS,
    SYSTEM_PROMPT,
    GotOCR,
    close_latex,
    collapse_line_loops,
    region,
    tile_grid,
)
from dotsocr.serve.cache import VLLM_ARCHITECTURES

PROFILE = GotOCR()
CROPPING = GotOCR(crop_to_patches=True)
GEOMETRY = Geometry(width=1700, height=2200, resized_width=1024, resized_height=1024)

PLAIN = (
    "R&D QUALITY IMPROVEMENT\nSUGGESTION/SOLUTION FORM\nName/Phone Ext. : (...)\n"
    "Supervisor/Manager:\nSuggestion:\nSolution:"
)
FORMATTED = (
    "\\title{\nGeneral OCR Theory: Towards OCR-2.0 via a Unified End-to-end Model\n}\n\n"
    "\\author{\nHaoran Wei \\({ }^{1, *} \\quad\\) Chenglong Liu \\({ }^{3, *}\\)\n}\n\n"
    "\\section*{Abstract}\n\nThe loss is \\(\\mathcal{L}=-\\sum_{i} \\log p(x_{i})\\), and\n"
    "\\[\nE=m c^{2}\n\\]\n\n"
    "\\begin{tabular}{|l|c|c|}\n\\hline Method & Edit \\(\\downarrow\\) & F1 \\(\\uparrow\\) "
    "\\\\\n\\hline GOT & 0.035 & 0.972 \\\\\n\\hline\n\\end{tabular}"
)


def parse(answer: str, task: str = "ocr", **kw):
    return PROFILE.parse(answer, GEOMETRY, task, **kw)


def sent_image(body: dict) -> Image.Image:
    url = body["messages"][-1]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


# --- the profile and its facts ---------------------------------------------------------


def test_profile_names_its_tasks_and_that_vllm_does_not_serve_it():
    assert isinstance(PROFILE, ModelProfile)
    assert (PROFILE.name, PROFILE.hf_id) == ("got-ocr2", "stepfun-ai/GOT-OCR-2.0-hf")
    assert PROFILE.architecture == "GotOcr2ForConditionalGeneration"
    assert PROFILE.tasks == ("ocr", "ocr_format", "grounding")
    assert PROFILE.default_task == "ocr_format"  # what a layout request falls back to
    assert PROFILE.architecture not in VLLM_ARCHITECTURES
    assert PROFILE.serving is None and PROFILE.quantized == {}
    assert PROFILE.served_by.startswith("not vLLM 0.32")
    caps = PROFILE.capabilities
    assert caps is not None and not caps.layout_boxes and caps.formulas
    assert "vLLM 0.32 cannot serve it" in caps.summary


def test_shapes_agree_with_the_fixed_square():
    # 1024 / patch 16 = 64x64 patches; two stride-2 convolutions leave 16x16 = 256 tokens
    side = 1024
    assert GOT_OCR2.vision.patches(side * side) == 64 * 64
    assert GOT_OCR2.vision.patches(side * side) // GOT_OCR2.vision.merge**2 == 256
    assert GOT_OCR2.max_image_tokens * GOT_OCR2.pixels_per_token == side * side
    assert GOT_OCR2.pixel_cap_kwarg is None
    # 24 layers x 16 KV heads x 64 x (K and V) x 2 bytes
    assert GOT_OCR2.decoder.kv_bytes_per_token() == 24 * 16 * 64 * 2 * 2
    assert 1.0e9 < GOT_OCR2.weight_bytes < 1.2e9  # about 560M parameters in bf16


# --- sizing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"), [(1700, 2200), (800, 600), (3400, 2200), (1024, 1024), (40, 4000)]
)
def test_any_page_is_the_1024_square_of_256_tokens(width, height):
    assert PROFILE.model_size(width, height) == (1024, 1024)
    assert PROFILE.image_tokens(width, height) == 256
    assert PROFILE.image_tokens(width, height, max_pixels=PROFILE.tokens_for_pixels(300)) == 256


def test_a_page_without_area_is_refused():
    with pytest.raises(PageTooExtreme, match="no area"):
        PROFILE.model_size(0, 100)


def test_prepare_stretches_the_page_to_the_square_and_maps_back():
    page = Image.new("RGB", (1700, 2200), "white")
    page.paste((0, 0, 0), (850, 1100, 1700, 2200))  # the bottom-right quarter is black
    prepared = PROFILE.prepare(page, 1700, 2200)
    assert prepared.image.size == (1024, 1024) and prepared.image_tokens == 256
    assert prepared.geometry == Geometry(1700, 2200, 1024, 1024)
    # stretched, not letterboxed: the black quarter fills the square's bottom-right quarter
    assert prepared.image.getpixel((1020, 1020)) == (0, 0, 0)
    assert prepared.image.getpixel((600, 600)) == (0, 0, 0)
    assert prepared.image.getpixel((400, 400)) == (255, 255, 255)
    assert prepared.image.getpixel((1020, 4)) == (255, 255, 255)
    # x and y scale apart: 1700/1024 across, 2200/1024 down
    assert prepared.geometry.to_page((512, 512, 1024, 1024)) == (850, 1100, 1700, 2200)
    assert prepared.geometry.to_page((100, 100, 200, 300)) == (166, 215, 332, 645)
    assert prepared.geometry.to_model((850, 1100, 1700, 2200)) == (512, 512, 1024, 1024)


def test_plan_fits_the_fixed_image_and_shrinks_only_the_answer():
    plan = PROFILE.plan(1700, 2200, text_tokens=20, max_model_len=8192)
    assert (plan.image_tokens, plan.prompt_tokens, plan.max_tokens) == (256, 275, 4096)
    tight = PROFILE.plan(1700, 2200, text_tokens=20, max_model_len=1400)
    assert tight.image_tokens == 256 and tight.max_tokens == 1400 - 19 - 256
    with pytest.raises(ContextTooLong):
        PROFILE.plan(1700, 2200, text_tokens=20, max_model_len=1200)


# --- multi-crop -----------------------------------------------------------------------


def test_multi_crop_cuts_the_page_into_the_processors_grid():
    assert CROPPING.grid(1700, 2200) == (2, 3)  # a letter page: 6 tiles and the thumbnail
    assert CROPPING.model_size(1700, 2200) == (2048, 3072)
    assert CROPPING.image_tokens(1700, 2200) == 7 * 256
    assert CROPPING.grid(3400, 1100) == (3, 1)  # two pages side by side
    assert CROPPING.image_tokens(3400, 1100) == 4 * 256
    assert CROPPING.grid(800, 600) == (3, 2)  # the port upscales small pages too
    # a budget of 800 tokens leaves room for two tiles and the thumbnail
    budget = CROPPING.tokens_for_pixels(800)
    assert CROPPING.grid(3400, 1100, budget) == (2, 1)
    assert CROPPING.image_tokens(3400, 1100, budget) == 768
    assert CROPPING.grid(3400, 1100, CROPPING.tokens_for_pixels(700)) == (1, 1)


def test_tile_grid_follows_the_ports_ties_and_keeps_a_grid_image_as_it_is():
    assert tile_grid(1000, 1000, 12) == (1, 1)  # 2x2 would cover more than twice the image
    assert tile_grid(2048, 2048, 12) == (2, 2)  # ... unless the image is that large
    for columns in range(1, 7):
        for rows in range(1, 7):
            if columns * rows <= 6:
                size = (columns * 1024, rows * 1024)
                # what the server's processor (max 6 or 12 tiles) makes of what we send
                assert tile_grid(*size, 6) == tile_grid(*size, 12) == (columns, rows)


def test_multi_crop_prepares_the_grid_and_asks_the_server_to_crop():
    prepared = CROPPING.prepare(Image.new("RGB", (1700, 2200), "white"), 1700, 2200)
    assert prepared.image.size == (2048, 3072) and prepared.image_tokens == 1792
    assert prepared.geometry.to_page((1024, 1024, 2048, 3072)) == (850, 733, 1700, 2200)
    body = CROPPING.build_request(prepared, "ocr_format").to_openai("got")
    assert body["messages"][-1]["content"][1]["text"] == CROP_PROMPTS["ocr_format"]
    assert body["mm_processor_kwargs"] == {"crop_to_patches": True, "max_patches": 6}
    assert CROPPING.prompt("ocr") == "OCR upon the patch reference: "


# --- requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "prompt"), [("ocr", "OCR: "), ("ocr_format", "OCR with format: ")]
)
def test_request_is_the_image_then_the_trained_query(task, prompt):
    prepared = PROFILE.prepare(Image.new("RGB", (850, 1100), "white"), 850, 1100)
    body = PROFILE.build_request(prepared, task).to_openai("got")
    assert PROMPTS[task] == prompt
    assert body["model"] == "got" and body["max_tokens"] == 4096
    assert body["temperature"] == 0.0 and body["top_p"] == 1.0
    assert "mm_processor_kwargs" not in body
    system, message = body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}  # the trained one
    assert message["role"] == "user"
    image_part, text_part = message["content"]
    assert image_part["type"] == "image_url"
    assert text_part == {"type": "text", "text": prompt}
    assert sent_image(body).size == (1024, 1024)
    retry = PROFILE.build_request(prepared, task, temperature=0.3, max_tokens=900)
    assert (retry.temperature, retry.max_tokens) == (0.3, 900)


def test_grounding_asks_for_the_region_in_thousandths_of_the_page():
    prepared = PROFILE.prepare(Image.new("RGB", (1000, 500), "white"), 2000, 1000)
    request = PROFILE.build_request(prepared, "grounding", box=(200, 100, 1000, 600))
    assert request.messages[-1]["content"][1]["text"] == "[100, 100, 500, 600] OCR: "
    assert request.box == (102, 102, 512, 614)  # in the square the model sees
    # corners in any order, clipped to the page
    assert region((2100, 600, 1000, -5), prepared.geometry) == "[500, 0, 1000, 600]"
    with pytest.raises(ConfigError, match="needs a box"):
        PROFILE.build_request(prepared, "grounding")
    with pytest.raises(ConfigError, match="unknown task"):
        PROFILE.build_request(prepared, "layout_all")


# --- answers --------------------------------------------------------------------------


def test_plain_answer_is_one_text_cell_over_the_page():
    result = parse(PLAIN)
    assert result.status is PageStatus.OK and result.notes == []
    (cell,) = result.cells
    assert (cell.category, cell.bbox, cell.text) == ("Text", (0, 0, 1700, 2200), PLAIN)


def test_formatted_answer_keeps_its_markdown_and_latex():
    result = parse(FORMATTED + "\n<|im_end|>", "ocr_format")
    assert result.status is PageStatus.OK and result.notes == []
    assert result.cells[0].text == FORMATTED  # the stop token a server left is dropped


def test_grounding_answer_covers_the_asked_region():
    result = parse("Total: 42.00", "grounding", box=(10, 20, 300, 400))
    assert result.cells[0].bbox == (10, 20, 300, 400)


def test_looping_lines_are_collapsed_and_the_page_repaired():
    looping = "\\begin{tabular}{|c|c|}\n" + "\\hline 0 & 0 \\\\\n" * 40 + "\\end{tabular}"
    result = parse(looping, "ocr_format")
    assert result.status is PageStatus.REPAIRED
    assert "1 looping block(s) of lines collapsed" in result.notes
    assert result.cells[0].text.count("\\hline 0 & 0") == 3
    assert result.cells[0].text.endswith("\\end{tabular}")


def test_runaway_characters_are_collapsed():
    result = parse("Total" + " ." * 400)
    assert result.status is PageStatus.REPAIRED
    assert "1 runaway repeat(s) collapsed" in result.notes
    assert result.cells[0].text == "Total . . ."


def test_cut_plain_answer_is_kept_and_repaired():
    result = parse(PLAIN[:40], finish_reason="length")
    assert result.status is PageStatus.REPAIRED
    assert result.notes == ["answer cut at the token budget"]
    assert result.cells[0].text == PLAIN[:40].strip()


def test_cut_formatted_answer_has_its_open_groups_closed():
    cut = FORMATTED[: FORMATTED.index("0.035") + 3]  # inside the table's second row
    result = parse(cut, "ocr_format", finish_reason="length")
    assert result.status is PageStatus.REPAIRED
    assert "1 unfinished LaTeX group(s) closed" in result.notes
    assert result.cells[0].text == cut + "\n\\end{tabular}"
    inside = parse("Hence \\(x^{2", "ocr_format", finish_reason="length")
    assert inside.cells[0].text == "Hence \\(x^{2}\\)"
    assert "2 unfinished LaTeX group(s) closed" in inside.notes
    # a plain transcript is not LaTeX: nothing is added
    assert parse("Hence \\(x^{2", finish_reason="length").cells[0].text == "Hence \\(x^{2"


def test_cut_loop_needs_fewer_repeats():
    answer = "Name\n" + "Signature: ______\n" * 5 + "Signa"
    assert parse(answer).status is PageStatus.OK  # five times: a form may do that
    cut = parse(answer, finish_reason="length")
    assert cut.cells[0].text == "Name\n" + "Signature: ______\n" * 3 + "Signa"


@pytest.mark.parametrize("answer", ["", "   \n\n", "<|im_end|>"])
def test_empty_answer_gives_no_cell_and_a_note(answer):
    result = parse(answer)
    assert result.cells == [] and result.notes == ["empty answer"]
    assert result.status is PageStatus.OK  # a blank page reads as nothing
    cut = parse(answer, finish_reason="length")
    assert cut.status is PageStatus.REPAIRED and "empty answer" in cut.notes


@settings(max_examples=200)
@given(st.text(), st.sampled_from(PROFILE.tasks), st.sampled_from([None, "stop", "length"]))
def test_parse_never_raises(answer, task, finish_reason):
    result = PROFILE.parse(answer, GEOMETRY, task, finish_reason=finish_reason, box=(1, 2, 3, 4))
    assert all(cell.category == "Text" for cell in result.cells)


# --- the text helpers -----------------------------------------------------------------


def test_line_loops_need_eight_repeats_of_non_blank_lines():
    assert collapse_line_loops("a\n" * 7) == ("a\n" * 7, 0)
    assert collapse_line_loops("\n" * 30) == ("\n" * 30, 0)  # blank lines are layout
    text, loops = collapse_line_loops("x\n" + "one\ntwo\n" * 9 + "y")
    assert (text, loops) == ("x\n" + "one\ntwo\n" * 3 + "y", 1)


def test_close_latex_skips_escaped_braces_and_line_breaks():
    assert close_latex("a \\{ b \\\\ c \\}") == ("a \\{ b \\\\ c \\}", 0)
    assert close_latex("\\section*{Intro") == ("\\section*{Intro}", 1)
    text, closed = close_latex("\\begin{array}{c}\n\\[ x \\] \\begin{cases} a")
    assert text == "\\begin{array}{c}\n\\[ x \\] \\begin{cases} a\n\\end{cases}\n\\end{array}"
    assert closed == 2
    assert close_latex("stray } and \\end{tabular} closers") == (
        "stray } and \\end{tabular} closers",
        0,
    )
