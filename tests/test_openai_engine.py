"""The OpenAI engine against the stand-in server: answers, retries and every error path."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from PIL import Image

from dotsocr.engines import Engine
from dotsocr.engines.openai import OpenAIEngine, RetryPolicy, _retry_after
from dotsocr.errors import (
    AuthenticationError,
    BadRequest,
    ConfigError,
    ContextTooLong,
    EngineTimeout,
    EngineUnavailable,
    ImageRefused,
    ModelNotServed,
)
from dotsocr.layout import PageStatus
from dotsocr.models import get_profile
from dotsocr.models.resize import image_tokens, smart_resize

PROFILE = get_profile("dots.ocr")
FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


def page(width: int = 300, height: int = 400):
    return PROFILE.prepare(Image.new("RGB", (width, height), "white"), width, height)


def run(coro):
    return asyncio.run(coro)


async def ask(url: str, task: str = "layout_all", prepared=None, **engine_args):
    prepared = prepared or page()
    engine_args.setdefault("retry", FAST)
    async with OpenAIEngine(url, **engine_args) as engine:
        request = PROFILE.build_request(prepared, task, max_tokens=512)
        return await engine.infer(prepared, request)


def test_engine_meets_the_protocol_and_discovers_the_model(standin):
    async def go():
        async with OpenAIEngine(standin.url + "/v1/") as engine:
            assert isinstance(engine, Engine)
            return engine.info

    info = run(go())
    assert (info.model, info.max_model_len, info.served) == ("model", 4096, ("model",))


def test_answer_carries_text_finish_reason_usage_and_attempts(standin):
    answer = run(ask(standin.url))
    assert answer.text == standin.answer and answer.finish_reason == "stop"
    assert answer.prompt_tokens > page().image_tokens and answer.completion_tokens > 0
    assert answer.attempts == 1 and answer.seconds > 0
    sent = standin.requests[0]
    assert sent["model"] == "model" and sent["temperature"] == 0.1


@pytest.mark.parametrize("fault", ["500", "503", "503-bare", "429", "drop"])
def test_transient_failures_are_retried(standin, fault):
    standin.faults.extend([fault, fault])
    answer = run(ask(standin.url))
    assert answer.attempts == 3 and answer.text == standin.answer
    assert len(standin.requests) == 3


def test_retry_after_is_honoured(standin):
    standin.faults.append("503")
    standin.retry_after = "0.3"
    run(ask(standin.url))
    assert standin.arrivals[1] - standin.arrivals[0] >= 0.3


def test_backoff_grows_and_stays_capped():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, max_retry_after=60.0)
    assert all(0 <= policy.delay(0) <= 1.0 for _ in range(50))
    assert all(0 <= policy.delay(10) <= 8.0 for _ in range(50))
    assert policy.delay(3, retry_after=20.0) == 20.0  # the server's word beats our backoff
    assert policy.delay(3, retry_after=999) == 60.0
    # a Retry-After of zero or in the past never means "hammer it": backoff still applies
    delays = [RetryPolicy(base_delay=4.0).delay(0, retry_after=-5) for _ in range(50)]
    assert max(delays) > 0.5 and all(0 <= d <= 4.0 for d in delays)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        ("nan", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 -0000", "past"),
        ("Wed, 21 Oct 2015 07:28:00 GMT", "past"),
    ],
)
def test_retry_after_headers_of_every_form(header, expected):
    response = httpx.Response(503, headers={"Retry-After": header})
    seconds = _retry_after(response)
    if expected == "past":
        assert seconds is not None and seconds < 0
    else:
        assert seconds == expected


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://host", "http://[::1"])
def test_bad_server_url_is_a_config_error(url):
    with pytest.raises(ConfigError, match="bad server URL"):
        OpenAIEngine(url)


def test_long_error_messages_are_cut():
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 4096}]})
        return httpx.Response(400, json={"error": {"message": "bad input: " + "x" * 5_000_000}})

    async def go():
        prepared = page()
        request = PROFILE.build_request(prepared, "ocr", max_tokens=8)
        async with OpenAIEngine("http://s", transport=httpx.MockTransport(answer)) as engine:
            await engine.infer(prepared, request)

    with pytest.raises(BadRequest, match="bad input: xxx") as info:
        run(go())
    assert len(str(info.value)) < 700


def test_persistent_failure_gives_up_with_a_reason(standin):
    standin.faults.extend(["500"] * 10)
    with pytest.raises(EngineUnavailable, match=r"HTTP 500: injected fault \(gave up after 4"):
        run(ask(standin.url))
    assert len(standin.requests) == 4


def test_unreachable_server_is_one_clear_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(
        EngineUnavailable, match=r"no answer from the server .* \(connection refused\)"
    ):
        run(ask(f"http://127.0.0.1:{port}", server_timeout=0))


def test_slow_answer_past_the_timeout_is_not_retried(standin):
    standin.faults.append("slow")
    with pytest.raises(EngineTimeout, match=r"gave no answer within 0\.5 s"):
        run(ask(standin.url, timeout=0.5))
    assert len(standin.requests) == 1


def test_bad_key_unknown_model_and_refusals_are_not_retried(standin):
    standin.api_key = "secret"
    with pytest.raises(AuthenticationError, match="refused the API key"):
        run(ask(standin.url, api_key="wrong"))
    assert run(ask(standin.url, api_key="secret")).attempts == 1
    standin.api_key = None
    with pytest.raises(ModelNotServed, match=r"Unknown model 'dots' at .* Served: model"):
        run(ask(standin.url, model="dots"))


def test_server_refusals_map_to_our_errors(standin):
    async def send(body_change):
        prepared = page()
        request = PROFILE.build_request(prepared, "ocr", max_tokens=512)
        body_change(request)
        async with OpenAIEngine(standin.url, retry=FAST) as engine:
            return await engine.infer(prepared, request)

    def corrupt(request):
        request.messages[0]["content"][0]["image_url"]["url"] = "data:image/png;base64,@@@"

    def not_image(request):
        request.messages[0]["content"][0]["image_url"]["url"] = "data:image/png;base64,aGVsbG8="

    def too_long(request):
        request.max_tokens = 5000

    with pytest.raises(ImageRefused, match="Non-base64 digit found"):
        run(send(corrupt))
    with pytest.raises(ImageRefused, match="Failed to load image"):
        run(send(not_image))
    with pytest.raises(BadRequest, match=r"max_model_len=4096.* Lower max_tokens"):
        run(send(too_long))
    assert len(standin.requests) == 3  # one each: none retried


def test_oversized_image_is_context_too_long(standin):
    big = page(3000, 3000)  # about 11k image tokens against a 4096 context
    with pytest.raises(ContextTooLong, match=r"exceeds model's maximum context length \(4096\)"):
        run(ask(standin.url, prepared=big))


def test_cut_answer_surfaces_finish_reason_and_parses_as_repaired(standin):
    standin.faults.append("truncated")
    prepared = page()
    answer = run(ask(standin.url, prepared=prepared))
    assert answer.finish_reason == "length"
    parsed = PROFILE.parse(answer.text, prepared.geometry, "layout_all", finish_reason="length")
    assert parsed.status is PageStatus.REPAIRED and "answer cut at the token budget" in parsed.notes


def test_looping_answer_is_collapsed_by_the_parser(standin):
    standin.faults.append("loop")
    prepared = page()
    answer = run(ask(standin.url, prepared=prepared))
    parsed = PROFILE.parse(answer.text, prepared.geometry, "layout_all", finish_reason="length")
    assert len(parsed.cells) == 3
    assert any("repeated cell(s) from a loop collapsed" in note for note in parsed.notes)


def test_concurrency_is_bounded_by_the_engine(standin):
    standin.latency = 0.05

    async def go():
        prepared = page()
        request = PROFILE.build_request(prepared, "ocr", max_tokens=512)
        async with OpenAIEngine(standin.url, concurrency=4, retry=FAST) as engine:
            return await asyncio.gather(*(engine.infer(prepared, request) for _ in range(16)))

    answers = run(go())
    assert len(answers) == 16 and all(a.text == standin.answer for a in answers)
    assert standin.most_in_flight == 4


def test_text_tokens_come_from_the_server_and_are_cached(standin):
    async def go():
        async with OpenAIEngine(standin.url) as engine:
            first = await engine.text_tokens("x" * 40)
            second = await engine.text_tokens("x" * 40)
            return first, second

    assert run(go()) == (13, 13)


def test_not_an_openai_server_is_named(standin):
    async def go():
        async with OpenAIEngine(standin.url, retry=FAST) as engine:
            return await engine._call("GET", "/nothing-here")

    with pytest.raises(BadRequest, match="does not exist \\(HTTP 404\\)"):
        run(go())


# The stand-in counts prompt tokens as vLLM does (tests/test_vllm_server.py::
# test_prompt_tokens_equal_our_image_token_arithmetic): a chat's prompt_tokens is /tokenize's
# count of its text, less the image's placeholder, plus the image's tokens.


async def count_and_ask(url: str, prepared, task: str, box=None):
    """(/tokenize's count of the request text, the answer) for one page and task."""
    async with OpenAIEngine(url, retry=FAST) as engine:
        counted = await engine.text_tokens(PROFILE.request_text(task, prepared.geometry, box))
        request = PROFILE.build_request(prepared, task, box=box, max_tokens=512)
        return counted, await engine.infer(prepared, request)


@pytest.mark.parametrize(
    ("task", "box"), [("ocr", None), ("layout_all", None), ("grounding", (10, 20, 150, 90))]
)
def test_standin_prompt_tokens_are_tokenize_less_one_plus_the_image(standin, task, box):
    seen = []
    standin.answer_for = lambda width, height: seen.append((width, height))
    prepared = page(300, 400)
    counted, answer = run(count_and_ask(standin.url, prepared, task, box))
    assert answer.prompt_tokens == counted - 1 + prepared.image_tokens
    assert seen == [prepared.image.size]


def test_standin_with_a_lower_pixel_cap_counts_and_sees_the_size_it_resized_to(standin):
    """A server whose cap is below ours resizes the page again: it answers for that size,
    counts its tokens, and ``served_size`` recovers the size from the count."""
    seen = []
    standin.answer_for = lambda width, height: seen.append((width, height))
    standin.max_model_len = 16_384
    standin.max_pixels = 1_000_000
    prepared = page(1700, 2200)
    sent_w, sent_h = prepared.image.size
    assert sent_w * sent_h > standin.max_pixels
    counted, answer = run(count_and_ask(standin.url, prepared, "layout_all"))
    served_h, served_w = smart_resize(sent_h, sent_w, max_pixels=standin.max_pixels)
    assert seen == [(served_w, served_h)]
    assert answer.prompt_tokens == counted - 1 + image_tokens(served_h, served_w)
    assert answer.prompt_tokens < counted - 1 + prepared.image_tokens
    used = answer.prompt_tokens - (counted - 1)
    assert PROFILE.served_size(sent_w, sent_h, used) == (served_w, served_h)


def test_standin_with_a_higher_pixel_cap_leaves_our_size_alone(standin):
    seen = []
    standin.answer_for = lambda width, height: seen.append((width, height))
    standin.max_pixels = 11_289_600
    prepared = page(300, 400)
    counted, answer = run(count_and_ask(standin.url, prepared, "ocr"))
    assert answer.prompt_tokens == counted - 1 + prepared.image_tokens
    assert seen == [prepared.image.size]


def test_standin_counts_a_chat_without_images_as_tokenize_does(standin):
    messages = [
        {"role": "system", "content": "You read pages."},
        {"role": "user", "content": [{"type": "text", "text": "Read this, " * 9}]},
    ]
    with httpx.Client(base_url=standin.url) as client:
        chat = client.post(
            "/v1/chat/completions", json={"model": "model", "messages": messages}
        ).json()
        text = [{"role": "system", "content": "You read pages."}]
        text.append({"role": "user", "content": "Read this, " * 9})
        count = client.post("/tokenize", json={"model": "model", "messages": text}).json()
    assert chat["usage"]["prompt_tokens"] == count["count"] == (15 + 99) // 4 + 3
