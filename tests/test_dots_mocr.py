"""The dots.mocr profile: its prompts and requests, web parsing, scene-text spotting and
SVG answers, and dots.ocr's tasks left exactly as dots.ocr does them."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dotsocr.errors import ConfigError
from dotsocr.layout import Cell, DocumentResult, PageResult, PageStatus
from dotsocr.models import Geometry, ModelProfile
from dotsocr.models.dots_mocr import (
    DOTS_MOCR,
    MOCR_PROMPTS,
    SVG_HUB_ID,
    DotsMOCR,
    DotsMOCRSVG,
    close_svg,
    point_to_page,
)
from dotsocr.models.dots_ocr import IMAGE_PREFIX, PROMPTS, DotsOCR
from dotsocr.models.serving import DOTS_OCR
from dotsocr.render import render_json

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "dots_ocr.md"
ANSWERS = Path(__file__).parent / "data" / "dots_answers"
PROFILE = DotsMOCR()
# The model saw 1200x1000 of a 600x400 page: x halves, y shrinks by 0.4.
GEOMETRY = Geometry(width=600, height=400, resized_width=1200, resized_height=1000)

WEB_PROMPT = "Parsing the layout info of this webpage image with format json:\n"
SPOTTING_PROMPT = "Detect and recognize the text in the image."


def golden(name: str) -> str:
    return (ANSWERS / name).read_text(encoding="utf-8")


def parse(answer: str, task: str, **kw):
    return PROFILE.parse(answer, GEOMETRY, task, **kw)


def sent_text(request) -> str:
    (message,) = request.messages
    image_part, text_part = message["content"]
    assert image_part["type"] == "image_url"
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")
    assert text_part["type"] == "text"
    return text_part["text"]


# --- the profile ----------------------------------------------------------------------


def test_profile_names_the_model_and_its_tasks():
    assert isinstance(PROFILE, ModelProfile) and isinstance(PROFILE, DotsOCR)
    assert (PROFILE.name, PROFILE.hf_id) == ("dots.mocr", "rednote-hilab/dots.mocr")
    assert PROFILE.tasks == (
        "layout_all",
        "layout_only",
        "ocr",
        "grounding",
        "web",
        "spotting",
        "svg",
    )
    assert PROFILE.default_task == "layout_all"
    assert (PROFILE.min_pixels, PROFILE.max_pixels, PROFILE.factor) == (3136, 11_289_600, 28)
    assert (PROFILE.temperature, PROFILE.top_p, PROFILE.max_tokens) == (0.1, 1.0, 16_384)
    assert PROFILE.capabilities is not None and PROFILE.capabilities.layout_boxes


def test_serving_has_dots_ocr_shapes_under_its_own_hub_id():
    assert PROFILE.serving is DOTS_MOCR and DOTS_MOCR.hub_id == "rednote-hilab/dots.mocr"
    for name in ("weight_bytes", "vision", "decoder", "max_image_tokens", "flags"):
        assert getattr(DOTS_MOCR, name) == getattr(DOTS_OCR, name)
    assert DOTS_MOCR.flags["--chat-template-content-format"] == "string"


def test_svg_variant_is_the_same_model_asking_for_svg():
    svg = DotsMOCRSVG()
    assert (svg.name, svg.hf_id, svg.default_task) == ("dots.mocr-svg", SVG_HUB_ID, "svg")
    assert svg.serving is not None and svg.serving.hub_id == SVG_HUB_ID
    assert svg.tasks == PROFILE.tasks


def test_new_prompts_are_the_published_strings():
    assert MOCR_PROMPTS["web"] == WEB_PROMPT
    assert MOCR_PROMPTS["spotting"] == SPOTTING_PROMPT
    assert MOCR_PROMPTS["svg"] == (
        'Please generate the SVG code based on the image.viewBox="0 0 {width} {height}"'
    )
    assert {k: MOCR_PROMPTS[k] for k in PROMPTS} == PROMPTS  # dots.ocr's, unchanged


def test_new_prompts_match_the_reference():
    if not REFERENCE.is_file():
        pytest.skip(f"reference not found at {REFERENCE}")
    reference = REFERENCE.read_text(encoding="utf-8")
    escaped = WEB_PROMPT.replace("\n", "\\n")  # written as backslash-n there
    assert f"`{escaped}`" in reference
    assert f"`{SPOTTING_PROMPT}`" in reference


# --- requests -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page():
    # A 2000x1600 page frame sent as 1000x800 pixels: the model sees 1008x812.
    return PROFILE.prepare(Image.new("RGB", (1000, 800), "white"), 2000, 1600)


@pytest.mark.parametrize("task", ["layout_all", "layout_only", "ocr", "web", "spotting"])
def test_request_is_the_image_then_the_prefixed_prompt(page, task):
    request = PROFILE.build_request(page, task)
    assert sent_text(request) == IMAGE_PREFIX + MOCR_PROMPTS[task]
    assert (request.temperature, request.top_p, request.max_tokens) == (0.1, 1.0, 16_384)
    assert request.task == task and request.box is None


def test_svg_request_gives_the_page_size_as_viewbox_and_samples_warm(page):
    request = PROFILE.build_request(page, "svg")
    assert sent_text(request) == (
        IMAGE_PREFIX + 'Please generate the SVG code based on the image.viewBox="0 0 2000 1600"'
    )
    assert request.temperature == 0.9
    assert PROFILE.build_request(page, "svg", temperature=0.3).temperature == 0.3
    with pytest.raises(ConfigError, match="viewBox"):
        PROFILE.prompt("svg")


def test_grounding_request_is_dots_ocrs(page):
    box = (400, 400, 1000, 800)
    mocr = PROFILE.build_request(page, "grounding", box=box)
    ocr = DotsOCR().build_request(page, "grounding", box=box)
    assert mocr.messages == ocr.messages and mocr.box == ocr.box == (202, 203, 504, 406)
    assert sent_text(mocr).endswith("Bounding Box:\n[202, 203, 504, 406]")


def test_unknown_task_is_refused(page):
    with pytest.raises(ConfigError, match="unknown task"):
        PROFILE.build_request(page, "qa")


# --- dots.ocr's tasks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "geometry"),
    [
        ("multi_page_p1.json", Geometry(1191, 1684, 1204, 1680)),
        ("2206.01062_p1.json", Geometry(1224, 1584, 1232, 1596)),
    ],
)
@pytest.mark.parametrize("task", ["layout_all", "layout_only", "ocr", "grounding"])
@pytest.mark.parametrize("finish_reason", ["stop", "length"])
def test_document_tasks_parse_exactly_as_dots_ocr(name, geometry, task, finish_reason):
    answer = golden(name)
    if finish_reason == "length":
        answer = answer[: len(answer) // 2]
    box = (10, 20, 300, 400) if task == "grounding" else None
    mocr = PROFILE.parse(answer, geometry, task, finish_reason=finish_reason, box=box)
    ocr = DotsOCR().parse(answer, geometry, task, finish_reason=finish_reason, box=box)
    assert mocr == ocr
    assert mocr.cells


def test_web_answer_is_read_as_layout_all():
    answer = golden("multi_page_p1.json")
    geometry = Geometry(1191, 1684, 1204, 1680)
    web = PROFILE.parse(answer, geometry, "web")
    assert web == DotsOCR().parse(answer, geometry, "layout_all")
    assert web.cells[0].bbox == (138, 141, 530, 175)


# --- web parsing ----------------------------------------------------------------------

WEB_ANSWER = json.dumps(
    [
        {"bbox": [0, 0, 1200, 80], "category": "Page-header", "text": "Home | News | About"},
        {"bbox": [100, 120, 700, 180], "category": "Title", "text": "# Release notes"},
        {"bbox": [100, 200, 1100, 500], "category": "Text", "text": "Version 2 is out."},
        {"bbox": [100, 520, 500, 900], "category": "Picture"},
        {"bbox": [700, 520, 1100, 900], "category": "Table", "text": "<table></table>"},
    ]
)


def test_web_answer_cells_are_in_page_pixels():
    result = parse(WEB_ANSWER, "web")
    assert result.status is PageStatus.OK and result.notes == []
    assert [c.category for c in result.cells] == [
        "Page-header",
        "Title",
        "Text",
        "Picture",
        "Table",
    ]
    assert [c.bbox for c in result.cells] == [
        (0, 0, 600, 32),
        (50, 48, 350, 72),
        (50, 80, 550, 200),
        (50, 208, 250, 360),
        (350, 208, 550, 360),
    ]
    assert result.cells[1].text == "# Release notes" and result.cells[3].text is None
    assert all(c.quad is None for c in result.cells)


def test_web_answer_cut_short_keeps_its_whole_cells():
    cut = WEB_ANSWER[: WEB_ANSWER.index("Version 2")]
    result = parse(cut, "web", finish_reason="length")
    assert result.status is PageStatus.REPAIRED
    assert [c.text for c in result.cells] == ["Home | News | About", "# Release notes"]
    assert "answer cut at the token budget" in result.notes


# --- scene text spotting --------------------------------------------------------------

SPOTTING_ANSWER = (
    "(100, 100), (300, 100), (300, 150), (100, 150) OPEN\n"
    "(500, 200), (700, 300), (650, 400), (450, 300) Coffee & Tea\n"  # rotated about 27 degrees
    "(1100, 900), (1300, 900), (1300, 1100), (1100, 1100) EXIT\n"  # past the corner: clipped
)


def test_spotting_gives_one_text_cell_per_quad_in_page_pixels():
    result = parse(SPOTTING_ANSWER, "spotting")
    assert result.status is PageStatus.OK and result.notes == []
    assert [c.text for c in result.cells] == ["OPEN", "Coffee & Tea", "EXIT"]
    assert all(c.category == "Text" for c in result.cells)
    upright, rotated, clipped = result.cells
    assert upright.quad == ((50, 40), (150, 40), (150, 60), (50, 60))
    assert upright.bbox == (50, 40, 150, 60)
    assert rotated.quad == ((250, 80), (350, 120), (325, 160), (225, 120))
    assert rotated.bbox == (225, 80, 350, 160)  # bounds the quad
    assert clipped.quad == ((550, 360), (600, 360), (600, 400), (550, 400))
    assert clipped.bbox == (550, 360, 600, 400)


def test_spotting_reads_instances_without_line_breaks_and_odd_spacing():
    answer = (
        "(100,100),(300,100),(300,150),(100,150)OPEN"
        " ( 500 , 200 ),(700, 300),(650, 400), (450, 300) Tea"
    )
    result = parse(answer, "spotting")
    assert [c.text for c in result.cells] == ["OPEN", "Tea"]
    assert result.cells[1].quad == ((250, 80), (350, 120), (325, 160), (225, 120))


def test_spotting_quad_reaches_the_json_output():
    (cell, *_) = parse(SPOTTING_ANSWER, "spotting").cells
    doc = DocumentResult(
        source="street.jpg", pages=[PageResult(index=0, width=600, height=400, cells=[cell])]
    )
    out = json.loads(render_json(doc))["pages"][0]["cells"][0]
    assert out["quad"] == [[50, 40], [150, 40], [150, 60], [50, 60]]
    assert out["bbox"] == [50, 40, 150, 60]
    assert Cell.model_validate(out) == cell


def test_spotting_cut_in_a_text_drops_that_instance():
    answer = SPOTTING_ANSWER[: SPOTTING_ANSWER.index("& Tea")]
    result = parse(answer, "spotting", finish_reason="length")
    assert result.status is PageStatus.REPAIRED
    assert [c.text for c in result.cells] == ["OPEN"]
    assert result.notes == ["answer cut at the token budget", "unfinished last instance dropped"]


def test_spotting_cut_in_the_next_quad_keeps_every_whole_instance():
    answer = SPOTTING_ANSWER[: SPOTTING_ANSWER.index("(1300, 900)") + 4]
    result = parse(answer, "spotting", finish_reason="length")
    assert result.status is PageStatus.REPAIRED
    assert [c.text for c in result.cells] == ["OPEN", "Coffee & Tea"]
    assert "unfinished last instance dropped" in result.notes


def test_spotting_cut_after_a_whole_line_loses_nothing():
    answer = SPOTTING_ANSWER[: SPOTTING_ANSWER.index("(500, 200)")]
    result = parse(answer, "spotting", finish_reason="length")
    assert [c.text for c in result.cells] == ["OPEN"]
    assert result.status is PageStatus.REPAIRED
    assert result.notes == ["answer cut at the token budget"]


def test_spotting_answer_not_cut_keeps_its_last_text_without_a_line_break():
    result = parse(SPOTTING_ANSWER.rstrip("\n"), "spotting", finish_reason="stop")
    assert [c.text for c in result.cells][-1] == "EXIT" and result.status is PageStatus.OK


def test_spotting_drops_instances_without_text_and_repeats():
    quad = "(10, 10), (20, 10), (20, 20), (10, 20)"
    answer = f"{quad}\n{quad} A\n{quad} A\n" + "".join(
        f"(10, {i}), (20, {i}), (20, {i + 5}), (10, {i + 5}) B\n" for i in range(30, 90, 5)
    )
    result = parse(answer, "spotting")
    assert [c.text for c in result.cells] == ["A", "B", "B", "B"]
    assert "1 instance(s) without text dropped" in result.notes
    assert "1 duplicate cell(s) removed" in result.notes
    assert "9 repeated cell(s) from a loop collapsed" in result.notes
    assert result.status is PageStatus.REPAIRED


def test_spotting_without_quads_falls_back_to_text():
    result = parse("I see a shop sign that says OPEN.", "spotting")
    assert result.status is PageStatus.FALLBACK
    assert result.cells == [Cell(bbox=(0, 0, 600, 400), category="Text", text=result.cells[0].text)]
    assert result.cells[0].text == "I see a shop sign that says OPEN."
    assert "answer had no quadrilaterals: kept as plain text" in result.notes
    empty = parse("  \n", "spotting")
    assert empty.status is PageStatus.FALLBACK and empty.cells == []


def test_spotting_cut_before_any_whole_instance_is_repaired_and_empty():
    result = parse(
        "(100, 100), (300, 100), (300, 150), (100, 150) OP", "spotting", finish_reason="length"
    )
    assert result.cells == [] and result.status is PageStatus.REPAIRED
    assert "no complete text instance in the answer" in result.notes


def test_point_to_page_scales_and_clips():
    assert point_to_page(GEOMETRY, 300, 150) == (150, 60)
    assert point_to_page(GEOMETRY, -40, 5000) == (0, 400)


# --- image to SVG ---------------------------------------------------------------------

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 600 400">'
    '<rect x="10" y="10" width="100" height="50" fill="#f00"/>'
    '<g><path d="M 0 0 L 100 100"/><text x="5" y="390">Axis</text></g></svg>'
)


def test_svg_answer_is_one_picture_cell_over_the_page():
    result = parse("```xml\n" + SVG + "\n```", "svg")
    assert result.status is PageStatus.OK and result.notes == []
    assert result.cells == [Cell(bbox=(0, 0, 600, 400), category="Picture", text=SVG)]


def test_svg_cut_short_is_closed_so_it_parses():
    cut = SVG[: SVG.index("100 100") + 3]  # inside the path's d
    result = parse(cut, "svg", finish_reason="length")
    assert result.status is PageStatus.REPAIRED
    assert result.notes == ["answer cut at the token budget", "unfinished SVG closed"]
    (cell,) = result.cells
    root = ElementTree.fromstring(cell.text)
    assert root.tag.endswith("svg") and len(list(root.iter())) == 4  # svg, rect, g, path


@pytest.mark.parametrize("cut", range(SVG.index(">") + 1, len(SVG), 5))
def test_every_cut_of_an_svg_closes_into_well_formed_xml(cut):
    ElementTree.fromstring(close_svg(SVG[:cut]))


def test_svg_cut_inside_its_own_start_tag_has_nothing_to_keep():
    result = parse("svg: " + SVG[:20], "svg", finish_reason="length")
    assert result.cells == [] and result.status is PageStatus.REPAIRED
    assert "no complete SVG element before the answer was cut" in result.notes


def test_svg_without_an_svg_element_falls_back_to_text():
    result = parse("Sorry, I cannot draw this.", "svg")
    assert result.status is PageStatus.FALLBACK
    assert [(c.category, c.text) for c in result.cells] == [("Text", "Sorry, I cannot draw this.")]
    assert parse("", "svg").cells == []


# --- nothing raises -------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list('(), 0123456789-.<svg/>"{}[]:abcXYZ\n')), max_size=200),
    st.sampled_from(["web", "spotting", "svg", "layout_all"]),
    st.sampled_from([None, "stop", "length"]),
)
def test_garbage_never_raises_and_boxes_stay_on_the_page(answer, task, finish_reason):
    result = parse(answer, task, finish_reason=finish_reason)
    assert isinstance(result.status, PageStatus)
    for cell in result.cells:
        x1, y1, x2, y2 = cell.bbox
        assert 0 <= x1 <= x2 <= 600 and 0 <= y1 <= y2 <= 400
        if cell.quad is not None:
            assert all(0 <= x <= 600 and 0 <= y <= 400 for x, y in cell.quad)
            assert cell.category == "Text" and cell.text and cell.text.strip()
