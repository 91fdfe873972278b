"""`dotsocr ocr` end to end with the embedded CPU engine: real files, real text, resume."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pikepdf
import pytest

DATA = Path(__file__).parent / "data"


def dotsocr(*args: object, cwd: Path | None = None, env: dict | None = None):
    environment = {"PATH": os.environ["PATH"], "HOME": str(Path.home()), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dotsocr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
        cwd=cwd,
    )


def test_one_input_prints_markdown_and_says_which_engine(tmp_path):
    result = dotsocr("ocr", DATA / "multi_page.pdf", "--pages", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("## The Evolution of the Word Processor\n")
    assert "- IBM MT/ST (Magnetic Tape/Selectric Typewriter)" in result.stdout
    assert (
        "no server configured (--server or DOTSOCR_SERVER_URL): reading with the embedded "
        "CPU engine" in result.stderr
    )
    assert "pages: 1 (1 read, 0 kept, 0 failed)" in result.stderr


def test_languages_are_listed():
    result = dotsocr("languages")
    assert result.returncode == 0
    assert any(line.startswith("eng\t") for line in result.stdout.splitlines())


def test_stdin_is_an_input(corpus):
    data = (corpus / "tesseract_test/testing/phototest.tif").read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "dotsocr", "ocr", "-", "--task", "ocr"],
        input=data, capture_output=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert b"The quick brown dog jumped over the lazy fox." in result.stdout


def test_phototest_transcript_within_an_error_bound(corpus):
    from rapidfuzz.distance import Levenshtein

    result = dotsocr("ocr", corpus / "tesseract_test/testing/phototest.tif", "--task", "ocr")
    truth = " ".join((corpus / "tesseract_test/testing/phototest.txt").read_text().split())
    found = " ".join(result.stdout.split())
    assert Levenshtein.distance(found, truth) / len(truth) < 0.02


@pytest.mark.parametrize(
    ("pdf", "present"),
    [
        ("ocr_test_rotated_270.pdf", "Docling bundles PDF document conversion"),
        ("ocr_test.pdf", "Markdown in an easy self contained package"),
    ],
)
def test_known_text_is_present(corpus, pdf, present):
    result = dotsocr("ocr", corpus / "docling/tests/data/ocr/sources" / pdf)
    assert present in " ".join(result.stdout.split())


def test_output_folder_formats_resume_and_force(tmp_path):
    out = tmp_path / "out"
    first = dotsocr(
        "ocr", DATA / "multi_page.pdf", "--pages", "1-2", "-o", out, "-f", "md,json,png"
    )
    assert first.returncode == 0, first.stderr
    markdown = (out / "multi_page.md").read_text()
    assert "## The Birth of Word Processing" in markdown
    doc = json.loads((out / "multi_page.json").read_text())
    assert [p["number"] for p in doc["pages"]] == [1, 2] and doc["status"] == "ok"
    assert (out / "multi_page_pages/page-0002.png").is_file()
    again = dotsocr(
        "ocr", DATA / "multi_page.pdf", "--pages", "1-2", "-o", out, "-f", "md,json,png"
    )
    assert "skipped: " in again.stderr and "documents: 1 (1 skipped (done))" in again.stderr
    changed = dotsocr("ocr", DATA / "multi_page.pdf", "--pages", "1", "-o", out)
    assert "ok: " in changed.stderr  # other settings: done again
    forced = dotsocr("ocr", DATA / "multi_page.pdf", "--pages", "1", "-o", out, "--force")
    assert "ok: " in forced.stderr


def test_a_batch_with_every_robustness_file(corpus, tmp_path):
    result = dotsocr(
        "ocr", DATA / "multi_page.pdf", corpus / "robustness", "-o", tmp_path, "--pages", "1"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    for name in ("zero_byte.pdf", "html_error_page_named.pdf", "huge_20000x20000_1bit.png",
                 "earnings_user_pw_test.pdf"):  # fmt: skip
        assert sum(name in line for line in errors) == 1, name
    assert (tmp_path / "multi_page.md").read_text().startswith("## The Evolution")
    assert (tmp_path / "derived/sroie_001_exif_orient6.md").is_file()


def test_usage_errors_exit_2(tmp_path):
    assert dotsocr("ocr", DATA / "multi_page.pdf", "-f", "docx").returncode == 2
    assert dotsocr("ocr", DATA / "multi_page.pdf", "--engine", "server").returncode == 2
    several = dotsocr("ocr", DATA / "multi_page.pdf", DATA / "multi_page.pdf")
    assert several.returncode == 2 and "need an output folder" in several.stderr


def hundred_pages(path: Path) -> None:
    with pikepdf.open(DATA / "multi_page.pdf") as source, pikepdf.new() as pdf:
        for _ in range(20):
            pdf.pages.extend(source.pages)
        buffer = io.BytesIO()
        pdf.save(buffer)
    path.write_bytes(buffer.getvalue())


def test_killed_run_resumes_to_identical_outputs(tmp_path):
    book = tmp_path / "book.pdf"
    hundred_pages(book)
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    args = ("ocr", book, "--dpi", "72", "-f", "md,json,png")
    assert dotsocr(*args, "-o", clean).returncode == 0
    command = [sys.executable, "-m", "dotsocr", *map(str, args), "-o", str(resumed)]
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(resumed.glob("book_pages/*.png"))) < 10 and time.monotonic() < deadline:
        time.sleep(0.2)  # pages are written as they finish: wait until it is well under way
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert 10 <= len(list(resumed.glob("book_pages/*.png"))) < 100
    assert not (resumed / "book.md").exists()  # nothing half-done stands as done
    rerun = dotsocr(*args, "-o", resumed)
    assert rerun.returncode == 0, rerun.stderr
    summary = re.search(r"pages: 100 \((\d+) read, (\d+) kept, 0 failed\)", rerun.stderr)
    assert summary and int(summary[2]) >= 10  # the pages journalled before the kill
    assert (resumed / "book.md").read_text() == (clean / "book.md").read_text()
    for page in clean.glob("book_pages/*.png"):
        assert (resumed / "book_pages" / page.name).read_bytes() == page.read_bytes()

    def content(folder):
        doc = json.loads((folder / "book.json").read_text())
        for page in doc["pages"]:
            page.pop("seconds")
            page["reading"].pop("steps")  # milliseconds, like seconds
        return doc

    assert content(resumed) == content(clean)
    assert not list(resumed.rglob("*.part")) and not list(resumed.rglob(".*.part"))


def test_max_pixels_matches_a_server_with_a_lower_cap(tmp_path):
    """A server planned with a pixel cap must get pages no larger, or its boxes would be
    in another frame than ours."""
    import base64

    from PIL import Image

    from vllm_support.standin import StandIn, start

    state = StandIn()
    server = start(state)
    try:
        for cap in (None, 1_000_000):
            flags = ["--max-pixels", cap] if cap else []
            result = dotsocr("ocr", DATA / "multi_page.pdf", "--pages", "1", "--server",
                             state.url, *flags)  # fmt: skip
            assert result.returncode == 0, result.stderr
    finally:
        server.shutdown()
    sizes = []
    for request in state.requests:
        url = request["messages"][0]["content"][0]["image_url"]["url"]
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        sizes.append(image.width * image.height)
    assert sizes[0] > 2_000_000  # the page at 200 DPI
    assert sizes[-1] <= 1_000_000
