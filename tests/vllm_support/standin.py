"""A stand-in for vLLM's OpenAI server: a real HTTP server on loopback with injectable faults.

It speaks the endpoints and error bodies the real server does (checked against it in
tests/test_vllm_server.py) for the faults a real server cannot be made to show on
demand: 500s, 503s with Retry-After, dropped connections, answers slower than the
client's timeout, answers cut at max_tokens, looping answers.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, UnidentifiedImageError

from dotsocr.models.resize import image_tokens, smart_resize

LAYOUT_ANSWER = json.dumps(
    [
        {"bbox": [10, 10, 200, 40], "category": "Title", "text": "# Stand-in"},
        {"bbox": [10, 60, 400, 120], "category": "Text", "text": "Answered by the stand-in."},
    ]
)
FAULTS = ("500", "503", "503-bare", "429", "drop", "slow", "truncated", "loop")


@dataclass
class StandIn:
    """Configuration and observations; the server reads it on every request."""

    model: str = "model"
    max_model_len: int = 4096
    api_key: str | None = None
    answer: str = LAYOUT_ANSWER
    # The answer for an image of this size (as the model sees it: the pixels sent, or what
    # ``max_pixels`` resized them to), or None for ``answer``: for tests whose documents
    # need answers of their own.
    answer_for: Callable[[int, int], str | None] | None = None
    # The server's own pixel cap (``--mm-processor-kwargs '{"max_pixels": N}'``): every
    # image is smart_resized (factor 28) under it before its tokens are counted. None: the
    # pixels sent are the pixels seen.
    max_pixels: int | None = None
    latency: float = 0.0
    capacity: int = 64  # requests answered at once; the rest wait, as in vLLM's queue
    slow_seconds: float = 5.0
    retry_after: str = "0.2"
    faults: deque[str] = field(default_factory=deque)
    health: int = 200  # what /health answers; vLLM says 503 once its engine is dead
    down: bool = False  # every connection dropped unanswered, as from a crashed server
    record: bool = True  # keep request bodies for tests to read (benchmarks turn it off)
    on_answer: Callable[[dict[str, Any]], None] | None = None  # told each chat answered
    requests: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    url: str = ""
    metrics: str = ""  # a fixed /metrics page for tests; empty: live figures, as vLLM's
    waiting: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: dict[str, int] = field(default_factory=dict)  # finish reason -> requests
    latencies: list[float] = field(default_factory=list)  # end to end, seconds

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(self.capacity)


def error_body(status: int, message: str, kind: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: StandIn
    image_size: tuple[int, int] = (0, 0)  # of the last image in the request

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        key = self.state.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._send(401, error_body(401, "Unauthorized", "AuthenticationError"))
            return False
        return True

    def _hang_up(self) -> bool:
        """Drop the connection, as a crashed server's does, when the stand-in is down."""
        if self.state.down:
            self.close_connection = True
            self.connection.close()
        return self.state.down

    def do_GET(self) -> None:
        if self._hang_up():
            return
        if self.path == "/health":
            self._send(self.state.health, "")
        elif self.path == "/version":
            self._send(200, {"version": "stand-in"})
        elif self.path == "/metrics":
            data = (self.state.metrics or live_metrics(self.state)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/v1/models":
            if self._authorised():
                entry = {
                    "id": self.state.model,
                    "object": "model",
                    "owned_by": "vllm",
                    "root": self.state.model,
                    "max_model_len": self.state.max_model_len,
                }
                self._send(200, {"object": "list", "data": [entry]})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        if self._hang_up():
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, error_body(400, "Invalid JSON", "BadRequestError"))
            return
        if self.path == "/tokenize":
            count = text_tokens(body.get("messages", []))
            self._send(200, {"count": count, "max_model_len": self.state.max_model_len})
        elif self.path == "/v1/chat/completions":
            if self._authorised():
                self._chat(body)
        else:
            self._send(404, {"detail": "Not Found"})

    def _chat(self, body: dict[str, Any]) -> None:
        state = self.state
        with state.lock:
            if state.record:
                state.requests.append(body)
            state.arrivals.append(time.monotonic())
            fault = state.faults.popleft() if state.faults else None
        if fault in ("500", "503", "503-bare", "429"):
            status = int(fault[:3])
            headers = {"Retry-After": state.retry_after} if fault in ("503", "429") else None
            kind = {500: "InternalServerError", 503: "ServiceUnavailable", 429: "RateLimit"}
            self._send(status, error_body(status, "injected fault", kind[status]), headers)
            return
        if fault == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if body.get("model") != state.model:
            message = (
                f"The model `{body.get('model')}` does not exist. Valid aliases: {state.model}."
            )
            self._send(404, error_body(404, message, "NotFoundError", "model"))
            return
        max_tokens = int(body.get("max_tokens") or 16)
        if max_tokens > state.max_model_len:
            message = (
                f"max_tokens={max_tokens} cannot be greater than max_model_len="
                f"{state.max_model_len}. Please request fewer output tokens."
            )
            self._send(400, error_body(400, message, "BadRequestError", "max_tokens"))
            return
        try:
            prompt_tokens = self._prompt_tokens(body)
        except ValueError as exc:
            self._send(400, error_body(400, str(exc), "BadRequestError"))
            return
        if prompt_tokens > state.max_model_len:
            message = (
                f"Input length ({prompt_tokens}) exceeds model's maximum context length "
                f"({state.max_model_len})."
            )
            self._send(400, error_body(400, message, "BadRequestError"))
            return
        arrived = time.monotonic()
        with state.lock:
            state.waiting += 1
        with state.slots:
            with state.lock:
                state.waiting -= 1
                state.in_flight += 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight)
            try:
                time.sleep(state.slow_seconds if fault == "slow" else state.latency)
            finally:
                with state.lock:
                    state.in_flight -= 1
        if self._hang_up():  # went down while the request waited: it is lost
            return
        text, finish = self._answer(fault, max_tokens)
        if state.on_answer:
            state.on_answer(body)
        with state.lock:
            state.prompt_tokens += prompt_tokens
            state.generation_tokens += len(text) // 4
            state.finished[finish] = state.finished.get(finish, 0) + 1
            state.latencies.append(time.monotonic() - arrived)
        self._send(
            200,
            {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "model": state.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(text) // 4,
                    "total_tokens": prompt_tokens + len(text) // 4,
                },
            },
        )

    def _unknown_model(self, body: dict[str, Any]) -> None:
        message = (
            f"The model `{body.get('model')}` does not exist. Valid aliases: {self.state.model}."
        )
        self._send(404, error_body(404, message, "NotFoundError", "model"))

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        """As vLLM counts a chat: /tokenize's count of its text, where each image's
        placeholder token becomes the image's tokens (one per 28x28 pixels it is seen at)."""
        messages = body.get("messages", [])
        tokens = text_tokens(messages)
        for message in messages:
            content = message.get("content")
            for part in content if isinstance(content, list) else []:
                if part.get("type") == "image_url":
                    width, height = self._seen_size(_decode_image(part["image_url"]["url"]))
                    self.image_size = (width, height)
                    tokens += image_tokens(height, width) - 1
        return tokens

    def _seen_size(self, image: Image.Image) -> tuple[int, int]:
        """The (width, height) the model sees: the image's own, or under ``max_pixels``."""
        cap = self.state.max_pixels
        if cap is None:
            return image.size
        height, width = smart_resize(image.height, image.width, max_pixels=cap)
        return width, height

    def _answer(self, fault: str | None, max_tokens: int) -> tuple[str, str]:
        if fault == "loop":
            cells = [
                {"bbox": [0, i, 10, i + 10], "category": "Text", "text": "loop"} for i in range(60)
            ]
            return json.dumps(cells)[: max_tokens * 4], "length"
        chosen = self.state.answer_for and self.state.answer_for(*self.image_size)
        text = chosen or self.state.answer
        if fault == "truncated" or len(text) > max_tokens * 4:
            return text[: min(len(text) // 2, max_tokens * 4)], "length"
        return text, "stop"


SPECIAL = re.compile(r"<\|[^|<>]*\|>")  # a tokenizer's special token, such as <|imgpad|>
IMAGE_MARKERS = 3  # start, placeholder and end, as the templates of the dots, Qwen and
# PaddleOCR-VL families put them around an image part


def text_tokens(messages: list[dict[str, Any]]) -> int:
    """/tokenize's count for ``messages`` (images left out): one token per special token,
    about one per 4 characters of the other text, 3 for the chat template, and the markers
    the template puts around an image part whose text does not carry them already."""
    markers, text = 0, ""
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        said = "".join(p.get("text") or "" for p in parts if p.get("type") == "text")
        if any(p.get("type") == "image_url" for p in parts) and not SPECIAL.match(said):
            markers += IMAGE_MARKERS
        text += said
    return markers + len(SPECIAL.findall(text)) + len(SPECIAL.sub("", text)) // 4 + 3


def _decode_image(url: str) -> Image.Image:
    payload = url.split(",", 1)[1] if url.startswith("data:") else url
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("Non-base64 digit found") from None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"Failed to load image: {exc}") from None
    return image


LATENCY_BUCKETS = (0.1, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def live_metrics(state: StandIn) -> str:
    """/metrics as vLLM's V1 engine names it, from what the stand-in has served."""
    labels = f'engine="0",model_name="{state.model}"'
    with state.lock:
        lines = [
            "# TYPE vllm:num_requests_running gauge",
            f"vllm:num_requests_running{{{labels}}} {state.in_flight}.0",
            "# TYPE vllm:num_requests_waiting gauge",
            f"vllm:num_requests_waiting{{{labels}}} {state.waiting}.0",
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f"vllm:kv_cache_usage_perc{{{labels}}} {min(1.0, state.in_flight / 64)}",
            "# TYPE vllm:prompt_tokens counter",
            f"vllm:prompt_tokens_total{{{labels}}} {state.prompt_tokens}.0",
            "# TYPE vllm:generation_tokens counter",
            f"vllm:generation_tokens_total{{{labels}}} {state.generation_tokens}.0",
            "# TYPE vllm:request_success counter",
            *(
                f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} {n}.0'
                for reason, n in sorted(state.finished.items())
            ),
        ]
        # No streaming: the first token comes with the last, so TTFT is the whole latency.
        for name in ("time_to_first_token_seconds", "e2e_request_latency_seconds"):
            lines.append(f"# TYPE vllm:{name} histogram")
            for bound in LATENCY_BUCKETS:
                count = sum(1 for s in state.latencies if s <= bound)
                lines.append(f'vllm:{name}_bucket{{{labels},le="{bound}"}} {count}.0')
            lines.append(f'vllm:{name}_bucket{{{labels},le="+Inf"}} {len(state.latencies)}.0')
            lines.append(f"vllm:{name}_sum{{{labels}}} {sum(state.latencies)}")
            lines.append(f"vllm:{name}_count{{{labels}}} {len(state.latencies)}.0")
    return "\n".join(lines) + "\n"


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone before its answer (killed, or timed out) is no error of ours."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def start(state: StandIn, port: int = 0) -> ThreadingHTTPServer:
    """Serve ``state`` on loopback (a free port, or ``port``: a server started again where it
    was) in a daemon thread; sets ``state.url``."""
    handler = type("Handler", (_Handler,), {"state": state})
    server = _Server(("127.0.0.1", port), handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextmanager
def serving(state: StandIn) -> Iterator[StandIn]:
    """``state`` served on loopback for the block (``start``), then shut down."""
    server = start(state)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
