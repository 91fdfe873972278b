import itertools
import math

from PIL import Image

from dotsocr.layout import CATEGORIES, Cell, PageResult
from dotsocr.render import render_annotated
from dotsocr.render.annotate import (
    CATEGORY_COLORS,
    FILL_ALPHA,
    UNKNOWN_COLOR,
    category_color,
    place_labels,
    text_color,
)

WHITE = (255, 255, 255)


def annotate(*cells: Cell, size=(400, 400)) -> Image.Image:
    """Page frame 200x200 drawn on a white image of ``size`` (2x by default)."""
    page = PageResult(index=0, width=200, height=200, cells=list(cells))
    return render_annotated(page, Image.new("RGB", size, WHITE))


def tinted(color: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(round(255 + (c - 255) * FILL_ALPHA / 255) for c in color)


def close(a, b, tol: int = 1) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_output_is_rgb_and_same_size_as_the_image():
    page = PageResult(index=0, width=200, height=100, cells=[Cell(bbox=(0, 0, 5, 5), category="X")])
    out = render_annotated(page, Image.new("L", (600, 300), 255))
    assert (out.mode, out.size) == ("RGB", (600, 300))


def test_inside_of_a_box_is_tinted_with_its_category_colour():
    out = annotate(
        Cell(bbox=(20, 100, 90, 180), category="Text", text="t"),
        Cell(bbox=(110, 100, 180, 180), category="Picture"),
    )
    text_inside, picture_inside = out.getpixel((130, 280)), out.getpixel((290, 280))
    assert close(text_inside, tinted(CATEGORY_COLORS["Text"]))
    assert close(picture_inside, tinted(CATEGORY_COLORS["Picture"]))
    assert out.getpixel((200, 20)) == WHITE  # outside every box


def test_outline_in_category_colour_at_scaled_box_edge():
    out = annotate(Cell(bbox=(20, 100, 180, 180), category="Text", text="t"))
    text = CATEGORY_COLORS["Text"]
    assert out.getpixel((40, 300)) == text  # left edge: x1 = 20 * 2
    assert out.getpixel((360, 300)) == text  # right edge: x2 = 180 * 2
    assert out.getpixel((200, 360)) == text  # bottom edge: y2 = 180 * 2


def test_unknown_category_is_grey():
    out = annotate(Cell(bbox=(20, 100, 180, 180), category="Marginalia", text="m"))
    assert out.getpixel((40, 300)) == UNKNOWN_COLOR
    assert category_color("Marginalia") == UNKNOWN_COLOR


def test_label_is_drawn_above_the_box_in_its_colour():
    out = annotate(Cell(bbox=(20, 100, 180, 180), category="Title", text="t"))
    assert out.getpixel((41, 198)) == CATEGORY_COLORS["Title"]  # just above the corner (40, 200)


def test_palette_covers_every_category_with_distinct_colours():
    assert set(CATEGORY_COLORS) == set(CATEGORIES)
    colours = [*CATEGORY_COLORS.values(), UNKNOWN_COLOR]
    assert min(math.dist(a, b) for a, b in itertools.combinations(colours, 2)) > 60


def test_label_text_contrasts_with_its_background():
    assert text_color((0, 0, 128)) == WHITE
    assert text_color((188, 189, 34)) == (0, 0, 0)
    assert text_color(WHITE) == (0, 0, 0)


def test_label_sits_above_box_or_inside_when_no_room():
    above, inside = place_labels([(50, 100, 150, 200), (50, 5, 150, 60)], [(40, 20)] * 2, 300, 300)
    assert above == (50, 80, 90, 100)
    assert inside == (50, 5, 90, 25)


def test_labels_of_overlapping_boxes_do_not_overlap():
    boxes = [(50, 100, 150, 200), (52, 101, 140, 190), (48, 99, 160, 210)]
    first, second, third = place_labels(boxes, [(60, 20), (60, 20), (70, 20)], 400, 400)
    assert first == (50, 80, 110, 100)
    for a, b in itertools.combinations((first, second, third), 2):
        assert a[3] <= b[1] or b[3] <= a[1] or a[2] <= b[0] or b[2] <= a[0], (a, b)


def test_labels_stay_on_the_page_and_moves_are_bounded():
    boxes = [(390, 0, 400, 10)] * 30
    rects = place_labels(boxes, [(50, 20)] * 30, 400, 100, max_moves=3)
    assert all(x1 >= 0 and x2 <= 400 and y1 >= 0 and y2 <= 100 for x1, y1, x2, y2 in rects)
    assert rects[0] == (350, 0, 400, 20)
    assert rects[1] == (350, 20, 400, 40)
