"""vLLM metrics reading and ``dotsocr monitor``: real captures, hand-worked rates, the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from dotsocr.errors import EngineUnavailable
from dotsocr.serve.metrics import HangWatch, Histogram, Rates, Snapshot, fetch, parse
from vllm_support.server import free_port

METRICS = Path(__file__).parent / "data" / "vllm_metrics"
INF = float("inf")


def dotsocr(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dotsocr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )


# --- parsing -------------------------------------------------------------------------------


def test_parse_real_vllm_0_32_capture():
    snap = parse((METRICS / "vllm-0.32.0.txt").read_text(), at=5.0)
    # From the file: 3 requests of 62 + 134 + 209 prompt tokens and 8 + 12 + 16 generated,
    # all finished_reason="length"; nothing running afterwards.
    assert (snap.at, snap.running, snap.waiting, snap.kv_cache_usage) == (5.0, 0, 0, 0)
    assert (snap.prompt_tokens, snap.generation_tokens) == (405, 36)
    assert (snap.requests_finished, snap.preemptions) == (3, 0)
    assert snap.started == 1.7957192558e09  # process_start_time_seconds: uptime to show
    assert set(snap.histograms) == {
        "time_to_first_token_seconds",
        "e2e_request_latency_seconds",
        "request_queue_time_seconds",
        "request_prompt_tokens",
        "request_generation_tokens",
    }
    ttft = snap.histograms["time_to_first_token_seconds"]
    assert ttft.count == 3 and ttft.sum == pytest.approx(0.19072222709655762)
    assert dict(ttft.buckets)[0.04] == 1 and dict(ttft.buckets)[0.06] == 2
    assert dict(ttft.buckets)[0.25] == 3 and ttft.buckets[-1] == (INF, 3)
    prompt = dict(snap.histograms["request_prompt_tokens"].buckets)
    assert (prompt[50.0], prompt[100.0], prompt[200.0], prompt[500.0]) == (0, 1, 2, 3)
    # Not the request_num_preemptions histogram nor iteration_tokens_total's buckets.
    assert "iteration_tokens_total" not in snap.histograms


def test_parse_v0_era_names():
    snap = parse((METRICS / "vllm-v0-names.txt").read_text(), at=0.0)
    assert (snap.running, snap.waiting, snap.kv_cache_usage) == (2, 1, 0.25)  # gpu_cache_usage
    assert (snap.prompt_tokens, snap.generation_tokens) == (12000, 3000)
    assert snap.requests_finished == 10  # stop 9 + length 1
    assert snap.preemptions == 4  # vllm:num_preemptions_total
    e2e = snap.histograms["e2e_request_latency_seconds"]
    assert (e2e.count, e2e.sum) == (10, 62.5)
    assert [c for _, c in e2e.buckets][:5] == [0, 1, 4, 9, 10]


def test_several_engines_are_summed_and_kv_cache_averaged():
    text = """
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 1.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.4
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="m"} 100.0
vllm:generation_tokens_total{engine="1",model_name="m"} 50.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1.0",model_name="m"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="m"} 3.0
vllm:e2e_request_latency_seconds_bucket{engine="1",le="1.0",model_name="m"} 3.0
vllm:e2e_request_latency_seconds_bucket{engine="1",le="+Inf",model_name="m"} 3.0
vllm:e2e_request_latency_seconds_count{engine="1",model_name="m"} 3.0
vllm:e2e_request_latency_seconds_sum{engine="1",model_name="m"} 1.5
"""
    snap = parse(text, at=0.0)
    assert (snap.running, snap.generation_tokens) == (3, 150)
    assert snap.kv_cache_usage == pytest.approx(0.3)  # each engine has its own cache
    e2e = snap.histograms["e2e_request_latency_seconds"]
    assert e2e == Histogram(((1.0, 4.0), (INF, 5.0)), 4.5, 5.0)


def test_missing_metrics_are_none():
    snap = parse("# a server with no vLLM metrics\nprocess_open_fds 12.0\n", at=0.0)
    assert snap == Snapshot(at=0.0)
    rates = Rates.between(snap, Snapshot(at=2.0))
    assert rates.prompt_tokens_per_s is None and rates.ttft.p50 is None
    assert HangWatch(0).update(Snapshot(at=3.0)) is None


def test_unreadable_text_is_one_line_error():
    with pytest.raises(EngineUnavailable, match="is this a vLLM server") as caught:
        parse("<html><body>\nNot Found\n</body></html>", at=0.0)
    assert "\n" not in str(caught.value)


# --- rates and quantiles -------------------------------------------------------------------

PREVIOUS = Snapshot(
    at=100.0,
    prompt_tokens=1000,
    generation_tokens=200,
    requests_finished=10,
    preemptions=1,
    histograms={
        "time_to_first_token_seconds": Histogram(((0.1, 2), (0.5, 6), (1.0, 10), (INF, 10)), 5, 10),
        "e2e_request_latency_seconds": Histogram(((1.0, 0), (5.0, 4), (INF, 5)), 20, 5),
    },
)
CURRENT = Snapshot(
    at=110.0,
    prompt_tokens=3000,
    generation_tokens=700,
    requests_finished=14,
    preemptions=3,
    histograms={
        "time_to_first_token_seconds": Histogram(
            ((0.1, 3), (0.5, 13), (1.0, 20), (INF, 20)), 11, 20
        ),
        "e2e_request_latency_seconds": Histogram(((1.0, 0), (5.0, 5), (INF, 8)), 50, 8),
    },
)


def test_rates_between_two_snapshots():
    rates = Rates.between(PREVIOUS, CURRENT)
    # A 10 s window: 2000 prompt tokens, 500 generated, 4 pages finished, 2 preemptions.
    assert rates.seconds == 10
    assert rates.prompt_tokens_per_s == 200
    assert rates.generation_tokens_per_s == 50
    assert rates.pages_per_s == pytest.approx(0.4)
    assert rates.preemptions == 2
    # TTFT bucket deltas, cumulative: <=0.1: 1, <=0.5: 7, <=1.0: 10, +Inf: 10 (10 requests).
    # p50: rank 5 falls in (0.1, 0.5], which holds ranks 1..7: 0.1 + 0.4 * (5 - 1) / 6 = 0.3667
    # p90: rank 9 in (0.5, 1.0], ranks 7..10: 0.5 + 0.5 * (9 - 7) / 3 = 0.8333
    # p99: rank 9.9 in the same bucket: 0.5 + 0.5 * (9.9 - 7) / 3 = 0.98333
    assert rates.ttft.p50 == pytest.approx(0.1 + 0.4 * 4 / 6)
    assert rates.ttft.p90 == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert rates.ttft.p99 == pytest.approx(0.5 + 0.5 * 2.9 / 3)
    # e2e deltas: <=1: 0, <=5: 1, +Inf: 3. p50 (rank 1.5) lands in +Inf: Prometheus answers
    # the highest finite bound, 5.0; so do p90 and p99.
    assert (rates.e2e.p50, rates.e2e.p90, rates.e2e.p99) == (5.0, 5.0, 5.0)


def test_without_previous_snapshot_quantiles_are_cumulative():
    rates = Rates.between(None, CURRENT)
    assert rates.seconds is None and rates.generation_tokens_per_s is None
    assert rates.preemptions == 3  # since the server started
    # TTFT cumulative: <=0.1: 3, <=0.5: 13, <=1.0: 20 (20 requests).
    # p50: rank 10 in (0.1, 0.5], ranks 3..13: 0.1 + 0.4 * 7 / 10 = 0.38
    # p90: rank 18 in (0.5, 1.0], ranks 13..20: 0.5 + 0.5 * 5 / 7 = 0.857
    assert rates.ttft.p50 == pytest.approx(0.38)
    assert rates.ttft.p90 == pytest.approx(0.5 + 0.5 * 5 / 7)


def test_first_bucket_interpolates_from_zero_and_empty_window_is_none():
    histogram = Histogram(((1.0, 4), (2.0, 4), (INF, 4)), 2.0, 4)
    assert histogram.quantile(0.5) == 0.5  # rank 2 of 4 in (0, 1]
    assert histogram.since(histogram).quantile(0.5) is None  # nothing finished in the window
    assert Rates.between(PREVIOUS, PREVIOUS).ttft.p99 is None


def test_counter_reset_never_gives_negative_rates():
    # The server restarted between readings: every counter went down. Growth since the
    # restart is the new value (as Prometheus' rate() reads it): 150 tokens in 10 s.
    restarted = Snapshot(
        at=110.0,
        prompt_tokens=100,
        generation_tokens=150,
        requests_finished=1,
        preemptions=0,
        histograms={
            "time_to_first_token_seconds": Histogram(((0.1, 0), (0.5, 1), (1.0, 1), (INF, 1)), 1, 1)
        },
    )
    rates = Rates.between(PREVIOUS, restarted)
    assert (rates.prompt_tokens_per_s, rates.generation_tokens_per_s) == (10, 15)
    assert rates.pages_per_s == pytest.approx(0.1)
    assert rates.preemptions == 0
    assert rates.ttft.p50 == pytest.approx(0.3)  # the one new request, rank 0.5 in (0.1, 0.5]


# --- hang watch ----------------------------------------------------------------------------


def test_hang_watch_warns_on_flat_tokens_and_clears_on_growth():
    watch = HangWatch(stall_seconds=60)

    def at(t: float, tokens: float, running: float = 1) -> str | None:
        return watch.update(Snapshot(at=t, running=running, generation_tokens=tokens))

    assert at(0, 500) is None
    assert at(30, 500) is None  # flat, but not for long yet
    warning = at(61, 500)
    assert warning and "61.0 s" in warning and "hung" in warning
    assert at(62, 501) is None  # a token came: cleared
    assert at(100, 501) is None  # 38 s flat since then
    assert at(130, 501) is not None
    assert at(131, 501, running=0) is None  # nothing runs: nothing to wait for
    assert at(300, 501) is None  # runs again: the clock starts over
    assert at(400, 0) is None  # a restart counts as change, not as a stall


# --- fetch and the command -----------------------------------------------------------------

HUNG = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="model"} 1.0
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="model"} 42.0
"""


def test_fetch_tolerates_v1_and_fails_in_one_line(standin):
    standin.metrics = HUNG
    assert fetch(standin.url + "/v1/") == HUNG
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineUnavailable, match="cannot connect") as caught:
        fetch(url, timeout=2)
    assert "\n" not in str(caught.value)


def test_monitor_cli_warns_of_a_hang(standin):
    standin.metrics = HUNG
    result = dotsocr(
        "monitor", "--server", standin.url, "--iterations", 3, "--interval", 0.2,
        "--stall-seconds", 0.3,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(" up " in line for line in lines)
    assert "running 1 waiting -" in lines[0]
    assert "WARNING: no token generated" in lines[-1] and "hung" in lines[-1]


def test_monitor_cli_json_lines(standin):
    standin.metrics = (METRICS / "vllm-0.32.0.txt").read_text()
    result = dotsocr("monitor", "--server", standin.url, "--iterations", 2, "--interval", 0.1,
                     "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["up"] and first["requests_finished"] == 3 and first["generation_tokens"] == 36
    assert first["rates"]["window_s"] is None  # cumulative on the first refresh
    assert first["rates"]["ttft_s"]["p50"] == pytest.approx(0.05)  # rank 1.5 in (0.04, 0.06]
    assert second["rates"]["window_s"] > 0 and second["rates"]["pages_per_s"] == 0
    assert second["rates"]["ttft_s"] == {"p50": None, "p90": None, "p99": None}


def test_monitor_cli_unreachable_server_exits_1():
    url = f"http://127.0.0.1:{free_port()}"
    result = dotsocr("monitor", "--server", url, "--iterations", 2, "--interval", 0.1)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all("unreachable for" in line for line in lines)
    assert result.stderr.strip().splitlines() == [
        f"error: no metrics from {url} in 2 tries: cannot connect to {url}/metrics: "
        "is the server running? (start one with 'dotsocr serve')"
    ]


def test_monitor_cli_ctrl_c_exits_quietly(standin):
    standin.metrics = HUNG
    command = [sys.executable, "-m", "dotsocr", "monitor", "--server", standin.url,
               "--interval", "0.1"]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None and proc.stdout.readline()  # it is running
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == b""


# --- the real server -----------------------------------------------------------------------


@pytest.mark.vllm
def test_monitor_against_real_vllm(vllm_server):
    from dotsocr.models import get_profile

    profile = get_profile("dots.ocr")
    for size in (200, 300):
        page = profile.prepare(Image.new("RGB", (size, size), "white"), size, size)
        body = profile.build_request(page, "ocr", max_tokens=8).to_openai("model")
        request = urllib.request.Request(
            vllm_server.url + "/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200
    result = dotsocr("monitor", "--server", vllm_server.url, "--iterations", 2, "--interval", 1,
                     "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    readings = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(readings) == 2 and all(r["up"] and r["error"] is None for r in readings)
    last = readings[-1]
    assert last["requests_finished"] >= 2 and last["generation_tokens"] >= 2
    assert last["prompt_tokens"] > 0 and last["kv_cache_usage"] is not None
    assert readings[0]["rates"]["e2e_s"]["p50"] is not None  # cumulative on the first
    assert last["rates"]["window_s"] > 0 and last["warning"] is None


def test_monitor_shows_live_figures_while_pages_are_read(standin, tmp_path):
    """The stand-in counts what it serves under vLLM's metric names, as vLLM does."""
    standin.latency = 0.5
    standin.slots = threading.Semaphore(2)  # two answered at once; the rest wait
    monitor = subprocess.Popen(
        [sys.executable, "-m", "dotsocr", "monitor", "--server", standin.url, "--json",
         "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = monitor.stdout.readline()  # it is watching before the first page is sent
        pdf = Path(__file__).parent / "data" / "multi_page.pdf"
        reading = subprocess.run(
            [sys.executable, "-m", "dotsocr", "ocr", str(pdf), "--server", standin.url,
             "-o", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert reading.returncode == 0, reading.stderr
        time.sleep(0.6)  # a refresh after the last page
        monitor.send_signal(signal.SIGINT)
        rest, _ = monitor.communicate(timeout=30)
    finally:
        monitor.kill()
    lines = [json.loads(line) for line in (first + rest).splitlines()]
    assert any(line["running"] > 0 for line in lines)  # pages were in flight
    assert any(line["waiting"] > 0 for line in lines)  # more than its capacity of 2
    assert any((line["rates"]["pages_per_s"] or 0) > 0 for line in lines[1:])
    assert lines[-1]["requests_finished"] >= 5  # the five pages of the PDF
    assert any(line["rates"]["e2e_s"]["p50"] for line in lines)
