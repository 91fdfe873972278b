"""Writing results to disk: every file appears whole or not at all."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from dotsocr.errors import OutputError

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
