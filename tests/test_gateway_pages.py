"""The gateway's views for people and dashboards, end to end against real gateway processes:
/v1/info, the job list, one page of a job (JSON, Markdown, HTML, image) and the web page
at /ui.

The CPU engine reads tests/data/multi_page.pdf for real; the stand-in vLLM server, slowed
down and one page at a time, keeps pages pending long enough to look at them. Tests
assert on states, never on timings.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from PIL import Image

from dotsocr import __version__
from dotsocr.gateway.models import MAX_FILES
from dotsocr.render.annotate import CATEGORY_COLORS
from gateway_support import (
    SAMPLE,
    TITLE,
    Gateway,
    assert_error,
    running_gateway,
    upload,
    wait_job,
)

KEY, OTHER = "pages-key-0123456789", "pages-other-9876543210"
LIMITS = {  # unusual values, so /v1/info shows that it reports the settings
    "DOTSOCR_MAX_UPLOAD_BYTES": "3000000",
    "DOTSOCR_MAX_PAGES_PER_JOB": "40",
    "DOTSOCR_MAX_IMAGE_PIXELS": "50000000",
}
DPI = 100  # multi_page.pdf is A4: 827 x 1170 pixels at 100 dpi, under every cap
JPEG_MAGIC = b"\xff\xd8\xff"
NEW_API_PATHS = (
    "/v1/info",
    "/v1/jobs",
    "/v1/jobs/{job_id}/files/{file}/pages/{page}",
    "/v1/jobs/{job_id}/files/{file}/pages/{page}/image",
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The CPU engine, two API keys and the limits above, for the whole module."""
    folder = tmp_path_factory.mktemp("pages") / "data"
    args = ("--engine", "cpu", "--api-key", KEY, "--api-key", OTHER)
    with running_gateway(folder, *args, env=LIMITS, ready=True) as started:
        yield started


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> httpx.Client:
    return gateway.client(KEY)


@pytest.fixture(scope="module")
def job(client: httpx.Client) -> dict[str, Any]:
    """A finished job: pages 1-2 of multi_page.pdf, and an empty file the gateway refused."""
    files = [upload(SAMPLE), ("files", ("empty.pdf", b"", "application/pdf"))]
    response = client.post("/v1/jobs", files=files, data={"pages": "1-2", "dpi": str(DPI)})
    assert response.status_code == 202, response.text
    final = wait_job(client, response.json()["id"])
    assert final["state"] == "done" and final["pages"]["done"] == 2, final
    return final


@pytest.fixture(scope="module")
def result(client: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    """That job's GET /result."""
    response = client.get(f"/v1/jobs/{job['id']}/result")
    assert response.status_code == 200, response.text
    return response.json()


def submit(client: httpx.Client, **fields: str) -> dict[str, Any]:
    """POST /v1/jobs with multi_page.pdf and these form fields."""
    response = client.post("/v1/jobs", files=[upload(SAMPLE)], data=fields)
    assert response.status_code == 202, response.text
    return response.json()


def page_path(job_id: str, file: int, number: int, tail: str = "") -> str:
    return f"/v1/jobs/{job_id}/files/{file}/pages/{number}{tail}"


def result_page(result: dict[str, Any], file: int, number: int) -> dict[str, Any]:
    """Page ``number`` (as numbered in the document) of a file in GET /result."""
    (found,) = [p for p in result["documents"][file]["pages"] if p["number"] == number]
    return found


def jpeg(response: httpx.Response) -> Image.Image:
    """The answer as a decoded JPEG, after checking that it says and is one."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content.startswith(JPEG_MAGIC)
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "JPEG"
    image.load()  # decodes every byte: a truncated file fails here
    return image


class _Elements(HTMLParser):
    """The elements of an HTML fragment, each with the text inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[list[Any]] = []  # [tag, attributes, text]
        self._open: list[list[Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = [tag, dict(attrs), ""]
        self.found.append(element)
        self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element[2] += data


def elements(html: str) -> list[tuple[str, dict[str, str | None], str]]:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return [(tag, attrs, " ".join(text.split())) for tag, attrs, text in parser.found]


# /v1/info
def test_info_answers_without_a_key_and_tells_model_auth_and_limits(gateway: Gateway) -> None:
    """A client learns, before sending anything and without a key, that it needs one, which
    engine reads pages, and the limits its uploads must keep to."""
    for key in (None, "not-a-key"):  # neither missing nor wrong keys are refused here
        response = gateway.client(key).get("/v1/info")
        assert response.status_code == 200, response.text
        info = response.json()
        assert info["auth"] is True
        assert info["version"] == __version__
        assert info["engine"] == "cpu"
        assert info["model"] == "embedded: text layer, tesseract, PP-OCRv6"
        assert info["ready"] is True and info["reason"] is None
        assert info["queued_pages"] >= 0 and info["reading_pages"] >= 0
        assert info["tasks"] == ["layout", "layout-only", "ocr"]
        assert info["limits"] == {
            "max_upload_bytes": 3_000_000,
            "max_files": MAX_FILES,
            "max_pages_per_job": 40,
            "max_image_pixels": 50_000_000,
        }


def test_info_lists_the_colours_annotated_pages_use(gateway: Gateway) -> None:
    """The web page draws boxes in the same colours as ``dotsocr ocr --annotate``."""
    categories = gateway.client().get("/v1/info").json()["categories"]
    for category in categories:
        assert set(category) == {"name", "color"}
        assert re.fullmatch(r"#[0-9a-f]{6}", category["color"]), category
    shown = {c["name"]: c["color"] for c in categories}
    assert len(shown) == len(categories)  # no category twice
    assert shown == {
        name: "#{:02x}{:02x}{:02x}".format(*rgb) for name, rgb in CATEGORY_COLORS.items()
    }


# GET /v1/jobs
def test_the_job_list_is_newest_first_and_honours_limit(client: httpx.Client) -> None:
    """A key's jobs come back newest first, as many as ``limit`` asks for."""
    made = [submit(client, pages="1")["id"] for _ in range(3)]
    newest_first = made[::-1]

    listed = client.get("/v1/jobs")
    assert listed.status_code == 200, listed.text
    assert set(listed.json()) == {"jobs"}
    ids = [j["id"] for j in listed.json()["jobs"]]
    assert ids[:3] == newest_first  # other tests' jobs of this key are older
    assert len(ids) == len(set(ids))

    assert [j["id"] for j in client.get("/v1/jobs", params={"limit": 3}).json()["jobs"]] == (
        newest_first
    )
    (only,) = client.get("/v1/jobs", params={"limit": 1}).json()["jobs"]
    assert only["id"] == made[-1]
    assert only["links"]["self"] == f"/v1/jobs/{made[-1]}"  # a full JobStatus
    assert only["files"][0]["name"] == SAMPLE.name
    for job_id in made:
        wait_job(client, job_id)


@pytest.mark.parametrize("limit", ["0", "201", "many"])
def test_the_job_list_refuses_a_bad_limit(client: httpx.Client, limit: str) -> None:
    """``limit`` is 1 to 200; anything else is a 422, not a silently clipped list."""
    assert_error(client.get("/v1/jobs", params={"limit": limit}), 422, "invalid")


def test_a_key_never_sees_another_keys_jobs(gateway: Gateway, client: httpx.Client) -> None:
    """Jobs are private to the key that made them: not listed for another key, and every
    page route answers 404 to it as if the job did not exist."""
    other = gateway.client(OTHER)
    mine = submit(client, pages="1")["id"]
    theirs = submit(other, pages="1")["id"]
    wait_job(client, mine)
    wait_job(other, theirs)

    assert theirs not in [j["id"] for j in client.get("/v1/jobs").json()["jobs"]]
    assert [j["id"] for j in other.get("/v1/jobs").json()["jobs"]] == [theirs]
    for path in (page_path(mine, 0, 1), page_path(mine, 0, 1, "/image")):
        assert_error(other.get(path), 404, "not_found")
        assert client.get(path).status_code == 200


@pytest.mark.parametrize("key", [None, "not-a-key"])
def test_the_job_list_needs_a_key(gateway: Gateway, key: str | None) -> None:
    """Unlike /v1/info, the list is per key: no key or a wrong one is a 401."""
    response = gateway.client(key).get("/v1/jobs")
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


# files[].selected
@pytest.mark.parametrize(
    ("pages", "selected", "count"),
    [("2-3", "2-3", 2), ("4,1-2,2", "1-2,4", 3), ("3-99", "3-5", 3), ("all", "1-5", 5)],
)
def test_each_file_says_which_pages_are_read(
    client: httpx.Client, pages: str, selected: str, count: int
) -> None:
    """``selected`` shows the selection as the document resolved it: sorted, merged into
    ranges, clipped to its pages."""
    submitted = submit(client, pages=pages)
    try:
        (file,) = submitted["files"]
        assert (file["selected"], file["pages"]) == (selected, count)
        assert client.get(f"/v1/jobs/{submitted['id']}").json()["files"][0]["selected"] == (
            selected
        )
    finally:
        client.delete(f"/v1/jobs/{submitted['id']}")


def test_a_refused_file_selects_no_pages(job: dict[str, Any]) -> None:
    """A file the gateway could not open reads no page: its ``selected`` is empty."""
    read, refused = job["files"]
    assert (read["selected"], read["pages"], read["error"]) == ("1-2", 2, None)
    assert (refused["selected"], refused["pages"]) == ("", 0)
    assert "empty" in refused["error"]


# One page of a finished job
def test_a_finished_page_is_its_result_as_json_markdown_and_html(
    client: httpx.Client, job: dict[str, Any], result: dict[str, Any]
) -> None:
    """The page view carries the same cells as the job's result, Markdown with the page's
    title, and HTML ready to show."""
    response = client.get(page_path(job["id"], 0, 1))
    assert response.status_code == 200, response.text
    view = response.json()
    assert (view["job"], view["file"], view["name"], view["page"], view["state"]) == (
        job["id"], 0, SAMPLE.name, 1, "done",
    )  # fmt: skip
    expected = result_page(result, 0, 1)
    assert view["result"]["number"] == 1
    assert (view["result"]["width"], view["result"]["height"]) == (
        expected["width"], expected["height"],
    )  # fmt: skip
    assert view["result"]["cells"] == expected["cells"]
    assert view["result"]["cells"], "the CPU engine found no text on page 1"

    assert TITLE in view["markdown"]
    found = elements(view["html"])
    headings = [text for tag, _, text in found if tag in ("h1", "h2")]
    assert TITLE in headings, found[:5]
    assert "script" not in {tag for tag, _, _ in found}

    self_link = page_path(job["id"], 0, 1)
    assert view["links"] == {"self": self_link, "image": f"{self_link}/image"}
    assert client.get(view["links"]["self"]).json() == view
    assert client.get(view["links"]["image"]).status_code == 200


def test_every_selected_page_matches_the_result(
    client: httpx.Client, job: dict[str, Any], result: dict[str, Any]
) -> None:
    """Each page a job reads has a view, and it agrees with GET /result."""
    for number in (1, 2):
        view = client.get(page_path(job["id"], 0, number)).json()
        assert view["state"] == "done" and view["page"] == number
        assert view["result"]["cells"] == result_page(result, 0, number)["cells"]


@pytest.mark.parametrize(
    ("file", "number", "why"),
    [
        (2, 1, "a file index past the job's files"),
        (0, 3, "a page of the document that was not selected"),
        (0, 6, "a page past the document's end"),
        (1, 1, "the file the gateway refused"),
    ],
)
def test_pages_the_job_does_not_read_are_404(
    client: httpx.Client, job: dict[str, Any], file: int, number: int, why: str
) -> None:
    """Both the view and the image are 404 in the one error shape."""
    for tail in ("", "/image"):
        message = assert_error(
            client.get(page_path(job["id"], file, number, tail)), 404, "not_found"
        )
        assert f"page {number}" in message, (why, message)


def test_the_page_routes_of_an_unknown_job_are_404(client: httpx.Client) -> None:
    """A job id never made (or deleted) is a 404 for the view and the image alike."""
    for tail in ("", "/image"):
        assert_error(client.get(page_path("no-such-job", 0, 1, tail)), 404, "not_found")


@pytest.mark.parametrize(
    "path", ["/files/-1/pages/1", "/files/0/pages/0", "/files/x/pages/1", "/files/0/pages/1.5"]
)
def test_malformed_page_addresses_are_422(
    client: httpx.Client, job: dict[str, Any], path: str
) -> None:
    """Files count from 0 and pages from 1: anything else is a 422, not a 404 or a 500."""
    for tail in ("", "/image"):
        assert_error(client.get(f"/v1/jobs/{job['id']}{path}{tail}"), 422, "invalid")


# The page image
def test_the_page_image_is_the_frame_of_the_boxes(
    client: httpx.Client, job: dict[str, Any], result: dict[str, Any]
) -> None:
    """The image is a JPEG the size the result's boxes are measured in."""
    expected = result_page(result, 0, 1)
    image = jpeg(client.get(page_path(job["id"], 0, 1, "/image")))
    assert image.size == (expected["width"], expected["height"]) == (827, 1170)
    assert image.mode == "RGB"


def test_the_page_image_scales_down_to_a_width_keeping_its_aspect(
    client: httpx.Client, job: dict[str, Any], result: dict[str, Any]
) -> None:
    """``?width=N`` gives a thumbnail N pixels wide, the page's shape kept."""
    expected = result_page(result, 0, 1)
    image = jpeg(client.get(page_path(job["id"], 0, 1, "/image"), params={"width": 300}))
    assert image.width == 300
    assert abs(image.height - 300 * expected["height"] / expected["width"]) <= 1
    # Never scaled up: a width over the page's gives the page as it is.
    image = jpeg(client.get(page_path(job["id"], 0, 1, "/image"), params={"width": 5000}))
    assert image.size == (expected["width"], expected["height"])


@pytest.mark.parametrize("width", ["5", "0", "10001", "wide"])
def test_an_unusable_image_width_is_422(
    client: httpx.Client, job: dict[str, Any], width: str
) -> None:
    """Widths from 16 to 10000 pixels; a thumbnail too small to see is refused."""
    response = client.get(page_path(job["id"], 0, 1, "/image"), params={"width": width})
    assert_error(response, 422, "invalid")


# A page still being read
def test_a_pending_page_shows_its_state_and_image_then_its_result(standin, tmp_path) -> None:
    """While a page waits, its view says pending (no result yet) and its image can already
    be shown; once read, the same address carries the result."""
    standin.latency = 1.5  # with one page in flight, page 3 waits behind pages 1 and 2
    env = {"DOTSOCR_MAX_IN_FLIGHT": "1"}
    with running_gateway(tmp_path / "data", "--server", standin.url, env=env, ready=True) as g:
        client = g.client()
        info = client.get("/v1/info").json()
        assert (info["engine"], info["model"], info["auth"]) == ("vllm", standin.model, False)
        # Without keys, listing would show everyone's documents to everyone.
        assert_error(client.get("/v1/jobs"), 403, "no_keys")

        job_id = submit(client, pages="1-3", dpi=str(DPI))["id"]
        view = client.get(page_path(job_id, 0, 3)).json()
        assert view["state"] == "pending", view
        assert view["result"] is None and view["markdown"] is None and view["html"] is None
        assert (view["job"], view["file"], view["page"]) == (job_id, 0, 3)
        assert view["links"]["image"] == page_path(job_id, 0, 3, "/image")
        assert jpeg(client.get(view["links"]["image"])).size == (827, 1170)

        assert wait_job(client, job_id)["state"] == "done"
        view = client.get(page_path(job_id, 0, 3)).json()
        assert view["state"] == "done"
        assert view["result"]["number"] == 3 and view["result"]["cells"]
        result = client.get(f"/v1/jobs/{job_id}/result").json()
        assert view["result"]["cells"] == result_page(result, 0, 3)["cells"]
        assert view["markdown"].strip() in result["markdown"]


def test_a_page_view_agrees_with_the_result_on_running_headers(standin, tmp_path) -> None:
    """The stand-in answers the same short title at the top of every page: /result
    relabels it as a running Page-header (and drops it from the Markdown); the page view
    promises the page "as in the result's documents[].pages[]"."""
    with running_gateway(tmp_path / "data", "--server", standin.url, ready=True) as g:
        client = g.client()
        job_id = submit(client, pages="1-3", dpi=str(DPI))["id"]
        assert wait_job(client, job_id)["state"] == "done"
        result = client.get(f"/v1/jobs/{job_id}/result").json()
        expected = result_page(result, 0, 1)
        assert expected["cells"][0]["category"] == "Page-header"  # what /result says
        view = client.get(page_path(job_id, 0, 1)).json()
        assert view["result"]["cells"] == expected["cells"]
        assert "Stand-in" not in view["markdown"]


# The web page
@pytest.mark.parametrize("path", ["/", "/ui"])
def test_the_root_and_ui_redirect_to_the_web_page(gateway: Gateway, path: str) -> None:
    """Opening the gateway's address in a browser lands on the web page."""
    response = gateway.client().get(path, follow_redirects=False)
    assert response.is_redirect, response.status_code
    assert response.headers["location"] == "/ui/"


def csp(response: httpx.Response) -> dict[str, list[str]]:
    """The Content-Security-Policy header as {directive: sources}."""
    policy: dict[str, list[str]] = {}
    for part in response.headers["content-security-policy"].split(";"):
        if part.strip():
            name, *sources = part.split()
            policy[name] = sources
    return policy


def test_the_web_page_is_served_without_a_key_and_locked_down(gateway: Gateway) -> None:
    """The page loads for anyone (it asks for the key itself), runs only its own script
    file, and is revalidated so an upgraded gateway serves its new page."""
    response = gateway.client().get("/ui/")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    policy = csp(response)
    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'none'"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"

    scripts = [attrs for tag, attrs, _ in elements(response.text) if tag == "script"]
    assert [s.get("src") for s in scripts] == ["app.js"]  # one script, and none inline


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("app.js", ("text/javascript", "application/javascript")),
        ("style.css", ("text/css",)),
        ("favicon.svg", ("image/svg+xml",)),
    ],
)
def test_the_web_pages_files_are_served_with_their_types(
    gateway: Gateway, name: str, kind: tuple[str, ...]
) -> None:
    """Each file the page loads comes with its own type (nosniff would refuse a wrong
    one) and the same security headers."""
    response = gateway.client().get(f"/ui/{name}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] in kind
    assert response.headers["x-content-type-options"] == "nosniff"
    assert csp(response)["script-src"] == ["'self'"]


def test_the_api_schema_lists_the_new_routes_but_not_the_web_page(gateway: Gateway) -> None:
    """Generated clients and /docs see the new API routes, and not the web page's files."""
    paths = gateway.client().get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/ui")]
    for path in NEW_API_PATHS:
        assert "get" in paths[path], path


def test_a_models_own_task_goes_through_the_api(standin, tmp_path) -> None:
    """With dots.mocr behind it, the gateway lists and takes its scene-spotting task: the
    model gets that prompt; a task the model lacks is a 422 naming the ones it has."""
    from dotsocr.models import get_profile

    mocr = get_profile("dots.mocr")
    standin.answer = "(10, 10), (200, 10), (200, 40), (10, 40) EXIT"
    with running_gateway(
        tmp_path / "data", "--server", standin.url, "--model", "dots.mocr", ready=True
    ) as g:
        client = g.client()
        tasks = client.get("/v1/info").json()["tasks"]
        assert tasks[:3] == ["layout", "layout-only", "ocr"] and "spotting" in tasks
        assert "grounding" not in tasks  # it needs a box the API does not take
        job_id = submit(client, pages="1", task="spotting")["id"]
        assert wait_job(client, job_id)["state"] == "done"
        prompt = standin.requests[-1]["messages"][0]["content"][1]["text"]
        assert prompt.endswith(mocr.prompt("spotting"))
        (page,) = client.get(f"/v1/jobs/{job_id}/result").json()["documents"][0]["pages"]
        (cell,) = page["cells"]
        assert cell["text"] == "EXIT" and len(cell["quad"]) == 4
        refused = client.post("/v1/jobs", files=[upload(SAMPLE)], data={"task": "table"})
        assert_error(refused, 422, "invalid")
        assert "dots.mocr has no task 'table'" in refused.json()["error"]["message"]
