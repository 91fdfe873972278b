"""``dotsocr monitor``: a live view of a vLLM server's load, throughput, latency and hangs."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from dotsocr.defaults import SERVER_URL

if TYPE_CHECKING:
    from rich.console import RenderableType

    from dotsocr.serve.metrics import Monitor, Quantiles, Reading


def register(app: typer.Typer) -> None:
    """Add this module's commands to the CLI."""
    app.command()(monitor)


def monitor(
    server: Annotated[
        str,
        typer.Option("--server", help="vLLM server base URL.", envvar="DOTSOCR_SERVER_URL"),
    ] = SERVER_URL,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds between refreshes.")
    ] = 2.0,
    iterations: Annotated[
        int | None,
        typer.Option(
            "--iterations", min=1, help="Stop after this many refreshes (default: never)."
        ),
    ] = None,
    stall_seconds: Annotated[
        float,
        typer.Option(
            "--stall-seconds",
            min=0,
            help="Warn when requests run but no token comes for this long.",
        ),
    ] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per refresh.")] = False,
) -> None:
    """Watch a vLLM server: load, KV cache, tokens/s, pages/s, latency, preemptions, hangs.

    A live dashboard on a terminal; piped, or with --json, one line per refresh.
    """
    from dotsocr.errors import EngineUnavailable
    from dotsocr.serve.metrics import Monitor

    last: Reading | None = None
    try:
        with Monitor(server, stall_seconds=stall_seconds) as watcher:
            readings = _readings(watcher, interval, iterations)
            if as_json or not sys.stdout.isatty():
                for last in readings:
                    typer.echo(json.dumps(last.to_dict()) if as_json else _line(last))
            else:
                last = _live(readings, interval)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    if iterations is not None and watcher.readings == 0:
        reason = f": {last.error}" if last is not None and last.error else ""
        raise EngineUnavailable(f"no metrics from {watcher.url} in {iterations} tries{reason}")


def _readings(watcher: Monitor, interval: float, iterations: int | None) -> Iterator[Reading]:
    """Poll every ``interval`` seconds from the start of the last poll. A slow poll is not
    made up for with a quick one: a window of a few milliseconds gives wild rates."""
    done = 0
    while iterations is None or done < iterations:
        began = time.monotonic()
        yield watcher.poll()
        done += 1
        if iterations is None or done < iterations:
            time.sleep(max(0.0, began + interval - time.monotonic()))


def _live(readings: Iterator[Reading], interval: float) -> Reading | None:
    from rich.console import Console
    from rich.live import Live

    last = None
    with Live(console=Console(), auto_refresh=False) as live:
        for last in readings:
            live.update(_dashboard(last, interval), refresh=True)
    return last


def _dashboard(reading: Reading, interval: float) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    state = (
        Text(f"up {_duration(reading.for_seconds)}", style="green")
        if reading.up
        else Text(f"unreachable for {_duration(reading.for_seconds)}", style="bold red")
    )
    title = Text.assemble(
        ("dotsocr monitor  ", "bold"),
        reading.url,
        "  ",
        state,
        (f"  (every {interval:g} s, Ctrl-C to stop)", "dim"),
    )
    parts: list[RenderableType] = [title]
    snap, rates = reading.snapshot, reading.rates
    if reading.error:
        parts.append(Text(reading.error, style="red"))
    if snap is not None and rates is not None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("requests", f"running {_n(snap.running)}   waiting {_n(snap.waiting)}")
        table.add_row("KV cache", _percent(snap.kv_cache_usage))
        table.add_row(
            "tokens/s",
            f"prompt {_n(rates.prompt_tokens_per_s, '.1f')}   "
            f"generation {_n(rates.generation_tokens_per_s, '.1f')}",
        )
        table.add_row("pages/s", _n(rates.pages_per_s, ".2f"))
        table.add_row("TTFT", _quantiles(rates.ttft))
        table.add_row("end to end", _quantiles(rates.e2e))
        table.add_row(
            "preemptions",
            f"{_n(rates.preemptions)} {_window(rates.seconds)}   total {_n(snap.preemptions)}",
        )
        table.add_row("finished", f"{_n(snap.requests_finished)} requests")
        parts.append(table)
    if reading.warning:
        parts.append(Text(f"HANG? {reading.warning}", style="bold red"))
    return Group(*parts)


def _line(reading: Reading) -> str:
    """One plain-text line per refresh, for logs and pipes."""
    stamp = time.strftime("%H:%M:%S", time.localtime(reading.time))
    if not reading.up:
        return f"{stamp} unreachable for {_duration(reading.for_seconds)}: {reading.error}"
    snap, rates = reading.snapshot, reading.rates
    assert snap is not None and rates is not None
    text = (
        f"{stamp} up {_duration(reading.for_seconds)}"
        f"  running {_n(snap.running)} waiting {_n(snap.waiting)}"
        f"  kv {_percent(snap.kv_cache_usage)}"
        f"  prompt {_n(rates.prompt_tokens_per_s, '.1f')} tok/s"
        f"  gen {_n(rates.generation_tokens_per_s, '.1f')} tok/s"
        f"  pages {_n(rates.pages_per_s, '.2f')}/s"
        f"  ttft {_quantiles(rates.ttft)}"
        f"  e2e {_quantiles(rates.e2e)}"
        f"  preempted {_n(rates.preemptions)} {_window(rates.seconds)}"
        f"  finished {_n(snap.requests_finished)}"
    )
    return f"{text}  WARNING: {reading.warning}" if reading.warning else text


def _n(value: float | None, spec: str = "g") -> str:
    return "-" if value is None else format(value, spec)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _quantiles(q: Quantiles) -> str:
    """p50/p90/p99 in seconds; '-' where no request finished in the window."""
    return "p50/p90/p99 " + "/".join(_n(v, ".3f") for v in (q.p50, q.p90, q.p99)) + " s"


def _window(seconds: float | None) -> str:
    return "since start" if seconds is None else f"in {seconds:.1f} s"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
