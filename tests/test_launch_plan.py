"""The launch plan: every card size from 8 to 80 GB, checked against its own arithmetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dotsocr.errors import ConfigError, ServeError
from dotsocr.models.serving import DOTS_OCR, GIB
from dotsocr.serve.plan import (
    MAX_SEQS,
    PROMPT_TOKENS,
    Card,
    PlanOptions,
    card_for,
    parse_size,
    plan,
    plan_cpu,
)

# (card, GiB, compute capability): the sizes people run dots.ocr on.
CARDS = [
    ("RTX 4060", 8, (8, 9)),
    ("RTX 3070", 8, (8, 6)),
    ("RTX 3060", 12, (8, 6)),
    ("T4", 16, (7, 5)),
    ("RTX 4080", 16, (8, 9)),
    ("L4", 24, (8, 9)),
    ("RTX A6000", 48, (8, 6)),
    ("A100", 80, (8, 0)),
    ("H100", 80, (9, 0)),
]


def _plan(gib: int, cc: tuple[int, int], **options) -> object:
    options.setdefault("cpu_cores", 32)  # a GPU server's host, whatever runs the tests
    return plan(Card("card", gib * GIB, None, cc), PlanOptions(**options))


@pytest.mark.parametrize(("name", "gib", "cc"), CARDS)
def test_every_card_gets_a_plan_that_adds_up(name, gib, cc):
    p = _plan(gib, cc)
    m = p.memory
    assert all(c.reason for c in p.choices)  # every choice says why
    utilization = float(p.value("--gpu-memory-utilization"))
    assert m.budget == int(gib * GIB * utilization)
    assert sum(size for _, size in m.rows) + m.kv_bytes == m.budget
    assert m.kv_tokens == m.kv_bytes // m.kv_bytes_per_token
    image_tokens = p.max_pixels // 784
    max_model_len = int(p.value("--max-model-len"))
    assert max_model_len >= image_tokens + PROMPT_TOKENS + 4096
    assert m.kv_tokens >= max_model_len  # vLLM refuses to start otherwise
    assert int(p.value("--max-num-seqs")) == max(1, min(MAX_SEQS, m.pages_at_once))
    assert int(p.value("--max-num-batched-tokens")) >= image_tokens  # one page per step
    assert json.loads(p.value("--limit-mm-per-prompt")) == {"image": 1}
    assert p.value("--chat-template-content-format") == "string"
    assert ("--enforce-eager" in p.args()) == (gib < 16)


def test_the_model_facts_match_the_reference():
    assert DOTS_OCR.decoder.kv_bytes_per_token() == 28 * 1024  # 2 x 28 x 2 x 128 x 2 B
    assert DOTS_OCR.decoder.kv_bytes_per_token(1) == 14 * 1024
    # Without flash attention the encoder's scores at full resolution are what made vLLM's
    # profiler ask for 74 GiB.
    full = DOTS_OCR.vision.activation_bytes(11_289_600, flash_attention=False)
    assert 74 * GIB < full < 78 * GIB  # 74.2 GiB of scores + 2.3 GiB of the rest
    assert DOTS_OCR.vision.activation_bytes(11_289_600, flash_attention=True) < 3 * GIB


def test_big_cards_keep_full_resolution_and_16_bits():
    p = _plan(80, (9, 0))
    assert p.max_pixels == 11_289_600
    assert p.value("--dtype") == "bfloat16"
    assert p.value("--quantization") is None
    assert p.value("--max-num-seqs") == str(MAX_SEQS)
    assert p.value("--max-model-len") == "31744"  # 14,400 + 512 + 16,384, to a 1024 multiple


def test_an_8gb_card_needs_fp8_and_says_why():
    p = _plan(8, (8, 9))
    choice = next(c for c in p.choices if c.flag == "--quantization")
    assert choice.value == "fp8" and "16 bits do not fit" in choice.reason
    assert p.value("--kv-cache-dtype") == "fp8"
    older = _plan(8, (8, 6))  # Ampere: weight-only fp8, 16-bit KV cache
    assert "weight-only" in next(c.reason for c in older.choices if c.flag == "--quantization")
    assert older.value("--kv-cache-dtype") is None


def test_pre_ampere_cards_get_float16_and_a_lower_pixel_cap():
    p = _plan(16, (7, 5))
    assert p.value("--dtype") == "float16"
    assert p.max_pixels < 5_000 * 784  # quadratic attention in the vision encoder
    assert any("quadratic" in label for label, _ in p.memory.rows)
    with pytest.raises(ConfigError, match="cannot run fp8"):
        _plan(16, (7, 5), quantization="fp8")


def test_asking_for_fp8_or_no_quantization_is_obeyed():
    assert _plan(80, (9, 0), quantization="fp8").value("--quantization") == "fp8"
    p = _plan(12, (8, 9), quantization="none")
    assert p.value("--quantization") is None and p.value("--kv-cache-dtype") is None
    small = _plan(8, (8, 9), quantization="none")  # 16 bits fit with smaller pages only
    assert small.value("--quantization") is None and small.max_pixels < 5_000 * 784
    with pytest.raises(ServeError, match=r"in 16 bits \(--quantization none\)"):
        _plan(6, (8, 9), quantization="none")


def test_cards_too_small_or_too_busy_are_refused():
    with pytest.raises(ServeError, match="does not fit"):
        _plan(4, (8, 9))
    with pytest.raises(ServeError, match="free"):
        plan(Card("busy", 24 * GIB, 6 * GIB, (8, 9)))


def test_free_memory_sets_the_utilization():
    p = plan(Card("shared", 24 * GIB, 20 * GIB, (8, 9)))
    assert p.value("--gpu-memory-utilization") == "0.81"  # (20 - 0.5) / 24


def test_the_api_key_is_kept_out_of_the_process_list():
    p = _plan(24, (8, 9), api_key="sekrit")
    assert "sekrit" not in p.args()
    assert p.env["VLLM_API_KEY"] == "sekrit"


def test_several_gpus():
    dp = plan(Card("L4", 24 * GIB, None, (8, 9), count=4))
    assert dp.value("--data-parallel-size") == "4" and len(dp.servers) == 1
    replicas = plan(Card("L4", 24 * GIB, None, (8, 9), 2), PlanOptions(multi_gpu="replicas"))
    assert [(s.port, s.devices) for s in replicas.servers] == [(8000, "0"), (8001, "1")]


def test_mixed_gpus_plan_for_the_smallest():
    from dotsocr.serve.gpu import GPU

    big = GPU(2, "big", 80 * GIB, 60 * GIB, (9, 0), None)  # a quarter taken by someone else
    small = GPU(3, "small", 24 * GIB, 24 * GIB, (8, 9), None)
    card = card_for([big, small])
    assert (card.name, card.total_bytes, card.compute_capability, card.count) == (
        "small", 24 * GIB, (8, 9), 2,
    )  # fmt: skip
    assert card.free_bytes == 18 * GIB  # the big card's free share, on the small card's size
    assert card.devices == ("2", "3")
    p = plan(card, PlanOptions(multi_gpu="replicas"))
    assert [s.devices for s in p.servers] == ["2", "3"]
    assert float(p.value("--gpu-memory-utilization")) * 80 * GIB <= 60 * GIB


def test_user_flags_replace_planned_ones():
    p = _plan(24, (8, 9)).with_flags(["--max-model-len", "8192", "--enable-prefix-caching"])
    args = p.args()
    assert args.count("--max-model-len") == 1 and "8192" in args
    assert "--no-enable-prefix-caching" not in args


@pytest.mark.parametrize(("name", "gib", "cc"), [c for c in CARDS if c[1] >= 40])
def test_a_big_card_gets_two_api_servers_and_says_why(name, gib, cc):
    p = _plan(gib, cc)
    choice = next(c for c in p.choices if c.flag == "--api-server-count")
    assert choice.value == "2"
    assert "API server" in choice.reason and "2 per GPU" in choice.reason
    assert "would keep" not in choice.reason  # 32 cores: not capped


def test_api_servers_scale_with_the_gpus_one_server_spans():
    h100 = Card("H100", 80 * GIB, None, (9, 0), count=4)
    dp = plan(h100, PlanOptions(cpu_cores=64))
    assert dp.value("--data-parallel-size") == "4" and dp.value("--api-server-count") == "8"
    assert "4 fast cards" in next(c.reason for c in dp.choices if c.flag == "--api-server-count")
    replicas = plan(h100, PlanOptions(cpu_cores=64, multi_gpu="replicas"))
    assert len(replicas.servers) == 4 and replicas.value("--api-server-count") == "2"


@pytest.mark.parametrize(("name", "gib", "cc"), [c for c in CARDS if c[1] < 40])
def test_small_cards_keep_one_api_server(name, gib, cc):
    assert _plan(gib, cc).value("--api-server-count") is None
    dp = plan(Card(name, gib * GIB, None, cc, count=4), PlanOptions(cpu_cores=64))
    assert dp.value("--api-server-count") is None  # vLLM's own: one per data-parallel rank


def test_the_cpu_plan_and_old_big_cards_keep_one_api_server():
    assert plan_cpu(PlanOptions(cpu_cores=64)).value("--api-server-count") is None
    assert _plan(48, (7, 5)).value("--api-server-count") is None  # e.g. a Quadro RTX 8000


def test_api_servers_stay_within_the_hosts_cores():
    # One core per GPU for its engine process and one spare: 3 cores leave one API server.
    assert _plan(80, (9, 0), cpu_cores=3).value("--api-server-count") is None
    assert _plan(80, (9, 0), cpu_cores=4).value("--api-server-count") == "2"
    h100 = Card("H100", 80 * GIB, None, (9, 0), count=4)
    capped = plan(h100, PlanOptions(cpu_cores=12))
    assert capped.value("--api-server-count") == "7"  # 12 - 4 - 1, not 8
    reason = next(c.reason for c in capped.choices if c.flag == "--api-server-count")
    assert "would keep 4 fast cards fed" in reason and "12 cores" in reason
    # Never fewer than vLLM's default of one per data-parallel rank: then no flag at all.
    assert plan(h100, PlanOptions(cpu_cores=9)).value("--api-server-count") is None
    replicas = plan(h100, PlanOptions(cpu_cores=12, multi_gpu="replicas"))
    assert replicas.value("--api-server-count") is None  # 7 spare cores over 4 servers


def test_api_servers_default_to_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert plan(Card("H100", 80 * GIB, None, (9, 0))).value("--api-server-count") == "2"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert plan(Card("H100", 80 * GIB, None, (9, 0))).value("--api-server-count") is None


def test_your_api_server_count_replaces_the_planned_one():
    p = _plan(80, (9, 0)).with_flags(["--api-server-count", "6"])
    assert p.args().count("--api-server-count") == 1 and p.value("--api-server-count") == "6"
    assert next(c.reason for c in p.choices if c.flag == "--api-server-count") == "yours"
    p = _plan(80, (9, 0)).with_flags(["--api-server-count=1"])
    assert p.args().count("--api-server-count") == 1 and p.value("--api-server-count") == "1"


def test_the_mm_processor_cache_stays_off_with_several_api_servers():
    h100 = Card("H100", 80 * GIB, None, (9, 0), count=4)
    for p in (_plan(80, (9, 0)), plan(h100, PlanOptions(cpu_cores=64)), _plan(24, (8, 9))):
        choice = next(c for c in p.choices if c.flag == "--mm-processor-cache-gb")
        assert choice.value == "0" and "every API server" in choice.reason
    assert plan_cpu().value("--mm-processor-cache-gb") == "0"


def test_the_cpu_plan_has_no_gpu_flags():
    p = plan_cpu()
    assert p.value("--dtype") is None and p.value("--gpu-memory-utilization") is None
    assert p.env["VLLM_CPU_KVCACHE_SPACE"]


@pytest.mark.parametrize(
    ("text", "size"),
    [("12GiB", 12 * GIB), ("24", 24 * GIB), ("16GB", 16 * 10**9), ("8192MiB", 8 * GIB)],
)
def test_memory_sizes(text, size):
    assert parse_size(text) == size


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="12 apples"):
        parse_size("12 apples")


def test_plan_command_prints_reasons_and_the_memory_arithmetic():
    result = subprocess.run(
        [sys.executable, "-m", "dotsocr", "plan", "--gpu-memory", "12GiB",
         "--compute-capability", "8.6"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Launch plan for the card you named: 12.0 GiB, compute capability 8.6" in out
    assert "weights (16-bit)" in out and "KV cache" in out and "28 KiB each" in out
    assert "vllm serve rednote-hilab/dots.ocr" in out
    assert "--max-pixels" in out  # what clients must pass to match the server's cap


def test_plan_without_a_gpu_says_what_to_do():
    from dotsocr.errors import NoGPU
    from dotsocr.serve.gpu import discover

    try:
        discover()
    except NoGPU:
        pass
    else:
        pytest.skip("this machine has a GPU")
    result = subprocess.run(
        [sys.executable, "-m", "dotsocr", "plan"], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: no NVIDIA GPU found")
    assert "--gpu-memory" in result.stderr


@pytest.mark.vllm
def test_vllms_own_parser_accepts_every_plan():
    """vLLM's argument parser, from the installed CPU build, on the flags for every card."""
    from vllm_support import server

    if not server.installed():
        pytest.skip("no vLLM install: run scripts/setup-vllm")
    plans = [_plan(gib, cc).args() for _, gib, cc in CARDS]
    plans.append(plan(Card("L4", 24 * GIB, None, (8, 9), 2)).args())
    plans.append(plan(Card("H100", 80 * GIB, None, (9, 0), 4), PlanOptions(cpu_cores=64)).args())
    plans.append(plan_cpu().args())
    assert sum("--api-server-count" in args for args in plans) >= 4  # A6000, A100, H100s
    script = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = make_arg_parser(FlexibleArgumentParser())
for args in json.load(sys.stdin):
    ns = parser.parse_args(["--model", "m", *args])
    print(json.dumps([ns.max_model_len, ns.mm_processor_kwargs, ns.enable_prefix_caching,
                      ns.quantization, ns.kv_cache_dtype, ns.api_server_count,
                      ns.mm_processor_cache_gb]))
"""
    result = subprocess.run(
        [server.python(), "-c", script], input=json.dumps(plans), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(parsed) == len(plans)
    for args, (max_model_len, kwargs, prefix, quant, kv, api_servers, mm_cache) in zip(
        plans, parsed, strict=True
    ):
        assert max_model_len == int(args[args.index("--max-model-len") + 1])
        assert kwargs == json.loads(args[args.index("--mm-processor-kwargs") + 1])
        assert prefix is False
        assert quant == (
            args[args.index("--quantization") + 1] if "--quantization" in args else None
        )
        assert kv == (
            args[args.index("--kv-cache-dtype") + 1] if "--kv-cache-dtype" in args else "auto"
        )
        assert api_servers == (
            int(args[args.index("--api-server-count") + 1])
            if "--api-server-count" in args
            else None
        )
        assert mm_cache == 0


DOC = Path(__file__).resolve().parents[1] / "docs" / "launch-plans.md"
TABLE_START, TABLE_END = "<!-- table: generated by tests/test_launch_plan.py -->", "<!-- end -->"


def _table() -> str:
    rows = [
        "| card | GiB | cc | dtype | fp8 | util | max-model-len | pixel cap (tokens) | "
        "max-num-seqs | batched tokens | eager | API servers | weights | vision | KV cache | "
        "KV tokens |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, size, cc in CARDS:
        p = _plan(size, cc)
        memory = dict(p.memory.rows)
        weights = next(v for k, v in memory.items() if k.startswith("weights"))
        vision = next(v for k, v in memory.items() if k.startswith("vision"))
        fp8 = "+".join(f for f in ("--quantization", "--kv-cache-dtype") if p.value(f)) or "-"
        fp8 = fp8.replace("--quantization", "weights").replace("--kv-cache-dtype", "KV")
        rows.append(
            f"| {name} | {size} | {cc[0]}.{cc[1]} | {p.value('--dtype')} | {fp8} | "
            f"{p.value('--gpu-memory-utilization')} | {p.value('--max-model-len')} | "
            f"{p.max_pixels // 784:,} | {p.value('--max-num-seqs')} | "
            f"{p.value('--max-num-batched-tokens')} | {'yes' if size < 16 else 'no'} | "
            f"{p.value('--api-server-count') or 1} | "
            f"{weights / GIB:.1f} | {vision / GIB:.1f} | {p.memory.kv_bytes / GIB:.1f} | "
            f"{p.memory.kv_tokens:,} |"
        )
    return "\n".join(rows)


def test_the_documented_table_is_what_the_planner_says():
    text = DOC.read_text()
    head, rest = text.split(TABLE_START)
    _, tail = rest.split(TABLE_END)
    current = f"{head}{TABLE_START}\n{_table()}\n{TABLE_END}{tail}"
    if os.environ.get("DOTSOCR_REGEN") == "1":
        DOC.write_text(current)
    assert text == current, "docs/launch-plans.md is stale: run DOTSOCR_REGEN=1 pytest " + __file__


@settings(max_examples=300, deadline=None)
@given(
    total=st.floats(6, 96),
    free_share=st.one_of(st.none(), st.floats(0.5, 1.0)),
    cc=st.sampled_from([(7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), None]),
    answer=st.one_of(st.none(), st.integers(1024, 20_000)),
    pixels=st.one_of(st.none(), st.integers(3136, 12_000_000)),
)
def test_any_plan_adds_up_and_vllm_would_start(total, free_share, cc, answer, pixels):
    total_bytes = int(total * GIB)
    free = None if free_share is None else int(total_bytes * free_share)
    options = PlanOptions(answer_tokens=answer, max_image_tokens=pixels // 784 if pixels else None)
    try:
        p = plan(Card("card", total_bytes, free, cc), options)
    except ServeError:
        return  # too small, or too busy: said in one line
    m = p.memory
    utilization = float(p.value("--gpu-memory-utilization"))
    if free is not None:
        assert utilization * total_bytes <= free  # vLLM refuses more than is free
    assert sum(size for _, size in m.rows) + m.kv_bytes == m.budget
    max_model_len = int(p.value("--max-model-len"))
    assert m.kv_tokens >= max_model_len  # vLLM refuses a cache shorter than one sequence
    assert max_model_len >= p.max_pixels // 784 + PROMPT_TOKENS + (answer or 4096)
    assert int(p.value("--max-num-batched-tokens")) >= p.max_pixels // 784
    quantized = p.value("--quantization") == "fp8"
    assert not quantized or (cc is not None and cc >= (8, 0))
    assert p.value("--kv-cache-dtype") is None or cc >= (8, 9)
    if quantized:  # only when 16 bits cannot keep the same page with two in the cache
        try:
            plain = plan(Card("card", total_bytes, free, cc), replace(options, quantization="none"))
        except ServeError:
            return
        two = 2 * int(plain.value("--max-model-len"))
        assert plain.max_pixels < p.max_pixels or plain.memory.kv_tokens < two
