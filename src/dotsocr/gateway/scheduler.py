"""Pages waiting for the model server, handed out in turn: by owner, then by job.

A key with a 3,000-page job and a key with a one-page request each get every other
free slot, and two jobs of one key share that key's turns; so a small request waits
for at most a round of the others, not for a whole large job.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque

from dotsocr.gateway.store import PageKey


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
