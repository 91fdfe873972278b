"""A stand-in for the ``vllm serve`` executable, for what a real one cannot be made to do on
demand: crash at start-up a set number of times. Otherwise it logs vLLM 0.32's own start-up
lines, answers /health and /v1/models like vLLM, and stops on SIGTERM.

Environment: FAKE_VLLM_STATE (a folder for its records), FAKE_VLLM_CRASHES (start-ups that
crash before this one works), FAKE_VLLM_STUCK (ignore SIGTERM), FAKE_VLLM_ORPHAN (exit,
leaving a worker behind).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

STATE = Path(os.environ["FAKE_VLLM_STATE"])


def log(line: str) -> None:
    print(f"(APIServer pid={os.getpid()}) INFO 11-26 18:48:30 [fake.py:1] {line}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?")
    parser.add_argument("--model", dest="model_flag")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--served-model-name", default="model")
    parser.add_argument("--max-model-len", type=int, default=4096)
    args, _ = parser.parse_known_args()
    STATE.mkdir(parents=True, exist_ok=True)
    starts = len(list(STATE.glob("argv-*.json"))) + 1
    (STATE / f"argv-{starts}.json").write_text(json.dumps(sys.argv[1:]))
    seen = ("HF_HUB_OFFLINE", "VLLM_API_KEY", "VLLM_CPU_KVCACHE_SPACE")
    (STATE / f"env-{starts}.json").write_text(json.dumps({k: os.environ.get(k) for k in seen}))
    log("Resolved architecture: DotsOCRForCausalLM")
    log(f"Starting to load model {args.model or args.model_flag}...")
    if os.environ.get("FAKE_VLLM_ORPHAN"):  # a worker that outlives it, holding the log pipe
        worker = subprocess.Popen(["sleep", "300"])
        (STATE / "worker-pid").write_text(str(worker.pid))
        sys.exit(3)
    if starts <= int(os.environ.get("FAKE_VLLM_CRASHES", "0")):
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 74.00 GiB", flush=True)
        sys.exit(1)
    log("Loading weights took 0.50 seconds")
    log("Model loading took 5.70 GiB memory and 12.30 seconds")  # the GPU runner's line
    log(f"CPU KV cache size: 2,097,152 tokens, Maximum concurrency for "
        f"{args.max_model_len:,} tokens per request: 512.00x")  # fmt: skip
    log("init engine (profile, create kv cache, warmup model) took 0.12 s")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/health":
                body = b""
            elif self.path == "/v1/models":
                entry = {"id": args.served_model_name, "max_model_len": args.max_model_len}
                body = json.dumps({"object": "list", "data": [entry]}).encode()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((args.host, args.port), Handler)

    def stop(signum: int, _frame: object) -> None:
        (STATE / f"signal-{starts}").write_text(signal.Signals(signum).name)
        if os.environ.get("FAKE_VLLM_STUCK"):  # a server that will not stop
            return
        log("Shutting down")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    log(f"Starting vLLM server on http://{args.host}:{args.port}")
    server.timeout = 0.1
    while True:
        server.handle_request()
        time.sleep(0.01)


if __name__ == "__main__":
    main()
