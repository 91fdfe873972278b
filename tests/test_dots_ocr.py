"""The dots.ocr profile: prompts, sizing, requests and the answer parser."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dotsocr.errors import ConfigError, PageTooExtreme, UnknownModel
from dotsocr.layout import CATEGORIES, PageStatus
from dotsocr.models import Geometry, ModelProfile, get_profile, profile_names
from dotsocr.models.dots_ocr import IMAGE_PREFIX, PROMPTS, DotsOCR
from dotsocr.models.resize import smart_resize

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "dots_ocr.md"
ANSWERS = Path(__file__).parent / "data" / "dots_answers"
PROFILE = DotsOCR()
GEOMETRY = Geometry(width=1191, height=1684, resized_width=1204, resized_height=1680)


def golden(name: str) -> str:
    return (ANSWERS / name).read_text(encoding="utf-8")


def parse(answer: str, task: str = "layout_all", **kw):
    return PROFILE.parse(answer, GEOMETRY, task, **kw)


# --- prompts and registry -------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> str:
    if not REFERENCE.is_file():
        pytest.skip(f"reference not found at {REFERENCE}")
    return REFERENCE.read_text(encoding="utf-8")


def test_prompts_are_the_reference_strings(reference):
    blocks = re.findall(r"^`(layout_all|layout_only)`[^\n]*\n```\n(.*?)```", reference, re.M | re.S)
    # A fenced block's text ends with the newline before its closing fence.
    assert {name: body[:-1] for name, body in blocks} == {
        "layout_all": PROMPTS["layout_all"],
        "layout_only": PROMPTS["layout_only"],
    }
    assert PROMPTS["layout_all"].endswith("single JSON object.\n")
    assert f"`{PROMPTS['ocr']}`" in reference
    grounding = PROMPTS["grounding"].replace("\n", "\\n")
    assert f"`{grounding}`" in reference


def test_prompt_lists_the_eleven_categories():
    for category in CATEGORIES:
        assert (
            f"'{category}'" in PROMPTS["layout_all"] and f"'{category}'" in PROMPTS["layout_only"]
        )


def test_registry_finds_aliases_and_names_the_known_models():
    assert isinstance(get_profile("rednote-hilab/dots.ocr"), ModelProfile)
    assert get_profile("DOTS_OCR").name == "dots.ocr"
    with pytest.raises(UnknownModel, match=r"Unknown model 'dots'\. Known: .*dots\.ocr") as info:
        get_profile("dots")
    assert isinstance(info.value, KeyError)
    assert "dots.ocr" in profile_names()


# --- sizing and requests --------------------------------------------------------------


def test_prepare_resizes_to_the_model_size_and_counts_tokens():
    page = PROFILE.prepare(Image.new("RGB", (1700, 2200), "white"), 1700, 2200)
    assert page.image.size == (1708, 2212)
    assert page.image_tokens == 61 * 79
    assert page.geometry == Geometry(1700, 2200, 1708, 2212)


def test_prepare_of_a_capped_image_keeps_the_original_frame():
    page = PROFILE.prepare(Image.new("RGB", (850, 1100), "white"), 1700, 2200)
    assert page.geometry.width == 1700 and page.geometry.resized_width == smart_resize(1100, 850)[1]


@settings(max_examples=300)
@given(st.integers(1, 60_000), st.integers(1, 60_000))
def test_model_size_is_always_accepted_by_the_server(width, height):
    try:
        w, h = PROFILE.model_size(width, height)
    except PageTooExtreme:
        assert max(width, height) > 200 * min(width, height)
        return
    assert max(w, h) <= 200 * min(w, h)  # the server re-checks the ratio on what we send
    assert smart_resize(h, w) == (h, w)  # and does not resize it again
    assert w * h <= PROFILE.max_pixels


def test_request_has_the_image_prefix_data_url_and_sampling():
    page = PROFILE.prepare(Image.new("RGB", (300, 400), "white"), 300, 400)
    body = PROFILE.build_request(page, "layout_all").to_openai("dots")
    assert body["model"] == "dots" and body["temperature"] == 0.1 and body["top_p"] == 1.0
    assert body["max_tokens"] == 16_384
    (message,) = body["messages"]
    image_part, text_part = message["content"]
    assert text_part == {"type": "text", "text": IMAGE_PREFIX + PROMPTS["layout_all"]}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.format == "PNG" and sent.size == page.image.size
    retry = PROFILE.build_request(page, "ocr", temperature=0.6, max_tokens=900).to_openai("m")
    assert retry["temperature"] == 0.6 and retry["max_tokens"] == 900


def test_grounding_maps_the_users_box_into_resized_pixels():
    page = PROFILE.prepare(Image.new("RGB", (1000, 1000), "white"), 2000, 2000)
    assert page.geometry.resized_width == 1008
    text = PROFILE.build_request(page, "grounding", box=(200, 400, 1000, 600)).messages[0]
    prompt = text["content"][1]["text"]
    assert prompt.endswith("Bounding Box:\n[101, 202, 504, 302]")
    with pytest.raises(ConfigError, match="needs a box"):
        PROFILE.build_request(page, "grounding")
    with pytest.raises(ConfigError, match="unknown task"):
        PROFILE.build_request(page, "summarise")


# --- parsing --------------------------------------------------------------------------


def test_real_answer_parses_with_boxes_in_page_pixels():
    result = parse(golden("multi_page_p1.json"))
    assert result.status is PageStatus.OK
    assert len(result.cells) == 12
    first = result.cells[0]
    assert first.category == "Section-header"
    assert first.text == "## The Evolution of the Word Processor"
    # [140, 141, 536, 175] in the 1204x1680 frame the model saw, back to 1191x1684
    assert first.bbox == (138, 141, 530, 175)
    assert "missing closing bracket added" in result.notes  # the model wrote no final ]


def test_every_cut_keeps_exactly_the_complete_cells():
    answer = golden("2206.01062_p1.json")
    full = parse(answer).cells
    ends = [m.end() for m in re.finditer(r"\}", answer)]
    for cut in range(10, len(answer), 37):
        result = parse(answer[:cut], finish_reason="length")
        assert result.status is PageStatus.REPAIRED
        assert result.cells == full[: len(result.cells)]
        complete = sum(end <= cut for end in ends)
        assert len(result.cells) >= complete - 1  # the Picture cell has no text: } ends it


def test_cut_answer_says_what_happened():
    answer = golden("multi_page_p1.json")
    result = parse(answer[: answer.index("Pre-Digital") + 5], finish_reason="length")
    assert len(result.cells) == 2
    assert "answer cut at the token budget" in result.notes
    assert "unfinished last cell dropped" in result.notes


def cell(x=0, text="a", category="Text"):
    return {"bbox": [x, 0, x + 10, 10], "category": category, "text": text}


def test_missing_commas_and_brackets_are_mended():
    answer = json.dumps(cell(0)) + " " + json.dumps(cell(20, "b"))
    result = parse("[" + answer)
    assert [c.text for c in result.cells] == ["a", "b"]
    assert result.status is PageStatus.REPAIRED
    assert "1 missing comma(s) between items" in result.notes


def test_malformed_middle_item_is_repaired_and_later_items_kept():
    answer = (
        '[{"bbox": [0,0,9,9], "category": "Text", "text": "a"}, '
        '{"bbox": [0,0,9,9] "category": "Title", "text": "b"}, '  # no comma after the box
        '{"bbox": [1,1,9,9], "category": "Text", "text": "c"}]'
    )
    result = parse(answer)
    assert [c.text for c in result.cells] == ["a", "b", "c"]
    assert result.status is PageStatus.REPAIRED


def test_code_fence_is_harmless():
    result = parse("```json\n" + json.dumps([cell()]) + "\n```")
    assert result.status is PageStatus.OK and len(result.cells) == 1


def test_duplicates_and_loops_are_collapsed_and_counted():
    looped = [cell(0, "intro")] + [cell(0, "same")] * 3 + [cell(20 + i, "row") for i in range(40)]
    result = parse(json.dumps(looped))
    texts = [c.text for c in result.cells]
    assert texts.count("same") == 1 and texts.count("row") == 3
    assert "2 duplicate cell(s) removed" in result.notes
    assert "37 repeated cell(s) from a loop collapsed" in result.notes
    assert result.status is PageStatus.REPAIRED


def test_short_runs_of_equal_cells_are_kept_but_cycles_that_loop_are_cut():
    column = [cell(0, "intro")] + [cell(20 + i, "N/A") for i in range(5)]
    assert len(parse(json.dumps(column)).cells) == 6  # a real column of "N/A"
    cycle = [cell(i, "a" if i % 2 else "b", "Text") for i in range(30)]
    result = parse(json.dumps(cycle))
    assert [c.text for c in result.cells] == ["b", "a"] * 3
    assert "24 repeated cell(s) from a loop collapsed" in result.notes
    cut = json.dumps([cell(i, "same") for i in range(5)])[:-1]
    assert len(parse(cut, finish_reason="length").cells) == 3  # a loop ran to the budget


def test_runaway_text_inside_a_cell_is_collapsed():
    table = "<table><tr>" + "<td></td>" * 2000 + "</tr></table>"
    result = parse(json.dumps([cell(text=table, category="Table")]))
    assert len(result.cells[0].text) < 100
    assert "1 runaway repeat(s) in cell text collapsed" in result.notes
    leaders = "Contents " + "." * 60 + " 3"  # dot leaders are not a loop
    assert parse(json.dumps([cell(text=leaders)])).cells[0].text == leaders


def test_unknown_categories_are_kept_and_flagged():
    result = parse(json.dumps([cell(category="Handwriting"), cell(20, category="list-item")]))
    assert [c.category for c in result.cells] == ["Handwriting", "List-item"]
    assert "unknown category 'Handwriting' kept" in result.notes
    assert result.status is PageStatus.OK


def test_boxes_are_ordered_and_clipped_to_the_page():
    result = parse(json.dumps([{"bbox": [1300, 1700, 100, -5], "category": "Text", "text": "x"}]))
    assert result.cells[0].bbox == (99, 0, 1191, 1684)


def test_items_without_usable_boxes_are_dropped_and_counted():
    items = [cell(), {"category": "Text", "text": "no box"}, {"bbox": [1, "x", 3, 4]}, "str"]
    result = parse(json.dumps(items))
    assert len(result.cells) == 1
    assert "3 item(s) without a usable bbox dropped" in result.notes


def test_bare_objects_one_per_line_are_all_kept():
    answer = json.dumps(cell(0, "a")) + ",\n" + json.dumps(cell(20, "b"))
    result = parse(answer)
    assert [c.text for c in result.cells] == ["a", "b"]
    assert result.status is PageStatus.OK  # nothing was lost


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps({"meta": [1, 2], "layout": [cell()]}),
        json.dumps([[cell()]]),
        "Here is the layout: " + json.dumps([cell()]),
    ],
)
def test_cells_are_found_inside_other_shapes(answer):
    assert [c.text for c in parse(answer).cells] == ["a"]


def test_odd_field_types_are_read_sensibly():
    items = [
        {"bbox": [True, 0, 5, 5], "category": "Text", "text": "bool box"},
        {"bbox": [0, 0, 5, 5], "category": ["Title"], "text": {"k": "v"}},
        {"bbox": [1e308, 0, 1e308, 5], "category": "Text", "text": "huge"},
        {"bbox": [10**400, 0, 5, 5], "category": "Text", "text": "huger"},
    ]
    result = parse(json.dumps(items))
    assert [(c.category, c.text) for c in result.cells] == [("Title", '{"k": "v"}')]
    assert "3 item(s) without a usable bbox dropped" in result.notes


def test_layout_only_answers_have_no_text():
    result = parse(json.dumps([{"bbox": [0, 0, 5, 5], "category": "Picture"}]), "layout_only")
    assert result.cells[0].text is None and result.status is PageStatus.OK


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "I cannot read this page.",
        '"just a string"',
        "See [the docs](http://x) and $\\frac{a}{b}$ [1].",
    ],
)
def test_non_json_answers_to_layout_prompts_fall_back_to_text(answer):
    result = parse(answer)
    assert result.status is PageStatus.FALLBACK
    if answer.strip():
        (only,) = result.cells
        assert only.text == answer.strip() and only.bbox == (0, 0, 1191, 1684)
    else:
        assert result.cells == [] and "empty answer to a layout prompt" in result.notes


def test_ocr_prompt_answer_is_one_text_cell():
    result = parse("# Title\n\nBody text.", "ocr")
    assert result.status is PageStatus.OK
    assert [(c.category, c.text) for c in result.cells] == [("Text", "# Title\n\nBody text.")]


def test_grounding_answer_lands_in_the_users_box():
    result = parse("Total: 42", "grounding", box=(10, 20, 30, 40))
    assert result.cells[0].bbox == (10, 20, 30, 40)


@settings(max_examples=400)
@given(st.text())
def test_parser_never_raises_on_any_text(text):
    for task in PROMPTS:
        result = PROFILE.parse(text, GEOMETRY, task, box=(0, 0, 5, 5))
        assert result.status in PageStatus
        for c in result.cells:
            x1, y1, x2, y2 = c.bbox
            assert 0 <= x1 <= x2 <= 1191 and 0 <= y1 <= y2 <= 1684


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300)
@given(st.lists(json_values, max_size=8), st.integers(min_value=0, max_value=4000))
def test_parser_never_raises_on_cut_json(items, cut):
    text = json.dumps(items)[:cut]
    result = parse(text, finish_reason="length")
    assert isinstance(result.cells, list)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5_000), st.sampled_from(["[", "{", '{"bbox": [', "[{"]))
def test_parser_never_raises_on_deep_nesting(depth, opener):
    assert parse(opener * depth).status in PageStatus
    result = parse(opener * depth, finish_reason="length")
    assert result.cells == [] and result.status is PageStatus.REPAIRED
    assert "no complete cell before the answer was cut" in result.notes
