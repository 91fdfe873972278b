"""Expanding the paths a user names into the files to read, and refusing what is not a file."""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from dotsocr.errors import NotADocument

DOCUMENT_SUFFIXES = frozenset(
    {".pdf", ".png", ".jpg", ".jpeg", ".jpe", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)

NO_SUCH_FILE = "no such file: check the path"
IS_A_FOLDER = "is a folder: pass the files inside it"
PERMISSION_DENIED = "permission denied: check the file's access rights"


def input_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as one document file, or None when it can.

    None means a regular file (or a symlink to one) that this process may read. Any
    other answer is one short reason that says what to do, without the path: callers
    write ``f"{path}: {reason}"`` (``NotADocument(str(path), reason)`` does). A folder
    gets ``"is a folder: pass the files inside it"``; callers that expand folders check
    for them first and walk them with ``walk_folder``.

    The path is never opened, only stat'ed, so a named pipe cannot block and a device
    is not touched. The reasons:

    - ``no such file: check the path``
    - ``broken symlink: the file it points to is missing; fix or remove the link``
    - ``symlink loop: the link leads back to itself; fix the link``
    - ``permission denied: check the file's access rights``
    - ``is a folder: pass the files inside it``
    - ``is a named pipe (FIFO), not a file: save the data to a file first, or pipe it
      to dotsocr with '-' as the input``
    - ``is a device, not a file: pass a PDF or image file``
    - ``is a socket, not a file: pass a PDF or image file``
    - ``is not a regular file: pass a PDF or image file``
    - ``cannot be read (<system message>): check the path``
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return "broken symlink: the file it points to is missing; fix or remove the link"
        return NO_SUCH_FILE
    except NotADirectoryError:  # a file named as if it were a folder: "a.pdf/b.pdf"
        return NO_SUCH_FILE
    except PermissionError:
        return PERMISSION_DENIED
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop: the link leads back to itself; fix the link"
        return f"cannot be read ({exc.strerror}): check the path"
    except ValueError:  # a NUL character in the path
        return "is not a valid path (it contains a NUL character): check the path"
    if stat.S_ISDIR(mode):
        return IS_A_FOLDER
    if stat.S_ISFIFO(mode):
        return (
            "is a named pipe (FIFO), not a file: save the data to a file first, "
            "or pipe it to dotsocr with '-' as the input"
        )
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file: pass a PDF or image file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file: pass a PDF or image file"
    if not stat.S_ISREG(mode):
        return "is not a regular file: pass a PDF or image file"
    if not os.access(path, os.R_OK):
        return PERMISSION_DENIED
    return None


def walk_folder(folder: Path) -> Iterator[Path]:
    """Document files under ``folder``, recursively and sorted; hidden ones skipped.

    Only regular files (or symlinks to them) with a document suffix are yielded, each
    as a path under ``folder``; pipes, devices, sockets and broken or looping links are
    passed over without being opened, and so are folders that cannot be listed.

    Symlinked folders are followed, but no folder is entered twice (folders are told
    apart by device and inode), so a link to a parent or to itself ends the walk
    instead of looping. A folder reachable both directly and through a link is read
    under its direct path: links are followed only after the plain tree is walked.
    """
    found: list[Path] = []
    entered: set[tuple[int, int]] = set()
    plain: deque[Path] = deque([folder])  # folders reached without a symlink
    linked: deque[Path] = deque()  # symlinked folders, entered once the plain ones are done
    while plain or linked:
        current = plain.popleft() if plain else linked.popleft()
        try:
            info = os.stat(current)
            if (info.st_dev, info.st_ino) in entered:
                continue
            entered.add((info.st_dev, info.st_ino))
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            child = current / entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    plain.append(child)
                elif entry.is_symlink() and entry.is_dir():
                    linked.append(child)
                elif child.suffix.lower() in DOCUMENT_SUFFIXES and entry.is_file():
                    found.append(child)
            except OSError:  # a looping link, or one we may not follow
                continue
    yield from sorted(found)


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def expand_paths(paths: Iterable[Path]) -> Iterator[Path | NotADocument]:
    """Files as given; folders walked recursively for document suffixes, in sorted order.

    A named file is read whatever its name (its type comes from its bytes); inside a
    folder only files with a document suffix are taken, and hidden ones are skipped. A
    named path that is not a readable file (missing, a pipe, a device, a looping link)
    and a folder with no document file each yield an error in their place, so that
    nothing is silently passed over and one bad input does not stop the rest.
    """
    for path in paths:
        if not _is_folder(path):
            problem = input_problem(path)
            yield NotADocument(str(path), problem) if problem else path
            continue
        found = False
        for child in walk_folder(path):
            found = True
            yield child
        if not found:
            yield NotADocument(str(path), "no PDF or image files in this folder")
