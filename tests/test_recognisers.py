"""The CPU engine's recognisers: Tesseract on English, PP-OCRv6 on Chinese, OSD, routing.

PP-OCRv6 takes seconds a page on one core, so it reads three small Chinese pages once per
run (two of them at the same time, on two threads) and the tests share what it read.
"""

from __future__ import annotations

import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rapidfuzz.distance import Levenshtein

import cjk_pages
from dotsocr.engines.ppocr import PPOCR, _paddle_words, paddle_models
from dotsocr.engines.recognisers import choose, recogniser_languages
from dotsocr.engines.tesseract import UNSURE, Tesseract, osd
from dotsocr.errors import ConfigError
from dotsocr.text_lines import TextLine

pytest.importorskip("tesserocr")

PHOTOTEST = "tesseract_test/testing/"
DPI = 200
HALF_PAGE = (8.5, 5.5)  # inches: the passages fit in half a letter page, read in half the time
# Measured: 0.0 on the clean page and on both scanned-looking ones (the second turned 1.5
# degrees, blurred, grainy, JPEG at quality 40); Tesseract's English model scores 0.94 on
# such a page. The limits leave room for a character or two in 155-195.
MAX_CER_CLEAN = 0.02
MAX_CER_SCANNED = 0.05


def cer(found: str, truth: str) -> float:
    """Edit distance over the truth's length, whitespace removed and widths unified
    (NFKC turns full-width colons and letters into ASCII on both sides)."""
    found, truth = ("".join(unicodedata.normalize("NFKC", text).split()) for text in (found, truth))
    return Levenshtein.distance(found, truth) / len(truth)


def text_of(lines: list[TextLine]) -> str:
    return "\n".join(line.text for line in lines)


@pytest.fixture(scope="module")
def tesseract():
    engine = Tesseract("eng")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def passages() -> dict[str, str]:
    cjk_pages.require_font()
    return cjk_pages.passages()


@pytest.fixture(scope="module")
def chinese_page(passages) -> Image.Image:
    return cjk_pages.render_page(passages["software_update"], dpi=DPI, size_inches=HALF_PAGE)


@pytest.fixture(scope="module")
def paddle_reads(passages, chinese_page) -> dict[str, tuple[str, list[TextLine]]]:
    """Three Chinese pages read by PP-OCRv6, two of them in parallel: name -> (truth, lines)."""
    pytest.importorskip("rapidocr")
    trip = cjk_pages.render_page(passages["weekend_trip"], dpi=DPI, size_inches=HALF_PAGE)
    pages = {
        "clean": (passages["software_update"], chinese_page),
        "scanned": (passages["software_update"], cjk_pages.scanned(chinese_page, seed=1)),
        "scanned trip": (
            passages["weekend_trip"],
            cjk_pages.scanned(trip, angle=-1.5, blur=1.2, noise=25, quality=40, seed=2),
        ),
    }
    recogniser = PPOCR()
    with ThreadPoolExecutor(2) as pool:
        lines = pool.map(lambda page: recogniser.read(page[1], DPI), pages.values())
        return {
            name: (truth, found)
            for (name, (truth, _)), found in zip(pages.items(), lines, strict=True)
        }


def test_tesseract_reads_phototest(corpus: Path, tesseract: Tesseract) -> None:
    image = Image.open(corpus / PHOTOTEST / "phototest.tif")
    lines = tesseract.read(image, DPI)
    truth = (corpus / PHOTOTEST / "phototest.txt").read_text()
    found = cer(text_of(lines), truth)
    print(f"Tesseract CER on phototest: {found:.4f}")
    assert found < 0.02
    assert len(lines) == 8
    assert [line.block for line in lines] == [0, 0, 0, 1, 1, 1, 1, 1]  # its two paragraphs
    first = lines[0]
    assert [word.text for word in first.words][:3] == ["This", "is", "a"]
    assert 0.8 < first.confidence <= 1.0
    # 12-point capitals at 200 DPI are about 24 pixels high
    assert all(20 <= line.size <= 28 for line in lines)
    x1, y1, x2, y2 = first.bbox
    assert all(x1 <= w.bbox[0] and w.bbox[2] <= x2 + 1 for w in first.words)
    assert 0 <= y1 < y2 <= image.height


def test_tesseract_sizes_track_the_font(tesseract: Tesseract) -> None:
    from PIL import ImageDraw, ImageFont

    cjk_pages.require_font()
    page = Image.new("L", (1700, 500), 255)
    draw = ImageDraw.Draw(page)
    for y, text, points in ((80, "Quarterly Report", 24), (250, "sales were up again", 12)):
        font = ImageFont.truetype(str(cjk_pages.FONT), round(points * DPI / 72))
        draw.text((100, y), text, font=font, fill=0)
    title, body = tesseract.read(page, DPI)
    assert (title.text, body.text) == ("Quarterly Report", "sales were up again")
    assert 1.7 * body.size < title.size < 2.3 * body.size  # the lower-case body's size too


def test_tesseract_blank_page_has_no_lines(tesseract: Tesseract) -> None:
    assert tesseract.read(Image.new("L", (850, 1100), 255), DPI) == []


def test_tesseract_names_missing_traineddata() -> None:
    with pytest.raises(ConfigError, match="no Tesseract data for xyz"):
        Tesseract("eng+xyz")


@pytest.mark.parametrize(
    ("name", "turn"),  # turn: degrees counter-clockwise that set the page upright
    [
        ("phototest.tif", 0),
        ("phototest-rotated-L.png", 270),
        ("phototest-rotated-R.png", 90),
        ("phototest-rotated-180.png", 180),
    ],
)
def test_osd_turn_and_latin_script(corpus: Path, name: str, turn: int) -> None:
    found = osd(Image.open(corpus / PHOTOTEST / name), DPI)
    assert (found.turn, found.script) == (turn, "Latin")
    assert found.turn_confidence > 4


def test_osd_says_han_for_chinese(chinese_page: Image.Image) -> None:
    assert osd(chinese_page, DPI).script == "Han"
    turned = osd(cjk_pages.scanned(chinese_page).rotate(90, expand=True), DPI)
    assert (turned.turn, turned.script) == (270, "Han")


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (1700, 2200), 255),
        Image.new("L", (1700, 2200), 0),
        Image.new("RGB", (3, 2), "white"),
    ],
    ids=["blank", "black", "tiny"],
)
def test_osd_is_unsure_without_text(image: Image.Image) -> None:
    assert osd(image, DPI) == UNSURE


@pytest.mark.parametrize("seed", range(4))
def test_osd_leaves_noise_unturned(seed: int) -> None:
    grey = np.random.default_rng(seed).normal(128, 80, (600, 800))
    noise = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    assert osd(noise, DPI).turn == 0


@pytest.mark.parametrize(
    ("script", "languages", "recogniser"),
    [
        ("Han", "eng", "paddle"),
        ("Japanese", "eng", "paddle"),
        ("Latin", "chi_sim", "paddle"),  # the user's word beats OSD's
        (None, "eng+chi_tra", "paddle"),
        (None, "zh", "paddle"),
        ("Latin", "eng", "tesseract"),
        ("Cyrillic", "rus", "tesseract"),
        ("Hangul", "kor", "tesseract"),  # PP-OCRv6's bundled dictionary has no Hangul
        (None, "eng", "tesseract"),
    ],
)
def test_choose_routes_cjk_to_paddle(script: str | None, languages: str, recogniser: str) -> None:
    assert choose(script, languages) == recogniser


def test_recogniser_languages_names_both() -> None:
    described = recogniser_languages()
    assert "eng" in described["tesseract"]
    assert "osd" not in described["tesseract"]
    assert "Chinese" in described["paddle"]
    assert {Tesseract.name, PPOCR.name} == set(described)


def test_paddle_uses_only_its_wheels_models() -> None:
    rapidocr = pytest.importorskip("rapidocr")
    folder = Path(rapidocr.__file__).parent / "models"
    assert {path.parent for path in paddle_models().values()} == {folder}


def test_paddle_reads_nothing_on_a_blank_page() -> None:
    pytest.importorskip("rapidocr")
    assert PPOCR().read(Image.new("RGB", (400, 300), "white"), DPI) == []


def test_tesseract_reads_again_after_close(corpus: Path) -> None:
    engine = Tesseract()
    image = Image.open(corpus / PHOTOTEST / "phototest.tif")
    first = engine.read(image, DPI)
    engine.close()
    assert engine.read(image, DPI) == first
    engine.close()


def test_paddle_words_join_latin_runs_and_split_chinese() -> None:
    box = [[0, 0], [10, 0], [10, 10], [0, 10]]
    pieces = [(char, 1.0, box) for char in "在Windows11上"]
    assert [w.text for w in _paddle_words("在Windows11上", pieces)] == ["在", "Windows11", "上"]
    spaced = [(word, 1.0, box) for word in ("12", "point", "text")]
    assert [w.text for w in _paddle_words("12 point text", spaced)] == ["12", "point", "text"]


@pytest.mark.parametrize(
    ("name", "limit"),
    [("clean", MAX_CER_CLEAN), ("scanned", MAX_CER_SCANNED), ("scanned trip", MAX_CER_SCANNED)],
)
def test_paddle_reads_chinese(paddle_reads, name: str, limit: float) -> None:
    truth, lines = paddle_reads[name]
    found = cer(text_of(lines), truth)
    print(f"PP-OCRv6 CER on the {name} page: {found:.4f}")
    assert found <= limit


def test_paddle_lines_have_words_boxes_and_sizes(paddle_reads) -> None:
    _, lines = paddle_reads["clean"]
    margin = DPI  # the page's one-inch margin, in the page's pixels (not the read's 150 DPI)
    assert margin - 15 <= lines[0].bbox[1] <= margin + 25
    assert all(margin - 15 <= line.bbox[0] <= margin + 15 for line in lines)
    words = [word.text for line in lines for word in line.words]
    assert {"Email", "PDF", "2:00", "40%"} <= set(words)
    assert "公" in words  # a Chinese character is a word of its own
    em = 12 * DPI / 72
    assert all(0.6 * em <= line.size <= 1.0 * em for line in lines)
    assert all(0.9 <= line.confidence <= 1.0 for line in lines)
