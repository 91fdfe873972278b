"""The request planner: image and answer budgets that always fit the server's context."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from dotsocr.errors import ConfigError, ContextTooLong, PageTooExtreme
from dotsocr.models.dots_ocr import DotsOCR

PROFILE = DotsOCR()


def test_unknown_context_keeps_the_full_budgets():
    plan = PROFILE.plan(1700, 2200, text_tokens=300, max_model_len=None)
    assert (plan.max_pixels, plan.max_tokens) == (PROFILE.max_pixels, 16_384)
    assert plan.image_tokens == 4819 and plan.prompt_tokens == 299 + 4819


def test_roomy_context_gives_the_answer_what_is_left():
    plan = PROFILE.plan(1700, 2200, text_tokens=300, max_model_len=16_384)
    assert plan.image_tokens == 4819  # the page keeps its resolution
    assert plan.prompt_tokens + plan.max_tokens == 16_384


def test_tight_context_shrinks_the_image_not_the_minimum_answer():
    plan = PROFILE.plan(1654, 2339, text_tokens=452, max_model_len=4096)  # A4 at 200 DPI
    assert plan.image_tokens < 4956
    assert plan.max_tokens >= PROFILE.min_answer_tokens
    assert plan.prompt_tokens + plan.max_tokens <= 4096
    prepared = PROFILE.prepare(Image.new("RGB", (1654, 2339)), 1654, 2339, plan.max_pixels)
    assert prepared.image_tokens == plan.image_tokens


def test_tight_plan_by_hand():
    # 4096 - (452 - 1) = 3645 tokens of room; the answer needs 1024, so the image gets
    # 2621 tokens = 2,054,864 pixels, in which A4 at 200 DPI becomes 1204x1680
    plan = PROFILE.plan(1654, 2339, text_tokens=452, max_model_len=4096)
    assert plan.max_pixels == 2621 * 28 * 28 == 2_054_864
    assert PROFILE.model_size(1654, 2339, plan.max_pixels) == (1204, 1680)
    assert plan.image_tokens == 43 * 60 == 2580
    assert (plan.prompt_tokens, plan.max_tokens) == (451 + 2580, 3645 - 2580)  # 3031, 1065


def test_minimums_must_be_positive():
    with pytest.raises(ConfigError, match="at least 1"):
        DotsOCR(min_answer_tokens=0)


def test_a_page_too_thin_to_shrink_enough_is_refused():
    thin = DotsOCR(min_image_tokens=50)
    with pytest.raises(ContextTooLong, match="even at its smallest"):
        thin.plan(28, 5600, text_tokens=20, max_model_len=1143)  # room for 100 image tokens


def test_a_context_too_small_for_any_page_says_what_to_do():
    with pytest.raises(ContextTooLong, match=r"context of 1500 tokens.*larger --max-model-len"):
        PROFILE.plan(1700, 2200, text_tokens=452, max_model_len=1500)


@given(
    st.integers(28, 20_000),
    st.integers(28, 20_000),
    st.integers(1, 2_000),
    st.integers(1_024, 40_000),
)
def test_every_plan_fits(width, height, text_tokens, max_model_len):
    try:
        plan = PROFILE.plan(width, height, text_tokens=text_tokens, max_model_len=max_model_len)
    except (ContextTooLong, PageTooExtreme):
        return
    assert plan.prompt_tokens + plan.max_tokens <= max_model_len
    assert plan.max_tokens >= 1
    assert plan.image_tokens == PROFILE.image_tokens(width, height, plan.max_pixels)
    if plan.max_pixels < PROFILE.max_pixels:  # the image was shrunk only to save the answer
        assert plan.max_tokens >= PROFILE.min_answer_tokens
