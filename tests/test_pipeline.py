"""The pipeline's ladder and batch behaviour, against the stand-in server's faults."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from dotsocr.engines.openai import OpenAIEngine, RetryPolicy
from dotsocr.layout import PageStatus
from dotsocr.models import get_profile
from dotsocr.pipeline import DocumentDone, PageDone, Pipeline, PipelineOptions, Source
from vllm_support.standin import StandIn, serving

PROFILE = get_profile("dots.ocr")


@pytest.fixture
def server():
    with serving(StandIn(max_model_len=8192)) as state:
        yield state


def png(width=400, height=300) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(out, "PNG")
    return out.getvalue()


def run(server, sources, **options):
    async def go():
        events = []
        engine = OpenAIEngine(server.url, retry=RetryPolicy(attempts=2, base_delay=0.01))
        async with engine:
            pipeline = Pipeline(engine, PROFILE, PipelineOptions(**options))
            async for event in pipeline.run(sources):
                events.append(event)
        return events

    return asyncio.run(go())


def documents(events):
    return [e for e in events if isinstance(e, DocumentDone)]


def test_good_answer_is_ok_and_planned_to_fit(server):
    (doc,) = documents(run(server, [Source("a.png", png())], concurrency=2))
    (page,) = doc.result.pages
    assert page.status is PageStatus.OK and page.attempts == 1
    assert [c.category for c in page.cells] == ["Title", "Text"]
    sent = server.requests[0]
    assert sent["max_tokens"] + page.prompt_tokens <= 8192 and sent["temperature"] == 0.1


def test_unusable_answers_climb_the_ladder_to_the_text_prompt(server):
    server.answer = "I am not JSON at all"
    (doc,) = documents(run(server, [Source("a.png", png())]))
    (page,) = doc.result.pages
    assert page.status is PageStatus.FALLBACK and page.attempts == 4
    assert [r["temperature"] for r in server.requests] == [0.1, 0.3, 0.6, 0.1]
    prompts = [r["messages"][0]["content"][1]["text"] for r in server.requests]
    assert prompts[-1].endswith("Extract the text content from this image.")
    assert page.cells[0].text == "I am not JSON at all"
    assert sum(note.startswith("attempt ") for note in page.notes) == 3


def test_a_looping_answer_is_cut_and_flagged(server):
    server.faults.append("loop")
    (doc,) = documents(run(server, [Source("a.png", png())]))
    (page,) = doc.result.pages
    assert page.status is PageStatus.REPAIRED
    assert any("loop collapsed" in note for note in page.notes)


def test_an_empty_answer_everywhere_fails_the_page_keeping_the_raw_answer(server):
    server.answer = ""
    (doc,) = documents(run(server, [Source("a.png", png())]))
    (page,) = doc.result.pages
    assert page.status is PageStatus.FAILED and page.raw == ""
    assert "no usable answer" in page.error


def test_bad_files_and_failed_pages_never_stop_the_batch(server, corpus):
    server.faults.extend(["500", "500"])  # the first page's two attempts both fail
    truncated = (corpus / "robustness/derived/truncated_multi_page.pdf").read_bytes()
    sources = [
        Source("first.png", png()),
        Source("empty.pdf", b""),
        Source("truncated.pdf", truncated),
        Source("last.png", png(200, 200)),
    ]
    events = run(server, sources, concurrency=1)
    by_name = {d.result.source: d for d in documents(events)}
    assert by_name["first.png"].result.status == "failed"
    assert "gave up after 2 attempts" in by_name["first.png"].result.pages[0].error
    assert "the file is empty" in by_name["empty.pdf"].error
    assert by_name["truncated.pdf"].result.status == "ok"
    assert len(by_name["truncated.pdf"].result.pages) == 5
    assert by_name["last.png"].result.status == "ok"


def test_pages_of_all_documents_share_one_in_flight_limit(server):
    server.latency = 0.05
    sources = [Source(f"{i}.png", png()) for i in range(6)]
    events = run(server, sources, concurrency=3)
    assert len(documents(events)) == 6 and server.most_in_flight == 3
    assert sum(isinstance(e, PageDone) for e in events) == 6


def test_an_unexpected_error_opening_one_source_does_not_stop_the_others(server):
    events = run(server, [Source("weird", 42), Source("good.png", png())])  # 42: not a source
    weird, good = sorted(documents(events), key=lambda d: d.key)
    assert weird.error.startswith("weird: unexpected ") and "please report" in weird.error
    assert good.error is None and good.result.status == "ok"
