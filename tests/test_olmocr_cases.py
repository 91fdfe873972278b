"""olmOCR-bench `present`/`absent` cases that the embedded CPU engine is expected to meet.

The cases and their PDFs are olmOCR-bench's sample (corpus/olmocr); the checks follow
its rules (text present in, or absent from, the Markdown, whitespace and quotes
normalised, a little fuzziness; only the first or last characters where the case says).
Cases the embedded engine cannot meet (text drawn as graphics, the header and footer
lines of a single page, a sentence it misreads) are left out: 22 of the sample's 30
present/absent cases are met (bench/cpu_engine.py counts them all, with the order cases).
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from rapidfuzz import fuzz

SAMPLE = "olmocr/olmocr/bench/sample_data"
EXPECTED = [
    "multi_column_miss_00",
    "multi_column_miss_01",
    "multi_column_miss_02",
    "multi_column_miss_03",
    "multi_column_miss_04",  # absent: a margin note
    "multi_column_miss_minediff_01",
    "discoverworld_crazy_table4_00",
    "discoverworld_crazy_table4_01",
    "discoverworld_crazy_table4_02",
    "earnings_table04",  # absent: a table's text read from the PDF's own text layer
    "small_page_size_00",  # a small scan, read enlarged
    "small_page_size_03",  # absent: a book's running head with its page number
    "small_page_size_04",
    "small_page_size_05",
    "ff0f0b22c55d8b90dd77d153f48e144fc9db_02a",  # absent: running footer
    "ff0f0b22c55d8b90dd77d153f48e144fc9db_02b",
    "ff0f0b22c55d8b90dd77d153f48e144fc9db_02c",  # absent: the page number, at the end
    "ff0f0b22c55d8b90dd77d153f48e144fc9db_02d",  # absent: running header
    "ff0f0b22c55d8b90dd77d153f48e144fc9db_02e",
    "ff1fc6a205ad039139ce566851b6b260c929_01a",
    "ff1fc6a205ad039139ce566851b6b260c929_01b",
    "ff1fc6a205ad039139ce566851b6b260c929_01c",
]


def normalise(text: str) -> str:
    for fancy, plain in (("“", '"'), ("”", '"'), ("‘", "'"), ("’", "'")):
        text = text.replace(fancy, plain)
    return " ".join(text.split())


@cache
def markdown(pdf: Path, page: int) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dotsocr", "ocr", str(pdf), "--pages", str(page), "--engine", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return normalise(result.stdout)


@pytest.fixture(scope="module")
def cases(corpus):
    lines = (corpus / SAMPLE / "dataset.jsonl").read_text().splitlines()
    return {case["id"]: case for case in map(json.loads, lines)}


@pytest.mark.parametrize("case_id", EXPECTED)
def test_case(corpus, cases, case_id):
    case = cases[case_id]
    text = normalise(case["text"])
    found = markdown(corpus / SAMPLE / "pdfs" / case["pdf"], case["page"])
    if case.get("first_n"):  # the case looks only at the Markdown's start or end
        found = found[: case["first_n"]]
    if case.get("last_n"):
        found = found[-case["last_n"] :]
    present = text in found or fuzz.partial_ratio(text, found) >= 97
    assert present == (case["type"] == "present"), (case["type"], text)
