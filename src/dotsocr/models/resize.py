"""Qwen2-VL style image sizing, which dots.ocr's vision encoder uses.

Sides become multiples of ``factor`` (patch 14 x spatial merge 2 = 28 pixels, one
visual token each) while the area stays within [min_pixels, max_pixels]. The maths is
done in integers so that results are exact at any size.
"""

from __future__ import annotations

from math import isqrt

from dotsocr.errors import PageTooExtreme


def _round_half_even(numerator: int, denominator: int) -> int:
    """round(numerator / denominator) as Python's round() does, without floats."""
    quotient, rest = divmod(numerator, denominator)
    twice = 2 * rest
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


def _ceil_sqrt(numerator: int, denominator: int) -> int:
    """The least k with k*k >= numerator / denominator."""
    k = isqrt(numerator // denominator)
    while k * k * denominator < numerator:
        k += 1
    return k


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = 28,
    min_pixels: int = 3136,
    max_pixels: int = 11_289_600,
    max_aspect_ratio: int = 200,
) -> tuple[int, int]:
    """Return ``(height, width)`` for the model: multiples of ``factor`` within the pixel budget.

    Raises:
        PageTooExtreme: the aspect ratio exceeds ``max_aspect_ratio`` or a side is zero.
    """
    if height <= 0 or width <= 0:
        raise PageTooExtreme(f"image of {width}x{height} pixels has no area")
    if max(height, width) > max_aspect_ratio * min(height, width):
        raise PageTooExtreme(
            f"aspect ratio of {width}x{height} is above {max_aspect_ratio}:1, which the model "
            "cannot take: crop or split the page"
        )
    h_bar = max(factor, _round_half_even(height, factor) * factor)
    w_bar = max(factor, _round_half_even(width, factor) * factor)
    ff = factor * factor
    if h_bar * w_bar > max_pixels:
        # floor(h / beta / f) with beta = sqrt(h * w / max) is floor(sqrt(h * max / (w f^2)))
        h_bar = max(factor, isqrt(height * max_pixels // (width * ff)) * factor)
        w_bar = max(factor, isqrt(width * max_pixels // (height * ff)) * factor)
    elif h_bar * w_bar < min_pixels:
        h_bar = _ceil_sqrt(height * min_pixels, width * ff) * factor
        w_bar = _ceil_sqrt(width * min_pixels, height * ff) * factor
    return h_bar, w_bar


def image_tokens(resized_height: int, resized_width: int, factor: int = 28) -> int:
    """Visual tokens for an image already sized by smart_resize."""
    return (resized_height // factor) * (resized_width // factor)
