"""Jobs that survive a crash: a database of jobs and pages, and a store of their bytes.

The database is SQLite (WAL) in the data folder for one gateway, or PostgreSQL shared by
many (``postgres.py``); inputs and results go to a folder or an S3 bucket (``storage.py``).
A page's result is written first and marked done in the database after, in one
transaction per page, so a crash between the two only means the page is read again; a
page marked done always has its result. Uploaded files are stored under names we make;
the names users gave are data, never paths.
"""

from __future__ import annotations

import fcntl
import json
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dotsocr.errors import ConfigError, DotsOCRError
from dotsocr.gateway.storage import FolderStorage, Storage, open_storage
from dotsocr.layout import PageResult

if TYPE_CHECKING:
    from dotsocr.config import GatewaySettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,            -- queued, running, done, failed, cancelled
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    options TEXT NOT NULL,          -- JSON: task, dpi, pages, formats...
    webhook TEXT,
    error TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS files (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,             -- as the user named it: for display only
    pages INTEGER NOT NULL,
    error TEXT,                     -- the file could not be opened
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS pages (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    file_idx INTEGER NOT NULL,
    page_idx INTEGER NOT NULL,      -- 0-based index into the file's pages
    state TEXT NOT NULL,            -- pending, done, failed
    seconds REAL,
    finished REAL,
    PRIMARY KEY (job_id, file_idx, page_idx)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, created);
"""
ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class PageKey:
    job_id: str
    file_idx: int
    page_idx: int


class StoreError(DotsOCRError):
    """The job database cannot be reached; the work waits for it rather than failing."""


class JobStore(ABC):
    """The jobs' database and bytes: the SQL here is plain enough for SQLite and PostgreSQL
    (``?`` placeholders); a backend supplies ``_tx`` and ``_rows``."""

    shared = False  # several processes share these jobs (and the queue lives in the database)

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Any]:
        """A transaction: ``execute(sql, args)`` and ``executemany`` on what it yields."""

    @abstractmethod
    def _rows(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    # Names in the storage: ours only.
    @staticmethod
    def _job_prefix(job_id: str) -> str:
        return f"jobs/{job_id}/"

    def _input_name(self, job_id: str, file_idx: int) -> str:
        return f"{self._job_prefix(job_id)}inputs/{file_idx:04d}"

    def _result_name(self, key: PageKey) -> str:
        return f"{self._job_prefix(key.job_id)}pages/{key.file_idx:04d}-{key.page_idx:05d}.json"

    def input_file(self, job_id: str, file_idx: int) -> Path:
        """A stored input as a file on this machine (fetched once from S3; blocking)."""
        return self.storage.local(self._input_name(job_id, file_idx))

    def forget_inputs(self, job_id: str) -> None:
        """Drop this machine's copies of a job's inputs (S3 only)."""
        self.storage.forget(self._job_prefix(job_id))

    # Writing.
    def new_job_id(self) -> str:
        return secrets.token_urlsafe(12)

    def create(
        self,
        job_id: str,
        owner: str,
        options: dict[str, Any],
        files: list[tuple[str, int, str | None]],
        webhook: str | None = None,
    ) -> None:
        """A job with its files (name, pages, error) and every page pending; its inputs must
        already be stored at ``input_path``."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, owner, state, created, options, webhook) "
                "VALUES (?, ?, 'queued', ?, ?, ?)",
                (job_id, owner, now, json.dumps(options), webhook),
            )
            for idx, (name, pages, error) in enumerate(files):
                db.execute(
                    "INSERT INTO files (job_id, idx, name, pages, error) VALUES (?, ?, ?, ?, ?)",
                    (job_id, idx, name, pages, error),
                )
                db.executemany(
                    "INSERT INTO pages (job_id, file_idx, page_idx, state) "
                    "VALUES (?, ?, ?, 'pending')",
                    [(job_id, idx, p) for p in range(pages)],
                )

    def save_input(self, job_id: str, file_idx: int, data: bytes) -> None:
        self.storage.put(self._input_name(job_id, file_idx), data, keep=True)  # read next

    def start(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state='running', started=COALESCE(started, ?) "
                "WHERE id=? AND state='queued'",
                (time.time(), job_id),
            )

    def save_result(self, key: PageKey, result: PageResult) -> bool:
        """Write a page's result (slow: call it from a thread); False when the job is gone
        (cancelled meanwhile). The page counts as done only after ``mark_done``."""
        if not self._writable(key):
            return False
        self.storage.put(self._result_name(key), result.model_dump_json().encode())
        if self.page_state(key) is None:  # deleted while we wrote: leave nothing behind
            self.storage.remove(self._job_prefix(key.job_id))
            return False
        return True

    def mark_done(self, key: PageKey, result: PageResult) -> bool:
        """Record a saved page as done (or failed); False when it was not pending."""
        state = "failed" if result.status.value == "failed" else "done"
        with self._tx() as db:
            changed = db.execute(
                "UPDATE pages SET state=?, seconds=?, finished=? "
                "WHERE job_id=? AND file_idx=? AND page_idx=? AND state='pending'",
                (state, result.seconds, time.time(), key.job_id, key.file_idx, key.page_idx),
            ).rowcount
            if changed:
                db.execute(
                    "UPDATE jobs SET prompt_tokens=prompt_tokens+?, "
                    "completion_tokens=completion_tokens+? WHERE id=?",
                    (result.prompt_tokens or 0, result.completion_tokens or 0, key.job_id),
                )
        return bool(changed)

    def _writable(self, key: PageKey) -> bool:
        return self.page_state(key) is not None

    def finish(self, job_id: str, state: str, error: str | None = None) -> bool:
        """End an active job; False when it had ended already (maybe by another process)."""
        with self._tx() as db:
            return bool(
                db.execute(
                    "UPDATE jobs SET state=?, error=?, finished=? WHERE id=? AND state IN (?, ?)",
                    (state, error, time.time(), job_id, *ACTIVE),
                ).rowcount
            )

    def delete(self, job_id: str) -> None:
        """The bytes first: a row left by a failed delete is found again (and deleted by
        the retention sweep), bytes left without their row would never be."""
        self.storage.remove(self._job_prefix(job_id))
        self.storage.forget(self._job_prefix(job_id))
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE id=?", (job_id,))

    # Reading.
    def job(self, job_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM jobs WHERE id=?", job_id)
        return rows[0] if rows else None

    def files(self, job_id: str) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM files WHERE job_id=? ORDER BY idx", job_id)

    def counts(self, job_id: str) -> dict[str, int]:
        rows = self._rows(
            "SELECT state, COUNT(*) AS n FROM pages WHERE job_id=? GROUP BY state", job_id
        )
        counts = {"pending": 0, "done": 0, "failed": 0}
        counts.update({r["state"]: r["n"] for r in rows})
        return counts

    def pending(self, job_id: str) -> list[PageKey]:
        rows = self._rows(
            "SELECT file_idx, page_idx FROM pages WHERE job_id=? AND state='pending' "
            "ORDER BY file_idx, page_idx",
            job_id,
        )
        return [PageKey(job_id, r["file_idx"], r["page_idx"]) for r in rows]

    def finished_pages(self, job_id: str) -> list[tuple[PageKey, str]]:
        rows = self._rows(
            "SELECT file_idx, page_idx, state FROM pages WHERE job_id=? AND state!='pending' "
            "ORDER BY finished",
            job_id,
        )
        return [(PageKey(job_id, r["file_idx"], r["page_idx"]), r["state"]) for r in rows]

    def result(self, key: PageKey) -> PageResult | None:
        data = self.storage.get(self._result_name(key))
        return None if data is None else PageResult.model_validate_json(data)

    def active_jobs(self) -> list[dict[str, Any]]:
        """Jobs to take up again after a restart, oldest first."""
        return self._rows("SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY created", *ACTIVE)

    def jobs_of(self, owner: str, limit: int) -> list[str]:
        """The ids of an owner's newest jobs, newest first."""
        rows = self._rows(
            "SELECT id FROM jobs WHERE owner=? ORDER BY created DESC LIMIT ?", owner, limit
        )
        return [r["id"] for r in rows]

    def page_state(self, key: PageKey) -> str | None:
        rows = self._rows(
            "SELECT state FROM pages WHERE job_id=? AND file_idx=? AND page_idx=?",
            key.job_id, key.file_idx, key.page_idx,
        )  # fmt: skip
        return rows[0]["state"] if rows else None

    def state_counts(self) -> dict[str, int]:
        rows = self._rows("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {r["state"]: r["n"] for r in rows}

    def expired(self, older_than: float) -> list[str]:
        """Finished jobs whose results outlived the retention time."""
        rows = self._rows(
            "SELECT id FROM jobs WHERE state NOT IN (?, ?) AND finished < ?", *ACTIVE, older_than
        )
        return [r["id"] for r in rows]


class SQLiteJobStore(JobStore):
    """One gateway's jobs: SQLite in its data folder, which it locks."""

    def __init__(self, root: Path, storage: Storage | None = None) -> None:
        super().__init__(storage or FolderStorage(root))
        root.mkdir(parents=True, exist_ok=True)
        # One gateway per folder: two would both take up its unfinished jobs.
        self._owner = (root / "gateway.lock").open("w")
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._owner.close()
            raise ConfigError(
                f"{root} is in use by another gateway: give each its own --data-dir "
                "(several gateways sharing jobs need PostgreSQL: set DOTSOCR_DATABASE_URL)"
            ) from None
        self._lock = threading.Lock()
        self._db = sqlite3.connect(root / "jobs.db", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a 202 means the job survives power loss
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._owner.close()  # and with it the folder's lock

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, args).fetchall()]


def open_store(settings: GatewaySettings) -> JobStore:
    """SQLite in the data folder, or PostgreSQL when DOTSOCR_DATABASE_URL is set; bytes in
    the data folder unless DOTSOCR_STORAGE_URL names a shared folder or a bucket."""
    cache = settings.data_dir / "cache"
    storage = open_storage(settings.storage_url or settings.data_dir, cache)
    storage.check()
    if not settings.database_url:
        return SQLiteJobStore(settings.data_dir, storage)
    from dotsocr.gateway.postgres import PostgresJobStore

    return PostgresJobStore(
        settings.database_url, storage,
        worker=settings.worker_name, lease=settings.lease_seconds,
    )  # fmt: skip
