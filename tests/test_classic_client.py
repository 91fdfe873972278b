"""The original client's interface (dots_ocr_client.py, DotsOCRClient) over the library.

Against the stand-in server on loopback, real corpus files, and the script run as a user
runs it: ``python dots_ocr_client.py ...`` from the repository root.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dotsocr.classic import DotsOCRClient, main
from dotsocr.engines.openai import OpenAIEngine, RetryPolicy
from dotsocr.errors import EngineUnavailable

ROOT = Path(__file__).resolve().parents[1]
PNG = "dots_ocr/demo/demo_image2.png"
PDF = "docling/tests/data/pdf/sources/multi_page.pdf"  # 5 pages
HTML_PDF = "robustness/derived/html_error_page_named.pdf"
EMPTY_PNG = "robustness/derived/zero_byte.png"
STANDIN_MARKDOWN = "# Stand-in\n\nAnswered by the stand-in."
RESULT_KEYS = {
    "success", "text", "cells", "pages", "status", "processing_time", "usage", "model",
    "warnings", "error",
}  # fmt: skip


@pytest.fixture
def dead_url() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def script(*args: object, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The script as its users run it, from a checkout."""
    return subprocess.run(
        [sys.executable, "dots_ocr_client.py", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(Path.home())},
    )


def test_health_is_true_only_when_the_server_serves_the_model(standin, dead_url):
    assert DotsOCRClient(standin.url).health_check() is True
    assert DotsOCRClient(standin.url, model="model").health_check() is True
    client = DotsOCRClient(standin.url, model="dots.ocr")
    assert client.health_check() is False
    assert client.last_error == f"{standin.url}: serves model, not 'dots.ocr'"
    down = DotsOCRClient(dead_url)
    assert down.health_check() is False  # no exception, and quickly: one attempt
    assert down.last_error.endswith(": connection refused")
    assert DotsOCRClient("localhost:8000").health_check() is False  # a URL without http://


def test_server_url_and_key_come_from_the_environment(standin, monkeypatch):
    standin.api_key = "secret"
    monkeypatch.setenv("DOTSOCR_SERVER_URL", standin.url)
    assert DotsOCRClient().health_check() is False  # the key is missing
    monkeypatch.setenv("DOTSOCR_API_KEY", "secret")
    assert DotsOCRClient().health_check() is True
    monkeypatch.delenv("DOTSOCR_SERVER_URL")
    assert DotsOCRClient().base_url == "http://localhost:8000"


def test_list_models(standin, dead_url):
    assert DotsOCRClient(standin.url, model="anything").list_models() == ["model"]
    with pytest.raises(EngineUnavailable, match="connection refused"):
        DotsOCRClient(dead_url).list_models()


def test_image_gives_markdown_cells_and_usage(standin, corpus):
    result = DotsOCRClient(standin.url).process_image(corpus / PNG)
    assert set(result) == RESULT_KEYS
    assert result["success"] is True and result["error"] is None and result["status"] == "ok"
    assert result["text"].strip() == STANDIN_MARKDOWN
    assert [(c["page"], c["category"], c["text"]) for c in result["cells"]] == [
        (1, "Title", "# Stand-in"),
        (1, "Text", "Answered by the stand-in."),
    ]
    assert all(len(c["bbox"]) == 4 for c in result["cells"])
    assert result["pages"] == 1 and result["model"] == "model"
    usage = result["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert result["processing_time"] > 0
    prompt = standin.requests[0]["messages"][0]["content"][1]["text"]
    assert "layout information" in prompt and "text content within the bbox" in prompt


def test_pdf_gives_every_page(standin, corpus):
    result = DotsOCRClient(standin.url).process_image(str(corpus / PDF))
    assert result["success"] and result["pages"] == 5 and len(standin.requests) == 5
    assert len(result["cells"]) == 10
    assert sorted({c["page"] for c in result["cells"]}) == [1, 2, 3, 4, 5]
    # the same two cells on every page read as running headers: left out of the Markdown
    assert "Answered by the stand-in." not in result["text"]


def test_prompt_mode_is_sent(standin, corpus):
    result = DotsOCRClient(standin.url).process_image(corpus / PNG, prompt_mode="ocr")
    assert result["success"]
    prompt = standin.requests[0]["messages"][0]["content"][1]["text"]
    assert prompt.endswith("Extract the text content from this image.")
    result = DotsOCRClient(standin.url).process_image(corpus / PNG, prompt_mode="layout")
    assert not result["success"]
    assert result["error"].endswith("unknown prompt mode 'layout': choose one of "
                                    "layout_all, layout_only, ocr")  # fmt: skip


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (HTML_PDF, "it is an HTML page"),
        (EMPTY_PNG, "the file is empty"),
        ("robustness/derived/missing.png", "no such file: check the path"),
    ],
)
def test_bad_file_is_a_failed_result_naming_it_and_costs_no_request(standin, corpus, name, reason):
    path = corpus / name
    result = DotsOCRClient(standin.url).process_image(path)
    assert set(result) == RESULT_KEYS
    assert result["success"] is False and result["text"] == "" and result["cells"] == []
    assert result["error"].startswith(f"{path}: ") and reason in result["error"]
    assert "\n" not in result["error"]
    assert standin.requests == []


def test_server_refusals_are_failed_results_naming_file_and_server(standin, corpus):
    standin.api_key = "secret"
    result = DotsOCRClient(standin.url).process_image(corpus / PNG)
    assert result["success"] is False
    assert result["error"] == (
        f"{corpus / PNG}: {standin.url}/v1/models refused the API key (HTTP 401): pass the key "
        "the server was started with"
    )
    result = DotsOCRClient(standin.url, api_key="secret", model="other").process_image(corpus / PNG)
    assert (
        result["error"] == f"{corpus / PNG}: Unknown model 'other' at {standin.url}. Served: model"
    )


def test_text_gets_the_models_reply(standin, dead_url):
    standin.answer = "Hello there."
    result = DotsOCRClient(standin.url).process_text("Say hello")
    assert result["success"] and result["text"] == "Hello there." and result["error"] is None
    assert result["finish_reason"] == "stop" and result["usage"]["prompt_tokens"] > 0
    assert standin.requests[0]["messages"] == [{"role": "user", "content": "Say hello"}]
    standin.api_key = "secret"
    refused = DotsOCRClient(standin.url).process_text("Say hello")
    assert refused["success"] is False and "refused the API key" in refused["error"]


def test_engine_chat_sends_one_text_message_and_retries(standin):
    async def go():
        async with OpenAIEngine(standin.url, retry=RetryPolicy(base_delay=0.01)) as engine:
            return await engine.chat("hi", max_tokens=64)

    standin.faults.append("500")
    answer = asyncio.run(go())
    assert answer.text == standin.answer and answer.finish_reason == "stop"
    assert answer.attempts == 2 and answer.completion_tokens > 0
    sent = standin.requests[-1]
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert (sent["model"], sent["max_tokens"], sent["temperature"]) == ("model", 64, 0.1)


def test_sync_methods_work_inside_a_running_event_loop(standin):
    async def notebook_cell():
        return DotsOCRClient(standin.url).health_check()

    assert asyncio.run(notebook_cell()) is True


def test_main_prints_models_text_and_markdown(standin, corpus, capsys):
    assert main(["--url", standin.url, "--models"]) == 0
    assert capsys.readouterr().out == "model\n"
    assert main(["--url", standin.url, "--text", "hello"]) == 0
    assert capsys.readouterr().out == standin.answer + "\n"
    assert main(["--url", standin.url, "--image", str(corpus / PNG)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == STANDIN_MARKDOWN
    assert captured.err.startswith(f"{corpus / PNG}: 1 page(s), 2 cells, ok, ")


def test_main_failures_are_one_error_line_and_exit_1(standin, corpus, dead_url, capsys):
    assert main(["--url", dead_url, "--models"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {dead_url}: connection refused")
    assert main(["--url", dead_url, "--text", "hi", "--api-key", "k"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {dead_url}: connection refused") and err.count("\n") == 1
    with pytest.raises(SystemExit) as usage:
        main(["--url", standin.url])  # no action: argparse's usage error
    assert usage.value.code == 2


def test_script_health_from_the_repository_root(standin, dead_url):
    healthy = script("--health", "--url", standin.url)
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout == f"healthy: {standin.url} is ready\n"
    down = script("--health", "--url", dead_url)
    assert down.returncode == 1 and down.stdout == ""
    assert down.stderr == f"error: not healthy: {dead_url}: connection refused\n"
    assert down.stderr.count("\n") == 1


def test_script_image_from_the_repository_root(standin, corpus):
    done = script("--image", corpus / PNG, "--url", standin.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == STANDIN_MARKDOWN
    bad = script("--image", corpus / HTML_PDF, "--url", standin.url)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith(f"error: {corpus / HTML_PDF}: not a document")
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_module_imports_as_the_original_did():
    code = "from dots_ocr_client import DotsOCRClient, main; print(DotsOCRClient.__module__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "dotsocr.classic"


@pytest.mark.vllm
def test_the_four_commands_against_real_vllm(vllm_server, corpus):
    """Random weights: the words are meaningless, the protocol and the shapes are real."""
    url = vllm_server.url
    health = script("--health", "--url", url)
    assert health.returncode == 0, health.stderr
    models = script("--models", "--url", url)
    assert models.returncode == 0 and models.stdout.split() == ["model"]
    image = script("--image", corpus / PNG, "--url", url, "--prompt-mode", "ocr")
    assert image.returncode == 0, image.stderr
    assert f"{corpus / PNG}: 1 page(s)" in image.stderr and "Traceback" not in image.stderr
    text = script("--text", "Hello", "--url", url)
    assert text.returncode == 0, text.stderr
    result = DotsOCRClient(url).process_image(corpus / PNG)  # layout_all climbs the ladder
    assert set(result) == RESULT_KEYS and result["pages"] == 1
    assert result["usage"]["prompt_tokens"] > 0
    assert result["success"] == (result["status"] != "failed")
    assert result["error"] is None or "\n" not in result["error"]


def test_an_empty_answer_for_a_page_with_ink_is_no_success(standin):
    standin.answer = "[]"
    sample = Path(__file__).parent / "data" / "multi_page.pdf"
    result = DotsOCRClient(standin.url).process_image(sample)
    assert result["success"] is False and result["text"].strip() == ""
    assert result["error"].startswith(f"{sample}: no text was read, though the page is not blank")
    assert len(result["warnings"]) == 5 and result["status"] == "ok"


def test_the_servers_pixel_cap_is_taken(standin, corpus):
    import base64
    import io

    from PIL import Image

    result = DotsOCRClient(standin.url, max_pixels=400_000).process_image(corpus / PNG)
    assert result["success"] is True
    url = standin.requests[0]["messages"][0]["content"][0]["image_url"]["url"]
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.width * image.height <= 400_000
