"""The PaddleOCR-VL profile: prompts, sizing, requests, serving facts and the answer parser.
Answers are written in the documented formats: plain text for "OCR:", OTSL (``<fcel>``,
``<ecel>``, ``<lcel>``, ``<ucel>``, ``<xcel>``, ``<nl>``) for "Table Recognition:" and
LaTeX for "Formula Recognition:"."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dotsocr.errors import ConfigError
from dotsocr.layout import PageStatus
from dotsocr.models import Geometry, ModelProfile
from dotsocr.models.paddleocr_vl import (
    MAX_PIXELS,
    MIN_PIXELS,
    PADDLEOCR_VL,
    PROMPTS,
    PaddleOCRVL,
    otsl_to_html,
)

PROFILE = PaddleOCRVL()
GEOMETRY = Geometry(width=1700, height=2200, resized_width=1456, resized_height=1904)
PAGE = (0, 0, 1700, 2200)


def parse(answer: str, task: str = "ocr", **kw):
    return PROFILE.parse(answer, GEOMETRY, task, **kw)


def model_smart_resize(height: int, width: int) -> tuple[int, int]:
    """The model's own sizing (its image processor and vLLM's copy), in floats."""
    factor = 28
    if height < factor:
        width, height = round(width * factor / height), factor
    if width < factor:
        height, width = round(height * factor / width), factor
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > MAX_PIXELS:
        beta = math.sqrt(height * width / MAX_PIXELS)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# --- prompts and requests ---------------------------------------------------------------


def test_prompts_are_the_recipes_strings():
    assert PROMPTS == {
        "ocr": "OCR:",
        "table": "Table Recognition:",
        "formula": "Formula Recognition:",
        "chart": "Chart Recognition:",
    }
    assert PROFILE.tasks == ("ocr", "table", "formula", "chart")
    assert PROFILE.default_task == "ocr" and PROFILE.name == "paddleocr-vl"
    assert PROFILE.hf_id == PADDLEOCR_VL.hub_id == "PaddlePaddle/PaddleOCR-VL"
    assert isinstance(PROFILE, ModelProfile)


@pytest.mark.parametrize("task", ["ocr", "table", "formula", "chart"])
def test_request_is_the_image_then_the_task_prompt(task):
    page = PROFILE.prepare(Image.new("RGB", (800, 600), "white"), 800, 600)
    body = PROFILE.build_request(page, task).to_openai("pp")
    assert set(body) == {"model", "messages", "max_tokens", "temperature", "top_p"}
    assert body["temperature"] == 0.0 and body["top_p"] == 1.0 and body["max_tokens"] == 8192
    (message,) = body["messages"]
    assert message["role"] == "user"
    image_part, text_part = message["content"]
    assert image_part["type"] == "image_url"
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")
    assert text_part == {"type": "text", "text": PROMPTS[task]}


def test_layout_tasks_are_not_offered():
    page = PROFILE.prepare(Image.new("RGB", (400, 400), "white"), 400, 400)
    for task in ("layout_all", "layout_only", "grounding"):
        assert task not in PROFILE.tasks
        with pytest.raises(ConfigError, match="unknown task"):
            PROFILE.build_request(page, task)


# --- sizing -----------------------------------------------------------------------------


def test_sizing_is_factor_28_within_the_processors_bounds():
    page = PROFILE.prepare(Image.new("RGB", (1700, 2200), "white"), 1700, 2200)
    assert page.image.size == (1456, 1904) and page.geometry == GEOMETRY
    assert page.image_tokens == 52 * 68 == 3536
    assert PROFILE.image_tokens(100, 100) == 196  # enlarged to at least 147,384 pixels
    assert PROFILE.image_tokens(10_000, 10_000) == 3600 == PADDLEOCR_VL.max_image_tokens


@settings(max_examples=300)
@given(st.integers(28, 30_000), st.integers(28, 30_000))
def test_sizing_matches_the_models_and_is_not_resized_again(width, height):
    if max(width, height) > 200 * min(width, height):
        return
    w, h = PROFILE.model_size(width, height)
    # The same sizing, in exact integers: the model's floats can fall a step short when the
    # budget is met exactly (1835 x 1835: 1652 instead of 1680), which only costs it detail.
    # Where rounding leaves the model's own size over 200:1, which the server would refuse
    # for the image we send, the long side gives up steps until it is not.
    model_h, model_w = model_smart_resize(height, width)
    if max(model_h, model_w) <= 200 * min(model_h, model_w):
        assert abs(h - model_h) <= 28 and abs(w - model_w) <= 28
    assert max(h, w) <= 200 * min(h, w)
    assert model_smart_resize(h, w) == (h, w)  # the server keeps what we send
    assert 188 <= PROFILE.image_tokens(width, height) == (w // 28) * (h // 28) <= 3600


# --- serving ------------------------------------------------------------------------------


def test_serving_facts_for_the_launch_planner():
    assert PADDLEOCR_VL.decoder.kv_bytes_per_token() == 2 * 18 * 2 * 128 * 2 == 18_432
    assert PADDLEOCR_VL.flags == {"--trust-remote-code": None}
    assert set(PADDLEOCR_VL.flag_reasons) == set(PADDLEOCR_VL.flags)
    assert PADDLEOCR_VL.pixel_cap_kwarg is None and PADDLEOCR_VL.pixels_per_token == 784
    assert PADDLEOCR_VL.vision.patch == 14 and PADDLEOCR_VL.vision.merge == 2
    capabilities = PROFILE.capabilities
    assert capabilities is not None and not capabilities.layout_boxes
    assert capabilities.tables == "html" and capabilities.formulas
    assert PROFILE.quantized == {}


# --- parsing ------------------------------------------------------------------------------


def test_ocr_answer_is_one_text_cell_over_the_page_or_region():
    result = parse("Invoice No. 4711\nDate: 2025-03-01\nTotal: 118.00 EUR")
    assert result.status is PageStatus.OK and result.notes == []
    assert [(c.bbox, c.category, c.text) for c in result.cells] == [
        (PAGE, "Text", "Invoice No. 4711\nDate: 2025-03-01\nTotal: 118.00 EUR")
    ]
    region = parse("Total: 118.00 EUR", box=(100, 200, 900, 260))
    assert region.cells[0].bbox == (100, 200, 900, 260)


def test_formula_answer_is_a_formula_cell_in_latex():
    latex = r"\frac{a}{b} = \sum_{i=1}^{n} x_i^2"
    result = parse(latex, "formula")
    assert [(c.category, c.text) for c in result.cells] == [("Formula", latex)]
    assert result.status is PageStatus.OK


def test_chart_answer_is_kept_as_a_text_table():
    chart = "Year | Sales\n2023 | 10\n2024 | 12"
    result = parse(chart, "chart")
    assert [(c.category, c.text) for c in result.cells] == [("Text", chart)]


def test_table_answer_in_otsl_becomes_html():
    otsl = (
        "<fcel>Item<fcel>Qty<fcel>Price<nl>"
        "<fcel>Pens<fcel>2<fcel>3.50<nl>"
        "<fcel>Ink<ecel><fcel>9 < 10<nl>"
    )
    result = parse(otsl, "table")
    assert result.status is PageStatus.OK
    assert [(c.bbox, c.category) for c in result.cells] == [(PAGE, "Table")]
    assert result.cells[0].text == (
        "<table><tr><td>Item</td><td>Qty</td><td>Price</td></tr>"
        "<tr><td>Pens</td><td>2</td><td>3.50</td></tr>"
        "<tr><td>Ink</td><td></td><td>9 &lt; 10</td></tr></table>"
    )


def test_otsl_spans_become_rowspan_and_colspan():
    # A header over two columns, a cell over two rows, and a 2 x 2 block.
    assert otsl_to_html("<fcel>Sales<lcel><nl><fcel>2023<fcel>2024<nl>") == (
        '<table><tr><td colspan="2">Sales</td></tr><tr><td>2023</td><td>2024</td></tr></table>'
    )
    assert otsl_to_html("<fcel>Region<fcel>Q1<nl><ucel><fcel>Q2<nl>") == (
        '<table><tr><td rowspan="2">Region</td><td>Q1</td></tr><tr><td>Q2</td></tr></table>'
    )
    assert otsl_to_html("<fcel>X<lcel><fcel>a<nl><ucel><xcel><fcel>b<nl>") == (
        '<table><tr><td rowspan="2" colspan="2">X</td><td>a</td></tr><tr><td>b</td></tr></table>'
    )
    # Ragged rows are padded; words in a taken slot go to the cell that spans it.
    assert otsl_to_html("<fcel>a<fcel>b<nl><fcel>c") == (
        "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td></td></tr></table>"
    )
    assert otsl_to_html("<fcel>a<lcel>b<nl>") == '<table><tr><td colspan="2">a b</td></tr></table>'
    assert otsl_to_html("no tags at all") is None


def test_table_answer_in_html_is_kept_and_a_cut_one_closed():
    html = "<table><tr><td>A</td></tr></table>"
    assert parse(html, "table").cells[0].text == html
    cut = parse("<table><tr><td>A</td></tr><tr><td>B", "table", finish_reason="length")
    assert cut.cells[0].text == "<table><tr><td>A</td></tr></table>"
    assert cut.status is PageStatus.REPAIRED
    assert "unfinished table closed after its last complete row" in cut.notes


def test_cut_otsl_table_keeps_its_rows():
    result = parse("<fcel>a<fcel>b<nl><fcel>c<fcel>d<nl><fcel>e", "table", finish_reason="length")
    assert result.status is PageStatus.REPAIRED
    assert result.cells[0].text.count("<tr>") == 3
    assert result.notes == ["answer cut at the token budget"]


def test_table_answer_without_structure_falls_back_to_text():
    result = parse("I cannot see a table here.", "table")
    assert result.status is PageStatus.FALLBACK
    assert [(c.category, c.text) for c in result.cells] == [("Text", "I cannot see a table here.")]
    assert "table answer had no table structure: kept as plain text" in result.notes


def test_looping_and_empty_answers():
    looped = parse("Total: " + "0." * 400, "ocr", finish_reason="length")
    assert looped.status is PageStatus.REPAIRED
    assert looped.cells[0].text == "Total: 0.0.0."
    assert "1 runaway repeat(s) collapsed" in looped.notes
    table_loop = parse("<fcel>x<nl>" * 200, "table")
    assert table_loop.status is PageStatus.REPAIRED
    assert table_loop.cells[0].text.count("<tr>") == 3
    for task in PROMPTS:
        empty = parse("  \n", task)
        assert empty.cells == [] and "empty answer" in empty.notes


@settings(max_examples=200)
@given(
    st.lists(
        st.sampled_from(
            ["<fcel>", "<ecel>", "<lcel>", "<ucel>", "<xcel>", "<nl>", "a", "<", "&", "\n"]
        ),
        max_size=40,
    ),
    st.sampled_from(list(PROMPTS)),
)
def test_parser_never_raises(pieces, task):
    result = parse("".join(pieces), task)
    assert all(c.bbox == PAGE for c in result.cells)


# --- a real vLLM ------------------------------------------------------------------------

SERVER_SIZES = [(600, 800), (1700, 2200)]


@pytest.fixture(scope="module")
def paddle_server(tmp_path_factory):
    """vLLM's CPU build serving a tiny PaddleOCR-VL folder with random weights, started with
    the CPU launch plan's flags for the profile, less --trust-remote-code: the folder has no
    remote code, so the server takes transformers' own PaddleOCR-VL classes, and vLLM reads
    their pixel bounds only when it does not trust remote code (see
    tests/vllm_support/tiny_paddleocr_vl_model.py). Yields (url, plan)."""
    from dotsocr.serve.plan import PlanOptions, plan_cpu
    from vllm_support import server

    server.require()
    workdir = tmp_path_factory.mktemp("paddleocr-vllm")
    model = server.build_tiny("tiny_paddleocr_vl_model.py", workdir / "tiny-paddleocr-vl")
    options = PlanOptions(model=str(model), host="127.0.0.1", port=server.free_port())
    plan = plan_cpu(options, PROFILE.serving)
    args = plan.args()
    args.remove("--trust-remote-code")
    with server.serve_folder(workdir, plan.url, ["--model", plan.model, *args], plan.env):
        yield plan.url, plan


@pytest.mark.vllm
def test_vllm_counts_the_prompt_tokens_the_profile_predicts(paddle_server):
    """Every task on two page sizes, sent the way the pipeline sends a page: /tokenize counts
    the request text, the planner predicts usage.prompt_tokens from it and the image's
    tokens, and vLLM's own PaddleOCRVLForConditionalGeneration answers (random weights: the
    words are meaningless, but they parse)."""
    import asyncio

    from dotsocr.engines.openai import OpenAIEngine, RetryPolicy

    url, launch = paddle_server

    async def go():
        results = []
        async with OpenAIEngine(url, retry=RetryPolicy(attempts=1)) as engine:
            assert engine.info.max_model_len == int(launch.value("--max-model-len"))
            for width, height in SERVER_SIZES:
                for task in PROFILE.tasks:
                    probe = Geometry(width, height, *PROFILE.model_size(width, height))
                    text = await engine.text_tokens(PROFILE.request_text(task, probe))
                    plan = PROFILE.plan(
                        width, height, text_tokens=text, max_model_len=engine.info.max_model_len
                    )
                    image = Image.new("RGB", (width, height), "white")
                    page = PROFILE.prepare(image, width, height, plan.max_pixels)
                    request = PROFILE.build_request(page, task, max_tokens=8)
                    answer = await engine.infer(page, request)
                    parsed = PROFILE.parse(
                        answer.text, page.geometry, task, finish_reason=answer.finish_reason
                    )
                    results.append((width, height, task, text, plan, page, answer, parsed))
        return results

    results = asyncio.run(go())
    assert len(results) == 2 * len(PROFILE.tasks) == 8
    mismatches = [
        f"{width}x{height} {task}: /tokenize {text}, image {plan.image_tokens}, "
        f"predicted {plan.prompt_tokens}, vLLM counted {answer.prompt_tokens}"
        for width, height, task, text, plan, _, answer, _ in results
        if answer.prompt_tokens != plan.prompt_tokens
    ]
    assert not mismatches, "\n".join(mismatches)
    for width, height, task, _, plan, page, answer, parsed in results:
        where = f"{width}x{height} {task}"
        assert page.image_tokens == plan.image_tokens == PROFILE.image_tokens(width, height)
        assert answer.finish_reason in ("stop", "length"), where
        assert parsed.status in set(PageStatus), where
    assert [r[4].image_tokens for r in results[:: len(PROFILE.tasks)]] == [21 * 29, 52 * 68]
