"""The DeepSeek-OCR profile: prompts, Gundam-mode sizing, requests, serving facts and the
grounding parser. Answers are written in the documented format (the repository's
run_dpsk_ocr_image.py and answers it produced): ``<|ref|>label<|/ref|><|det|>[[x1, y1, x2,
y2]]<|/det|>`` with coordinates 0-999 over the image sent, then the element's text."""

from __future__ import annotations

import base64
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dotsocr.errors import ConfigError, ContextTooLong
from dotsocr.layout import PageStatus
from dotsocr.models import Geometry, ModelProfile, RequestPlan
from dotsocr.models.deepseek_ocr import (
    DEEPSEEK_OCR,
    GLOBAL_VIEW_PIXELS,
    GLOBAL_VIEW_TOKENS,
    MAX_IMAGE_TOKENS,
    MAX_SEND_PIXELS,
    PROMPTS,
    DeepSeekOCR,
    gundam_tiles,
    gundam_tokens,
)

PROFILE = DeepSeekOCR()
# A 2000 x 3000 page sent at half size: 0-999 boxes scale by 1000/999 and 1500/999, then x2.
GEOMETRY = Geometry(width=2000, height=3000, resized_width=1000, resized_height=1500)

ANSWER = (
    "<|ref|>title<|/ref|><|det|>[[100, 50, 900, 80]]<|/det|>\n"
    "# Annual Report 2024  \n\n"
    "<|ref|>text<|/ref|><|det|>[[100, 100, 900, 200]]<|/det|>\n"
    "Revenue grew by 12% while costs fell.  \n\n"
    # The model writes the table's header, then its caption, then the table's HTML.
    "<|ref|>table<|/ref|><|det|>[[100, 300, 900, 500]]<|/det|>\n"
    "<|ref|>table_caption<|/ref|><|det|>[[100, 260, 600, 290]]<|/det|>\n"
    "Table 1: Revenue by year  \n\n"
    "<table><tr><td>Year</td><td>Revenue</td></tr><tr><td>2023</td><td>10.7</td></tr>"
    "<tr><td>2024</td><td>12.0</td></tr></table>\n\n"
    "<|ref|>image<|/ref|><|det|>[[100, 600, 500, 900]]<|/det|>\n"
    "<|ref|>image_caption<|/ref|><|det|>[[100, 910, 500, 940]]<|/det|>\n"
    "<center>Figure 1: Growth since 2020</center>"
    "<｜end▁of▁sentence｜>"
)
TABLE_HTML = (
    "<table><tr><td>Year</td><td>Revenue</td></tr><tr><td>2023</td><td>10.7</td></tr>"
    "<tr><td>2024</td><td>12.0</td></tr></table>"
)


def parse(answer: str, task: str = "layout_all", **kw):
    return PROFILE.parse(answer, GEOMETRY, task, **kw)


def element(label: str, box: tuple[int, int, int, int], text: str = "") -> str:
    return f"<|ref|>{label}<|/ref|><|det|>[[{', '.join(map(str, box))}]]<|/det|>\n{text}\n\n"


# --- prompts and requests ---------------------------------------------------------------


def test_prompts_are_the_official_strings():
    assert PROMPTS["layout_all"] == "<image>\n<|grounding|>Convert the document to markdown."
    assert PROMPTS["ocr"] == "<image>\nFree OCR."
    assert PROMPTS["figure"] == "<image>\nParse the figure."
    assert PROFILE.tasks == ("layout_all", "layout_only", "ocr", "figure")
    assert PROFILE.default_task == "layout_all" and PROFILE.name == "deepseek-ocr"
    assert PROFILE.hf_id == DEEPSEEK_OCR.hub_id == "deepseek-ai/DeepSeek-OCR"
    assert isinstance(PROFILE, ModelProfile)


@pytest.mark.parametrize("task", ["layout_all", "layout_only", "ocr", "figure"])
def test_request_is_one_user_message_with_the_image_then_the_exact_prompt(task):
    page = PROFILE.prepare(Image.new("RGB", (700, 900), "white"), 700, 900)
    body = PROFILE.build_request(page, task).to_openai("ds")
    assert body["model"] == "ds" and body["temperature"] == 0.0 and body["top_p"] == 1.0
    assert body["max_tokens"] == 8192
    (message,) = body["messages"]
    assert message["role"] == "user"
    image_part, text_part = message["content"]
    assert text_part == {"type": "text", "text": PROMPTS[task]}
    assert PROFILE.request_text(task).count("<image>") == 1  # vLLM adds no second one
    url = image_part["image_url"]["url"]
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == (700, 900)
    # The recipe's request extras: special tokens kept, the n-gram guard switched on.
    assert body["skip_special_tokens"] is False
    assert body["vllm_xargs"] == {
        "ngram_size": 30,
        "window_size": 90,
        "whitelist_token_ids": [128821, 128822],
    }


def test_request_extras_are_copies_and_unknown_tasks_are_refused():
    page = PROFILE.prepare(Image.new("RGB", (300, 300), "white"), 300, 300)
    request = PROFILE.build_request(page, "ocr", temperature=0.3, max_tokens=500)
    assert request.temperature == 0.3 and request.max_tokens == 500
    request.extra["vllm_xargs"]["ngram_size"] = 5
    request.extra["skip_special_tokens"] = True
    assert PROFILE.extra_body["skip_special_tokens"] is False
    assert DeepSeekOCR().extra_body["vllm_xargs"]["ngram_size"] == 30
    for task in ("grounding", "summarise"):
        with pytest.raises(ConfigError, match="unknown task"):
            PROFILE.build_request(page, task)


# --- sizing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "tiles", "tokens"),
    [
        ((640, 640), (1, 1), 273),  # the global view alone: 16 x 17 + 1
        ((300, 500), (1, 1), 273),
        ((1191, 1684), (2, 3), 903),  # A4 at 144 DPI, the repository's PDF render
        ((1000, 1000), (2, 2), 693),
        ((641, 640), (2, 2), 693),  # one side over 640 is enough to tile
        ((2000, 500), (4, 1), 683),  # 273 + 10 x (40 + 1)
        ((500, 2000), (1, 4), 713),  # 273 + 40 x (10 + 1)
        ((640, 3840), (1, 6), 933),  # the most a page can cost
        ((3840, 640), (6, 1), 883),
    ],
)
def test_gundam_tiles_and_tokens_follow_vllms_processor(size, tiles, tokens):
    assert gundam_tiles(*size) == tiles
    assert gundam_tokens(*size) == tokens


@settings(max_examples=300)
@given(st.integers(1, 20_000), st.integers(1, 20_000))
def test_sent_size_keeps_the_aspect_never_enlarges_and_is_stable(width, height):
    w, h = PROFILE.model_size(width, height)
    assert w <= width and h <= height and w * h <= MAX_SEND_PIXELS
    assert PROFILE.model_size(w, h) == (w, h)  # prepare sizes once and counts the same
    if w > 10 and h > 10:
        assert abs(w / h - width / height) <= 0.05 * width / height + 1 / min(w, h)
    assert GLOBAL_VIEW_TOKENS <= PROFILE.image_tokens(width, height) <= MAX_IMAGE_TOKENS


def test_prepare_shrinks_a_200_dpi_page_to_six_tiles_worth():
    page = PROFILE.prepare(Image.new("RGB", (1654, 2339), "white"), 1654, 2339)
    assert page.image.size == (1318, 1864)
    assert page.geometry == Geometry(1654, 2339, 1318, 1864)
    assert page.image_tokens == 903
    small = PROFILE.prepare(Image.new("RGB", (400, 300), "white"), 400, 300)
    assert small.image.size == (400, 300) and small.image_tokens == GLOBAL_VIEW_TOKENS


def test_plan_falls_back_to_the_global_view_when_tiles_do_not_fit():
    assert PROFILE.plan(1654, 2339, text_tokens=20, max_model_len=8192) == RequestPlan(
        MAX_SEND_PIXELS, 903, 19 + 903, 8192 - 19 - 903
    )
    plan = PROFILE.plan(1654, 2339, text_tokens=20, max_model_len=1500)
    assert plan == RequestPlan(GLOBAL_VIEW_PIXELS, 273, 19 + 273, 1500 - 19 - 273)
    page = PROFILE.prepare(
        Image.new("RGB", (1654, 2339), "white"), 1654, 2339, max_pixels=plan.max_pixels
    )
    assert page.image.size == (452, 640) and page.image_tokens == plan.image_tokens
    with pytest.raises(ContextTooLong):
        PROFILE.plan(1654, 2339, text_tokens=20, max_model_len=1200)
    assert PROFILE.tokens_for_pixels(933) == MAX_SEND_PIXELS
    assert PROFILE.tokens_for_pixels(932) == GLOBAL_VIEW_PIXELS


# --- serving ------------------------------------------------------------------------------


def test_serving_facts_for_the_launch_planner():
    assert DEEPSEEK_OCR.max_image_tokens == 933
    assert DEEPSEEK_OCR.weight_bytes == 2 * 3_336_106_240
    # Multi-head attention, not MLA: K and V for 12 layers x 10 heads x 128 dims in bf16.
    assert DEEPSEEK_OCR.decoder.kv_bytes_per_token() == 2 * 12 * 10 * 128 * 2 == 61_440
    assert DEEPSEEK_OCR.pixel_cap_kwarg is None
    assert DEEPSEEK_OCR.flags == {
        "--logits-processors": "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor"
    }
    assert set(DEEPSEEK_OCR.flag_reasons) == set(DEEPSEEK_OCR.flags)
    assert DEEPSEEK_OCR.fp8_weight_bytes() < DEEPSEEK_OCR.weight_bytes
    assert PROFILE.capabilities is not None and PROFILE.capabilities.layout_boxes
    assert PROFILE.capabilities.tables == "html" and PROFILE.quantized == {}


# --- parsing ------------------------------------------------------------------------------


def test_grounded_answer_becomes_cells_in_page_pixels():
    result = parse(ANSWER)
    assert result.status is PageStatus.OK
    assert [(c.category, c.text) for c in result.cells] == [
        ("Title", "# Annual Report 2024"),
        ("Text", "Revenue grew by 12% while costs fell."),
        ("Table", TABLE_HTML),
        ("Caption", "Table 1: Revenue by year"),
        ("Picture", None),
        ("Caption", "Figure 1: Growth since 2020"),
    ]
    # [100, 50, 900, 80] of 999 -> (100.1, 75.1, 900.9, 120.1) sent -> x2 on the page
    assert result.cells[0].bbox == (200, 150, 1802, 240)
    assert result.cells[2].bbox == (200, 901, 1802, 1502)
    assert result.cells[4].bbox == (200, 1802, 1001, 2703)
    assert result.notes == ["table HTML moved out of the caption that followed it (1)"]


def test_full_scale_box_covers_the_page_and_layout_only_drops_the_text():
    answer = element("text", (0, 0, 999, 999), "everything")
    assert parse(answer).cells[0].bbox == (0, 0, 2000, 3000)
    boxes = parse(ANSWER, "layout_only")
    assert [c.bbox for c in boxes.cells] == [c.bbox for c in parse(ANSWER).cells]
    assert all(c.text is None for c in boxes.cells) and boxes.status is PageStatus.OK


def test_labels_map_to_categories_and_unknown_ones_are_kept():
    answer = (
        element("sub_title", (0, 0, 10, 10), "## Methods")
        + element("equation", (0, 20, 10, 30), r"\[ E = mc^2 \]")
        + element("footer", (0, 40, 10, 50), "Page 3")
        + element("algorithm", (0, 60, 10, 70), "step 1")
    )
    result = parse(answer)
    assert [c.category for c in result.cells] == [
        "Section-header",
        "Formula",
        "Page-footer",
        "algorithm",
    ]
    assert result.status is PageStatus.OK
    assert "unknown category 'algorithm' kept" in result.notes


def test_several_boxes_are_merged_and_unreadable_ones_dropped():
    answer = (
        "<|ref|>text<|/ref|><|det|>[[10, 10, 100, 20], [10, 30, 200, 40]]<|/det|>\ntwo lines\n"
        + "<|ref|>text<|/ref|><|det|>[[oops]]<|/det|>\nlost box\n"
    )
    result = parse(answer)
    assert [c.text for c in result.cells] == ["two lines"]
    assert result.cells[0].bbox == parse(element("text", (10, 10, 200, 40), "x")).cells[0].bbox
    assert "1 cell(s) with several boxes merged into one" in result.notes
    assert "1 item(s) without a usable bbox dropped" in result.notes
    assert result.status is PageStatus.REPAIRED


def test_answer_cut_in_an_elements_text_keeps_what_was_read():
    cut = ANSWER[: ANSWER.index("costs fell")]
    result = parse(cut, finish_reason="length")
    assert result.status is PageStatus.REPAIRED
    assert [c.text for c in result.cells] == ["# Annual Report 2024", "Revenue grew by 12% while"]
    assert result.notes == ["answer cut at the token budget", "last cell's text cut short"]


def test_answer_cut_in_a_table_closes_it_after_its_last_whole_row():
    cut = ANSWER[: ANSWER.index("<td>2024")]
    result = parse(cut, finish_reason="length")
    table = next(c for c in result.cells if c.category == "Table")
    assert table.text == (
        "<table><tr><td>Year</td><td>Revenue</td></tr><tr><td>2023</td><td>10.7</td></tr></table>"
    )
    assert "unfinished table closed after its last complete row" in result.notes
    assert "last cell's text cut short" not in result.notes
    assert result.status is PageStatus.REPAIRED
    headless = parse(ANSWER[: ANSWER.index("<td>Year") + 5], finish_reason="length")
    table = next(c for c in headless.cells if c.category == "Table")
    assert table.text is None and table.bbox == (200, 901, 1802, 1502)
    assert "unfinished table without a complete row: its text dropped" in headless.notes


def test_answer_cut_in_a_header_drops_the_fragment():
    cut = ANSWER[: ANSWER.index("[[100, 300")]
    result = parse(cut, finish_reason="length")
    assert [c.category for c in result.cells] == ["Title", "Text"]
    assert result.cells[1].text == "Revenue grew by 12% while costs fell."
    assert "unfinished last cell dropped" in result.notes
    assert result.status is PageStatus.REPAIRED


def test_every_cut_parses_and_keeps_a_prefix_of_the_cells():
    full = [c.bbox for c in parse(ANSWER).cells]
    first_header = ANSWER.index("<|/det|>") + len("<|/det|>")
    for end in range(0, len(ANSWER), 7):
        result = parse(ANSWER[:end], finish_reason="length")
        assert result.status in (PageStatus.REPAIRED, PageStatus.FALLBACK)
        if end < first_header:  # no whole element yet: the words, if any, as text
            assert result.status is PageStatus.FALLBACK and len(result.cells) <= 1
            continue
        boxes = [c.bbox for c in result.cells]
        assert boxes == full[: len(boxes)], end


def test_looping_answer_is_collapsed():
    answer = element("title", (100, 50, 900, 80), "# Minutes") + "".join(
        element("text", (100, 100 + 20 * i, 900, 115 + 20 * i), "- Approved.") for i in range(30)
    )
    result = parse(answer, finish_reason="length")
    assert [c.text for c in result.cells] == ["# Minutes"] + ["- Approved."] * 3
    assert "27 repeated cell(s) from a loop collapsed" in result.notes
    assert result.status is PageStatus.REPAIRED
    runaway = parse(element("text", (0, 0, 500, 500), "ha" * 300))
    assert runaway.cells[0].text == "hahaha"
    assert "1 runaway repeat(s) in cell text collapsed" in runaway.notes
    assert runaway.status is PageStatus.REPAIRED


def test_answer_without_grounding_is_kept_as_text():
    result = parse("The model forgot its layout and wrote prose.")
    assert result.status is PageStatus.FALLBACK
    assert [(c.bbox, c.category, c.text) for c in result.cells] == [
        ((0, 0, 2000, 3000), "Text", "The model forgot its layout and wrote prose.")
    ]
    empty = parse("  <｜end▁of▁sentence｜>")
    assert empty.cells == [] and empty.status is PageStatus.FALLBACK
    assert "empty answer to a layout prompt" in empty.notes


def test_text_before_the_first_element_is_kept():
    result = parse("stray words\n" + element("text", (0, 0, 100, 100), "body"))
    assert [c.text for c in result.cells] == ["stray words", "body"]
    assert result.cells[0].bbox == (0, 0, 2000, 3000)
    assert result.status is PageStatus.REPAIRED


def test_free_ocr_answer_is_one_text_cell():
    result = parse("Line one\nLine two\n<｜end▁of▁sentence｜>", "ocr")
    assert result.status is PageStatus.OK
    assert [(c.bbox, c.category, c.text) for c in result.cells] == [
        ((0, 0, 2000, 3000), "Text", "Line one\nLine two")
    ]
    boxed = PROFILE.parse("word", GEOMETRY, "figure", box=(10, 20, 30, 40))
    assert boxed.cells[0].bbox == (10, 20, 30, 40)
    cut = parse("Line one", "ocr", finish_reason="length")
    assert cut.status is PageStatus.REPAIRED


@settings(max_examples=200)
@given(
    st.lists(
        st.sampled_from(
            [
                "<|ref|>",
                "<|/ref|>",
                "<|det|>",
                "<|/det|>",
                "[[",
                "]]",
                "1, 2, 3, 4",
                "999",
                "-5",
                "text",
                "table",
                "image",
                "<table>",
                "<tr>",
                "</tr>",
                "</table>",
                "\n",
                "<｜end▁of▁sentence｜>",
                "é",
            ]
        ),
        max_size=40,
    ),
    st.sampled_from(["layout_all", "layout_only", "ocr"]),
    st.sampled_from([None, "stop", "length"]),
)
def test_parser_never_raises_and_boxes_stay_on_the_page(pieces, task, finish):
    result = parse("".join(pieces), task, finish_reason=finish)
    for cell in result.cells:
        x1, y1, x2, y2 = cell.bbox
        assert 0 <= x1 <= x2 <= 2000 and 0 <= y1 <= y2 <= 3000


# --- a real vLLM ------------------------------------------------------------------------

# Pages and the tasks sent on each: every task on a page of the global view alone (273
# tokens); on an A4 page at 200 DPI (2 x 3 tiles, 903 tokens) the default task only, as
# the CPU reads such a page in ~20 s and its image tokens do not depend on the task
# (every task there passes too: 3 more requests, ~40 s).
PAGES = {(400, 300): PROFILE.tasks, (1654, 2339): (PROFILE.default_task,)}


@pytest.fixture(scope="module")
def deepseek_server(tmp_path_factory):
    """vLLM's CPU build serving a tiny DeepSeek-OCR folder (tests/vllm_support/
    tiny_deepseek_ocr_model.py) with random weights, started with the CPU launch plan's
    own flags (the n-gram logits processor among them). Yields (url, plan)."""
    from dotsocr.serve.plan import PlanOptions, plan_cpu
    from vllm_support import server

    server.require()
    workdir = tmp_path_factory.mktemp("deepseek-vllm")
    model = server.build_tiny("tiny_deepseek_ocr_model.py", workdir / "tiny-deepseek-ocr")
    options = PlanOptions(model=str(model), host="127.0.0.1", port=server.free_port())
    plan = plan_cpu(options, DEEPSEEK_OCR)  # the plan as planned
    with server.serve_folder(workdir, plan.url, ["--model", plan.model, *plan.args()], plan.env):
        yield plan.url, plan


@pytest.mark.vllm
def test_vllm_takes_every_task_at_the_prompt_tokens_the_plan_predicts(deepseek_server):
    """usage.prompt_tokens == the plan's prediction (text counted by /tokenize) for every
    task on a page of the global view alone and on an A4 page of 2 x 3 tiles, with the
    recipe's extras (vllm_xargs, skip_special_tokens) accepted. layout_only's request is
    layout_all's to the byte, so it is not sent twice."""
    import asyncio

    from dotsocr.engines.openai import OpenAIEngine, RetryPolicy

    url, launch = deepseek_server
    assert launch.value("--logits-processors") == DEEPSEEK_OCR.flags["--logits-processors"]

    async def go():
        results = []
        async with OpenAIEngine(url, retry=RetryPolicy(attempts=1)) as engine:
            for (width, height), tasks in PAGES.items():
                sent: dict[str, object] = {}
                for task in tasks:
                    text = await engine.text_tokens(PROFILE.request_text(task))
                    plan = PROFILE.plan(
                        width, height, text_tokens=text, max_model_len=engine.info.max_model_len
                    )
                    image = Image.new("RGB", (width, height), "white")
                    page = PROFILE.prepare(image, width, height, plan.max_pixels)
                    request = PROFILE.build_request(page, task, max_tokens=8)
                    assert request.extra == PROFILE.extra_body
                    body = repr(request.to_openai("model"))
                    if body not in sent:
                        sent[body] = await engine.infer(page, request)
                    answer = sent[body]
                    parsed = PROFILE.parse(
                        answer.text, page.geometry, task, finish_reason=answer.finish_reason
                    )
                    results.append((width, height, task, plan, page, answer, parsed))
                assert len(sent) == len({PROFILE.prompts[task] for task in tasks})
        return results

    results = asyncio.run(go())
    assert len(results) == sum(map(len, PAGES.values()))
    for width, height, task, plan, page, answer, parsed in results:
        where = f"{width}x{height} {task}"
        assert plan.image_tokens == page.image_tokens, where
        assert answer.prompt_tokens == plan.prompt_tokens, where
        assert answer.finish_reason in ("stop", "length"), where
        assert answer.completion_tokens and answer.completion_tokens <= 8, where
        assert parsed.status in set(PageStatus), where  # random weights: any answer parses
    assert {r[3].image_tokens for r in results} == {GLOBAL_VIEW_TOKENS, 903}


@pytest.mark.vllm
def test_vllm_runs_the_ngram_guard_the_plan_loads(deepseek_server):
    """The --logits-processors class is loaded and each request switches it on: it checks
    vllm_xargs (a bad ngram_size is refused), and a guarded answer repeats no n-gram."""
    import json
    import urllib.error
    import urllib.request

    url, _ = deepseek_server

    def chat(xargs: dict | None, max_tokens: int) -> tuple[int, dict]:
        body = {
            "model": "model",
            "messages": [{"role": "user", "content": "Free OCR."}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "skip_special_tokens": False,
            "logprobs": True,
            "return_tokens_as_token_ids": True,
            **({"vllm_xargs": xargs} if xargs else {}),
        }
        request = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def token_ids(data: dict) -> list[int]:
        items = data["choices"][0]["logprobs"]["content"]
        return [int(item["token"].removeprefix("token_id:")) for item in items]

    status, data = chat({**PROFILE.extra_body["vllm_xargs"], "ngram_size": 0}, 4)
    assert status == 400 and "ngram_size" in json.dumps(data), data
    n = 3
    guarded = {**PROFILE.extra_body["vllm_xargs"], "ngram_size": n, "window_size": 64}
    status, data = chat(guarded, 32)
    assert status == 200, data
    ids = token_ids(data)
    assert ids and len(ids) == data["usage"]["completion_tokens"]
    whitelist = set(PROFILE.extra_body["vllm_xargs"]["whitelist_token_ids"])

    def repeats(ids: list[int]) -> list[tuple[int, ...]]:
        grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
        return [g for i, g in enumerate(grams) if g in grams[:i] and g[-1] not in whitelist]

    assert not repeats(ids), ids
    # The control: unguarded, greedy decoding over vLLM's seeded random weights loops.
    status, plain = chat(None, 32)
    assert status == 200, plain
    assert repeats(token_ids(plain)), token_ids(plain)
