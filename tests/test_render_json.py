import json
import os
from pathlib import Path

from dotsocr.layout import Cell, DocumentResult, PageResult, PageStatus
from dotsocr.render import SCHEMA_VERSION, json_schema, render_json
from dotsocr.render.json import ResultOut

SCHEMA_FILE = Path(__file__).parents[1] / "docs" / "result.schema.json"

PAGE_KEYS = [
    "index",
    "number",
    "width",
    "height",
    "dpi",
    "status",
    "error",
    "notes",
    "warnings",
    "reading",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "seconds",
    "cells",
    "raw",
]


def sample() -> DocumentResult:
    first = PageResult(
        index=0,
        width=850,
        height=1100,
        dpi=100.0,
        cells=[Cell(bbox=(1, 2, 30, 40), category="Title", text="# Hi", confidence=0.9)],
        raw='[{"bbox": [1, 2, 30, 40], "category": "Title", "text": "# Hi"}]',
        notes=["closed a cut answer"],
        status=PageStatus.REPAIRED,
        attempts=2,
        prompt_tokens=1200,
        completion_tokens=40,
        seconds=1.5,
    )
    second = PageResult(index=1, width=850, height=1100, status=PageStatus.FAILED, error="timeout")
    return DocumentResult(
        source="paper.pdf", model="dots.ocr", task="layout_all", pages=[first, second]
    )


def test_output_has_header_and_numbered_pages():
    data = json.loads(render_json(sample()))
    assert data["schema"] == "dotsocr.result"
    assert data["version"] == SCHEMA_VERSION == 1
    assert (data["source"], data["model"], data["task"]) == ("paper.pdf", "dots.ocr", "layout_all")
    assert data["status"] == "partial"
    assert [(p["index"], p["number"]) for p in data["pages"]] == [(0, 1), (1, 2)]
    assert list(data["pages"][0]) == PAGE_KEYS


def test_page_fields_and_cells_round_trip():
    doc = sample()
    first, second = json.loads(render_json(doc))["pages"]
    assert first["cells"] == [
        {
            "bbox": [1, 2, 30, 40],
            "category": "Title",
            "text": "# Hi",
            "confidence": 0.9,
            "quad": None,
        }
    ]
    assert first["status"] == "repaired" and first["notes"] == ["closed a cut answer"]
    assert (first["attempts"], first["prompt_tokens"], first["completion_tokens"]) == (2, 1200, 40)
    assert (first["dpi"], first["seconds"]) == (100.0, 1.5)
    assert first["raw"] == doc.pages[0].raw
    assert (second["status"], second["error"], second["cells"]) == ("failed", "timeout", [])


def test_output_validates_against_its_own_model():
    parsed = ResultOut.model_validate_json(render_json(sample(), indent=None))
    assert parsed.pages[1].number == 2


def test_include_raw_false_drops_raw_key():
    data = json.loads(render_json(sample(), include_raw=False))
    assert all("raw" not in p for p in data["pages"])


def test_indent_none_is_one_line_with_trailing_newline():
    out = render_json(sample(), indent=None)
    assert out.endswith("}\n") and out.count("\n") == 1


def test_document_status_ok_and_failed():
    ok = DocumentResult(source="a", pages=[PageResult(index=0, width=1, height=1)])
    bad = DocumentResult(
        source="a", pages=[PageResult(index=0, width=1, height=1, status=PageStatus.FAILED)]
    )
    assert json.loads(render_json(ok))["status"] == "ok"
    assert json.loads(render_json(bad))["status"] == "failed"


def test_schema_pins_name_and_version_and_makes_raw_optional():
    schema = json_schema()
    assert schema["properties"]["schema"]["const"] == "dotsocr.result"
    assert schema["properties"]["version"]["const"] == SCHEMA_VERSION
    page = schema["$defs"]["PageOut"]
    assert page["required"] == PAGE_KEYS[:-1]
    assert list(page["properties"]) == PAGE_KEYS
    assert schema["$defs"]["CellOut"]["required"] == [
        "bbox",
        "category",
        "text",
        "confidence",
        "quad",
    ]


def test_schema_descriptions_come_from_the_data_model():
    props = json_schema()["$defs"]["PageOut"]["properties"]
    assert props["index"]["description"] == PageResult.model_fields["index"].description
    assert all(p.get("description") for p in props.values() if "$ref" not in p)


def test_committed_schema_file_is_in_sync():
    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("DOTSOCR_REGEN") == "1":
        SCHEMA_FILE.write_text(text, encoding="utf-8")
    assert SCHEMA_FILE.read_text(encoding="utf-8") == text, (
        "docs/result.schema.json is stale: run DOTSOCR_REGEN=1 pytest tests/test_render_json.py"
    )
