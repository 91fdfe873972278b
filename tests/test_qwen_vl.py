"""The Qwen2.5-VL and Qwen3-VL profiles: prompts, sizing, requests and the answer parser.

Answers here are written from the documented formats (QwenVL HTML from the document
parsing cookbooks, bbox_2d JSON from the grounding ones); the last test sends real
requests to vLLM's own Qwen2_5_VLForConditionalGeneration with random weights.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from dotsocr.errors import ConfigError
from dotsocr.layout import PageStatus
from dotsocr.models import Geometry, ModelProfile
from dotsocr.models.qwen_vl import IMAGE_PLACEHOLDER, PROMPTS, Qwen3VL, QwenVL

QWEN25 = QwenVL()
QWEN3 = Qwen3VL()
# A 1700x2200 page as each model sees it.
G25 = Geometry(1700, 2200, 1708, 2212)
G3 = Geometry(1700, 2200, 1696, 2208)


def blank(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), "white")


# --- prompts and requests ---------------------------------------------------------------


def test_profiles_name_their_checkpoints_and_tasks():
    assert isinstance(QWEN25, ModelProfile) and isinstance(QWEN3, ModelProfile)
    assert (QWEN25.name, QWEN25.hf_id) == ("qwen2.5-vl", "Qwen/Qwen2.5-VL-7B-Instruct")
    assert (QWEN3.name, QWEN3.hf_id) == ("qwen3-vl", "Qwen/Qwen3-VL-8B-Instruct")
    for profile in (QWEN25, QWEN3):
        assert profile.tasks == ("layout_all", "layout_only", "ocr", "grounding")
        assert profile.default_task == "layout_all"
        assert profile.serving.hub_id == profile.hf_id
    assert QWEN25.quantized == {"awq": "Qwen/Qwen2.5-VL-7B-Instruct-AWQ"}
    assert QWEN3.quantized == {"fp8": "Qwen/Qwen3-VL-8B-Instruct-FP8"}


def test_prompts_are_the_cookbook_strings_where_there_is_one():
    assert QWEN25.prompt("layout_all") == "QwenVL HTML"
    assert QWEN3.prompt("layout_all") == "qwenvl html"
    assert QWEN25.prompt("ocr") == QWEN3.prompt("ocr") == PROMPTS["ocr"]
    assert PROMPTS["ocr"] == (
        "Convert this document image to Markdown in reading order: tables as HTML, formulas "
        "as LaTeX. Output only the content of the page, without any additional descriptions."
    )
    assert "in JSON format" in QWEN25.prompt("layout_only")
    for label in ("section header", "table", "picture", "page footer"):
        assert label in QWEN25.prompt("layout_only")


def test_request_is_image_then_prompt_with_the_models_sampling():
    page = QWEN25.prepare(blank(300, 400), 300, 400)
    body = QWEN25.build_request(page, "layout_all").to_openai("qwen")
    assert body["temperature"] == 0.1 and body["top_p"] == 1.0
    assert body["repetition_penalty"] == 1.05 and body["max_tokens"] == 16_384
    (message,) = body["messages"]  # no system turn: the template adds its default one
    assert message["role"] == "user"
    image_part, text_part = message["content"]
    # The template writes the placeholder for the image part: the text is the prompt alone.
    assert text_part == {"type": "text", "text": "QwenVL HTML"}
    url = image_part["image_url"]["url"]
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == page.image.size == (308, 392)
    retry = QWEN25.build_request(page, "ocr", temperature=0.6, max_tokens=900).to_openai("m")
    assert retry["temperature"] == 0.6 and retry["max_tokens"] == 900

    page3 = QWEN3.prepare(blank(300, 400), 300, 400)
    body3 = QWEN3.build_request(page3, "ocr").to_openai("qwen3")
    assert body3["temperature"] == 0.0 and body3["top_p"] == 0.8 and body3["top_k"] == 20
    assert "repetition_penalty" not in body3 and "presence_penalty" not in body3
    assert body3["messages"][0]["content"][1]["text"] == PROMPTS["ocr"]


def test_request_text_counts_the_image_placeholder():
    assert QWEN25.request_text("layout_all") == IMAGE_PLACEHOLDER + "QwenVL HTML"
    assert QWEN3.request_text("ocr") == IMAGE_PLACEHOLDER + PROMPTS["ocr"]


def test_grounding_box_in_each_models_coordinates():
    # Qwen2.5-VL: the resized image's pixels; Qwen3-VL: 0-1000 across the image.
    prompt = QWEN25.build_request(
        QWEN25.prepare(blank(1700, 2200), 1700, 2200), "grounding", box=(850, 1100, 1700, 2200)
    ).messages[0]["content"][1]["text"]
    assert prompt == (
        'Read the text inside the box {"bbox_2d": [854, 1106, 1708, 2212]} and output only '
        "that text."
    )
    assert QWEN3.prompt("grounding", G3, (170, 110, 1530, 264)) == (
        'Read the text inside the box {"bbox_2d": [100, 50, 900, 120]} and output only that text.'
    )
    with pytest.raises(ConfigError, match="needs a box"):
        QWEN25.prompt("grounding", G25)
    with pytest.raises(ConfigError, match="unknown task"):
        QWEN3.prompt("summarise")


# --- sizing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "width", "height", "size", "tokens"),
    [
        (QWEN25, 1700, 2200, (1708, 2212), 61 * 79),  # a US letter page at 200 DPI
        (QWEN3, 1700, 2200, (1696, 2208), 53 * 69),
        (QWEN25, 600, 800, (588, 812), 21 * 29),
        (QWEN3, 600, 800, (608, 800), 19 * 25),
        (QWEN25, 100, 100, (112, 112), 4 * 4),
        (QWEN3, 100, 100, (256, 256), 8 * 8),  # grown to min_pixels 65536
        (QWEN25, 5000, 7000, (3024, 4228), 108 * 151),  # capped at max_pixels 12845056
        (QWEN3, 5000, 7000, (3456, 4832), 108 * 151),  # capped at 16777216
    ],
)
def test_model_size_and_tokens(profile, width, height, size, tokens):
    assert profile.model_size(width, height) == size
    w, h = size
    assert w % profile.factor == 0 and h % profile.factor == 0
    assert tokens == (h // profile.factor) * (w // profile.factor)
    assert profile.image_tokens(width, height) == tokens
    assert profile.min_pixels <= w * h <= profile.max_pixels


def hf_smart_resize(height, width, factor, min_pixels, max_pixels):
    """transformers' Qwen2-VL smart_resize, floats and all, as the server runs it."""
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@settings(max_examples=300, deadline=None)
@given(st.integers(40, 9000), st.integers(40, 9000))
@example(40, 40)
@example(4769, 4769)
def test_sizing_agrees_with_the_servers_processor(width, height):
    # Past about 20:1 our long side may give up steps to stay inside the 200:1 ratio that
    # the server re-checks on what we send (ChatProfile.model_size).
    assume(max(width, height) <= 20 * min(width, height))
    for profile in (QWEN25, QWEN3):
        f = profile.factor
        w, h = profile.model_size(width, height)
        hf_h, hf_w = hf_smart_resize(height, width, f, profile.min_pixels, profile.max_pixels)
        # The same size, except where transformers' floats land a step off: its floor one
        # step lower at the exact pixel budget (4769x4769 -> 3556 there, 3584 = 128 x 28
        # here), its ceil one step higher at the exact minimum (40x40 on Qwen3-VL: 288
        # there, 256 here, since 40 * 6.4 / 32 is 8.000000000000002 in floats).
        assert abs(h - hf_h) <= f and abs(w - hf_w) <= f
        assert profile.min_pixels <= w * h <= profile.max_pixels
        # What we send is mapped onto itself: the server does no resizing of its own, and
        # its token count is ours.
        again = hf_smart_resize(h, w, f, profile.min_pixels, profile.max_pixels)
        assert again == (h, w)


def test_prepare_and_plan():
    page = QWEN3.prepare(blank(1700, 2200), 1700, 2200)
    assert page.image.size == (1696, 2208) and page.image_tokens == 53 * 69
    assert page.geometry == G3
    plan = QWEN25.plan(1700, 2200, text_tokens=40, max_model_len=4096)
    assert plan.image_tokens <= 4096 - 39 - QWEN25.min_answer_tokens
    assert plan.prompt_tokens == 39 + plan.image_tokens
    assert plan.prompt_tokens + plan.max_tokens <= 4096
    w, h = QWEN25.model_size(1700, 2200, plan.max_pixels)
    assert (w // 28) * (h // 28) == plan.image_tokens


def test_serving_facts_agree_with_the_profiles():
    for profile in (QWEN25, QWEN3):
        serving = profile.serving
        assert serving.vision.patch * serving.vision.merge == profile.factor
        assert serving.pixels_per_token == profile.factor**2
        assert serving.max_image_tokens * serving.pixels_per_token == profile.max_pixels
        assert serving.flags == {}
        decoder = serving.decoder
        assert decoder.linear_params < serving.weight_bytes / 2
        assert serving.fp8_weight_bytes() < serving.weight_bytes
    assert QWEN25.serving.weight_bytes == 2 * 8_292_166_656
    assert QWEN25.serving.decoder.kv_bytes_per_token() == 2 * 28 * 4 * 128 * 2
    assert QWEN3.serving.weight_bytes == 2 * 8_767_123_696
    assert QWEN3.serving.decoder.kv_bytes_per_token() == 2 * 36 * 8 * 128 * 2


# --- answers ----------------------------------------------------------------------------

# The cookbook's shape: a fenced document, boxes in the resized image's pixels (Qwen2.5-VL).
HTML_25 = "\n".join(
    [
        "```html",
        "<html><body>",
        '<h1 data-bbox="854 0 1708 110">Annual Report</h1>',
        ' <h2 data-bbox="0 221 854 332">1. Results</h2>',
        ' <p data-bbox="0 332 1708 442">Revenue grew by <b>12%</b> in 2024,',
        " ahead of plan.</p>",
        ' <table data-bbox="0 442 1708 1106"><tr><th>Year</th><th>A &amp; B</th></tr>'
        '<tr><td>2024</td><td rowspan="2">1.2<br>1.3</td></tr></table>',
        ' <div class="image" data-bbox="0 1106 854 1659"><img data-bbox="0 1106 854 1659"/></div>',
        ' <p data-bbox="0 1659 854 1770">Figure 1: Revenue</p>',
        ' <div class="formula.machine_printed" data-bbox="854 1106 1708 1216">$$E = mc^2$$</div>',
        ' <ol data-bbox="854 1216 1708 1438"><li data-bbox="854 1216 1708 1327">first</li>'
        '<li data-bbox="854 1327 1708 1438">second</li></ol>',
        ' <ul data-bbox="854 1438 1708 1659"><li>alpha</li><li>beta</li></ul>',
        ' <footer data-bbox="0 2101 1708 2212">Page 1</footer>',
        "</body></html>",
        "```",
    ]
)
# (category, text, box on the 1700x2200 page) for each element above.
CELLS_25 = [
    ("Title", "Annual Report", (850, 0, 1700, 109)),
    ("Section-header", "1. Results", (0, 220, 850, 330)),
    ("Text", "Revenue grew by 12% in 2024, ahead of plan.", (0, 330, 1700, 440)),
    (
        "Table",
        "<table><tr><th>Year</th><th>A &amp; B</th></tr><tr><td>2024</td>"
        '<td rowspan="2">1.2<br>1.3</td></tr></table>',
        (0, 440, 1700, 1100),
    ),
    ("Picture", None, (0, 1100, 850, 1650)),
    ("Text", "Figure 1: Revenue", (0, 1650, 850, 1760)),
    ("Formula", "$$E = mc^2$$", (850, 1100, 1700, 1209)),
    ("List-item", "first", (850, 1209, 1700, 1320)),
    ("List-item", "second", (850, 1320, 1700, 1430)),
    ("List-item", "alpha\nbeta", (850, 1430, 1700, 1650)),
    ("Page-footer", "Page 1", (0, 2090, 1700, 2200)),
]


def triples(parsed):
    return [(c.category, c.text, c.bbox) for c in parsed.cells]


def test_qwenvl_html_becomes_cells_in_page_pixels():
    parsed = QWEN25.parse(HTML_25, G25, "layout_all", finish_reason="stop")
    assert triples(parsed) == CELLS_25
    assert parsed.status is PageStatus.OK and parsed.notes == []


def test_qwen3_html_boxes_are_on_a_0_1000_grid():
    answer = (
        '<html><body><h2 data-bbox="100 50 900 120">Results</h2>'
        '<p data-bbox="0 500 1000 1000">Body text</p></body></html>'
    )
    parsed = QWEN3.parse(answer, G3, "layout_all")
    assert triples(parsed) == [
        ("Section-header", "Results", (170, 110, 1530, 264)),
        ("Text", "Body text", (0, 1100, 1700, 2200)),
    ]
    assert parsed.status is PageStatus.OK


def test_layout_only_keeps_boxes_and_drops_text():
    parsed = QWEN25.parse(HTML_25, G25, "layout_only")
    assert [(c.category, c.bbox) for c in parsed.cells] == [(k, b) for k, _, b in CELLS_25]
    assert all(c.text is None for c in parsed.cells)


def test_truncated_html_keeps_the_complete_cells():
    cut = HTML_25[: HTML_25.index("ahead of plan")]
    parsed = QWEN25.parse(cut, G25, "layout_all", finish_reason="length")
    assert triples(parsed) == CELLS_25[:2]
    assert parsed.status is PageStatus.REPAIRED
    assert parsed.notes == ["answer cut at the token budget", "unfinished last cell dropped"]


def test_every_cut_of_the_html_keeps_a_prefix_of_the_cells():
    full = triples(QWEN25.parse(HTML_25, G25, "layout_all"))
    for end in range(0, len(HTML_25), 23):
        parsed = QWEN25.parse(HTML_25[:end], G25, "layout_all", finish_reason="length")
        if parsed.status is PageStatus.FALLBACK:  # cut before the first boxed tag ends
            assert end <= HTML_25.index(">", HTML_25.index("data-bbox")), end
            continue
        got = triples(parsed)
        assert got == full[: len(got)], end
        assert parsed.status is PageStatus.REPAIRED


def test_unclosed_paragraph_ends_at_the_next_boxed_block():
    answer = (
        '<p data-bbox="0 0 854 110">first paragraph'
        '<p data-bbox="0 110 854 221">second</p><table data-bbox="0 221 1708 442">'
        "<tr><td>x</td></tr></table>"
    )
    parsed = QWEN25.parse(answer, G25, "layout_all")
    assert [(c.category, c.text) for c in parsed.cells] == [
        ("Text", "first paragraph"),
        ("Text", "second"),
        ("Table", "<table><tr><td>x</td></tr></table>"),
    ]
    assert parsed.status is PageStatus.REPAIRED
    assert "1 unclosed element(s) closed" in parsed.notes


def test_elements_without_a_box_are_counted_as_dropped():
    answer = '<p data-bbox="0 0 10 10">kept</p><p>no box</p><h2 data-bbox="1 2">bad box</h2>'
    parsed = QWEN25.parse(answer, G25, "layout_all")
    assert [c.text for c in parsed.cells] == ["kept"]
    assert parsed.status is PageStatus.REPAIRED
    assert "2 item(s) without a usable bbox dropped" in parsed.notes


def test_unknown_markup_keeps_its_text():
    answer = (
        '<div class="chart" data-bbox="0 0 100 100"></div>'
        '<div class="footnote" data-bbox="0 100 100 200">1. A note</div>'
        '<span data-bbox="0 200 100 300">loose &lt;span&gt;</span>'
    )
    parsed = QWEN25.parse(answer, G25, "layout_all")
    assert [(c.category, c.text) for c in parsed.cells] == [
        ("Picture", None),
        ("Footnote", "1. A note"),
        ("Text", "loose <span>"),
    ]


def test_grounding_json_in_absolute_pixels_for_qwen25():
    answer = (
        "```json\n"
        '[{"bbox_2d": [854, 1106, 1708, 2212], "text_content": "Total: 12"},\n'
        ' {"bbox_2d": [0, 0, 427, 553], "label": "Hello"}]\n'
        "```"
    )
    parsed = QWEN25.parse(answer, G25, "grounding", box=(0, 0, 1700, 2200))
    assert triples(parsed) == [
        ("Text", "Total: 12", (850, 1100, 1700, 2200)),
        ("Text", "Hello", (0, 0, 425, 550)),
    ]
    assert parsed.status is PageStatus.OK and parsed.notes == ["code fence removed"]


def test_grounding_json_on_the_0_1000_grid_for_qwen3():
    answer = '[{"bbox_2d": [500, 500, 1000, 1000], "text_content": "Total: 12"}]'
    parsed = QWEN3.parse(answer, G3, "grounding")
    assert triples(parsed) == [("Text", "Total: 12", (850, 1100, 1700, 2200))]
    # The same numbers from Qwen2.5-VL are pixels of its resized image.
    assert QWEN25.parse(answer, G25, "grounding").cells[0].bbox == (498, 497, 995, 995)


def test_layout_detection_json_maps_labels_to_categories():
    answer = (
        '[{"bbox_2d": [100, 50, 900, 120], "label": "title"},'
        ' {"bbox_2d": [100, 150, 900, 400], "label": "paragraph"},'
        ' {"bbox_2d": [100, 400, 900, 700], "label": "figure"},'
        ' {"bbox_2d": [100, 700, 900, 800], "label": "section header"},'
        ' {"bbox_2d": [100, 950, 900, 990], "label": "stamp"}]'
    )
    parsed = QWEN3.parse(answer, G3, "layout_only")
    assert [(c.category, c.text) for c in parsed.cells] == [
        ("Title", None),
        ("Text", None),
        ("Picture", None),
        ("Section-header", None),
        ("stamp", None),
    ]
    assert parsed.cells[0].bbox == (170, 110, 1530, 264)
    assert parsed.status is PageStatus.OK  # an unknown label is kept, not lost
    assert parsed.notes == ["unknown category 'stamp' kept"]


def test_cut_json_drops_the_unfinished_box():
    answer = '[{"bbox_2d": [0, 0, 10, 10], "label": "text"}, {"bbox_2d": [20, 2'
    parsed = QWEN25.parse(answer, G25, "layout_only", finish_reason="length")
    assert len(parsed.cells) == 1 and parsed.status is PageStatus.REPAIRED
    assert "unfinished last cell dropped" in parsed.notes


def test_markdown_answer_is_one_text_cell_over_the_page():
    answer = "```markdown\n# Annual Report\n\n| Year | Total |\n|---|---|\n| 2024 | 12 |\n```"
    parsed = QWEN25.parse(answer, G25, "ocr", finish_reason="stop")
    (cell,) = parsed.cells
    assert cell.bbox == (0, 0, 1700, 2200) and cell.category == "Text"
    assert cell.text == "# Annual Report\n\n| Year | Total |\n|---|---|\n| 2024 | 12 |"
    assert parsed.status is PageStatus.OK
    cut = QWEN3.parse("# Annual Rep", G3, "ocr", finish_reason="length")
    assert cut.status is PageStatus.REPAIRED and cut.cells[0].text == "# Annual Rep"


def test_plain_grounding_answer_covers_the_asked_box():
    parsed = QWEN3.parse("Total: 12", G3, "grounding", box=(10, 20, 300, 40))
    assert triples(parsed) == [("Text", "Total: 12", (10, 20, 300, 40))]


def test_garbage_to_a_layout_prompt_falls_back_to_text():
    parsed = QWEN25.parse("I cannot parse this document, sorry.", G25, "layout_all")
    assert parsed.status is PageStatus.FALLBACK
    assert triples(parsed) == [("Text", "I cannot parse this document, sorry.", (0, 0, 1700, 2200))]
    plain_html = "<html><body><h1>Title</h1><p>No boxes at all</p></body></html>"
    assert QWEN3.parse(plain_html, G3, "layout_all").status is PageStatus.FALLBACK
    empty = QWEN3.parse("", G3, "layout_all")
    assert empty.cells == [] and empty.status is PageStatus.FALLBACK


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from('<>/="[]{}, 0123456789abpdivtrlh&;-\n'), max_size=200))
def test_parser_never_raises(answer):
    for profile, geometry in ((QWEN25, G25), (QWEN3, G3)):
        for task in profile.tasks:
            for reason in ("stop", "length"):
                parsed = profile.parse(
                    answer, geometry, task, finish_reason=reason, box=(0, 0, 10, 10)
                )
                for cell in parsed.cells:
                    x1, y1, x2, y2 = cell.bbox
                    assert 0 <= x1 <= x2 <= 1700 and 0 <= y1 <= y2 <= 2200


# --- a real vLLM ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=[QWEN25, QWEN3], ids=["qwen2.5-vl", "qwen3-vl"])
def qwen_server(request, tmp_path_factory):
    """vLLM's CPU build serving a tiny folder of the profile's architecture with random
    weights, started the way the launch planner starts it (one image a prompt, the pixel
    cap as a processor keyword), with none of dots.ocr's flags. Yields (url, profile)."""
    profile = request.param
    from vllm_support import server

    server.require()
    workdir = tmp_path_factory.mktemp("qwen-vllm")
    model = server.build_tiny("tiny_qwen_vl_model.py", workdir / f"tiny-{profile.name}",
                              profile.name)  # fmt: skip
    port = server.free_port()
    args = [
        "--model", str(model), "--served-model-name", "model", "--max-model-len", "4096",
        "--host", "127.0.0.1", "--port", str(port), "--limit-mm-per-prompt", '{"image": 1}',
        "--mm-processor-kwargs", f'{{"max_pixels": {profile.max_pixels}}}', "--enforce-eager",
    ]  # fmt: skip
    with server.serve_folder(workdir, f"http://127.0.0.1:{port}", args) as url:
        yield url, profile


@pytest.mark.vllm
def test_vllm_counts_the_prompt_tokens_the_profile_predicts(qwen_server):
    """usage.prompt_tokens == /tokenize's count of request_text - 1 + our image tokens, for
    every task and for pages the planner has to shrink to fit a 4096-token context."""
    from dotsocr.engines.openai import OpenAIEngine, RetryPolicy

    url, profile = qwen_server
    sizes = [(600, 800), (1700, 2200), (333, 777), (1200, 300), (40, 40)]

    async def go():
        results = []
        async with OpenAIEngine(url, retry=RetryPolicy(attempts=1)) as engine:
            for (width, height), task in zip(sizes, [*profile.tasks, "ocr"], strict=True):
                box = (0, 0, width // 2, height // 2) if task == "grounding" else None
                probe = Geometry(width, height, *profile.model_size(width, height))
                text = await engine.text_tokens(profile.request_text(task, probe, box))
                plan = profile.plan(
                    width, height, text_tokens=text, max_model_len=engine.info.max_model_len
                )
                page = profile.prepare(blank(width, height), width, height, plan.max_pixels)
                request = profile.build_request(page, task, box=box, max_tokens=8)
                answer = await engine.infer(page, request)
                parsed = profile.parse(
                    answer.text, page.geometry, task, finish_reason=answer.finish_reason, box=box
                )
                results.append((width, height, task, plan, page, answer, parsed))
        return results

    shrunk = 0
    for width, height, task, plan, page, answer, parsed in asyncio.run(go()):
        where = f"{width}x{height} {task}"
        assert page.image_tokens == plan.image_tokens, where
        assert answer.prompt_tokens == plan.prompt_tokens, where
        assert plan.prompt_tokens + plan.max_tokens <= 4096, where
        assert parsed.status in set(PageStatus), where  # random weights: any answer parses
        shrunk += plan.image_tokens < profile.image_tokens(width, height)
    assert shrunk == 1  # the 1700x2200 page
