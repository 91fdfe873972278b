"""Jobs shared by many gateways and workers: PostgreSQL holds the jobs, the page queue and
the index of results; the bytes live in shared storage.

A page is claimed with ``FOR UPDATE SKIP LOCKED`` under a lease that its worker renews;
a worker that dies stops renewing, and its pages go back to the queue when their leases
expire. A page counts as done only through the transaction that moves it from pending or
from its own lease, so a page read twice (its lease ran out meanwhile) is recorded once.
Leases are timed by the database's clock, not the workers'. Changes are announced with
NOTIFY: new work wakes idle workers, a finished page wakes the gateways streaming it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from dotsocr.errors import ConfigError
from dotsocr.gateway.storage import Storage
from dotsocr.gateway.store import ACTIVE, JobStore, PageKey, StoreError
from dotsocr.layout import PageResult

log = logging.getLogger("dotsocr.gateway")
CHANNEL = "dotsocr"
NOW = "extract(epoch from clock_timestamp())::float8"  # the database's clock, for leases
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    started DOUBLE PRECISION,
    finished DOUBLE PRECISION,
    options TEXT NOT NULL,
    webhook TEXT,
    error TEXT,
    prompt_tokens BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS files (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    pages INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS pages (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    file_idx INTEGER NOT NULL,
    page_idx INTEGER NOT NULL,
    state TEXT NOT NULL,            -- pending, leased, done, failed; stopped: its job ended
    turn DOUBLE PRECISION NOT NULL, -- claim order: fair turns between jobs
    worker TEXT,                    -- who holds the lease
    lease_until DOUBLE PRECISION,
    claims INTEGER NOT NULL DEFAULT 0,
    seconds DOUBLE PRECISION,
    finished DOUBLE PRECISION,
    seq BIGINT,                     -- order of finishing, for event streams
    PRIMARY KEY (job_id, file_idx, page_idx)
);
CREATE SEQUENCE IF NOT EXISTS page_seq;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, created);
CREATE INDEX IF NOT EXISTS pages_queue ON pages(turn) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS pages_leases ON pages(lease_until) WHERE state = 'leased';
CREATE INDEX IF NOT EXISTS pages_finished ON pages(job_id, seq) WHERE seq IS NOT NULL;
"""
SCHEMA_LOCK = 0x646F74736F6372  # pg_advisory_xact_lock: one process creates the schema
# A database that stops answering (a dropped network, a stuck lock) fails a call within
# seconds instead of holding the process for minutes.
CONNECTION = {
    "connect_timeout": 5,
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
    "options": "-c statement_timeout=15000 -c lock_timeout=5000",
}  # fmt: skip


def _pg(sql: str) -> str:
    """Our portable SQL's ``?`` placeholders, as psycopg's."""
    return sql.replace("?", "%s")


class _Tx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, args: Any = ()) -> Any:
        return self.conn.execute(_pg(sql), args)

    def executemany(self, sql: str, rows: list[Any]) -> Any:
        cursor = self.conn.cursor()
        cursor.executemany(_pg(sql), rows)
        return cursor


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class PostgresJobStore(JobStore):
    shared = True

    def __init__(self, url: str, storage: Storage, *, worker: str, lease: float) -> None:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        super().__init__(storage)
        self.url = url
        self.worker = worker
        self.lease = lease
        self._errors = (psycopg.OperationalError, psycopg.InterfaceError)
        self.pool = ConnectionPool(
            url, min_size=1, max_size=8, timeout=5.0, open=False,
            kwargs={"autocommit": True, "row_factory": dict_row, **CONNECTION},
        )  # fmt: skip
        try:
            self.pool.open(wait=True, timeout=10.0)
            with self._tx() as db:
                db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
                db.execute(SCHEMA)
        except (StoreError, *self._errors) as exc:
            self.pool.close()
            raise ConfigError(
                f"cannot use the job database {redact(url)}: {' '.join(str(exc).split())} "
                "(check DOTSOCR_DATABASE_URL and that PostgreSQL is running)"
            ) from None

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        try:
            with self.pool.connection() as conn, conn.transaction():
                yield _Tx(conn)
        except self._errors as exc:
            raise StoreError(f"the job database is unavailable ({exc})") from exc

    def _rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with self._tx() as db:
            return db.execute(sql, args).fetchall()

    # Writing.
    def create(
        self,
        job_id: str,
        owner: str,
        options: dict[str, Any],
        files: list[tuple[str, int, str | None]],
        webhook: str | None = None,
    ) -> None:
        """As for SQLite, and each page gets its turn: from the queue's head on, between
        the turns of the jobs waiting (so a small job waits one round, not for a big one),
        and spaced by how many jobs its owner has running, so that an owner sending many
        jobs gets a bounded share, not one share per job."""
        with self._tx() as db:
            head = db.execute(
                "SELECT turn FROM pages WHERE state='pending' ORDER BY turn LIMIT 1"
            ).fetchone()
            start = head["turn"] if head else 0.0
            running = db.execute(
                "SELECT COUNT(*) AS n FROM jobs WHERE owner=? AND state IN (?, ?)", (owner, *ACTIVE)
            ).fetchone()["n"]
            db.execute(
                "INSERT INTO jobs (id, owner, state, created, options, webhook) "
                "VALUES (?, ?, 'queued', ?, ?, ?)",
                (job_id, owner, time.time(), json.dumps(options), webhook),
            )
            pages = []
            for idx, (name, count, error) in enumerate(files):
                db.execute(
                    "INSERT INTO files (job_id, idx, name, pages, error) VALUES (?, ?, ?, ?, ?)",
                    (job_id, idx, name, count, error),
                )
                pages += [(job_id, idx, p) for p in range(count)]
            db.executemany(
                "INSERT INTO pages (job_id, file_idx, page_idx, state, turn) "
                "VALUES (?, ?, ?, 'pending', ?)",
                [(*page, start + (n + 0.5) * (running + 1)) for n, page in enumerate(pages)],
            )
            self._notify(db, work=job_id)

    def mark_done(self, key: PageKey, result: PageResult) -> bool:
        """Record a page as done (or failed) when it is still pending or under our lease.

        The job's row is locked first, so one job's pages are recorded one at a time and
        their numbers (``seq``) follow the order they commit in: a stream that has seen
        number n has seen every page of the job numbered below n."""
        state = "failed" if result.status.value == "failed" else "done"
        with self._tx() as db:
            db.execute("SELECT 1 FROM jobs WHERE id=? FOR UPDATE", (key.job_id,))
            changed = db.execute(
                "UPDATE pages SET state=?, seconds=?, finished=?, seq=nextval('page_seq'), "
                "worker=NULL, lease_until=NULL WHERE job_id=? AND file_idx=? AND page_idx=? "
                "AND (state='pending' OR (state='leased' AND worker=?))",
                (state, result.seconds, time.time(), key.job_id, key.file_idx, key.page_idx,
                 self.worker),
            ).rowcount  # fmt: skip
            if changed:
                db.execute(
                    "UPDATE jobs SET prompt_tokens=prompt_tokens+?, "
                    "completion_tokens=completion_tokens+? WHERE id=?",
                    (result.prompt_tokens or 0, result.completion_tokens or 0, key.job_id),
                )
                self._notify(db, page=key.job_id)
        return bool(changed)

    def finish(self, job_id: str, state: str, error: str | None = None) -> bool:
        """End an active job; its pages not yet read are stopped, so nobody claims them."""
        with self._tx() as db:
            changed = db.execute(
                "UPDATE jobs SET state=?, error=?, finished=? WHERE id=? AND state IN (?, ?)",
                (state, error, time.time(), job_id, *ACTIVE),
            ).rowcount
            if changed:
                db.execute(
                    "UPDATE pages SET state='stopped', worker=NULL, lease_until=NULL "
                    "WHERE job_id=? AND state IN ('pending', 'leased')",
                    (job_id,),
                )
                self._notify(db, done=job_id)
        return bool(changed)

    @staticmethod
    def _notify(db: _Tx, **message: str) -> None:
        """Sent when the transaction commits."""
        db.execute("SELECT pg_notify(?, ?)", (CHANNEL, json.dumps(message)))

    # The queue.
    def claim(self) -> PageKey | None:
        """The next page by turns, under a lease of ours; None when none is waiting."""
        with self._tx() as db:
            row = db.execute(
                f"UPDATE pages p SET state='leased', worker=?, lease_until={NOW} + ?, "
                "claims=p.claims+1 FROM (SELECT job_id, file_idx, page_idx FROM pages "
                "WHERE state='pending' ORDER BY turn LIMIT 1 FOR UPDATE SKIP LOCKED) next "
                "WHERE p.job_id=next.job_id AND p.file_idx=next.file_idx "
                "AND p.page_idx=next.page_idx RETURNING p.job_id, p.file_idx, p.page_idx",
                (self.worker, self.lease),
            ).fetchone()
        return PageKey(row["job_id"], row["file_idx"], row["page_idx"]) if row else None

    def renew(self, keys: Collection[PageKey]) -> int:
        """Extend the leases of the pages this process is reading (only those: a page it
        gave up, or one a predecessor of the same name held, must expire); how many it
        still holds."""
        with self._tx() as db:
            return db.execute(
                f"UPDATE pages SET lease_until={NOW} + ? WHERE state='leased' AND worker=? "
                "AND (job_id, file_idx, page_idx) IN "
                "(SELECT * FROM unnest(?::text[], ?::int[], ?::int[]))",
                (self.lease, self.worker, [k.job_id for k in keys],
                 [k.file_idx for k in keys], [k.page_idx for k in keys]),
            ).rowcount  # fmt: skip

    def reclaim(self) -> int:
        """Put pages whose leases ran out (their workers died) back in the queue."""
        with self._tx() as db:
            count = db.execute(
                "UPDATE pages SET state='pending', worker=NULL, lease_until=NULL "
                f"WHERE state='leased' AND lease_until < {NOW}"
            ).rowcount
            if count:
                self._notify(db, work="reclaimed")
        return count

    def release(self, key: PageKey | None = None) -> int:
        """Give a page this worker leased back to the queue (it gave up on it), or all of
        them (on a clean stop); a page recorded meanwhile stays recorded."""
        only = " AND job_id=? AND file_idx=? AND page_idx=?" if key else ""
        with self._tx() as db:
            count = db.execute(
                "UPDATE pages SET state='pending', worker=NULL, lease_until=NULL "
                f"WHERE state='leased' AND worker=?{only}",
                (self.worker, *((key.job_id, key.file_idx, key.page_idx) if key else ())),
            ).rowcount
            if count:
                self._notify(db, work="released")
        return count

    def waiting(self) -> int:
        """Pages waiting for a worker, all jobs together."""
        return self._rows("SELECT COUNT(*) AS n FROM pages WHERE state='pending'")[0]["n"]

    def position(self, job_id: str) -> int | None:
        """How many other jobs have a page before this job's next one."""
        rows = self._rows(
            "SELECT COUNT(DISTINCT job_id) AS n FROM pages WHERE state='pending' AND turn < "
            "(SELECT MIN(turn) FROM pages WHERE job_id=? AND state='pending') AND job_id != ?",
            job_id, job_id,
        )  # fmt: skip
        head = self._rows("SELECT 1 FROM pages WHERE job_id=? AND state='pending' LIMIT 1", job_id)
        return rows[0]["n"] if head else None

    async def listen(self, on_message: Callable[[dict[str, str]], None]) -> None:
        """Hand every notification to ``on_message``, reconnecting for ever; after each
        (re)connection ``{"connected": ""}``, since messages sent meanwhile are lost."""
        import psycopg

        delay = 1.0
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, **CONNECTION
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    on_message({"connected": ""})
                    delay = 1.0
                    async for note in conn.notifies():
                        on_message(json.loads(note.payload))
            except self._errors as exc:
                log.warning("job database notifications lost (%s); again in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # Reading: a leased page is still pending to the user, and so is a stopped one.
    def counts(self, job_id: str) -> dict[str, int]:
        counts = super().counts(job_id)
        counts["pending"] += counts.pop("leased", 0) + counts.pop("stopped", 0)
        return counts

    def page_state(self, key: PageKey) -> str | None:
        state = super().page_state(key)
        return "pending" if state in ("leased", "stopped") else state

    def _writable(self, key: PageKey) -> bool:
        """Still ours to record: a slow reader whose lease ran out must not overwrite the
        result another recorded meanwhile."""
        return bool(
            self._rows(
                "SELECT 1 FROM pages WHERE job_id=? AND file_idx=? AND page_idx=? "
                "AND (state='pending' OR (state='leased' AND worker=?))",
                key.job_id, key.file_idx, key.page_idx, self.worker,
            )
        )  # fmt: skip

    def finished_pages(self, job_id: str, after: int = 0) -> list[tuple[PageKey, str]]:
        return [(key, state) for key, state, _ in self.finished_after(job_id, after)]

    def finished_after(self, job_id: str, after: int) -> list[tuple[PageKey, str, int]]:
        """Pages finished after the one numbered ``after``, in order, with their numbers."""
        rows = self._rows(
            "SELECT file_idx, page_idx, state, seq FROM pages WHERE job_id=? AND seq > ? "
            "ORDER BY seq",
            job_id, after,
        )  # fmt: skip
        return [(PageKey(job_id, r["file_idx"], r["page_idx"]), r["state"], r["seq"]) for r in rows]
