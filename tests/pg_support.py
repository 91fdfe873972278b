"""A real PostgreSQL on loopback for the tests and benches: Debian's server binaries
(``apt-get install postgresql``; .ci/run installs them), a throwaway cluster in a
temporary folder, one fresh database per test.

PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres``
user Debian's package creates (or ``nobody``) and its programs run through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from vllm_support.server import free_port


def binaries() -> Path | None:
    """The folder of initdb and postgres, newest version first; None when not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version, reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _version(path: str) -> float:
    try:
        return float(Path(path).parts[-3])
    except ValueError:
        return 0.0


class PostgresServer:
    """``with PostgresServer() as pg: pg.database()`` gives a URL to an empty database."""

    def __init__(self) -> None:
        found = binaries()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        self.bin = found
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="dotsocr-pg-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.user = None
        if os.geteuid() == 0:
            names = [u.pw_name for u in pwd.getpwall()]
            self.user = "postgres" if "postgres" in names else "nobody"

    def _command(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else list(args)

    def __enter__(self) -> PostgresServer:
        data = self.folder / "data"
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            self._command(str(self.bin / "initdb"), "-D", str(data), "-A", "trust",
                          "-U", "dotsocr", "-E", "UTF8", "--no-sync"),
            check=True, capture_output=True,
        )  # fmt: skip
        self.log = (self.folder / "server.log").open("wb")
        self.process = subprocess.Popen(
            self._command(
                str(self.bin / "postgres"), "-D", str(data), "-k", str(self.folder),
                "-h", "127.0.0.1", "-p", str(self.port), "-c", "fsync=off",
                "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=300",
            ),
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._wait()
        return self

    def _wait(self, timeout: float = 60.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.folder / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"PostgreSQL did not start:\n{log}") from None
                time.sleep(0.1)

    def url(self, database: str) -> str:
        return f"postgresql://dotsocr@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database's URL."""
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def __exit__(self, *exc: object) -> None:
        if self.process:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)
