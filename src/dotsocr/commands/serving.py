"""``dotsocr plan``, ``dotsocr serve`` and ``dotsocr compose``: vLLM fitted to the card."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from dotsocr.serve.plan import LaunchPlan


class Device(StrEnum):
    auto = "auto"
    gpu = "gpu"
    cpu = "cpu"


class Quant(StrEnum):
    auto = "auto"
    none = "none"
    fp8 = "fp8"
    awq = "awq"  # the model's published 4-bit checkpoints
    gptq = "gptq"


class MultiGPU(StrEnum):
    data_parallel = "data-parallel"
    replicas = "replicas"


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", help="A profile (dotsocr models), hub id or local folder (default: dots.ocr)."
    ),
]
DeviceOpt = Annotated[
    Device, typer.Option("--device", help="auto: the GPUs found; cpu: vLLM's CPU build.")
]
GPUMemoryOpt = Annotated[
    str | None,
    typer.Option("--gpu-memory", help="Plan for a card of this size (e.g. 12GiB) instead."),
]
CapabilityOpt = Annotated[
    str | None, typer.Option("--compute-capability", help="e.g. 8.9 (with --gpu-memory).")
]
GPUsOpt = Annotated[int, typer.Option("--gpus", min=1, help="How many such cards.")]
QuantOpt = Annotated[
    Quant,
    typer.Option(
        "--quantization",
        help="auto: fp8 only when 16 bits cannot hold a page; awq/gptq: the model's 4-bit "
        "checkpoint.",
    ),
]
MaxPixelsOpt = Annotated[
    int | None, typer.Option("--max-pixels", min=3136, help="Pixel cap per page (default: fitted).")
]
AnswerOpt = Annotated[
    int | None, typer.Option("--answer-tokens", min=256, help="Answer budget per page.")
]
UtilOpt = Annotated[
    float | None, typer.Option("--gpu-memory-utilization", help="Share of the card for vLLM.")
]
MultiOpt = Annotated[
    MultiGPU, typer.Option("--multi-gpu", help="One endpoint over all GPUs, or one server each.")
]
HostOpt = Annotated[str, typer.Option("--host", help="Listen address.")]
PortOpt = Annotated[int, typer.Option("--port", min=1, max=65535, help="Listen port.")]
ServedOpt = Annotated[
    str | None, typer.Option("--served-model-name", help="The name clients ask for.")
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", help="Require this key from clients.", envvar="DOTSOCR_API_KEY"),
]
ImageOpt = Annotated[str | None, typer.Option("--image", help="vLLM image (default: pinned).")]


def _plan(
    *,
    model: str | None,
    device: Device,
    gpu_memory: str | None,
    compute_capability: str | None,
    gpus: int,
    quantization: Quant,
    max_pixels: int | None,
    answer_tokens: int | None,
    gpu_memory_utilization: float | None,
    multi_gpu: MultiGPU,
    host: str,
    port: int,
    served_model_name: str | None,
    api_key: str | None,
) -> LaunchPlan:
    import dataclasses

    from dotsocr.errors import ConfigError
    from dotsocr.models import profile_for
    from dotsocr.serve import plan as planner

    profile, model = profile_for(model)
    serving = getattr(profile, "serving", None)
    if serving is None:
        raise ConfigError(
            f"dotsocr has no memory figures for {profile.name}, so it cannot plan its server: "
            "start vLLM yourself (dotsocr models says which server runs it)"
        )
    options = planner.PlanOptions(
        model=model,
        checkpoints=tuple(sorted(getattr(profile, "quantized", {}).items())),
        served_model_name=served_model_name,
        host=host,
        port=port,
        api_key=api_key,
        quantization=quantization.value,
        max_image_tokens=max_pixels // serving.pixels_per_token if max_pixels else None,
        answer_tokens=answer_tokens,
        gpu_memory_utilization=gpu_memory_utilization,
        multi_gpu=multi_gpu.value,
    )
    if device is Device.cpu:
        return dataclasses.replace(planner.plan_cpu(options, serving), profile=profile.name)
    if gpu_memory is not None:
        cc = planner.parse_capability(compute_capability) if compute_capability else None
        name = "the card you named"
        card = planner.Card(name, planner.parse_size(gpu_memory), None, cc, gpus)
    else:
        from dotsocr.serve.gpu import discover

        card = planner.card_for(discover())
    return dataclasses.replace(planner.plan(card, options, serving), profile=profile.name)


def render_plan(plan: LaunchPlan) -> str:
    """The plan as a person reads it: choices with reasons, the memory sums, the command."""
    from dotsocr.serve.launcher import default_command, vllm_argv
    from dotsocr.serve.plan import gib

    target = plan.card.describe() if plan.memory else "the CPU"
    lines = [f"Launch plan for {target}"]
    width = max(len(c.flag) + len(c.value or "") for c in plan.choices) + 2
    for c in plan.choices:
        flag = f"{c.flag} {c.value}" if c.value is not None else c.flag
        lines.append(f"  {flag:<{width}}  {c.reason}")
    if plan.memory:
        m = plan.memory
        lines.append("Memory per GPU (GiB, estimated; vLLM's profiler has the last word):")
        lines.append(f"  {'budget':<46}{gib(m.budget):>7}")
        for label, size in m.rows:
            lines.append(f"  {label:<46}{gib(size):>7}")
        lines.append(
            f"  {'KV cache':<46}{gib(m.kv_bytes):>7}  = {m.kv_tokens:,} tokens at "
            f"{m.kv_bytes_per_token // 1024} KiB each"
        )
    for key, value in plan.env.items():
        shown = "***" if "KEY" in key else value
        lines.append(f"Environment: {key}={shown}")
    argv = vllm_argv(default_command(), plan)
    import shlex

    lines.append("Command:")
    lines.append("  " + " ".join(shlex.quote(a) for a in argv))
    model = "" if plan.profile == "dots.ocr" else f" --model {plan.profile}"
    cap = f" --max-pixels {plan.max_pixels}" if plan.max_pixels else ""
    lines.append(f"Clients: dotsocr ocr --server {plan.url}{model}{cap} FILES")
    return "\n".join(lines)


def plan_command(
    model: ModelOpt = None,
    device: DeviceOpt = Device.auto,
    gpu_memory: GPUMemoryOpt = None,
    compute_capability: CapabilityOpt = None,
    gpus: GPUsOpt = 1,
    quantization: QuantOpt = Quant.auto,
    max_pixels: MaxPixelsOpt = None,
    answer_tokens: AnswerOpt = None,
    gpu_memory_utilization: UtilOpt = None,
    multi_gpu: MultiOpt = MultiGPU.data_parallel,
    host: HostOpt = "0.0.0.0",
    port: PortOpt = 8000,
    served_model_name: ServedOpt = None,
    api_key: KeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the vLLM launch plan for this machine's GPU (or any card), with reasons."""
    plan = _plan(**{k: v for k, v in locals().items() if k != "as_json"})
    if as_json:
        import json

        typer.echo(json.dumps(_plan_json(plan), indent=2))
    else:
        typer.echo(render_plan(plan))


def _plan_json(plan: LaunchPlan) -> dict:
    from dataclasses import asdict

    data = asdict(plan)
    data["args"] = plan.args()
    data["env"] = {k: ("***" if "KEY" in k else v) for k, v in plan.env.items()}
    return data


def serve_command(
    ctx: typer.Context,
    model: ModelOpt = None,
    device: DeviceOpt = Device.auto,
    gpu_memory: GPUMemoryOpt = None,
    compute_capability: CapabilityOpt = None,
    gpus: GPUsOpt = 1,
    quantization: QuantOpt = Quant.auto,
    max_pixels: MaxPixelsOpt = None,
    answer_tokens: AnswerOpt = None,
    gpu_memory_utilization: UtilOpt = None,
    host: HostOpt = "0.0.0.0",
    port: PortOpt = 8000,
    served_model_name: ServedOpt = None,
    api_key: KeyOpt = None,
    docker: Annotated[bool, typer.Option("--docker", help="Run the official vLLM image.")] = False,
    image: ImageOpt = None,
    vllm_command: Annotated[
        str | None,
        typer.Option(
            "--vllm-command",
            help="How to start vLLM (default: vllm serve).",
            envvar="DOTSOCR_VLLM_COMMAND",
        ),
    ] = None,
    restart: Annotated[bool, typer.Option(help="Restart vLLM after a crash.")] = True,
    max_restarts: Annotated[int, typer.Option(min=0, help="Give up after this many.")] = 5,
    restart_delay: Annotated[
        float, typer.Option(min=0.0, help="First restart delay (doubles each time).")
    ] = 2.0,
    log: Annotated[Path | None, typer.Option("--log", help="Also write vLLM's log here.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Only our progress lines.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command only.")] = False,
) -> None:
    """Start vLLM with the plan; extra flags after the options go to vLLM and win.

    Ctrl-C stops it cleanly. Exit 0 when stopped, 1 when it kept crashing.
    """
    import dataclasses
    import os
    import shlex
    import signal

    from dotsocr.serve import launcher

    plan = _plan(
        model=model, device=device, gpu_memory=gpu_memory, compute_capability=compute_capability,
        gpus=gpus, quantization=quantization, max_pixels=max_pixels, answer_tokens=answer_tokens,
        gpu_memory_utilization=gpu_memory_utilization, multi_gpu=MultiGPU.data_parallel,
        host=host, port=port, served_model_name=served_model_name, api_key=api_key,
    )  # fmt: skip
    plan = plan.with_flags(list(ctx.args))
    # The user's environment wins over the plan's defaults; a key given as a flag wins over both.
    env = {k: v for k, v in plan.env.items() if k not in os.environ or k == "VLLM_API_KEY"}
    local = _local_weights(plan.model)
    offline = local is not None
    if offline:
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if not docker:  # a container mounts the whole cache and resolves the id in it
            plan = dataclasses.replace(plan, model=str(local))
    say = _reporter()
    if docker:
        from dotsocr.serve.docker import IMAGE, docker_run_argv

        argv = docker_run_argv(plan, image=image or IMAGE, offline=offline)
    else:
        command = shlex.split(vllm_command) if vllm_command else launcher.default_command()
        argv = launcher.vllm_argv(command, plan)
    if dry_run:
        typer.echo(" ".join(shlex.quote(a) for a in argv))
        return
    say(f"plan: {plan.card.describe() if plan.memory else 'CPU'}; `dotsocr plan` explains it")
    if offline:
        say(f"weights found whole in {local}: serving offline")
    url = plan.url
    if docker:
        raise typer.Exit(_run_docker(argv, env, url, api_key, say))
    supervisor = launcher.Supervisor(
        argv=argv,
        env=env,
        url=url,
        options=launcher.SupervisorOptions(
            restart=restart, max_restarts=max_restarts, backoff=restart_delay, echo=not quiet,
            log=log,
        ),
        report=say,
        sink=sys.stderr,
        api_key=api_key or os.environ.get("VLLM_API_KEY"),
    )  # fmt: skip
    signal.signal(signal.SIGINT, supervisor.stop)
    signal.signal(signal.SIGTERM, supervisor.stop)
    raise typer.Exit(supervisor.run())


def _reporter():
    def say(line: str) -> None:
        typer.secho(f"dotsocr: {line}", err=True, fg=typer.colors.CYAN)

    return say


def _local_weights(model: str) -> Path | None:
    """The folder holding the model's weights whole on this machine, if any, so that vLLM
    serves it without the network (a cached hub id becomes its snapshot folder: vLLM
    offline would otherwise resolve refs/main, which may be the incomplete revision)."""
    from dotsocr.errors import DotsOCRError
    from dotsocr.serve.cache import local_path

    try:
        return local_path(model)
    except DotsOCRError:
        return None


def _run_docker(argv: list[str], env: dict[str, str], url: str, api_key, say) -> int:
    """Start the container (Docker restarts it after crashes), then wait for it to be ready."""
    import os
    import subprocess

    from dotsocr.errors import ServeError
    from dotsocr.serve.ready import Outcome, wait_ready

    try:
        started = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
    except FileNotFoundError:
        raise ServeError("docker is not found: install Docker and the NVIDIA toolkit") from None
    if started.returncode:
        message = (started.stderr or started.stdout).strip().splitlines()
        raise ServeError(f"docker run failed: {message[-1] if message else started.returncode}")
    container = started.stdout.strip()[:12]
    say(f"container {container} started; follow it with `docker logs -f {container}`")
    result = wait_ready(url, api_key=api_key, timeout=1800)
    say(f"{result.detail} after {result.seconds:.0f} s")
    return 0 if result.outcome is Outcome.READY else 1


def compose_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write it.")] = Path(
        "docker-compose.yml"
    ),
    model: ModelOpt = None,
    gpu_memory: GPUMemoryOpt = None,
    compute_capability: CapabilityOpt = None,
    gpus: GPUsOpt = 1,
    quantization: QuantOpt = Quant.auto,
    max_pixels: MaxPixelsOpt = None,
    answer_tokens: AnswerOpt = None,
    gpu_memory_utilization: UtilOpt = None,
    multi_gpu: MultiOpt = MultiGPU.data_parallel,
    port: PortOpt = 8000,
    served_model_name: ServedOpt = None,
    api_key: KeyOpt = None,
    image: ImageOpt = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never reach the hub (weights already cached).")
    ] = False,
    gateway: Annotated[
        bool | None,
        typer.Option(
            "--gateway/--no-gateway",
            help="Also the REST gateway (built from this folder's Dockerfile), Prometheus and "
            "Grafana (default: on, unless one server per GPU).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            help="Read pages in this many `dotsocr worker` replicas sharing the jobs through "
            "a PostgreSQL service; the gateway only takes and serves jobs (needs the gateway).",
        ),
    ] = 0,
) -> None:
    """Write a docker-compose.yml running vLLM with the plan, a GPU reservation and a health
    check, and in front of it the gateway with Prometheus and Grafana. Plan for the
    deployment card with --gpu-memory when this machine has none; run it in the dotsocr
    source tree, which holds the gateway's Dockerfile and deploy/."""
    import os

    import yaml

    from dotsocr.errors import ConfigError
    from dotsocr.output import write_atomic
    from dotsocr.serve.docker import IMAGE, add_gateway, compose

    if workers and gateway is False:
        # The workers share the gateway's job store and its volume: nothing to read alone.
        raise ConfigError("--workers needs the gateway: drop --no-gateway or --workers")

    plan = _plan(
        model=model, device=Device.auto, gpu_memory=gpu_memory,
        compute_capability=compute_capability, gpus=gpus, quantization=quantization,
        max_pixels=max_pixels, answer_tokens=answer_tokens,
        gpu_memory_utilization=gpu_memory_utilization, multi_gpu=multi_gpu, host="0.0.0.0",
        port=port, served_model_name=served_model_name, api_key=api_key,
    )  # fmt: skip
    document = compose(plan, image=image or IMAGE, offline=offline)
    header = (
        "# Written by `dotsocr compose`; the reasons for each vLLM flag: `dotsocr plan`.\n"
        "# Start: docker compose up -d; watch: dotsocr monitor; check: dotsocr health\n"
    )
    if gateway is not False:
        source = Path(os.path.relpath(Path.cwd(), output.resolve().parent)).as_posix()
        add_gateway(document, plan, source=source, workers=workers)
        header += (
            "# Gateway: http://localhost:8080/docs; Grafana: http://localhost:3000 (admin, "
            "password GRAFANA_ADMIN_PASSWORD or admin); Prometheus: http://localhost:9090\n"
        )
        if workers:
            header += (
                f"# Workers: {workers} x `dotsocr worker` (more: docker compose up -d --scale "
                "worker=N); the jobs in PostgreSQL:\n# user and database dotsocr, password "
                "POSTGRES_PASSWORD or dotsocr (URL-safe; set it before the first start)\n"
            )
        if not (Path.cwd() / "Dockerfile").is_file():
            typer.echo(
                f"note: no Dockerfile in {Path.cwd()}: run this in the dotsocr source tree, or "
                f"point the gateway's build: in {output} at it",
                err=True,
            )
    write_atomic(output, (header + yaml.safe_dump(document, sort_keys=False)).encode())
    typer.echo(f"wrote {output} ({', '.join(document['services'])})")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
    app.command(
        "serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )(serve_command)
    app.command("compose")(compose_command)
