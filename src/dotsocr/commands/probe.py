"""``dotsocr wait`` and ``dotsocr health``: is the model server up, and does it read?"""

from __future__ import annotations

from typing import Annotated

import typer

from dotsocr.defaults import SERVER_URL

ServerOpt = Annotated[
    str,
    typer.Option("--server", help="Model server URL.", envvar="DOTSOCR_SERVER_URL"),
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Served model name to expect (default: any).")
]
KeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="Server API key.", envvar="DOTSOCR_API_KEY")
]


def wait_command(
    server: ServerOpt = SERVER_URL,
    timeout: Annotated[float, typer.Option(min=0.0, help="Seconds to wait at most.")] = 600.0,
    model: ModelOpt = None,
    api_key: KeyOpt = None,
    ocr: Annotated[
        bool, typer.Option("--ocr", help="Also wait until a tiny OCR request completes.")
    ] = False,
    pid: Annotated[
        int | None, typer.Option("--pid", help="The server's process: stop waiting if it exits.")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between looks.")] = 1.0,
) -> None:
    """Wait until the server answers /health and lists the model.

    Exit codes: 0 ready, 3 timed out (it answered but was not ready), 4 refused (nothing
    listened), 5 dead (engine dead, or --pid exited).
    """
    import sys

    from rich.console import Console

    from dotsocr.serve.ready import Outcome, wait_ready

    console = Console(stderr=True)
    with console.status(f"waiting for {server}") as status:

        def tick(elapsed: float, detail: str) -> None:
            status.update(f"waiting for {server}: {detail} ({elapsed:.0f} s)")
            if not console.is_terminal:
                print(f"{elapsed:6.1f} s  {detail}", file=sys.stderr, flush=True)

        result = wait_ready(
            server, timeout=timeout, model=model, api_key=api_key, ocr=ocr, pid=pid,
            poll=interval, on_tick=tick,
        )  # fmt: skip
    if result.outcome is Outcome.READY:
        models = ", ".join(f"{name} (max_model_len {n})" for name, n in result.models.items())
        typer.echo(f"ready after {result.seconds:.1f} s: {models}; {result.detail}")
    else:
        what = {
            Outcome.TIMEOUT: f"not ready after {result.seconds:.0f} s",
            Outcome.REFUSED: f"nothing answered at {server} in {result.seconds:.0f} s",
            Outcome.DEAD: "the server is dead",
        }[result.outcome]
        typer.echo(f"error: {what}: {result.detail}", err=True)
    raise typer.Exit(result.outcome.value)


def health_command(
    server: ServerOpt = SERVER_URL,
    model: ModelOpt = None,
    api_key: KeyOpt = None,
    ocr: Annotated[bool, typer.Option(help="Send a real OCR request on a test image.")] = True,
    check_text: Annotated[
        bool, typer.Option(help="Require the test text back (off for random-weight servers).")
    ] = True,
    timeout: Annotated[float, typer.Option(min=1.0, help="Seconds for the OCR request.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One-shot report: reachable, ready, models, version, metrics, OCR latency, verdict.

    Exit codes: 0 healthy, 1 down, 3 degraded (up, but the OCR request failed or misread).
    """
    from dotsocr.serve.health import check

    report = check(
        server, api_key=api_key, model=model, ocr=ocr, expect_text=check_text, timeout=timeout
    )
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        typer.echo(_render(report))
    raise typer.Exit(report.exit_code)


def _render(report) -> str:
    lines = [
        f"server     {report.url}",
        f"reachable  {'yes' if report.reachable else 'no'}",
        f"ready      {'yes' if report.ready else 'no'} (/health: {report.health_status or '-'})",
    ]
    if report.version:
        lines.append(f"version    {report.version}")
    for name, length in report.models.items():
        lines.append(f"model      {name} (max_model_len {length or 'unknown'})")
    if report.metrics:
        shown = ", ".join(f"{k} {v}" for k, v in report.metrics.items() if v is not None)
        lines.append(f"metrics    {shown}")
    if report.ocr and report.ocr.error is None:
        lines.append(
            f"ocr        {report.ocr.seconds:.2f} s, {report.ocr.prompt_tokens} tokens in, "
            f"{report.ocr.completion_tokens} out: {(report.ocr.text or '')[:60]!r}"
        )
    for problem in report.problems:
        lines.append(f"problem    {problem}")
    lines.append(f"verdict    {report.verdict}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("wait")(wait_command)
    app.command("health")(health_command)
