"""Shared fixtures: where the corpus and the bundled test data live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def _corpus_root() -> Path:
    configured = os.environ.get("DOTSOCR_CORPUS")
    return Path(configured) if configured else ROOT.parent / "shared" / "corpus"


CORPUS = _corpus_root()


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared corpus (../shared/corpus, or DOTSOCR_CORPUS)."""
    if not (CORPUS / "MANIFEST.md").is_file():
        pytest.skip(f"corpus not found at {CORPUS}: set DOTSOCR_CORPUS")
    return CORPUS


@pytest.fixture(scope="session")
def data() -> Path:
    return DATA


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory):
    """A real vLLM serving the dots.ocr architecture on loopback, for the whole session."""
    from vllm_support import server

    if not server.installed():
        message = f"no finished vLLM install at {server.VENV}: run scripts/setup-vllm"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    handle = server.start(tmp_path_factory.mktemp("vllm"))
    yield handle
    handle.stop()


@pytest.fixture
def standin():
    """The stand-in vLLM server on loopback (tests/vllm_support/standin.py); set its fields
    to inject faults."""
    from vllm_support.standin import StandIn, start

    state = StandIn()
    httpd = start(state)
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
