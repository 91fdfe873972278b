"""Shared fixtures: where the corpus and the bundled test data live."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's, see tests/browser_support.py) for the whole session.
    Skipped when none is installed, unless DOTSOCR_REQUIRE_BROWSER is set (CI sets it)."""
    import browser_support

    executable = browser_support.chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        executable = None
    if executable is None:
        reason = "no Chromium: run scripts/setup-browser, or set DOTSOCR_CHROMIUM"
        if os.environ.get("DOTSOCR_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=browser_support.FLAGS
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh browser tab (own storage); fails the test on an uncaught script error or a
    console error (a resource the Content-Security-Policy blocked, say). Answers of 4xx,
    which tests provoke, are logged as failed loads and allowed."""
    import browser_support

    context = browser.new_context(viewport=browser_support.VIEWPORT, accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))

    def console(message) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    tab.on("console", console)
    yield tab
    context.close()
    assert not errors, f"errors on the page: {errors}"


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on loopback for the session (tests/pg_support.py). Skipped when
    Debian's postgresql is not installed, unless DOTSOCR_REQUIRE_POSTGRES is set (CI)."""
    import pg_support

    if pg_support.binaries() is None:
        reason = "no PostgreSQL: apt-get install postgresql"
        if os.environ.get("DOTSOCR_REQUIRE_POSTGRES"):
            pytest.fail(reason)
        pytest.skip(reason)
    with pg_support.PostgresServer() as server:
        yield server


@pytest.fixture
def database_url(postgres) -> str:
    """An empty database of its own for each test."""
    return postgres.database()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 on loopback, with the standard AWS variables pointing boto3 at it (and
    at it the gateways and workers the tests start, which inherit the environment)."""
    from moto.server import ThreadedMotoServer

    from vllm_support.server import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        }.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def s3(s3_endpoint: str):
    import boto3

    return boto3.client("s3")


@pytest.fixture
def bucket(s3) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name
