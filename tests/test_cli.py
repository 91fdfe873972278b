"""The dotsocr command as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dotsocr import __version__
from dotsocr.render.annotate import CATEGORY_COLORS

DATA = Path(__file__).parent / "data"


def dotsocr(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dotsocr", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )


def render_sample(*args: object) -> subprocess.CompletedProcess[str]:
    answer, page = DATA / "dots_answers/multi_page_p1.json", DATA / "multi_page.pdf"
    return dotsocr("render", answer, "--image", page, "--dpi", "144", *args)


def render_tiff_sample(corpus: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """The real answer for DocLayNet p.1, made from a 144-DPI render the model saw at 1232x1596."""
    answer = DATA / "dots_answers/2206.01062_p1.json"
    page = corpus / "docling/tests/data/tiff/sources/2206.01062.tif"
    return dotsocr("render", answer, "--image", page, "--answer-size", "1232x1596", "-o", out)


def test_version():
    result = dotsocr("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"dotsocr {__version__}"


def test_pages_lists_sizes_and_token_cost():
    result = dotsocr("pages", DATA / "multi_page.pdf", "--pages", "1-2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(
        "page 1/5  1654x2339 px @ 200 dpi  -> model 1652x2352  4,956 image tokens"
    )


def test_pages_over_the_awkward_corpus_gives_one_line_per_page_or_bad_file(corpus):
    folders = [corpus / "robustness", corpus / "pdfjs"]
    result = dotsocr("pages", *folders)
    assert result.returncode == 1  # only because some files are bad
    assert "Traceback" not in result.stderr
    errors = result.stderr.splitlines()
    assert errors and all(line.startswith("error: ") for line in errors)
    named = {line.split(": ", 2)[1].split("  page ")[0] for line in errors}
    named |= {line.split("  page ")[0] for line in result.stdout.splitlines()}
    documents = {
        str(p)
        for f in folders
        for p in f.rglob("*")
        if p.suffix in (".pdf", ".png", ".jpg", ".tif")
    }
    assert named == documents  # every file accounted for, by name
    expected_bad = {
        "zero_byte.pdf": "the file is empty",
        "html_error_page_named.pdf": "HTML page",
        "issue6010_1.pdf": "pass its password",
        "huge_20000x20000_1bit.png": "decompression-bomb guard",
        "poppler-85140-0.pdf": "absurd size",
    }
    for name, reason in expected_bad.items():
        assert any(name in line and reason in line for line in errors), name


def test_pages_exit_zero_when_all_inputs_are_good(corpus):
    result = dotsocr("pages", corpus / "pdfjs/test/pdfs/rotation.pdf")
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2


def test_bad_page_selection_is_one_error_line():
    result = dotsocr("pages", DATA / "multi_page.pdf", "--pages", "9")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {DATA / 'multi_page.pdf'}: page 9 does not exist: the document has 5 page(s)"
    )


def test_render_golden_answer_to_markdown_matches_the_page():
    result = render_sample()
    assert result.returncode == 0, result.stderr
    assert result.stdout == (DATA / "golden/multi_page_p1.md").read_text(encoding="utf-8")


def test_render_tiff_frame_answer_with_its_picture(corpus, tmp_path):
    out = tmp_path / "2206.01062_p1.md"
    result = render_tiff_sample(corpus, out)
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == (DATA / "golden/2206.01062_p1.md").read_text(
        encoding="utf-8"
    )
    crop = Image.open(tmp_path / "2206.01062_p1_files/page-0001-picture-11.png")
    # box [636, 495, 1127, 1065] of 1232x1596, on the 612x792 page
    assert crop.size == pytest.approx((244, 283), abs=2)


def test_render_annotated_png_and_json(tmp_path):
    png, js = tmp_path / "p1.PNG", tmp_path / "p1.json"  # the suffix names the format
    for out in (png, js):
        result = render_sample("-o", out)
        assert result.returncode == 0, result.stderr
    drawn = Image.open(png)
    assert drawn.size == (1191, 1684)
    # Cell 2 is Text at (138, 197, 993, 258): its outline is drawn in the Text colour.
    assert drawn.getpixel((138, 230)) == CATEGORY_COLORS["Text"]
    assert drawn.getpixel((1150, 100)) == (255, 255, 255)  # the margin stays blank paper
    doc = json.loads(js.read_text())
    assert doc["version"] == 1 and doc["pages"][0]["width"] == 1191
    assert len(doc["pages"][0]["cells"]) == 12


def test_render_reads_stdin_and_reports_a_cut_answer():
    answer = (DATA / "dots_answers/multi_page_p1.json").read_text()[:1000]
    result = dotsocr(
        "render",
        "-",
        "--image",
        DATA / "multi_page.pdf",
        "--dpi",
        "144",
        "-f",
        "json",
        "--finish-reason",
        "length",
        stdin=answer,
    )
    page = json.loads(result.stdout)["pages"][0]
    assert page["status"] == "repaired" and "unfinished last cell dropped" in page["notes"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "png"], "error: --format png needs --output FILE"),
        (["--answer-size", "big"], "error: --answer-size 'big': use WIDTHxHEIGHT"),
        (["--task", "poem"], "error: unknown task 'poem'"),
        (["--model", "gpt"], "error: Unknown model 'gpt'. Known: "),
    ],
)
def test_render_usage_errors_are_one_line(args, message):
    result = render_sample(*args)
    assert result.returncode == 2  # a usage error, not a failed input
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_render_with_a_bad_image_names_it(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    result = dotsocr("render", DATA / "dots_answers/multi_page_p1.json", "--image", empty)
    assert result.returncode == 1
    assert (
        result.stderr
        == f"error: {empty}: the file is empty (0 bytes): re-download or re-export it\n"
    )


def test_outputs_get_ordinary_permissions_and_bad_targets_one_line(tmp_path):
    out = tmp_path / "p1.md"
    assert render_sample("-o", out).returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    result = render_sample("-f", "md", "-o", tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"error: cannot write {tmp_path}: Is a directory\n"
    result = render_sample("-o", tmp_path / "p1.jpg")
    assert result.stderr.startswith("error: cannot tell the format from 'p1.jpg'")


def test_picture_links_survive_spaces_in_the_output_name(corpus, tmp_path):
    out = tmp_path / "my page (1).md"
    result = render_tiff_sample(corpus, out)
    assert result.returncode == 0, result.stderr
    assert "![Picture](my%20page%20%281%29_files/page-0001-picture-11.png)" in out.read_text()
    assert (tmp_path / "my page (1)_files/page-0001-picture-11.png").is_file()


def test_empty_folder_is_reported_not_skipped(tmp_path):
    result = dotsocr("pages", tmp_path, DATA / "multi_page.pdf", "--pages", "1")
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path}: no PDF or image files in this folder\n"
    assert len(result.stdout.splitlines()) == 1  # the good file is still listed


def test_truncated_image_does_not_stop_the_batch(tmp_path):
    cut = tmp_path / "cut.png"
    cut.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(12))
    result = dotsocr("pages", cut, DATA / "multi_page.pdf", "--pages", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {cut}: the image cannot be decoded")
    assert len(result.stdout.splitlines()) == 1
