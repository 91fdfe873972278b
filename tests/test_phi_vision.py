"""The Phi-3.5-vision profile: the HD transform's sizes and token counts, requests that
tell the server the crop count planned, serving facts, and plain transcripts read."""

from __future__ import annotations

import base64
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dotsocr.errors import ConfigError, ContextTooLong, PageTooExtreme
from dotsocr.layout import PageStatus
from dotsocr.models import Geometry, ModelProfile
from dotsocr.models.phi_vision import (
    MAX_IMAGE_TOKENS,
    MIN_IMAGE_TOKENS,
    PHI35_VISION,
    PROMPT,
    Phi35Vision,
    canvas_tokens,
    hd_canvas,
    hd_resize,
    server_tokens,
)
from dotsocr.serve.cache import VLLM_ARCHITECTURES

PROFILE = Phi35Vision()
FOUR = Phi35Vision(num_crops=4)
GEOMETRY = Geometry(width=1700, height=2200, resized_width=1038, resized_height=1344)


def formula(canvas: tuple[int, int]) -> int:
    """The processor's count, written out: (R*C + 1) * 144 + 1 + (R + 1) * 12."""
    width, height = canvas
    rows, columns = height // 336, width // 336
    return (rows * columns + 1) * 144 + 1 + (rows + 1) * 12


# --- the profile and its facts ---------------------------------------------------------


def test_profile_and_serving_facts():
    assert isinstance(PROFILE, ModelProfile)
    assert (PROFILE.name, PROFILE.hf_id) == ("phi-3.5-vision", "microsoft/Phi-3.5-vision-instruct")
    assert PROFILE.architecture == "Phi3VForCausalLM" in VLLM_ARCHITECTURES
    assert PROFILE.tasks == ("ocr",) and PROFILE.default_task == "ocr"
    assert PROFILE.quantized == {} and PROFILE.served_by.startswith("vLLM")
    caps = PROFILE.capabilities
    assert caps is not None and not caps.layout_boxes and caps.tables == ""
    decoder = PHI35_VISION.decoder
    assert (decoder.layers, decoder.hidden, decoder.kv_heads, decoder.head_dim) == (
        32,
        3072,
        32,
        96,
    )
    assert decoder.hidden == 32 * decoder.head_dim  # 32 heads of 96
    assert decoder.vocab == 32_064 and decoder.intermediate == 8192
    assert decoder.kv_bytes_per_token() == 2 * 32 * 32 * 96 * 2  # no GQA: 384 KiB a token
    vision = PHI35_VISION.vision
    assert (vision.embed_dim, vision.intermediate, vision.heads, vision.patch) == (
        1024,
        4096,
        16,
        14,
    )
    assert PHI35_VISION.pixels_per_token == (vision.patch * vision.merge) ** 2 == 784
    assert 8.0e9 < PHI35_VISION.weight_bytes < 8.6e9  # 4.15B parameters in bf16


def test_flags_have_reasons_and_ask_for_sixteen_crops():
    flags = PHI35_VISION.flags
    assert flags["--trust-remote-code"] is None
    assert json.loads(flags["--mm-processor-kwargs"]) == {"num_crops": 16}
    assert set(PHI35_VISION.flag_reasons) == set(flags)
    assert PHI35_VISION.pixel_cap_kwarg is None  # no max_pixels for this processor


# --- the HD transform -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "crops", "resized", "canvas", "tokens"),
    [
        (1700, 2200, 16, (1038, 1344), (1344, 1344), 2509),  # letter at 200 dpi: 4x4 crops
        (1700, 2200, 4, (519, 672), (672, 672), 757),  # 2x2
        (800, 600, 16, (1344, 1008), (1344, 1008), 1921),  # 3 rows of 4
        (800, 600, 4, (672, 504), (672, 672), 757),
        (2200, 1700, 16, (1344, 1038), (1344, 1344), 2509),  # turned: the same crops
        (336, 336, 16, (1344, 1344), (1344, 1344), 2509),  # small pages are enlarged
        (50, 8000, 16, (33, 5376), (336, 5376), MAX_IMAGE_TOKENS),  # 16:1, vLLM's largest
        (50, 8000, 4, (8, 1344), (336, 1344), 781),
    ],
)
def test_hd_transform_sizes_and_tokens(width, height, crops, resized, canvas, tokens):
    assert hd_resize(width, height, crops) == resized
    assert hd_canvas(width, height, crops) == canvas
    assert canvas_tokens(*canvas) == formula(canvas) == tokens
    profile = Phi35Vision(num_crops=crops)
    assert profile.model_size(width, height) == resized
    assert profile.image_tokens(width, height) == tokens


def test_too_thin_or_empty_pages_are_refused():
    with pytest.raises(PageTooExtreme, match="too thin"):
        PROFILE.model_size(1, 8000)
    with pytest.raises(PageTooExtreme, match="no area"):
        PROFILE.model_size(100, 0)


@settings(max_examples=300)
@given(st.integers(1, 20_000), st.integers(1, 20_000), st.sampled_from([1, 4, 9, 16]))
def test_tokens_stay_between_one_crop_and_the_most(width, height, crops):
    profile = Phi35Vision(num_crops=crops)
    try:
        w, h = profile.model_size(width, height)
    except PageTooExtreme:  # the short side would round to nothing
        assert max(width, height) > 336 * crops * min(width, height)
        return
    tokens = profile.image_tokens(width, height)
    assert tokens == server_tokens(w, h, crops)  # counted on the image we send
    assert MIN_IMAGE_TOKENS <= tokens <= MAX_IMAGE_TOKENS
    assert max(w, h) % 336 == 0 and max(w, h) <= crops * 336


# --- sizing, planning and requests ------------------------------------------------------


def test_prepare_resizes_without_padding_and_maps_back():
    prepared = PROFILE.prepare(Image.new("RGB", (1700, 2200), "white"), 1700, 2200)
    assert prepared.image.size == (1038, 1344) and prepared.image_tokens == 2509
    assert prepared.geometry == GEOMETRY
    assert prepared.geometry.to_page((519, 672, 1038, 1344)) == (850, 1100, 1700, 2200)
    assert prepared.geometry.to_model((0, 0, 1700, 2200)) == (0, 0, 1038, 1344)
    # a page rendered smaller than its frame: the frame stays the page's
    small = PROFILE.prepare(Image.new("RGB", (850, 1100), "white"), 1700, 2200)
    assert small.geometry == GEOMETRY and small.image_tokens == 2509


def test_request_is_one_user_message_with_the_crop_count():
    prepared = PROFILE.prepare(Image.new("RGB", (800, 600), "white"), 800, 600)
    body = PROFILE.build_request(prepared, "ocr").to_openai("phi")
    assert body["model"] == "phi" and body["max_tokens"] == 4096
    assert body["temperature"] == 0.0 and body["top_p"] == 1.0
    assert body["mm_processor_kwargs"] == {"num_crops": 16}
    (message,) = body["messages"]
    assert message["role"] == "user"
    image_part, text_part = message["content"]
    assert text_part == {"type": "text", "text": PROMPT}
    url = image_part["image_url"]["url"]
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == (1344, 1008)
    four = FOUR.prepare(Image.new("RGB", (800, 600), "white"), 800, 600)
    assert FOUR.build_request(four, "ocr").extra == {"mm_processor_kwargs": {"num_crops": 4}}
    with pytest.raises(ConfigError, match="unknown task"):
        PROFILE.build_request(prepared, "grounding", box=(0, 0, 10, 10))


def test_a_short_context_is_met_with_fewer_crops():
    plan = PROFILE.plan(1700, 2200, text_tokens=30, max_model_len=2600)
    # 16 crops (2,509 tokens) leave no room for an answer: 15 crops cut the page 3x3
    assert plan.image_tokens == 1489 and plan.max_tokens == 2600 - 29 - 1489
    prepared = PROFILE.prepare(Image.new("RGB", (1700, 2200)), 1700, 2200, plan.max_pixels)
    assert prepared.image.size == (778, 1008) and prepared.image_tokens == 1489
    crops = PROFILE.build_request(prepared, "ocr").extra["mm_processor_kwargs"]["num_crops"]
    assert server_tokens(778, 1008, crops) == 1489 < server_tokens(778, 1008, crops + 1)
    roomy = PROFILE.plan(1700, 2200, text_tokens=30, max_model_len=8192)
    assert (roomy.image_tokens, roomy.max_tokens) == (2509, 4096)
    with pytest.raises(ContextTooLong):
        PROFILE.plan(1700, 2200, text_tokens=30, max_model_len=1300)


# --- answers --------------------------------------------------------------------------


def test_plain_answer_is_one_text_cell_over_the_page():
    answer = "INVOICE\nNo. 2024-117\nDate: 3 May 2024\n\nItem  Qty  Price\nPaper  2  4.00<|end|>"
    result = PROFILE.parse(answer, GEOMETRY, "ocr")
    assert result.status is PageStatus.OK and result.notes == []
    (cell,) = result.cells
    assert cell.bbox == (0, 0, 1700, 2200) and cell.category == "Text"
    assert cell.text == answer.removesuffix("<|end|>")


def test_looping_sentences_are_collapsed():
    sentence = "The committee approved the budget for the next fiscal year in full."
    result = PROFILE.parse("Minutes\n" + f"{sentence}\n" * 30, GEOMETRY, "ocr")
    assert result.status is PageStatus.REPAIRED
    assert result.cells[0].text == "Minutes\n" + "\n".join([sentence] * 3)
    assert "1 looping block(s) of lines collapsed" in result.notes


def test_cut_answer_is_kept_and_repaired():
    result = PROFILE.parse("The first line\nThe sec", GEOMETRY, "ocr", finish_reason="length")
    assert result.status is PageStatus.REPAIRED
    assert result.notes == ["answer cut at the token budget"]
    assert result.cells[0].text == "The first line\nThe sec"


def test_empty_answer_gives_no_cell_and_a_note():
    result = PROFILE.parse(" <|end|>", GEOMETRY, "ocr")
    assert result.cells == [] and result.notes == ["empty answer"]
