"""Salvaging the items of a JSON array from a model's answer, however it is broken.

Models cut off at the token budget, drop commas, forget brackets, write bare objects
one after another and wrap answers in code fences. ``salvage_objects`` keeps every
item that was complete, mends the rest with json-repair, and reports what it had to
do. It never raises.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import json_repair

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*(```\s*)?$", re.DOTALL)
# Where JSON starts when the answer does not open with it: an array of objects, or a cell.
_EMBEDDED_START = re.compile(r'\[\s*\{\s*"|\{\s*"bbox"')
_decoder = json.JSONDecoder()
# The C decoder also raises ValueError (huge integers) and RecursionError (deep nesting).
_DECODE_ERRORS = (ValueError, RecursionError)

MISSING_BRACKET = "missing closing bracket added"
BARE_OBJECTS = "objects without an enclosing array"
CODE_FENCE = "code fence removed"


@dataclass
class Salvage:
    objects: list[Any] = field(default_factory=list)
    found_json: bool = False  # the answer was a JSON array or object at all
    closed: bool = False  # the array's closing bracket was seen
    truncated: bool = False  # it ended inside the array (the model ran out of tokens)
    dropped_partial: bool = False  # an unfinished last item was left out
    repairs: list[str] = field(default_factory=list)


def strip_fence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1) if match else text


def salvage_objects(text: str, *, truncated_hint: bool = False) -> Salvage:
    """Extract the items of a JSON array (or of bare objects) from ``text``.

    Args:
        text: the model's answer.
        truncated_hint: the engine reported finish_reason ``length``.
    """
    out = Salvage()
    body = strip_fence(text).strip()
    if body != text.strip():
        out.repairs.append(CODE_FENCE)
    start = _json_start(body)
    if start < 0:
        return out
    out.found_json = True
    bare = body[start] == "{"
    pos, out.closed, missing_commas = _scan(body, start if bare else start + 1, out)
    if missing_commas:
        out.repairs.append(f"{missing_commas} missing comma(s) between items")
    tail = body[pos:].strip()
    if out.closed:
        if tail.strip(",; \n"):
            out.repairs.append("text after the JSON array ignored")
    elif tail:
        out.truncated = truncated_hint or not tail.endswith(("]", "}"))
        _mend_tail(tail, out)
    else:
        # Every item was complete; only the bracket is missing (or the budget ran out
        # exactly between two items, which the engine's finish reason tells).
        out.truncated = truncated_hint
        if not bare:
            out.repairs.append(MISSING_BRACKET)
    if bare and out.objects:
        out.repairs.append(BARE_OBJECTS)
    out.objects = _unwrap(out.objects, out.repairs)
    return out


def _json_start(body: str) -> int:
    if body[:1] in ("[", "{"):
        return 0
    match = _EMBEDDED_START.search(body)
    return match.start() if match else -1


def _scan(body: str, pos: int, out: Salvage) -> tuple[int, bool, int]:
    """Decode whole items one by one.

    Returns where decoding stopped, whether ``]`` closed the array, and how many
    commas were missing between items.
    """
    expect_comma = False
    missing = 0
    while True:
        while pos < len(body) and body[pos] in " \t\r\n":
            pos += 1
        if pos >= len(body):
            return pos, False, missing
        char = body[pos]
        if char == "]":
            return pos + 1, True, missing
        if char == ",":
            pos += 1
            expect_comma = False
            continue
        try:
            item, end = _decoder.raw_decode(body, pos)
        except _DECODE_ERRORS:
            return pos, False, missing
        missing += expect_comma
        out.objects.append(item)
        pos, expect_comma = end, True


def _mend_tail(tail: str, out: Salvage) -> None:
    """Repair the undecodable rest; drop its last item if the answer was cut."""
    try:
        mended = json_repair.loads(tail if tail.startswith("[") else "[" + tail)
    except Exception:  # json-repair is robust, but the parser must never raise
        mended = []
    items = mended if isinstance(mended, list) else [mended]
    items = [item for item in items if item not in ("", None)]
    if out.truncated and items:
        items.pop()
        out.dropped_partial = True
    if items:
        out.repairs.append(f"{len(items)} item(s) recovered by JSON repair")
    out.objects.extend(items)


def _is_cell(value: Any) -> bool:
    return isinstance(value, dict) and "bbox" in value


def _unwrap(objects: list[Any], repairs: list[str]) -> list[Any]:
    """Flatten ``[[...]]`` and ``{"layout": [...]}`` shapes into a plain list of items."""
    flat: list[Any] = []
    for item in objects:
        if isinstance(item, list):
            flat.extend(item)
            repairs.append("nested array flattened")
        elif isinstance(item, dict) and not _is_cell(item):
            cells = next(
                (v for v in item.values() if isinstance(v, list) and any(map(_is_cell, v))), None
            )
            if cells is None:
                flat.append(item)
            else:
                flat.extend(cells)
                repairs.append("array unwrapped from an object")
        else:
            flat.append(item)
    return flat
