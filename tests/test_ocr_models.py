"""``dotsocr ocr --model NAME`` for every profile, against the stand-in vLLM on loopback: the
request carries that model's prompt, and its answer format becomes the same outputs
(Markdown and layout JSON) as dots.ocr's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dotsocr.models import all_profiles
from test_ocr_cli import dotsocr

DATA = Path(__file__).parent / "data"
TITLE, BODY = "Stand-in", "Answered by the stand-in."
DOTS = json.dumps(
    [
        {"bbox": [10, 10, 200, 40], "category": "Title", "text": f"# {TITLE}"},
        {"bbox": [10, 60, 400, 120], "category": "Text", "text": BODY},
    ]
)
QWEN_HTML = (
    '<html><body><h1 data-bbox="10 10 200 40">{t}</h1><p data-bbox="10 60 400 120">{b}</p>'
    "</body></html>"
)
# Each model's own answer format for the same two elements: (answer, layout expected).
ANSWERS: dict[str, tuple[str, bool]] = {
    "dots.ocr": (DOTS, True),
    "dots.mocr": (DOTS, True),
    "dots.mocr-svg": (f'<svg xmlns="http://www.w3.org/2000/svg"><text>{BODY}</text></svg>', False),
    "qwen2.5-vl": (QWEN_HTML.format(t=TITLE, b=BODY), True),
    "qwen3-vl": (QWEN_HTML.format(t=TITLE, b=BODY), True),
    "deepseek-ocr": (
        f"<|ref|>title<|/ref|><|det|>[[10, 10, 200, 40]]<|/det|>\n# {TITLE}\n\n"
        f"<|ref|>text<|/ref|><|det|>[[10, 60, 400, 120]]<|/det|>\n{BODY}",
        True,
    ),
    "paddleocr-vl": (f"{TITLE}\n{BODY}", False),
    "got-ocr2": (f"{TITLE}\n\n{BODY}", False),
    "phi-3.5-vision": (f"{TITLE}\n\n{BODY}", False),
}


def test_every_profile_has_an_answer_here() -> None:
    assert set(ANSWERS) == {p.name for p in all_profiles()}


@pytest.mark.parametrize("profile", all_profiles(), ids=lambda p: p.name)
def test_ocr_with_each_model(profile, standin, tmp_path) -> None:
    answer, layout = ANSWERS[profile.name]
    standin.answer = answer
    result = dotsocr(
        "ocr", DATA / "multi_page.pdf", "--pages", "1", "--dpi", "100", "--model", profile.name,
        "--server", standin.url, "--engine", "server", "-o", tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    (request,) = standin.requests
    assert request["model"] == standin.model  # the server's own name, found
    text = " ".join(
        part.get("text", "")
        for message in request["messages"]
        for part in (message["content"] if isinstance(message["content"], list) else [])
    )
    if profile.name == "dots.mocr-svg":  # its default: the prompt names the page's size
        assert "Please generate the SVG code" in text
    else:
        task = "layout_all" if "layout_all" in profile.tasks else profile.default_task
        assert profile.prompt(task) in text
    assert any(
        part.get("type") == "image_url"
        for message in request["messages"]
        for part in (message["content"] if isinstance(message["content"], list) else [])
    )

    (page,) = json.loads(next(tmp_path.glob("*.json")).read_text())["pages"]
    markdown = next(tmp_path.glob("*.md")).read_text()
    if profile.name == "dots.mocr-svg":  # an SVG answer is a picture of the page
        assert [c["category"] for c in page["cells"]] == ["Picture"]
        return
    assert BODY in markdown
    if layout:
        assert [c["category"] for c in page["cells"]] == ["Title", "Text"]
        assert markdown.startswith(f"# {TITLE}")
        title, body = (c["bbox"] for c in page["cells"])
        assert title[1] < title[3] <= body[1] < body[3] <= page["height"]  # boxes on the page
    else:
        assert [c["category"] for c in page["cells"]] == ["Text"]
        assert page["cells"][0]["bbox"] == [0, 0, page["width"], page["height"]]
