"""``dotsocr models``: the model profiles, what each gives back, and the card each needs."""

from __future__ import annotations

from typing import Annotated, Any

import typer

CARDS_GIB = (8, 12, 16, 24, 32, 40, 48, 80, 141)  # the sizes people own, smallest first
PLAN_CAPABILITY = (8, 9)  # an Ada or Hopper card: fp8 allowed, as most new cards


def describe(profile: Any) -> dict[str, Any]:
    """One profile as data: its capabilities, weights and the smallest card it fits."""
    from dotsocr.models.serving import GIB

    caps = getattr(profile, "capabilities", None)
    serving = getattr(profile, "serving", None)
    row: dict[str, Any] = {
        "name": profile.name,
        "hub_id": getattr(profile, "hf_id", ""),
        "tasks": list(profile.tasks),
        "default_task": profile.default_task,
        "layout_boxes": caps.layout_boxes if caps else None,
        "tables": caps.tables if caps else None,
        "formulas": caps.formulas if caps else None,
        "languages": caps.languages if caps else None,
        "summary": caps.summary if caps else "",
        "quantized": dict(getattr(profile, "quantized", {})),
        "weights_gib": None,
        "smallest_card_gib": None,
    }
    if serving is not None:
        row["weights_gib"] = {
            "bf16": round(serving.weight_bytes / GIB, 1),
            "fp8": round(serving.fp8_weight_bytes() / GIB, 1),
            "4-bit": round(serving.quantized_weight_bytes(4) / GIB, 1),
        }
        row["smallest_card_gib"] = _smallest_card(serving)
    return row


def _smallest_card(serving: Any) -> int | None:
    """The smallest usual card the planner fits the model on (fp8 allowed), in GiB."""
    from dotsocr.errors import DotsOCRError
    from dotsocr.serve.plan import Card, plan

    for size in CARDS_GIB:
        card = Card(f"{size} GiB", size * 1024**3, None, PLAN_CAPABILITY)
        try:
            plan(card, serving=serving)
        except DotsOCRError:
            continue
        return size
    return None


def _yes(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "no"


def register(app: typer.Typer) -> None:
    @app.command()
    def models(
        as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    ) -> None:
        """List the model profiles: what each reads into (boxes, tables, formulas), its
        languages, its weights and the smallest card it fits; --model picks one."""
        import json

        from rich.console import Console
        from rich.table import Table

        from dotsocr.models import all_profiles

        rows = [describe(profile) for profile in all_profiles()]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="Model profiles (--model NAME)", show_lines=True)
        longest = max(len(row["hub_id"]) for row in rows)
        table.add_column("name", ratio=3)
        table.add_column("hub id", min_width=longest)  # never cut short: people copy it
        table.add_column("gives", ratio=3)
        table.add_column("languages", ratio=2)
        table.add_column("weights", min_width=12)
        table.add_column("card", min_width=6)
        for row in rows:
            gives = [
                f"boxes: {_yes(row['layout_boxes'])}",
                f"tables: {row['tables'] or 'no'}",
                f"formulas: {_yes(row['formulas'])}",
                f"tasks: {', '.join(row['tasks'])}",
            ]
            weights = row["weights_gib"]
            shown = (
                f"{weights['bf16']} GiB bf16\n{weights['fp8']} fp8\n{weights['4-bit']} 4-bit"
                if weights
                else "unknown"
            )
            if row["quantized"]:
                shown += "\n" + "\n".join(f"{m}: {hub}" for m, hub in row["quantized"].items())
            card = f"{row['smallest_card_gib']} GiB" if row["smallest_card_gib"] else "-"
            table.add_row(
                f"{row['name']}\n[dim]{row['summary']}[/dim]",
                row["hub_id"],
                "\n".join(gives),
                row["languages"] or "?",
                shown,
                card,
            )
        Console(width=max(140, Console().width)).print(table)
