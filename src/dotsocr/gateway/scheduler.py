"""Pages waiting for the model server, handed out in turn: by owner, then by job.

A key with a 3,000-page job and a key with a one-page request each get every other
free slot, and two jobs of one key share that key's turns; so a small request waits
for at most a round of the others, not for a whole large job. One gateway keeps its
queue in memory (FairQueue); shared jobs keep it in PostgreSQL (LeasedQueue), where the
turns are numbers given at submission (``PostgresJobStore.create``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from dotsocr.gateway.store import PageKey, StoreError

if TYPE_CHECKING:
    from dotsocr.gateway.postgres import PostgresJobStore

log = logging.getLogger("dotsocr.gateway")


class QueueFull(Exception):
    """The queue cannot take that many more pages now."""


class FairQueue:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._owners: OrderedDict[str, OrderedDict[str, deque[PageKey]]] = OrderedDict()
        self._size = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return self._size

    def room(self) -> int:
        return self.limit - self._size

    def add(self, owner: str, job_id: str, pages: list[PageKey], *, force: bool = False) -> None:
        """Queue a job's pages; ``force`` takes them past the limit (jobs taken up again
        after a restart were accepted once already)."""
        if not pages:
            return
        if not force and len(pages) > self.room():
            raise QueueFull
        jobs = self._owners.setdefault(owner, OrderedDict())
        jobs.setdefault(job_id, deque()).extend(pages)
        self._size += len(pages)
        self._changed.set()

    def remove(self, job_id: str) -> int:
        """Drop a job's waiting pages; how many there were."""
        for owner, jobs in list(self._owners.items()):
            pages = jobs.pop(job_id, None)
            if pages is not None:
                self._size -= len(pages)
                if not jobs:
                    del self._owners[owner]
                return len(pages)
        return 0

    def position(self, job_id: str) -> int | None:
        """How many other jobs get a turn before this one's next page; None when it waits
        for nothing. Turns go owner by owner, each owner's jobs in rotation."""
        rounds = [list(jobs) for jobs in self._owners.values()]
        order = [
            owned[turn]
            for turn in range(max((len(owned) for owned in rounds), default=0))
            for owned in rounds
            if turn < len(owned)
        ]
        return order.index(job_id) if job_id in order else None

    async def get(self) -> PageKey:
        """The next page, by turns; waits when none is queued."""
        while not self._size:
            self._changed.clear()
            await self._changed.wait()
        owner, jobs = next(iter(self._owners.items()))
        job_id, pages = next(iter(jobs.items()))
        page = pages.popleft()
        self._size -= 1
        jobs.move_to_end(job_id)  # the owner's next turn goes to its next job
        if not pages:
            del jobs[job_id]
        self._owners.move_to_end(owner)  # the next turn goes to the next owner
        if not jobs:
            del self._owners[owner]
        return page

    async def done(self, page: PageKey, settled: bool) -> None:
        """A page taken with ``get`` is finished with: ``settled`` (recorded, or refused
        as settled elsewhere), or given up."""


class LeasedQueue:
    """The queue of a job store shared through PostgreSQL, with FairQueue's interface.

    Pages stay in the database; ``get`` claims one under a lease, which a background task
    renews while the page is read and which ``done`` lets go of. The same task returns
    expired leases (of workers that died) to the queue. Idle takers poll, and wake early
    when the database announces work.
    """

    POLL = 5.0  # seconds between claims while idle: a backstop, NOTIFY wakes takers first
    BACKOFF = 5.0  # after the database failed a claim, everyone waits this long

    def __init__(self, store: PostgresJobStore, limit: int) -> None:
        self.store = store
        self.limit = limit
        self._held: set[PageKey] = set()
        self._work = asyncio.Event()
        self._closed = False
        self._length = (0.0, 0)  # (when, count): counting is a query, asked often
        self._down_until = 0.0

    def __len__(self) -> int:
        if time.monotonic() - self._length[0] > 1.0:
            with contextlib.suppress(StoreError):
                self._length = (time.monotonic(), self.store.waiting())
        return self._length[1]

    def room(self) -> int:
        return self.limit - len(self)

    def add(self, owner: str, job_id: str, pages: list[PageKey], *, force: bool = False) -> None:
        """The pages are queued already (``JobStore.create``); past the limit: QueueFull."""
        self._length = (0.0, 0)
        if not force and pages and len(self) > self.limit:
            raise QueueFull

    def remove(self, job_id: str) -> int:
        return 0  # ending or deleting the job takes its pages out of the database's queue

    def position(self, job_id: str) -> int | None:
        return self.store.position(job_id)

    def wake(self) -> None:
        """Work may be waiting: idle takers claim now rather than at their next poll."""
        self._work.set()

    def close(self) -> None:
        """Take no more pages (the worker is stopping); ``get`` waits for ever."""
        self._closed = True

    async def get(self) -> PageKey:
        """Claims run in threads: a database that is slow to answer holds one taker, not
        the event loop."""
        while True:
            if self._closed:  # stopping: the pages in hand finish, no more are taken
                await asyncio.sleep(3600)
                continue
            if (pause := self._down_until - time.monotonic()) > 0:
                await asyncio.sleep(pause)
                continue
            self._work.clear()
            try:
                key = await asyncio.to_thread(self.store.claim)
            except StoreError as exc:
                if time.monotonic() >= self._down_until:  # one line per outage and backoff
                    log.warning("%s; claiming again in %.0f s", exc, self.BACKOFF)
                self._down_until = time.monotonic() + self.BACKOFF
                continue
            if key is not None:
                self._held.add(key)
                return key
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), self.POLL)

    async def done(self, page: PageKey, settled: bool) -> None:
        """Let go of a page; one given up goes back in the queue now (recording a page
        has already cleared its lease)."""
        self._held.discard(page)
        if not settled:
            with contextlib.suppress(StoreError):  # else its lease expires: read again later
                await asyncio.to_thread(self.store.release, page)

    async def keep_leases(self) -> None:
        """Renew our leases a few times per lease, and reclaim the expired ones of others."""
        while True:
            await asyncio.sleep(self.store.lease / 4)
            try:
                if self._held:
                    await asyncio.to_thread(self.store.renew, set(self._held))
                await asyncio.to_thread(self.store.reclaim)
            except StoreError as exc:
                log.warning("%s; leases not renewed", exc)
