"""The PostgreSQL job store on a real server: claims, leases, exactly-once completion,
fair turns, and its errors."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from dotsocr.errors import ConfigError
from dotsocr.gateway.postgres import PostgresJobStore
from dotsocr.gateway.storage import FolderStorage
from dotsocr.gateway.store import PageKey
from dotsocr.layout import PageResult, PageStatus


@pytest.fixture
def open_store(database_url, tmp_path):
    stores = []

    def make(worker: str, lease: float = 30.0) -> PostgresJobStore:
        store = PostgresJobStore(
            database_url, FolderStorage(tmp_path / "shared"), worker=worker, lease=lease
        )
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def job(store: PostgresJobStore, owner: str, pages: int) -> str:
    job_id = store.new_job_id()
    store.create(job_id, owner, {"task": "layout"}, [("book.pdf", pages, None)])
    return job_id


def read(index: int, tokens: int = 100) -> PageResult:
    return PageResult(
        index=index, width=10, height=10, status=PageStatus.OK,
        prompt_tokens=tokens, completion_tokens=tokens,
    )  # fmt: skip


def test_two_workers_claim_every_page_once_at_the_same_time(open_store):
    """SKIP LOCKED: eight threads in two workers race for 200 pages; none is handed out
    twice and none is left."""
    stores = [open_store("w1"), open_store("w2")]
    job_id = job(stores[0], "alice", 200)
    taken: list[PageKey] = []
    lock = threading.Lock()

    def take(store: PostgresJobStore) -> None:
        while (key := store.claim()) is not None:
            with lock:
                taken.append(key)

    threads = [threading.Thread(target=take, args=(stores[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 200
    assert {(k.file_idx, k.page_idx) for k in taken} == {(0, p) for p in range(200)}
    assert stores[0].counts(job_id) == {"pending": 200, "done": 0, "failed": 0}  # leased
    assert stores[0].waiting() == 0


def test_an_expired_lease_goes_back_and_the_page_counts_once(open_store):
    """A worker that stops renewing loses its page to another; when it answers late, its
    result is refused and the page's tokens are counted once."""
    slow, other = open_store("slow", lease=0.5), open_store("other", lease=30)
    job_id = job(slow, "alice", 1)
    key = slow.claim()
    assert key is not None and other.claim() is None  # held
    assert other.reclaim() == 0  # not expired yet
    time.sleep(0.7)
    assert other.reclaim() == 1
    assert other.claim() == key
    assert other.mark_done(key, read(0)) is True
    assert slow.mark_done(key, read(0)) is False  # too late: counted once
    row = slow.job(job_id)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (100, 100)
    assert slow.counts(job_id) == {"pending": 0, "done": 1, "failed": 0}


def test_only_the_pages_being_read_are_renewed(open_store):
    """The holder renews the page it reads; the one it gave up (or a predecessor of the
    same name held) expires and goes back to the queue."""
    holder, other = open_store("holder", lease=0.6), open_store("other")
    job(holder, "alice", 2)
    reading, given_up = holder.claim(), holder.claim()
    for _ in range(4):
        time.sleep(0.3)
        assert holder.renew({reading}) == 1
        other.reclaim()
    assert other.claim() == given_up
    assert holder.mark_done(reading, read(0)) is True


def test_a_page_given_up_goes_back_at_once(open_store):
    holder, other = open_store("holder"), open_store("other")
    job(holder, "alice", 2)
    first, second = holder.claim(), holder.claim()
    holder.mark_done(first, read(0))
    assert holder.release(first) == 0  # recorded: stays recorded
    assert holder.release(second) == 1
    assert other.claim() == second


def test_a_slow_reader_does_not_overwrite_the_recorded_result(open_store):
    slow, other = open_store("slow", lease=0.3), open_store("other")
    job(slow, "alice", 1)
    key = slow.claim()
    time.sleep(0.5)
    other.reclaim()
    assert other.claim() == key
    recorded = read(0, tokens=7)
    assert other.save_result(key, recorded) and other.mark_done(key, recorded)
    assert slow.save_result(key, read(0, tokens=99)) is False
    assert other.result(key).prompt_tokens == 7


def test_a_late_answer_is_taken_while_nobody_else_has_the_page(open_store):
    """Reclaimed but not yet claimed again: the first answer in is the one kept."""
    slow, other = open_store("slow", lease=0.3), open_store("other")
    job(slow, "alice", 1)
    key = slow.claim()
    time.sleep(0.5)
    other.reclaim()
    assert slow.mark_done(key, read(0)) is True
    assert other.claim() is None


def test_release_gives_pages_back_at_once(open_store):
    leaving, staying = open_store("leaving"), open_store("staying")
    job(leaving, "alice", 3)
    held = [leaving.claim() for _ in range(3)]
    assert staying.claim() is None
    assert leaving.release() == 3
    assert {staying.claim() for _ in range(3)} == set(held)


def test_an_ended_job_hands_out_no_more_pages(open_store):
    store = open_store("w")
    job_id = job(store, "alice", 5)
    first = store.claim()
    assert store.finish(job_id, "failed", "over the time limit") is True
    assert store.finish(job_id, "done") is False  # once only
    assert store.claim() is None
    assert store.mark_done(first, read(0)) is False  # in flight when it ended: unseen
    assert store.counts(job_id) == {"pending": 5, "done": 0, "failed": 0}


def test_a_small_job_waits_one_round_not_for_a_big_one(open_store):
    """Turns: bob's 2 pages, sent after alice's 100, come out among the next few."""
    store = open_store("w")
    big = job(store, "alice", 100)
    for _ in range(10):
        store.mark_done(store.claim(), read(0))
    small = job(store, "bob", 2)
    order = [store.claim().job_id for _ in range(6)]
    assert [i for i, j in enumerate(order) if j == small] == [1, 3]
    assert store.position(big) == 0 and store.position(small) is None


def test_an_owner_sending_many_jobs_gets_a_bounded_share(open_store):
    """Alice's later jobs are spaced by how many she has running: against her three jobs
    bob's one gets more than the quarter that turns per job would give."""
    store = open_store("w")
    alice = [job(store, "alice", 50) for _ in range(3)]
    bob = job(store, "bob", 50)
    order = [store.claim().job_id for _ in range(60)]
    assert order.count(bob) >= 19
    assert all(order.count(j) for j in alice)


def test_notifications_announce_work_pages_and_ends(open_store):
    import asyncio

    store = open_store("w")

    async def run() -> list[dict[str, str]]:
        seen: list[dict[str, str]] = []
        listener = asyncio.create_task(store.listen(seen.append))
        while not seen:
            await asyncio.sleep(0.05)
        job_id = await asyncio.to_thread(job, store, "alice", 1)
        key = await asyncio.to_thread(store.claim)
        await asyncio.to_thread(store.mark_done, key, read(0))
        await asyncio.to_thread(store.finish, job_id, "done")
        while len(seen) < 4:
            await asyncio.sleep(0.05)
        listener.cancel()
        return seen, job_id

    seen, job_id = asyncio.run(run())
    assert seen == [{"connected": ""}, {"work": job_id}, {"page": job_id}, {"done": job_id}]


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path):
    from vllm_support.server import free_port

    url = f"postgresql://me:s3cret@127.0.0.1:{free_port()}/jobs"
    with pytest.raises(ConfigError) as caught:
        PostgresJobStore(url, FolderStorage(tmp_path), worker="w", lease=10)
    message = str(caught.value)
    assert "s3cret" not in message and "me:***@127.0.0.1" in message
    assert "DOTSOCR_DATABASE_URL" in message and "\n" not in message


def test_the_schema_is_made_once_by_racing_processes(database_url, tmp_path):
    """Gateways and workers starting together each create the schema if missing."""
    errors: list[Exception] = []

    def open_one(n: int) -> None:
        try:
            PostgresJobStore(
                database_url, FolderStorage(tmp_path), worker=f"w{n}", lease=10
            ).close()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public' "
            "ORDER BY 1"
        ).fetchall()
    assert [t[0] for t in tables] == ["files", "jobs", "pages"]
