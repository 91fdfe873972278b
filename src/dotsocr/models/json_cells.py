"""Salvaging a JSON array of objects from a model's answer, however it is broken.

Models cut off at the token budget, drop commas, forget brackets and wrap answers in
code fences. ``salvage_objects`` keeps every object that was complete, mends the rest
with json-repair, and reports what it had to do. It never raises.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import json_repair

_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*(```\s*)?$", re.DOTALL)
_decoder = json.JSONDecoder()


@dataclass
class Salvage:
    objects: list[Any] = field(default_factory=list)
    found_json: bool = False  # the answer looked like a JSON array or object at all
    truncated: bool = False  # it ended inside the array (the model ran out of tokens)
    dropped_partial: bool = False  # an unfinished last object was left out
    repairs: list[str] = field(default_factory=list)


def strip_fence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1) if match else text


def salvage_objects(text: str, *, truncated_hint: bool = False) -> Salvage:
    """Extract the items of a JSON array (or a lone object) from ``text``.

    Args:
        text: the model's answer.
        truncated_hint: the engine reported finish_reason ``length``.
    """
    out = Salvage()
    body = strip_fence(text).strip()
    if body != text.strip():
        out.repairs.append("code fence removed")
    start = _first_container(body)
    if start < 0:
        return out
    out.found_json = True
    if body[start] == "{":
        return _lone_object(body[start:], out, truncated_hint)
    pos, closed = _scan(body, start + 1, out)
    tail = body[pos:].strip()
    if closed:
        if tail and tail.strip(",; \n"):
            out.repairs.append("text after the JSON array ignored")
        return out
    if tail:
        out.truncated = truncated_hint or not tail.rstrip().endswith("]")
        _mend_tail(tail, out)
    else:
        # Every item was complete; only the bracket is missing (or the budget ran out
        # exactly between two items, which the engine's finish reason tells).
        out.truncated = truncated_hint
        out.repairs.append("missing closing bracket added")
    return out


def _first_container(body: str) -> int:
    positions = [p for p in (body.find("["), body.find("{")) if p >= 0]
    return min(positions) if positions else -1


def _scan(body: str, pos: int, out: Salvage) -> tuple[int, bool]:
    """Decode whole items one by one; return where decoding stopped and whether ``]`` closed."""
    expect_comma = False
    while True:
        while pos < len(body) and body[pos] in " \t\r\n":
            pos += 1
        if pos >= len(body):
            return pos, False
        char = body[pos]
        if char == "]":
            return pos + 1, True
        if char == ",":
            pos += 1
            expect_comma = False
            continue
        try:
            item, end = _decoder.raw_decode(body, pos)
        except json.JSONDecodeError:
            return pos, False
        if expect_comma:
            out.repairs.append("missing comma between items")
        out.objects.append(item)
        pos, expect_comma = end, True


def _mend_tail(tail: str, out: Salvage) -> None:
    """Repair the undecodable rest of the array; drop its last item if the answer was cut."""
    try:
        mended = json_repair.loads("[" + tail if not tail.startswith("[") else tail)
    except Exception:  # json-repair is robust, but the parser must never raise
        mended = []
    items = mended if isinstance(mended, list) else [mended]
    items = [item for item in items if item not in ("", None)]
    if out.truncated and items:
        items.pop()
        out.dropped_partial = True
    if items:
        out.repairs.append(f"{len(items)} malformed item(s) repaired")
    out.objects.extend(items)


def _lone_object(body: str, out: Salvage, truncated_hint: bool) -> Salvage:
    try:
        value, _ = _decoder.raw_decode(body)
    except json.JSONDecodeError:
        out.truncated = truncated_hint or not body.rstrip().endswith("}")
        if out.truncated:
            out.dropped_partial = True
            return out
        try:
            value = json_repair.loads(body)
        except Exception:
            return out
        out.repairs.append("malformed object repaired")
    # Some answers wrap the array in an object, e.g. {"layout": [...]}.
    if isinstance(value, dict):
        nested = [v for v in value.values() if isinstance(v, list)]
        if nested and "bbox" not in value:
            out.objects.extend(nested[0])
            out.repairs.append("array unwrapped from an object")
        else:
            out.objects.append(value)
    elif isinstance(value, list):
        out.objects.extend(value)
    return out
