"""Inputs that are not regular files: one clear reason each, never a hang or a traceback."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from dotsocr.document import _read_head, open_document
from dotsocr.document.sources import expand_paths, input_problem, walk_folder
from dotsocr.errors import DotsOCRError, NotADocument

BOUND_S = 60  # generous: every call here should finish at once; this only stops a hang


def finishes(call: Callable[[], object]) -> object:
    """The result (or the exception) of ``call``, failing the test if it does not finish."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(BOUND_S)
    assert not worker.is_alive(), f"call still running after {BOUND_S}s (blocked?)"
    return outcome[0]


def refused(source: Path) -> NotADocument:
    """The error ``open_document`` raises for ``source``, with no hang."""
    outcome = finishes(lambda: open_document(source))
    assert isinstance(outcome, NotADocument), outcome
    return outcome


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "white").save(path)
    return path


@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    path = tmp_path / "scan.pdf"
    os.mkfifo(path)
    yield path
    # Should a regression leave a reader blocked in open(), a writer releases it.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


@pytest.fixture
def loop(tmp_path):
    a, b = tmp_path / "a.pdf", tmp_path / "b.pdf"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def first_block_device() -> Path | None:
    try:
        entries = sorted(os.scandir("/dev"), key=lambda entry: entry.name)
    except OSError:
        return None
    for entry in entries:
        try:
            if stat.S_ISBLK(entry.stat(follow_symlinks=False).st_mode):
                return Path(entry.path)
        except OSError:
            continue
    return None


def test_a_readable_file_and_a_link_to_it_have_no_problem(tmp_path):
    page = png(tmp_path / "page.png")
    link = tmp_path / "link.png"
    link.symlink_to(page)
    assert input_problem(page) is None
    assert input_problem(link) is None
    with open_document(link) as doc:
        assert doc.page_count == 1


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.pdf"
    assert input_problem(missing) == "no such file: check the path"
    assert input_problem(tmp_path / "page.png" / "x.pdf") == "no such file: check the path"
    assert str(refused(missing)) == f"{missing}: no such file: check the path"


def test_broken_symlink_says_to_fix_the_link(tmp_path):
    link = tmp_path / "scan.pdf"
    link.symlink_to(tmp_path / "gone.pdf")
    assert input_problem(link).startswith("broken symlink:")
    assert "fix or remove the link" in refused(link).reason


def test_fifo_is_refused_without_blocking(fifo):
    reason = input_problem(fifo)
    assert reason.startswith("is a named pipe (FIFO), not a file:")
    assert "'-'" in reason
    assert refused(fifo).reason == reason


def test_fifo_swapped_in_after_the_check_still_does_not_block(fifo):
    # _read_head opens without blocking and checks what it opened, so even a file
    # replaced by a pipe between the stat and the open cannot hang it.
    outcome = finishes(lambda: _read_head(fifo, "swapped.pdf"))
    assert isinstance(outcome, NotADocument)
    assert "named pipe" in outcome.reason


def test_symlink_loop(loop):
    assert input_problem(loop) == "symlink loop: the link leads back to itself; fix the link"
    assert refused(loop).reason.startswith("symlink loop:")
    assert input_problem(loop / "inside.pdf").startswith("symlink loop:")


@pytest.mark.parametrize("name", ["/dev/null", "/dev/zero", "/dev/urandom"])
def test_character_device_is_refused_unread(name):
    device = Path(name)
    if not device.exists() or not stat.S_ISCHR(device.stat().st_mode):
        pytest.skip(f"no {name} here")
    reason = input_problem(device)
    assert reason == "is a device, not a file: pass a PDF or image file"
    assert refused(device).reason == reason


def test_block_device_is_refused():
    device = first_block_device()
    if device is None:
        pytest.skip("no block device in /dev")
    assert input_problem(device) == "is a device, not a file: pass a PDF or image file"


def test_socket_is_refused(tmp_path):
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no unix sockets on this platform")
    path = tmp_path / "s.png"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            server.bind(str(path))
        except OSError as exc:  # a very long temporary path
            pytest.skip(f"cannot bind a unix socket here: {exc}")
        reason = input_problem(path)
        assert reason == "is a socket, not a file: pass a PDF or image file"
        assert refused(path).reason == reason
    finally:
        server.close()


def test_folder_is_a_problem_for_one_document(tmp_path):
    assert input_problem(tmp_path) == "is a folder: pass the files inside it"
    assert refused(tmp_path).reason == "is a folder: pass the files inside it"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file_is_permission_denied(tmp_path):
    page = png(tmp_path / "page.png")
    page.chmod(0)
    try:
        assert input_problem(page) == "permission denied: check the file's access rights"
        assert refused(page).reason.startswith("permission denied")
    finally:
        page.chmod(0o644)


def test_problem_never_names_the_path(tmp_path, fifo, loop):
    for path in (tmp_path / "nope.pdf", fifo, loop, tmp_path):
        assert str(tmp_path) not in input_problem(path)
        assert path.name not in input_problem(path)


def test_directory_cycle_yields_each_file_once(tmp_path):
    top = tmp_path / "scans"
    png(top / "a.png")
    png(top / "sub" / "b.png")
    (top / "sub" / "up").symlink_to("..")  # sub/up -> scans
    (top / "self").symlink_to(".")  # self -> scans
    (top / "sub" / "deeper").symlink_to(top)  # absolute, to the top again
    found = finishes(lambda: [p.relative_to(top).as_posix() for p in walk_folder(top)])
    assert found == ["a.png", "sub/b.png"]


def test_symlinked_folder_elsewhere_is_followed(tmp_path):
    top, elsewhere = tmp_path / "scans", tmp_path / "archive"
    png(top / "a.png")
    png(elsewhere / "c.png")
    (elsewhere / "back").symlink_to(top)  # and a cycle through both
    (top / "old").symlink_to(elsewhere)
    found = finishes(lambda: [p.relative_to(top).as_posix() for p in walk_folder(top)])
    assert found == ["a.png", "old/c.png"]


def test_folder_reached_directly_and_through_a_link_is_read_under_its_own_path(tmp_path):
    top = tmp_path / "scans"
    png(top / "z" / "c.png")
    (top / "a-shortcut").symlink_to("z")  # sorts before z, still not the path used
    found = [p.relative_to(top).as_posix() for p in walk_folder(top)]
    assert found == ["z/c.png"]


def test_walk_passes_over_what_is_not_a_regular_file(tmp_path, fifo, loop):
    # fifo (scan.pdf) and loop (a.pdf -> b.pdf -> a.pdf) live in tmp_path too
    png(tmp_path / "page.png")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(tmp_path / "s.png"))
        (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
        found = finishes(lambda: [p.name for p in walk_folder(tmp_path)])
    finally:
        server.close()
    assert found == ["page.png"]


def test_expand_paths_puts_one_clear_error_in_place_of_each_bad_input(tmp_path, fifo, loop):
    good = png(tmp_path / "pages" / "good.png")
    cycle = tmp_path / "pages" / "again"
    cycle.symlink_to(".")
    missing = tmp_path / "missing.pdf"
    named = [missing, fifo, loop, tmp_path / "pages", Path("/dev/zero")]
    outcome = finishes(lambda: list(expand_paths(named)))
    errors = [str(item) for item in outcome if isinstance(item, DotsOCRError)]
    assert [item for item in outcome if isinstance(item, Path)] == [good]
    assert errors[0] == f"{missing}: no such file: check the path"
    assert errors[1].startswith(f"{fifo}: is a named pipe (FIFO)")
    assert errors[2].startswith(f"{loop}: symlink loop")
    if Path("/dev/zero").exists():
        assert errors[3] == "/dev/zero: is a device, not a file: pass a PDF or image file"
    assert all("\n" not in line for line in errors)
