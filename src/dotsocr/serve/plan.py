"""A launch plan for ``vllm serve``: every flag fitted to the card, each with its reason.

The memory arithmetic is an estimate from the model's shape (see models/serving.py);
vLLM's own profiler has the last word at start-up. The search keeps a 200-DPI page whole
with two pages in the KV cache, in 16 bits if that fits, else with an fp8 KV cache, else
fp8 weights; only when none of these fits does it lower the pixel cap.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Literal

from dotsocr.errors import ConfigError, ServeError
from dotsocr.host import usable_cores
from dotsocr.models.serving import DOTS_OCR, GIB, Serving

MIB = 1024**2
CONTEXT_BYTES = 768 * MIB  # CUDA context, cuBLAS workspaces, NCCL: memory torch does not see
CUDA_GRAPH_BYTES = 512 * MIB  # captured decode graphs for batch sizes up to max-num-seqs
HEADROOM_BYTES = 512 * MIB  # left to the driver and other processes
MAX_UTILIZATION = 0.95
FULL_PAGE_TOKENS = 5_000  # an A4 or US-letter page at 200 DPI is 4,800-4,960 image tokens
PROMPT_TOKENS = 512  # the prompt text and chat markers (the layout prompt is ~300)
TYPICAL_ANSWER = 1_500  # a dense page answers 1-2k tokens
PIXEL_CAPS = (14_400, 10_000, 5_000, 3_600, 2_500)  # image tokens; 784 pixels each
SMALL_CARD = 16 * GIB  # below this CUDA graphs cost more than they give
BIG_CARD = 40 * GIB  # from here a prefill step can take two pages
MAX_SEQS = 256
# vLLM's API server process decodes each page image and runs the HF processor on it, one
# core and ~50-100 ms a page; one H100 encodes ~4 letter pages a second at 200 DPI.
API_SERVERS_PER_GPU = 2
SPARE_CORES = 1  # left to the OS and the rest, beside one per GPU for its engine process

Quantization = Literal["auto", "none", "fp8", "awq", "gptq"]
PRE_QUANTIZED = ("awq", "gptq")  # 4-bit checkpoints published for the model
MultiGPU = Literal["data-parallel", "replicas"]
WEIGHT_KINDS = {"fp8": "fp8 decoder", "awq": "AWQ 4-bit decoder", "gptq": "GPTQ 4-bit decoder"}


@dataclass(frozen=True)
class Card:
    """The GPU a plan is for (the smallest one, when several differ)."""

    name: str
    total_bytes: int
    free_bytes: int | None = None
    compute_capability: tuple[int, int] | None = None
    count: int = 1
    devices: tuple[str, ...] | None = None  # CUDA_VISIBLE_DEVICES entries; None: 0..count-1

    def device_ids(self) -> tuple[str, ...]:
        return self.devices or tuple(str(i) for i in range(self.count))

    def describe(self) -> str:
        cc = ".".join(map(str, self.compute_capability)) if self.compute_capability else "unknown"
        count = f"{self.count} x " if self.count > 1 else ""
        return f"{count}{self.name}: {gib(self.total_bytes)} GiB, compute capability {cc}"


@dataclass(frozen=True)
class PlanOptions:
    """What the user chose; None means the planner decides."""

    model: str | None = None  # hub id or local folder; default: the profile's hub id
    # Pre-quantized checkpoints of the model by method (the profile's), for awq and gptq.
    checkpoints: tuple[tuple[str, str], ...] = ()
    served_model_name: str | None = None
    host: str = "0.0.0.0"
    port: int = 8000
    api_key: str | None = None
    quantization: Quantization = "auto"
    max_image_tokens: int | None = None
    answer_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    multi_gpu: MultiGPU = "data-parallel"
    cpu_cores: int | None = None  # the server host's usable cores; None: this process's


@dataclass(frozen=True)
class Choice:
    flag: str
    value: str | None  # None: a switch with no value
    reason: str


@dataclass(frozen=True)
class Memory:
    """The per-GPU arithmetic behind the plan."""

    budget: int
    rows: tuple[tuple[str, int], ...]  # what is taken before the KV cache
    kv_bytes: int
    kv_bytes_per_token: int
    kv_tokens: int
    typical_sequence: int

    @property
    def pages_at_once(self) -> int:
        return self.kv_tokens // self.typical_sequence


@dataclass(frozen=True)
class Server:
    """One ``vllm serve`` process: which GPUs it sees and where it listens."""

    port: int
    devices: str | None  # CUDA_VISIBLE_DEVICES; None: all


@dataclass(frozen=True)
class LaunchPlan:
    card: Card
    model: str
    choices: tuple[Choice, ...]
    memory: Memory | None  # None on the CPU
    servers: tuple[Server, ...]
    env: dict[str, str] = field(default_factory=dict)
    max_pixels: int = 0  # what clients should pass as --max-pixels; 0: nothing to pass
    profile: str = "dots.ocr"  # what clients should pass as --model

    def args(self) -> list[str]:
        """The flags after ``vllm serve MODEL``."""
        out: list[str] = []
        for choice in self.choices:
            out.append(choice.flag)
            if choice.value is not None:
                out.append(choice.value)
        return out

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the (first) server."""
        host = self.value("--host") or "127.0.0.1"
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{host}:{self.servers[0].port}"

    def value(self, flag: str) -> str | None:
        return next((c.value for c in self.choices if c.flag == flag), None)

    def with_flags(self, extra: list[str]) -> LaunchPlan:
        """The user's own flags win: a planned flag they also give is dropped from the plan."""
        given = {a.split("=", 1)[0] for a in extra if a.startswith("--")}
        negated = {f"--no-{g[2:]}" for g in given} | {
            f"--{g[5:]}" for g in given if g.startswith("--no-")
        }
        kept = tuple(c for c in self.choices if c.flag not in given | negated)
        added = tuple(_user_choices(extra))
        return dataclasses.replace(self, choices=kept + added)


def _user_choices(extra: list[str]) -> list[Choice]:
    choices: list[Choice] = []
    i = 0
    while i < len(extra):
        flag = extra[i]
        value: str | None = None
        if "=" in flag and flag.startswith("--"):
            flag, value = flag.split("=", 1)
        elif i + 1 < len(extra) and not extra[i + 1].startswith("--"):
            value = extra[i + 1]
            i += 1
        choices.append(Choice(flag, value, "yours"))
        i += 1
    return choices


def gib(n: int | float) -> str:
    return f"{n / GIB:.1f}"


def parse_size(text: str) -> int:
    """``12GiB``, ``12GB`` (10^9), ``24576MiB`` or a bare number of GiB."""
    units = {"gib": GIB, "g": GIB, "mib": MIB, "m": MIB, "gb": 10**9, "mb": 10**6, "": GIB}
    cleaned = text.strip().lower().replace(" ", "")
    number = cleaned.rstrip("gibm")
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(f"{text!r} is not a memory size: write e.g. 12GiB or 24GB") from None
    unit = cleaned[len(number) :]
    if unit not in units or value <= 0:
        raise ConfigError(f"{text!r} is not a memory size: write e.g. 12GiB or 24GB")
    return int(value * units[unit])


def parse_capability(text: str) -> tuple[int, int]:
    try:
        major, minor = (int(p) for p in text.strip().split("."))
    except ValueError:
        raise ConfigError(f"{text!r} is not a compute capability: write e.g. 8.9") from None
    return major, minor


@dataclass(frozen=True)
class _Fit:
    precision: str  # "bf16", "fp8-kv", "fp8", "awq", "gptq"
    image_tokens: int
    answer_tokens: int
    memory: Memory
    batched_tokens: int
    max_model_len: int
    weights: int  # bytes


def plan(card: Card, options: PlanOptions | None = None, serving: Serving = DOTS_OCR) -> LaunchPlan:
    """The launch plan for ``card``; raises ServeError when the model cannot fit it."""
    options = options or PlanOptions()
    cc = card.compute_capability or (0, 0)
    known_cc = card.compute_capability is not None
    ampere = cc >= (8, 0)
    utilization = _utilization(card, options)
    budget = int(card.total_bytes * utilization)
    eager = card.total_bytes < SMALL_CARD
    fit = _search(card, options, serving, budget, eager)

    choices: list[Choice] = []
    add = choices.append
    if ampere or not known_cc:
        add(Choice("--dtype", "bfloat16", "the model's own precision (compute capability >= 8.0)"))
    else:
        add(Choice("--dtype", "float16", "no bfloat16 before compute capability 8.0"))
    if options.gpu_memory_utilization is not None:
        util_reason = "yours"
    elif card.free_bytes is not None:
        util_reason = (
            f"{gib(card.free_bytes)} GiB free, less {HEADROOM_BYTES // MIB} MiB for the driver "
            f"and others, at most {MAX_UTILIZATION}"
        )
    else:
        util_reason = (
            f"leaves {HEADROOM_BYTES // MIB} MiB beside the GPU's own reserve; at most "
            f"{MAX_UTILIZATION}"
        )
    add(Choice("--gpu-memory-utilization", f"{utilization:.2f}", util_reason))
    add(
        Choice(
            "--max-model-len",
            str(fit.max_model_len),
            f"{fit.image_tokens:,} image tokens + {PROMPT_TOKENS} for the prompt + "
            f"{fit.answer_tokens:,} for the answer"
            + (
                " (the model's own limit)"
                if fit.max_model_len == serving.max_context
                else " (vLLM's default, the model's own maximum, would size the cache for one "
                "endless sequence)"
            ),
        )
    )
    seqs = max(1, min(MAX_SEQS, fit.memory.pages_at_once))
    add(
        Choice(
            "--max-num-seqs",
            str(seqs),
            f"the KV cache holds {fit.memory.kv_tokens:,} tokens = "
            f"{fit.memory.pages_at_once:,} pages of ~{fit.memory.typical_sequence:,} tokens"
            + (f"; capped at {MAX_SEQS}" if fit.memory.pages_at_once > MAX_SEQS else ""),
        )
    )
    add(
        Choice(
            "--max-num-batched-tokens",
            str(fit.batched_tokens),
            f"a page is prefill-heavy (~{min(fit.image_tokens, FULL_PAGE_TOKENS):,} image "
            "tokens): "
            + (
                "two pages per step on a big card"
                if card.total_bytes >= BIG_CARD
                else "one capped page per step keeps activations small"
            ),
        )
    )
    if eager:
        add(
            Choice(
                "--enforce-eager",
                None,
                f"saves ~{CUDA_GRAPH_BYTES // MIB} MiB of CUDA graphs on a card under "
                f"{SMALL_CARD // GIB} GiB (decoding is a little slower)",
            )
        )
    max_pixels = fit.image_tokens * serving.pixels_per_token
    cap_reason = (
        "the model's own maximum"
        if fit.image_tokens >= serving.max_image_tokens
        else f"{fit.image_tokens:,} tokens: the vision encoder's activations must fit beside "
        "the weights"
    )
    saved = f"weights {gib(serving.weight_bytes)} -> {gib(fit.weights)} GiB, " + (
        f"{gib(serving.weight_bytes - fit.weights)} GiB saved"
    )
    if fit.precision == "fp8":
        weight_only = cc < (8, 9)
        add(
            Choice(
                "--quantization",
                "fp8",
                ("weight-only fp8 (compute capability < 8.9)" if weight_only else "W8A8 fp8")
                + f" ({saved})"
                + _why_fp8(options),
            )
        )
    if fit.precision in PRE_QUANTIZED:
        kernel = f"{fit.precision}_marlin" if ampere else fit.precision
        add(
            Choice(
                "--quantization",
                kernel,
                f"the {fit.precision.upper()} checkpoint's 4-bit decoder ({saved})"
                + (", with the Marlin kernels (compute capability >= 8.0)" if ampere else ""),
            )
        )
    if fit.precision in ("fp8", "fp8-kv") and cc >= (8, 9):
        add(Choice("--kv-cache-dtype", "fp8", "halves the KV cache per token" + _why_fp8(options)))
    choices += _common_choices(options, serving, max_pixels, cap_reason)
    servers, extra = _servers(card, options)
    choices += extra
    choices += _api_servers(card, options, len(servers))
    env = {"VLLM_API_KEY": options.api_key} if options.api_key else {}
    model = options.model or dict(options.checkpoints).get(fit.precision) or serving.hub_id
    return LaunchPlan(
        card=card,
        model=model,
        choices=tuple(choices),
        memory=fit.memory,
        servers=servers,
        env=env,
        max_pixels=max_pixels if serving.pixel_cap_kwarg else 0,
    )


def _common_choices(
    options: PlanOptions, serving: Serving, max_pixels: int, cap_reason: str
) -> list[Choice]:
    """The flags every plan has, GPU or CPU: the pixel cap, caches off, the model's own
    flags, its name and the address."""
    cap = []
    if serving.pixel_cap_kwarg:  # models of a fixed input size have no cap to set
        kwargs = json.dumps({serving.pixel_cap_kwarg: max_pixels})
        cap = [Choice("--mm-processor-kwargs", kwargs, cap_reason)]
    return [
        *cap,
        Choice("--limit-mm-per-prompt", json.dumps({"image": 1}), "one page per request"),
        Choice("--no-enable-prefix-caching", None, "pages share no prefix worth caching"),
        Choice(
            "--mm-processor-cache-gb",
            "0",
            "a page image is never sent twice; vLLM would keep one such cache (4 GiB by "
            "default) in every API server and engine process",
        ),
        *(
            Choice(flag, value, serving.flag_reasons.get(flag, "the model needs it"))
            for flag, value in serving.flags.items()
        ),
        Choice(
            "--served-model-name",
            options.served_model_name or serving.served_model_name,
            "the name clients ask for",
        ),
        Choice("--host", options.host, "listen address"),
    ]


def _why_fp8(options: PlanOptions) -> str:
    return ": you asked for it" if options.quantization == "fp8" else ": 16 bits do not fit"


def _utilization(card: Card, options: PlanOptions) -> float:
    if options.gpu_memory_utilization is not None:
        if not 0.1 <= options.gpu_memory_utilization <= 1.0:
            raise ConfigError("--gpu-memory-utilization must be between 0.1 and 1.0")
        return options.gpu_memory_utilization
    free = card.free_bytes if card.free_bytes is not None else card.total_bytes
    share = (free - HEADROOM_BYTES) / card.total_bytes
    if share < 0.5:
        raise ServeError(
            f"only {gib(max(free, 0))} GiB of {gib(card.total_bytes)} GiB is free on "
            f"{card.name}: stop what else runs on it, or pass --gpu-memory-utilization"
        )
    return math.floor(min(MAX_UTILIZATION, share) * 100) / 100


def _precisions(card: Card, options: PlanOptions, serving: Serving) -> list[str]:
    cc = card.compute_capability or (0, 0)
    fp8_weights = cc >= (8, 0)  # weight-only below 8.9 (Marlin); none before Ampere
    fp8_kv = cc >= (8, 9)
    if options.quantization == "none":
        return ["bf16"]
    if options.quantization in PRE_QUANTIZED:
        if options.quantization not in dict(options.checkpoints) and not options.model:
            known = ", ".join(m for m, _ in options.checkpoints) or "none"
            raise ConfigError(
                f"no {options.quantization.upper()} checkpoint of {serving.hub_id} is known "
                f"(known: {known}): pass --model with one, or use --quantization fp8"
            )
        if card.compute_capability is not None and cc < (7, 5):
            raise ConfigError(f"{card.name} cannot run 4-bit kernels (compute capability < 7.5)")
        return [options.quantization]
    if options.quantization == "fp8":
        if card.compute_capability is None:
            raise ConfigError(
                f"the compute capability of {card.name} is unknown, and fp8 needs 8.0 or "
                "newer: pass --compute-capability"
            )
        if not fp8_weights:
            raise ConfigError(
                f"{card.name} cannot run fp8 (compute capability below 8.0): drop --quantization"
            )
        return ["fp8"]
    return ["bf16"] + (["fp8-kv"] if fp8_kv else []) + (["fp8"] if fp8_weights else [])


def _search(card: Card, options: PlanOptions, serving: Serving, budget: int, eager: bool) -> _Fit:
    """The first configuration that fits, in order of preference."""
    caps = [c for c in PIXEL_CAPS if c <= serving.max_image_tokens] or [serving.max_image_tokens]
    if serving.pixel_cap_kwarg is None:  # a fixed input size: every page costs the same
        caps = [serving.max_image_tokens]
    elif options.max_image_tokens:
        caps = [min(options.max_image_tokens, serving.max_image_tokens)]
    answers = [options.answer_tokens] if options.answer_tokens else [16_384, 8_192, 4_096]
    precisions = _precisions(card, options, serving)
    full_page = [c for c in caps if c >= FULL_PAGE_TOKENS] or caps
    passes = [(full_page, answers[:2], 2), (caps, answers, 1)]
    smallest = None
    for pass_caps, pass_answers, sequences in passes:
        for precision in precisions:
            for cap in pass_caps:
                for answer in pass_answers:
                    fit = _fit(card, serving, budget, eager, precision, cap, answer)
                    smallest = fit
                    if fit.memory.kv_tokens >= sequences * fit.max_model_len:
                        return fit
    assert smallest is not None
    short = sum(b for _, b in smallest.memory.rows) + (
        smallest.memory.kv_bytes_per_token * smallest.max_model_len
    )
    if "fp8" in precisions:
        how = "even with fp8"
    elif card.compute_capability is None:
        how = "in 16 bits (its compute capability is unknown: pass --compute-capability for fp8)"
    elif options.quantization == "none":
        how = "in 16 bits (--quantization none)"
    else:
        how = "in 16 bits (no fp8 before compute capability 8.0)"
    raise ServeError(
        f"{serving.hub_id} does not fit {card.describe()}: {how} and a "
        f"{smallest.image_tokens:,}-token pixel cap it needs about {gib(short)} GiB of the "
        f"{gib(budget)} GiB available; use a bigger card or the CPU engine (--engine cpu)"
    )


def _fit(
    card: Card, serving: Serving, budget: int, eager: bool, precision: str, cap: int, answer: int
) -> _Fit:
    cc = card.compute_capability or (0, 0)
    flash = cc >= (8, 0) or card.compute_capability is None
    big = card.total_bytes >= BIG_CARD
    batched = _round_up(cap + PROMPT_TOKENS, 1024) * (2 if big else 1)
    batched = max(batched, 8_192 if big else 2_048)
    weights = {
        "fp8": serving.fp8_weight_bytes(),
        **{method: serving.quantized_weight_bytes(4) for method in PRE_QUANTIZED},
    }.get(precision, serving.weight_bytes)
    kv_per_token = serving.decoder.kv_bytes_per_token(1 if precision.startswith("fp8") else 2)
    if cc < (8, 9):  # no fp8 KV cache below Ada/Hopper in this plan
        kv_per_token = serving.decoder.kv_bytes_per_token(2)
    pixels = cap * serving.pixels_per_token
    pages = max(1, batched // cap)  # vLLM runs the encoder on as many pages as a step takes
    rows = [
        ("CUDA context and non-torch memory", CONTEXT_BYTES),
        (f"weights ({WEIGHT_KINDS.get(precision, '16-bit')})", weights),
        ("CUDA graphs", 0 if eager else CUDA_GRAPH_BYTES),
        (
            f"vision encoder, {pages} page(s) of {cap:,} tokens"
            + ("" if flash else " (no flash attention: quadratic)"),
            pages * serving.vision.activation_bytes(pixels, flash_attention=flash),
        ),
        (
            f"prefill activations, {batched:,} tokens",
            serving.decoder.activation_bytes(batched, MAX_SEQS),
        ),
    ]
    kv_bytes = max(0, budget - sum(b for _, b in rows))
    typical = min(cap, FULL_PAGE_TOKENS) + PROMPT_TOKENS + TYPICAL_ANSWER
    memory = Memory(
        budget=budget,
        rows=tuple(rows),
        kv_bytes=kv_bytes,
        kv_bytes_per_token=kv_per_token,
        kv_tokens=kv_bytes // kv_per_token,
        typical_sequence=typical,
    )
    max_model_len = _round_up(cap + PROMPT_TOKENS + answer, 1024)
    if serving.max_context and max_model_len > serving.max_context:  # the model's own limit
        max_model_len = serving.max_context
        answer = max_model_len - cap - PROMPT_TOKENS
    return _Fit(precision, cap, answer, memory, batched, max_model_len, weights)


def _servers(card: Card, options: PlanOptions) -> tuple[tuple[Server, ...], list[Choice]]:
    if card.count <= 1:
        return (Server(options.port, None),), [Choice("--port", str(options.port), "listen port")]
    if options.multi_gpu == "replicas":
        servers = tuple(
            Server(options.port + i, device) for i, device in enumerate(card.device_ids())
        )
        return servers, [
            Choice(
                "--port",
                str(options.port),
                f"one server per GPU on ports {options.port}-{options.port + card.count - 1} "
                "(put a router in front)",
            )
        ]
    return (Server(options.port, None),), [
        Choice("--port", str(options.port), "listen port"),
        Choice(
            "--data-parallel-size",
            str(card.count),
            f"one endpoint over {card.count} GPUs; tensor parallelism is pointless for a 3B model",
        ),
    ]


def _api_servers(card: Card, options: PlanOptions, servers: int) -> list[Choice]:
    """``--api-server-count`` for a fast card: API_SERVERS_PER_GPU for each GPU a server
    spans, within the host's cores; none where vLLM's own default (one, or one per
    data-parallel rank) would do as well. An unknown compute capability counts as new, as
    it does for --dtype."""
    cc = card.compute_capability
    if card.total_bytes < BIG_CARD or (cc is not None and cc < (8, 0)):
        return []  # a smaller or older card encodes slower than one API process feeds it
    gpus = card.count // servers  # a data-parallel server spans them all; a replica one
    cores = options.cpu_cores or usable_cores()
    spare = cores - card.count - SPARE_CORES  # one core per GPU for its engine process
    count = min(API_SERVERS_PER_GPU * gpus, spare // servers)
    if count <= gpus:  # vLLM 0.32 starts one API process per data-parallel rank
        return []
    fed = "a fast card" if gpus == 1 else f"{gpus} fast cards"
    why = f"{API_SERVERS_PER_GPU} per GPU keep {fed} fed"
    if count < API_SERVERS_PER_GPU * gpus:
        why = (
            f"{API_SERVERS_PER_GPU} per GPU would keep {fed} fed; {count} here: {cores} "
            f"cores, less {card.count} for the engine processes and {SPARE_CORES} spare"
        )
    reason = (
        "image decoding and the HF processor run in the API server, ~50-100 ms a page on "
        f"one core: {why}"
    )
    return [Choice("--api-server-count", str(count), reason)]


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


CPU_KV_CACHE_GIB = 2
CPU_SEQS = 4


def plan_cpu(options: PlanOptions | None = None, serving: Serving = DOTS_OCR) -> LaunchPlan:
    """A plan for vLLM's CPU build: no GPU flags; the KV cache size goes in the environment."""
    options = options or PlanOptions()
    cap = min(options.max_image_tokens or FULL_PAGE_TOKENS, serving.max_image_tokens)
    answer = options.answer_tokens or 8_192
    max_model_len = _round_up(cap + PROMPT_TOKENS + answer, 1024)
    if serving.max_context and max_model_len > serving.max_context:
        max_model_len = serving.max_context
        answer = max_model_len - cap - PROMPT_TOKENS
    max_pixels = cap * serving.pixels_per_token
    choices = [
        Choice(
            "--max-model-len",
            str(max_model_len),
            f"{cap:,} image tokens + {PROMPT_TOKENS} for the prompt + {answer:,} for the answer",
        ),
        Choice("--max-num-seqs", str(CPU_SEQS), "a CPU reads a handful of pages at once at best"),
        Choice(
            "--max-num-batched-tokens",
            str(_round_up(cap + PROMPT_TOKENS, 1024)),
            "one page per prefill step",
        ),
        Choice("--enforce-eager", None, "no graph compilation: starts in about a minute"),
        *_common_choices(
            options,
            serving,
            max_pixels,
            f"{cap:,} tokens: a 200-DPI page whole; the CPU vision encoder is slow beyond it",
        ),
        Choice("--port", str(options.port), "listen port"),
    ]
    env = {"VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB)}
    if options.api_key:
        env["VLLM_API_KEY"] = options.api_key
    return LaunchPlan(
        card=Card("CPU", 0),
        model=options.model or serving.hub_id,
        choices=tuple(choices),
        memory=None,
        servers=(Server(options.port, None),),
        env=env,
        max_pixels=max_pixels if serving.pixel_cap_kwarg else 0,
    )


def card_for(gpus: list) -> Card:
    """One card standing for all: the smallest, since every server must fit on it, with the
    smallest free share of any, since vLLM asks each card for the same share."""
    if not gpus:
        raise ServeError("no GPU to plan for: pass --gpu-memory, or --device cpu")
    smallest = min(gpus, key=lambda g: g.total_bytes)
    capabilities = [g.compute_capability for g in gpus]
    cc = None if None in capabilities else min(capabilities)
    shares = [g.free_bytes / g.total_bytes for g in gpus if g.free_bytes is not None]
    free = int(min(shares) * smallest.total_bytes) if shares else None
    devices = tuple(str(g.index) for g in gpus)
    return Card(smallest.name, smallest.total_bytes, free, cc, len(gpus), devices)
