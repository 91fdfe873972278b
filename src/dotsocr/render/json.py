"""The versioned JSON output: one object per document, described in docs/json-schema.md.

The output models are assembled from the fields of :mod:`dotsocr.layout`, so their
types, bounds and descriptions cannot drift from the data model.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from dotsocr.layout import Cell, DocumentResult, PageResult

SCHEMA_NAME = "dotsocr.result"
SCHEMA_VERSION = 1
"""Bumped on renames and removals; additive changes keep it (docs/json-schema.md)."""

_CELL_FIELDS = ("bbox", "category", "text", "confidence", "quad")
_PAGE_FIELDS = (
    "index",
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
)
_DOC_FIELDS = ("source", "model", "profile", "task")


# Used only where layout.py gives a field no description of its own.
_DESCRIPTIONS = {
    "dpi": "resolution a PDF page was rendered at, or the one an image file states (72-1200); "
    "null for an image that states none",
    "status": "ok, repaired (answer mended), fallback (kept as plain text) or failed",
    "error": "why the page failed, when it did",
    "attempts": "requests made to the model for this page",
    "prompt_tokens": "prompt tokens spent on the page, when the engine reports them",
    "completion_tokens": "answer tokens spent on the page, when the engine reports them",
    "seconds": "wall-clock seconds spent on the page",
    "source": "the input document, as given",
    "task": "the prompt task, e.g. layout_all",
}


def _fields(model: type[BaseModel], names: tuple[str, ...]) -> dict[str, Any]:
    """``create_model`` arguments reusing ``model``'s field definitions."""
    fields = {}
    for name in names:
        info = copy.copy(model.model_fields[name])
        info.description = info.description or _DESCRIPTIONS.get(name)
        fields[name] = (info.annotation, info)
    return fields


def _raw_is_optional(schema: dict[str, Any]) -> None:
    schema["required"].remove("raw")  # present only with include_raw


# Every key is written, so the serialization schema lists defaults as required too.
# Extra keys stay allowed: a newer writer may add fields without bumping the version.
_CONFIG = ConfigDict(json_schema_serialization_defaults_required=True)

CellOut = create_model(
    "CellOut",
    __config__=_CONFIG,
    __doc__="One layout element in reading order.",
    **_fields(Cell, _CELL_FIELDS),
)

PageOut = create_model(
    "PageOut",
    __config__=ConfigDict(**_CONFIG, json_schema_extra=_raw_is_optional),
    __doc__="One page: its frame, how OCR went, and its cells.",
    **_fields(PageResult, _PAGE_FIELDS[:1]),
    number=(int, Field(ge=1, description="1-based page number, as people count")),
    **_fields(PageResult, _PAGE_FIELDS[1:]),
    cells=(list[CellOut], Field(description="layout cells in the model's reading order")),
    **_fields(PageResult, ("raw",)),
)

ResultOut = create_model(
    "ResultOut",
    __config__=ConfigDict(**_CONFIG, title="dotsocr result"),
    __doc__="The OCR result of one document (dotsocr JSON output).",
    # "schema" would shadow a BaseModel attribute, hence the alias.
    schema_name=(
        Literal["dotsocr.result"],
        Field(alias="schema", description="always 'dotsocr.result'"),
    ),
    version=(Literal[1], Field(description="schema version; see the version policy")),
    **_fields(DocumentResult, _DOC_FIELDS),
    status=(
        Literal["ok", "partial", "failed"],
        Field(description="ok: no page failed; failed: every page did; else partial"),
    ),
    pages=(list[PageOut], Field(description="pages in document order")),
)


def to_output(doc: DocumentResult) -> BaseModel:
    """The validated output model of ``doc``."""
    pages = [_page(page) for page in doc.pages]
    return ResultOut.model_validate(
        {
            "schema": SCHEMA_NAME,
            "version": SCHEMA_VERSION,
            **doc.model_dump(include=set(_DOC_FIELDS)),
            "status": doc.status,
            "pages": pages,
        }
    )


def _page(page: PageResult) -> dict[str, Any]:
    return {
        **page.model_dump(include={*_PAGE_FIELDS, "raw"}),
        "number": page.number,
        "cells": [cell.model_dump(include=set(_CELL_FIELDS)) for cell in page.cells],
    }


def page_json(page: PageResult) -> dict[str, Any]:
    """One page as it appears in a document's ``pages`` (JSON-ready)."""
    return PageOut.model_validate(_page(page)).model_dump(mode="json")


def render_json(doc: DocumentResult, *, include_raw: bool = True, indent: int | None = 2) -> str:
    """Serialize ``doc`` in the versioned schema (see :func:`json_schema`).

    Args:
        doc: the OCR result.
        include_raw: keep each page's raw model answer under ``raw``.
        indent: JSON indentation; None for one line.

    Returns:
        The JSON text, ending in a newline.
    """
    exclude = None if include_raw else {"pages": {"__all__": {"raw"}}}
    data = to_output(doc).model_dump(mode="json", by_alias=True, exclude=exclude)
    return json.dumps(data, indent=indent, ensure_ascii=False) + "\n"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of :func:`render_json`'s output."""
    schema = ResultOut.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
