"""Reading order by recursive XY-cut, on synthetic pages (US Letter at 200 DPI)."""

from __future__ import annotations

import random

from dotsocr.engines.reading_order import reading_order
from dotsocr.text_lines import Box

W, H = 1700.0, 2200.0
LINE, PITCH = 30.0, 40.0  # a line's height, and from one line's top to the next's


def column(x1: float, x2: float, top: float, count: int, pitch: float = PITCH) -> list[Box]:
    """Line boxes stacked down a column."""
    return [(x1, top + k * pitch, x2, top + k * pitch + LINE) for k in range(count)]


def read(groups: list[list[Box]]) -> list[tuple[int, int]]:
    """The order of the boxes as (group, index within group), groups given in any order."""
    boxes = [box for group in groups for box in group]
    names = [(g, k) for g, group in enumerate(groups) for k in range(len(group))]
    order = reading_order(boxes, W, H)
    assert sorted(order) == list(range(len(boxes)))
    return [names[i] for i in order]


def in_order(groups: list[list[Box]]) -> list[tuple[int, int]]:
    return [(g, k) for g, group in enumerate(groups) for k in range(len(group))]


def test_nothing_and_one() -> None:
    assert reading_order([], W, H) == []
    assert reading_order([(10, 10, 20, 20)], W, H) == [0]


def test_two_columns_with_aligned_lines_read_column_by_column() -> None:
    # Every row of the left column lines up with one of the right's: an XY-cut that
    # took every horizontal gap would read across.
    groups = [column(100, 820, 200, 40), column(880, 1600, 200, 40)]
    assert read(groups) == in_order(groups)


def test_three_columns() -> None:
    groups = [column(100, 560, 200, 45), column(620, 1080, 200, 45), column(1140, 1600, 200, 45)]
    assert read(groups) == in_order(groups)


def test_headline_across_both_columns_comes_first() -> None:
    headline = [(300, 100, 1400, 170)]
    groups = [headline, column(100, 820, 220, 30), column(880, 1600, 220, 30)]
    assert read(groups) == in_order(groups)


def test_full_width_figure_keeps_the_sections_above_and_below() -> None:
    groups = [
        column(100, 820, 100, 15),
        column(880, 1600, 100, 15),
        [(100, 760, 1600, 1300)],  # the figure
        [(400, 1320, 1300, 1350)],  # its caption, centred
        column(100, 820, 1400, 18),
        column(880, 1600, 1400, 18),
    ]
    assert read(groups) == in_order(groups)


def test_figure_across_two_of_three_columns() -> None:
    groups = [
        column(100, 560, 100, 50),
        column(620, 1080, 100, 10),
        column(1140, 1600, 100, 10),
        [(620, 560, 1600, 1100)],
        column(620, 1080, 1140, 20),
        column(1140, 1600, 1140, 20),
    ]
    assert read(groups) == in_order(groups)


def test_paragraph_blocks_whose_breaks_line_up() -> None:
    left = [(100, 100, 820, 400), (100, 420, 820, 800)]
    right = [(880, 100, 1600, 395), (880, 415, 1600, 800)]
    assert read([left, right]) == in_order([left, right])


def test_paragraph_breaks_line_up_across_a_wide_white_band() -> None:
    left = [(100, 100, 820, 400), (100, 500, 820, 800)]
    right = [(880, 100, 1600, 400), (880, 500, 1600, 800)]
    assert read([left, right]) == in_order([left, right])


def test_a_banner_after_the_columns_starts_a_new_section() -> None:
    groups = [
        column(100, 820, 100, 12),
        column(880, 1600, 100, 12),
        [(150, 730, 500, 760)],  # "INDUSTRY WATCH", over the left column only
        [(150, 800, 1450, 900)],  # the next article's title
        column(100, 820, 950, 10),
    ]
    assert read(groups) == in_order(groups)


def test_a_heading_far_above_one_column_comes_before_both() -> None:
    heading = [(830, 700, 1170, 740)]  # centred on the page, but over the right column
    groups = [heading, column(180, 570, 900, 3), column(780, 1690, 900, 6)]
    assert read(groups) == in_order(groups)


def test_columns_with_different_line_pitch() -> None:
    # The right column is set looser: its lines fall between the left's.
    groups = [column(100, 820, 200, 40, pitch=40), column(880, 1600, 215, 30, pitch=53)]
    assert read(groups) == in_order(groups)


def test_small_overlaps_do_not_hide_a_cut() -> None:
    left = column(100, 820, 220, 30)
    left[5] = (100, left[5][1], 895, left[5][3])  # reaches 15 px into the right column
    right = column(880, 1600, 220, 30)
    right[7] = (840, right[7][1], 1600, right[7][3])  # and one into the gutter
    headline = [(300, 100, 1400, 226)]  # its descenders touch the first lines
    groups = [headline, left, right]
    assert read(groups) == in_order(groups)


def test_specks_and_rules_in_the_gutter_do_not_hide_it() -> None:
    left, right = column(100, 820, 200, 40), column(880, 1600, 200, 40)
    speck = (845, 700, 851, 706)
    rule = (849, 200, 852, 1800)  # a vertical rule between the columns, read as "|"
    order = reading_order([*left, *right, speck, rule], W, H)
    assert sorted(order) == list(range(82))
    words = [i for i in order if i < 80]
    assert words == list(range(80))


def test_a_speck_follows_the_part_it_is_in() -> None:
    left, right = column(100, 820, 200, 10), column(880, 1600, 200, 10)
    speck = (300, 305, 306, 311)  # a dot in the left column, between lines 2 and 3
    order = reading_order([*left, *right, speck], W, H)
    assert order.index(20) < order.index(10)  # read with the left column


def test_staggered_lines_read_top_down() -> None:
    # A date at the top right, then a greeting at the left: no columns here.
    date, greeting = (1300, 100, 1600, 130), (100, 200, 500, 230)
    assert reading_order([greeting, date], W, H) == [1, 0]


def test_label_and_value_on_one_row_read_left_to_right() -> None:
    assert reading_order([(700, 100, 900, 130), (100, 100, 400, 130)], W, H) == [1, 0]


def test_overlapping_boxes_fall_back_to_top_down_left_right() -> None:
    boxes = [(100, 120, 600, 300), (50, 100, 500, 250), (300, 110, 900, 280)]
    assert reading_order(boxes, W, H) == [1, 2, 0]


def test_three_shuffled_columns_of_jittered_boxes() -> None:
    rng = random.Random(7)
    boxes: list[Box] = []
    for x1, x2 in ((100, 560), (620, 1080), (1140, 1600)):
        for box in column(x1, x2, 100, 50):
            jitter = rng.uniform(-3, 3)
            boxes.append((box[0] + jitter, box[1] + jitter, box[2] - rng.uniform(0, 200), box[3]))
    rng.shuffle(boxes)
    order = reading_order(boxes, W, H)
    assert sorted(order) == list(range(150))
    xs = [boxes[i][0] for i in order]
    assert xs[:50] == sorted(xs[:50]) or max(xs[:50]) < 200  # the first column first
