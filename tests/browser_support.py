"""Debian's Chromium, headless, driven by Playwright: for the web page's tests.

No browser is downloaded: ``scripts/setup-browser`` installs Debian's ``chromium`` (CI runs
it), or DOTSOCR_CHROMIUM names a Chromium binary. Screenshots go to test-output/screenshots
(or DOTSOCR_SCREENSHOTS) for people to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("DOTSOCR_SCREENSHOTS") or ROOT / "test-output" / "screenshots")
VIEWPORT = {"width": 1440, "height": 900}
# Running as root needs --no-sandbox; the rest keep Chromium off a network it cannot reach.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str | None:
    """The Chromium binary to drive, if there is one."""
    configured = os.environ.get("DOTSOCR_CHROMIUM")
    if configured:
        return configured
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page, name: str) -> Path:
    """Save what the page shows now as ``name``.png; returns the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
