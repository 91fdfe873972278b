"""Writing results to disk: every file appears whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from dotsocr.errors import OutputError
from dotsocr.layout import DocumentResult, PageResult, PageStatus

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once, at import, while no other thread can be creating files


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write through a temporary file in the same folder, then rename it over the target.

    A symlink is followed, so the file it points to is replaced; a target that is not a
    regular file (a device, a pipe) is written in place. New files get the usual
    permissions (0666 less the umask), not the temporary file's 0600.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    target = Path(os.path.realpath(path))
    try:
        if target.exists() and not target.is_file():
            with target.open("wb") as fh:
                fh.write(payload)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = _mode_for(target)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def _mode_for(target: Path) -> int:
    try:
        return stat.S_IMODE(target.stat().st_mode)  # keep an existing file's permissions
    except FileNotFoundError:
        return 0o666 & ~_UMASK


MARKERS = ".dotsocr"  # the folder of completion markers inside an output folder


class ResultWriter:
    """Writes each document's outputs into a folder, page by page, and marks it done.

    Picture crops go to ``NAME_files/`` and annotated pages (with ``png``) to
    ``NAME_pages/`` as their pages finish, while the pixels are at hand; then the page's
    result is appended to the document's journal (``.dotsocr/NAME.pages.jsonl``), so a
    run killed half-way through a document reads only its other pages when run again.
    ``NAME.md`` and ``NAME.json`` are written when the document is complete (running
    headers are known only then). A marker with the settings' fingerprint is written last,
    and only when no page failed, so a rerun skips exactly the documents whose outputs are
    complete for the same settings and reads the failed pages of the others again.
    """

    def __init__(
        self, folder: Path, formats: frozenset[str], fingerprint: str, include_furniture: bool
    ) -> None:
        self.folder = folder
        self.formats = formats
        self.fingerprint = fingerprint
        self.include_furniture = include_furniture

    def clean_leftovers(self) -> int:
        """Remove temporary files that a killed run left behind; return how many."""
        removed = 0
        if self.folder.is_dir():
            for leftover in self.folder.rglob(".*.part"):
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    def done_pages(self, name: str, source_stamp: str) -> int | None:
        """How many pages a document done before with these settings has (its outputs all
        there), or None when it is not done."""
        marker = self._marker(name)
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        outputs = [self.folder / p for p in recorded.get("outputs", [])]
        if recorded.get("fingerprint") != self._stamp(source_stamp):
            return None
        if not all(p.is_file() for p in outputs):
            return None
        return int(recorded.get("pages", 0))

    def kept_pages(self, name: str, source_stamp: str) -> dict[int, PageResult]:
        """The pages an earlier run read for these settings and this input, by index: those
        that neither failed nor fell back to another engine (both are read again)."""
        try:
            data = self._journal(name).read_bytes()
        except OSError:
            return {}
        lines = [line.decode("utf-8", "replace") for line in data.splitlines()]
        if not lines or _json_line(lines[0]) != {"fingerprint": self._stamp(source_stamp)}:
            return {}
        kept: dict[int, PageResult] = {}
        for line in lines[1:]:  # a line cut by a kill is not valid JSON: that page is read again
            data = _json_line(line)
            try:
                page = PageResult.model_validate(data)
            except ValueError:
                continue
            if _final(page):
                kept[page.index] = page
            else:
                kept.pop(page.index, None)
        return kept

    def start(self, name: str, source_stamp: str, kept: dict[int, PageResult]) -> None:
        """Begin the document's journal afresh, with the pages kept from the last one."""
        lines = [json.dumps({"fingerprint": self._stamp(source_stamp)})]
        lines += [page.model_dump_json() for page in kept.values()]
        write_atomic(self._journal(name), "\n".join(lines) + "\n")

    def page(self, name: str, result: PageResult, image: Image.Image | None) -> None:
        """Write the page's picture crops and annotated image while its pixels are here,
        then record the page in the document's journal."""
        self._page_files(name, result, image)
        try:
            with self._journal(name).open("a", encoding="utf-8") as journal:
                journal.write(result.model_dump_json() + "\n")
                journal.flush()
                os.fsync(journal.fileno())
        except OSError as exc:
            raise OutputError(
                f"cannot write {self._journal(name)}: {exc.strerror or exc}"
            ) from None

    def _page_files(self, name: str, result: PageResult, image: Image.Image | None) -> None:
        from dotsocr.render import render_annotated, render_markdown, to_png_bytes

        if image is None:
            return
        if "md" in self.formats:
            doc = DocumentResult(source=name, pages=[result])
            crops = render_markdown(doc, page_images={result.index: image}, pictures="files")
            for asset, data in crops.assets.items():
                write_atomic(self.folder / f"{name}_files" / asset, data)
        if "png" in self.formats:
            drawn = render_annotated(result, image)
            write_atomic(self._page_png(name, result.index), to_png_bytes(drawn))

    def document(self, name: str, result: DocumentResult, source_stamp: str) -> list[Path]:
        """Write the document's Markdown, JSON and text, then, when no page failed, its
        completion marker in place of its journal (a rerun reads failed and fallen-back
        pages again)."""
        from dotsocr.render import render_json, render_markdown, render_text

        written: list[Path] = []
        if "md" in self.formats:
            markdown = render_markdown(
                result,
                include_furniture=self.include_furniture,
                pictures="linked",
                asset_prefix=quote(f"{Path(name).name}_files/"),
            )
            written.append(self._write(f"{name}.md", markdown.text))
        if "json" in self.formats:
            written.append(self._write(f"{name}.json", render_json(result)))
        if "txt" in self.formats:
            text = render_text(result, include_furniture=self.include_furniture)
            written.append(self._write(f"{name}.txt", text))
        if "png" in self.formats:
            written += [self._page_png(name, p.index) for p in result.pages if p.width]
        if not all(_final(page) for page in result.pages):  # its journal stays for a rerun
            self._marker(name).unlink(missing_ok=True)
            return written
        outputs = [str(p.relative_to(self.folder)) for p in written]
        marker = {
            "fingerprint": self._stamp(source_stamp), "outputs": outputs,
            "pages": len(result.pages),
        }  # fmt: skip
        write_atomic(self._marker(name), json.dumps(marker, indent=1))
        self._journal(name).unlink(missing_ok=True)
        return written

    def _write(self, relative: str, text: str) -> Path:
        path = self.folder / relative
        write_atomic(path, text)
        return path

    def _page_png(self, name: str, index: int) -> Path:
        return self.folder / f"{name}_pages" / f"page-{index + 1:04d}.png"

    def _marker(self, name: str) -> Path:
        return self.folder / MARKERS / f"{name}.done.json"

    def _journal(self, name: str) -> Path:
        return self.folder / MARKERS / f"{name}.pages.jsonl"

    def _stamp(self, source_stamp: str) -> str:
        return hashlib.sha256(f"{self.fingerprint}|{source_stamp}".encode()).hexdigest()


def _final(page: PageResult) -> bool:
    """A page a rerun keeps: it neither failed nor fell back to another engine."""
    fell_back = page.reading is not None and page.reading.fallback
    return page.status is not PageStatus.FAILED and not fell_back


def _json_line(line: str) -> object:
    try:
        return json.loads(line)
    except ValueError:
        return None
