"""The CLI's commands beyond the main job, one module per concern; cli.py registers them.

Each module imports only typer (and the standard library) at the top and defines
``register(app)``, so ``dotsocr --help`` stays fast.
"""

from __future__ import annotations

from importlib import import_module

import typer

MODULES = ("serving", "probe", "monitor", "cache", "gpus", "gateway", "worker", "models")


def register(app: typer.Typer) -> None:
    for name in MODULES:
        import_module(f"{__name__}.{name}").register(app)
