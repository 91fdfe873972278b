"""Docker Compose's own check of the files `dotsocr compose` writes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def validate_compose(path: Path) -> None:
    """Docker's own check of a compose file where Compose is installed (.ci/run installs
    Debian's docker-compose; it needs no Docker daemon)."""
    if shutil.which("docker-compose"):
        command = ["docker-compose", "-f", str(path), "config", "-q"]
    elif subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        command = ["docker", "compose", "-f", str(path), "config", "-q"]
    elif os.environ.get("CI"):
        pytest.fail("docker compose is not installed: .ci/run should install docker-compose")
    else:
        return
    env = {**os.environ, "DOTSOCR_API_KEY": "x"}
    checked = subprocess.run(command, capture_output=True, text=True, env=env)
    assert checked.returncode == 0, checked.stderr
