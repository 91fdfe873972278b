"""The gateway's fair queue: turns by key, then by job; positions in that same order."""

from __future__ import annotations

import asyncio

import pytest

from dotsocr.gateway.scheduler import FairQueue, QueueFull
from dotsocr.gateway.store import PageKey


def pages(job: str, n: int) -> list[PageKey]:
    return [PageKey(job, 0, i) for i in range(n)]


def drain(queue: FairQueue) -> list[str]:
    async def take() -> list[str]:
        return [(await queue.get()).job_id for _ in range(len(queue))]

    return asyncio.run(take())


def test_keys_take_turns_and_a_keys_jobs_share_its_turns():
    queue = FairQueue(100)
    queue.add("A", "big", pages("big", 4))
    queue.add("A", "small", pages("small", 1))
    queue.add("B", "other", pages("other", 2))
    assert drain(queue) == ["big", "other", "small", "other", "big", "big", "big"]


def test_positions_follow_the_serving_order():
    queue = FairQueue(100)
    for job in ("a1", "a2", "a3"):
        queue.add("A", job, pages(job, 1))
    queue.add("B", "b1", pages("b1", 1))
    positions = {job: queue.position(job) for job in ("a1", "a2", "a3", "b1")}
    assert positions == {"a1": 0, "b1": 1, "a2": 2, "a3": 3}
    assert drain(queue) == ["a1", "b1", "a2", "a3"]
    assert queue.position("a1") is None


def test_the_queue_is_bounded_except_for_jobs_taken_up_again():
    queue = FairQueue(3)
    queue.add("A", "a", pages("a", 2))
    with pytest.raises(QueueFull):
        queue.add("B", "b", pages("b", 2))
    queue.add("B", "b", pages("b", 2), force=True)  # accepted before a restart
    assert len(queue) == 4 and queue.room() == -1
    assert queue.remove("a") == 2 and len(queue) == 2
    assert drain(queue) == ["b", "b"]
