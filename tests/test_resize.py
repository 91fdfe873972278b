import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dotsocr.errors import PageTooExtreme
from dotsocr.models.resize import image_tokens, smart_resize

MIN, MAX = 3136, 11_289_600


def float_reference(height, width, factor=28, min_pixels=MIN, max_pixels=MAX):
    """The published floating-point formula (Qwen2-VL), for comparison."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((2200, 1700), (2212, 1708)),  # US letter at 200 DPI
        ((1684, 1191), (1680, 1204)),  # A4 at 144 DPI
        ((14, 14), (56, 56)),  # tiny images grow to the minimum
        ((40000, 40000), (3360, 3360)),  # huge images shrink to the maximum
        ((574, 560), (560, 560)),  # 20.5 rounds to 20 (half to even, as Python's round)
        ((602, 560), (616, 560)),  # 21.5 rounds to 22
    ],
)
def test_known_sizes(size, expected):
    assert smart_resize(*size) == expected


def test_image_tokens_is_one_per_28_pixel_square():
    assert image_tokens(2212, 1708) == 79 * 61
    assert image_tokens(*smart_resize(40000, 40000)) == 14_400


def test_aspect_ratio_above_200_is_refused():
    smart_resize(28 * 200, 28)
    with pytest.raises(PageTooExtreme, match="above 200:1"):
        smart_resize(28 * 201, 28)
    with pytest.raises(PageTooExtreme):
        smart_resize(0, 10)


def test_float_formula_misses_exact_squares_that_integer_maths_gets():
    # sqrt rounding makes the float formula floor 39.999... to 39 here
    assert float_reference(1156, 10404) == (1092, 10052)
    assert smart_resize(1156, 10404) == (1120, 10080)
    assert MAX >= 1120 * 10080
    # ... and ceil 2.000...1 to 3 here, where 56x56 is exactly the minimum
    assert float_reference(19, 19) == (84, 84)
    assert smart_resize(19, 19) == (56, 56)


sides = st.integers(min_value=1, max_value=60_000)


@given(sides, sides)
def test_invariants(height, width):
    if max(height, width) > 200 * min(height, width):
        with pytest.raises(PageTooExtreme):
            smart_resize(height, width)
        return
    h, w = smart_resize(height, width)
    assert h % 28 == 0 and w % 28 == 0
    assert MIN <= h * w <= MAX
    # A resized image maps onto itself (rounding can push the ratio just past 200:1;
    # DotsOCR.model_size takes care of those, see test_dots_ocr).
    if max(h, w) <= 200 * min(h, w):
        assert smart_resize(h, w) == (h, w)
    # The shape is kept to within one 28-pixel step per side.
    if min(h, w) >= 280:
        assert abs(math.log((h / w) / (height / width))) <= 2.2 * 28 / min(h, w)
    # Exact maths differs from the float formula only where the float one misrounds, by
    # one step: down in its floor branch, up in its ceiling branch (19x19 -> 56, not 84).
    ref_h, ref_w = float_reference(height, width)
    assert (h - ref_h) in (-28, 0, 28) and (w - ref_w) in (-28, 0, 28)
