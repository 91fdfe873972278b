"""Progress for ``dotsocr ocr``: a rich bar on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dotsocr.layout import PageStatus


class LineReporter:
    """One line per document and per note, for logs and pipes."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.failed_pages = 0

    def note(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)

    def started(self, source: str, pages: int) -> None:
        pass

    def page(self, source: str, status: PageStatus) -> None:
        self.failed_pages += status is PageStatus.FAILED

    def document(self, source: str, status: str) -> None:
        self.console.print(f"{status}: {source}", markup=False, highlight=False)


class BarReporter(LineReporter):
    """A live bar: pages done of total, pages/s, time left, failures."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.bar = Progress(
            TextColumn("[bold]OCR"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("pages"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[failed]}"),
            console=console,
            transient=False,
        )
        self.task = self.bar.add_task("ocr", total=0, rate="", failed="")

    def started(self, source: str, pages: int) -> None:
        self.bar.update(self.task, total=(self.bar.tasks[0].total or 0) + pages)

    def page(self, source: str, status: PageStatus) -> None:
        super().page(source, status)
        task = self.bar.tasks[0]
        speed = task.speed or 0.0
        failed = f"[red]{self.failed_pages} failed" if self.failed_pages else ""
        self.bar.update(self.task, advance=1, rate=f"{speed:.2f}/s", failed=failed)


@contextmanager
def make_reporter() -> Iterator[LineReporter]:
    console = Console(file=sys.stderr, soft_wrap=True)
    if console.is_terminal:
        reporter = BarReporter(console)
        with reporter.bar:
            yield reporter
    else:
        yield LineReporter(console)
