"""The web page at /ui, used as a person would: in headless Chromium, against a real gateway.

Screenshots of each step go to test-output/screenshots (see tests/browser_support.py).
"""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest
from playwright.sync_api import Page, expect

from browser_support import screenshot
from gateway_support import SAMPLE, TITLE, running_gateway

pytestmark = pytest.mark.browser
TIMEOUT = 300_000  # ms: five pages of Tesseract on a 2-core CI machine, with room


def _record_progress(page: Page) -> None:
    """Keep every text the job's progress line takes, to see it climb page by page."""
    page.evaluate(
        """() => {
        window.progressSeen = [];
        new MutationObserver((records) => {
          for (const r of records) for (const n of r.addedNodes) {
            if (n.nodeType === Node.TEXT_NODE && r.target.classList.contains("job-meta")) {
              window.progressSeen.push(n.textContent.split(" · ")[0]);
            }
          }
        }).observe(document.getElementById("jobs"), {childList: true, subtree: true});
    }"""
    )


def test_upload_watch_pages_complete_see_boxes_and_download(page: Page, tmp_path):
    """A corpus PDF read by the embedded CPU engine: live progress to the end, the layout
    drawn over page 1, its Markdown, and the zip."""
    with running_gateway(
        tmp_path / "data", "--engine", "cpu", env={"DOTSOCR_MAX_IN_FLIGHT": "1"}
    ) as gateway:
        page.goto(f"{gateway.url}/")  # the root sends people to the page
        expect(page).to_have_url(re.compile(r"/ui/$"))
        expect(page.locator("#server")).to_have_class(re.compile(r"\bup\b"), timeout=30_000)
        expect(page.locator("#server-text")).to_contain_text("tesseract")
        expect(page.locator("#key-button")).to_be_hidden()  # no auth on this server
        screenshot(page, "01-start")

        _record_progress(page)
        page.set_input_files("#file-input", str(SAMPLE))
        expect(page.locator("#chosen li")).to_contain_text(SAMPLE.name)
        page.click("#submit")
        job = page.locator(".job").first
        expect(job.locator(".tile")).to_have_count(5)
        expect(job.locator(".tile.st-ok").first).to_be_visible(timeout=TIMEOUT)
        expect(page.locator("#boxes rect").first).to_be_visible()  # page 1, as it came
        screenshot(page, "02-reading")
        expect(job).to_have_attribute("data-state", "done", timeout=TIMEOUT)
        expect(job.locator(".job-meta")).to_contain_text("5 of 5 pages")
        expect(job.locator(".tile.st-ok")).to_have_count(5)
        seen = page.evaluate("window.progressSeen")
        counts = [int(line.split()[0]) for line in seen]
        assert counts == sorted(counts) and {1, 2, 3, 4, 5} <= set(counts), seen

        job_id = job.get_attribute("data-job")
        boxes = page.locator("#boxes rect")
        for number in (3, 1):  # the page clicked is the page shown, with its own boxes
            job.locator(f".tile[data-page='{number}']").click()
            expect(page.locator("#page-sub")).to_contain_text(f"page {number} (")
            view = gateway.client().get(f"/v1/jobs/{job_id}/files/0/pages/{number}").json()
            result = view["result"]
            expect(boxes).to_have_count(len(result["cells"]))
            expect(job.locator(".tile.selected")).to_have_attribute("data-page", str(number))
        assert len(result["cells"]) >= 5
        viewbox = page.get_attribute("#boxes", "viewBox")
        assert viewbox == f"0 0 {result['width']} {result['height']}"
        natural = page.eval_on_selector("#page-image", "i => [i.naturalWidth, i.naturalHeight]")
        assert abs(natural[0] / natural[1] - result["width"] / result["height"]) < 0.01
        expect(page.locator("#tab-rendered h1, #tab-rendered h2").first).to_contain_text(TITLE)
        expect(page.locator("#page-status")).to_have_text("read")

        title_box = page.locator("#boxes rect[data-index='0']")
        title_box.hover()
        tooltip = page.locator("#tooltip")
        expect(tooltip).to_be_visible()
        expect(tooltip).to_contain_text(result["cells"][0]["category"])
        expect(tooltip).to_contain_text(TITLE)
        screenshot(page, "03-page-with-layout")

        page.click("[data-tab='json']")
        assert json.loads(page.locator("#tab-json").inner_text())["cells"] == result["cells"]
        page.click("#next")
        expect(page.locator("#page-sub")).to_contain_text("page 2")

        with page.expect_download() as download:
            page.click(".downloads [data-download='zip']")
        archive = zipfile.ZipFile(io.BytesIO(download.value.path().read_bytes()))
        names = archive.namelist()
        markdown = archive.read(next(n for n in names if n.endswith(".md"))).decode()
        layout = json.loads(archive.read(next(n for n in names if n.endswith(".json"))))
        assert TITLE in markdown
        assert [p["number"] for p in layout["pages"]] == [1, 2, 3, 4, 5]
        assert download.value.suggested_filename == "multi_page.zip"

        page.reload()  # a server without keys lists no jobs: the page remembers its own
        job = page.locator(f".job[data-job='{job_id}']")
        expect(job).to_have_attribute("data-state", "done")
        job.locator(".job-head button").click()
        job.locator(".job-head button.confirm").click()  # asked twice: deleting is for good
        expect(job).to_have_count(0)
        expect(page.locator("#no-jobs")).to_be_visible()
        assert gateway.client().get(f"/v1/jobs/{job_id}").status_code == 404


def _answers(data):
    """The stand-in's answers: page 1 of the sample gets dots.ocr's real answer for it plus
    a formula and text trying to run script; the table crop gets its ground truth as HTML."""
    import json_repair

    cells = json_repair.loads((data / "dots_answers" / "multi_page_p1.json").read_text())
    cells += [
        {"bbox": [300, 1500, 900, 1560], "category": "Formula",
         "text": r"\frac{\partial u}{\partial t} = \alpha \nabla^2 u"},
        {"bbox": [150, 1580, 1050, 1640], "category": "Text",
         "text": 'Heat flows as $q = -k \\nabla T$. <img src=x onerror="window.xss=1">'
                 "<script>window.xss=2</script>"},
    ]  # fmt: skip
    page_answer = json.dumps(cells)
    table = (data / "pubtabnet" / "PMC5198506_004_00.html").read_text()
    table = table.replace("<html><body>", "").replace("</body></html>", "").strip()

    def answer_for(width: int, height: int) -> str:
        if width > height:  # the table crop
            return json.dumps([{"bbox": [0, 0, width, height], "category": "Table", "text": table}])
        return page_answer

    return answer_for


def _drop(page: Page, path, mime: str) -> None:
    """Drop a file on the page as a person drags one from their desktop."""
    page.evaluate(
        """([name, bytes, mime]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], name, {type: mime}));
        document.getElementById("drop").dispatchEvent(
            new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""",
        [path.name, list(path.read_bytes()), mime],
    )


def test_key_tables_formulas_failures_and_refused_files(page: Page, standin, data, tmp_path):
    """With auth on and a model server: the key dialog, a drag-and-dropped table, MathML, a
    page that failed with its reason, a refused file and a file over the limit, and no
    script from the document runs."""
    standin.answer_for = _answers(data)
    standin.faults.extend(["none", *["500"] * 5])  # page 1 answered; page 2 fails every try
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.4\n" + b"0" * 1_500_000)
    with running_gateway(
        tmp_path / "data", "--server", standin.url, "--api-key", "right-key",
        "--api-key", "other-key",
        env={"DOTSOCR_MAX_IN_FLIGHT": "1", "DOTSOCR_MAX_UPLOAD_BYTES": str(1024 * 1024)},
    ) as gateway:  # fmt: skip
        page.goto(f"{gateway.url}/ui/")
        dialog = page.locator("#key-dialog")
        expect(dialog).to_be_visible()
        screenshot(page, "11-key")
        page.fill("#key-input", "wrong-key")
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-error")).to_contain_text("wrong API key")
        page.fill("#key-input", "right-key")
        page.click("#key-form button[type=submit]")
        expect(dialog).to_be_hidden()
        expect(page.locator("#server-text")).to_contain_text("vLLM")

        page.set_input_files("#file-input", str(big))
        expect(page.locator("#banner")).to_contain_text("big.pdf is 1.4 MB: over this server's")
        expect(page.locator("#chosen li")).to_have_count(0)
        page.set_input_files("#file-input", [str(SAMPLE), str(empty)])
        _drop(page, data / "pubtabnet" / "PMC5198506_004_00.png", "image/png")
        expect(page.locator("#chosen li")).to_have_count(3)
        page.fill("input[name=pages]", "1-2")
        page.fill("input[name=dpi]", "144")  # the resolution dots.ocr's real answer was for
        page.click("#submit")

        job = page.locator(".job").first
        expect(page.locator("#upload-error")).to_contain_text(
            "Refused: empty.pdf: the file is empty"
        )
        refused = job.locator(".file.refused")
        expect(refused).to_contain_text("empty.pdf")
        expect(refused.locator(".error")).to_contain_text("Refused:")
        expect(job).to_have_attribute("data-state", "done", timeout=TIMEOUT)
        sample, table = job.locator(".file:not(.refused)").all()
        expect(sample.locator(".tile.st-ok")).to_have_count(1)
        expect(sample.locator(".tile.st-failed")).to_have_count(1)
        expect(job.locator(".job-meta")).to_contain_text("3 of 3 pages · 1 failed")

        rendered = page.locator("#tab-rendered")
        table.locator(".tile").click()
        expect(page.locator("#page-title")).to_have_text("PMC5198506_004_00.png")
        expect(rendered.locator(".table-wrap table td[colspan='3']")).to_have_count(2)
        expect(rendered.locator("table")).to_contain_text("HIV-1 substrates")
        expect(page.locator("#boxes rect[data-category='Table']")).to_have_count(1)
        screenshot(page, "12-table")

        sample.locator(".tile[data-page='1']").click()
        expect(page.locator("#page-title")).to_have_text("multi_page.pdf")
        expect(rendered.locator("div.math-display math[display='block'] mfrac")).to_have_count(1)
        expect(rendered.locator("p math:not([display='block'])")).to_have_count(1)
        formula = rendered.locator("div.math-display math")
        expect(formula).to_be_visible()
        assert formula.bounding_box()["height"] > 20  # laid out as a fraction
        expect(rendered.locator("script, [onerror]")).to_have_count(0)
        assert page.evaluate("window.xss") is None
        expect(page.locator("#boxes rect[data-category='Formula']")).to_have_count(1)
        rendered.locator("div.math-display").scroll_into_view_if_needed()
        screenshot(page, "13-formula")

        sample.locator(".tile[data-page='2']").click()
        expect(page.locator("#page-status")).to_have_text("failed")
        notice = page.locator("#page-notice")
        expect(notice).to_contain_text("Failed:")
        expect(notice).to_contain_text("500")
        expect(page.locator("#boxes rect")).to_have_count(0)
        expect(rendered).to_have_text("Nothing was read from this page.")
        screenshot(page, "14-failed-page")

        with page.expect_download() as download:
            job.locator(".job-downloads [data-format='md']").click()
        markdown = download.value.path().read_text()
        assert "SIV (1.25" in markdown and r"\frac{\partial u}" in markdown

        job_id = job.get_attribute("data-job")
        for key, listed in (("other-key", 0), ("right-key", 1)):  # each key sees its own jobs
            page.click("#key-button")
            page.fill("#key-input", key)
            page.click("#key-form button[type=submit]")
            expect(page.locator(f".job[data-job='{job_id}']")).to_have_count(listed)
        expect(page.locator("#page")).to_be_hidden()  # the other key's page is not left open


def test_many_jobs_at_once_all_reach_their_end(page: Page, standin, tmp_path):
    """More running jobs than the page follows by event stream (it polls the rest): each
    still reaches its end on the page."""
    standin.latency = 1.0  # one page at a time: the seventh job waits about seven seconds
    env = {"DOTSOCR_MAX_IN_FLIGHT": "1"}
    with running_gateway(tmp_path / "data", "--server", standin.url, env=env) as gateway:
        page.goto(f"{gateway.url}/ui/")
        expect(page.locator("#server")).to_have_class(re.compile(r"\bup\b"), timeout=30_000)
        page.fill("input[name=pages]", "1")
        page.fill("input[name=dpi]", "72")
        for _ in range(7):
            page.set_input_files("#file-input", str(SAMPLE))
            page.click("#submit")
            expect(page.locator("#chosen li")).to_have_count(0)  # sent
        jobs = page.locator(".job")
        expect(jobs).to_have_count(7)
        expect(page.locator(".job[data-state='done']")).to_have_count(7, timeout=TIMEOUT)
        for job in jobs.all():
            expect(job.locator(".job-meta")).to_contain_text("1 of 1 pages")
        screenshot(page, "04-many-jobs")


def test_a_page_read_empty_shows_its_warning(page: Page, standin, tmp_path):
    """A page with ink whose answer has no text is no quiet success on the page either."""
    standin.answer = "[]"
    with running_gateway(tmp_path / "data", "--server", standin.url) as gateway:
        page.goto(f"{gateway.url}/ui/")
        expect(page.locator("#server")).to_have_class(re.compile(r"\bup\b"), timeout=30_000)
        page.fill("input[name=pages]", "1")
        page.set_input_files("#file-input", str(SAMPLE))
        page.click("#submit")
        job = page.locator(".job").first
        expect(job).to_have_attribute("data-state", "done", timeout=TIMEOUT)
        job.locator(".tile").first.click()
        notice = page.locator("#page-notice")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("Warning: the page has ink but no text was read")
        screenshot(page, "15-warning")
