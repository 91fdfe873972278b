"""Many gateways and workers sharing jobs through a real PostgreSQL: real processes on
loopback, a stand-in model server, one killed worker."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg

from gateway_support import (
    SAMPLE,
    events,
    metrics,
    running_gateway,
    start_worker,
    status,
    upload,
    wait_for,
    wait_job,
)
from vllm_support.documents import book


def shared_env(database_url: str, storage: str, **more: str) -> dict[str, str]:
    return {
        "DOTSOCR_DATABASE_URL": database_url,
        "DOTSOCR_STORAGE_URL": storage,
        "DOTSOCR_LEASE_SECONDS": "3",
        **more,
    }


def pages_table(database_url: str, job_id: str) -> list[tuple[str, int, str | None]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT state, claims, worker FROM pages WHERE job_id=%s ORDER BY file_idx, page_idx",
            (job_id,),
        ).fetchall()


def test_two_gateways_two_workers_one_killed_every_page_once(standin, database_url, tmp_path: Path):
    """A 200-page job sent to one gateway, streamed from the other, read by two workers;
    one is killed with pages in hand. The job completes, each page recorded once."""
    standin.latency = 0.05
    pdf = book(200, tmp_path)
    env = shared_env(database_url, str(tmp_path / "shared"))
    worker_args = ("--server", standin.url, "--engine", "server", "--max-in-flight", "4")
    workers = [start_worker(tmp_path / "workers", n, *worker_args, env=env) for n in ("w1", "w2")]
    gateway_env = {**env, "DOTSOCR_READ_PAGES": "false"}
    try:
        with (
            running_gateway(tmp_path / "g1", "--server", standin.url, env=gateway_env,
                            ready=True) as g1,
            running_gateway(tmp_path / "g2", "--server", standin.url, env=gateway_env,
                            ready=True) as g2,
        ):  # fmt: skip
            sent = g1.client().post("/v1/jobs", files=[upload(pdf)], data={"dpi": "72"})
            assert sent.status_code == 202, sent.text
            job_id = sent.json()["id"]
            streamed: list[tuple[str, dict]] = []
            stream = threading.Thread(
                target=lambda: streamed.extend(
                    events(g2.client(timeout=300), f"/v1/jobs/{job_id}/events")
                )
            )
            stream.start()

            def holding_midway() -> bool:
                done = status(g2.client(), job_id)["pages"]["done"]
                held = [w for _, _, w in pages_table(database_url, job_id) if w == "w1"]
                return done >= 40 and bool(held)

            wait_for(holding_midway, 120, "w1 to hold pages with 40 done")
            workers[0].kill()
            final = wait_job(g1.client(), job_id, timeout=240)
            stream.join(60)
            result = g2.client().get(f"/v1/jobs/{job_id}/result").json()
    finally:
        for worker in workers:
            worker.kill()

    assert final["state"] == "done", final
    assert final["pages"] == {"total": 200, "done": 200, "failed": 0, "pending": 0}
    rows = pages_table(database_url, job_id)
    assert [state for state, _, _ in rows] == ["done"] * 200
    assert any(claims >= 2 for _, claims, _ in rows)  # w1's pages, read again by w2

    page_events = [data for name, data in streamed if name == "page"]
    assert sorted(e["page"] for e in page_events) == list(range(1, 201))  # each once
    assert [e["done"] for e in page_events] == list(range(1, 201))
    assert streamed[-1] == ("done", {"event": "done", "state": "done"})

    document = result["documents"][0]
    assert [p["index"] for p in document["pages"]] == list(range(200))
    # Tokens are added only by the transaction that records a page: once per page,
    # though the stand-in was asked for some pages twice.
    assert len(standin.requests) > 200
    page_tokens = sum(p["prompt_tokens"] for p in document["pages"])
    assert final["prompt_tokens"] == page_tokens


def test_a_gateway_reads_and_another_serves_with_results_in_s3(
    standin, database_url, bucket, tmp_path: Path
):
    """Gateways reading pages themselves, their bytes in a bucket: a job sent to one is
    streamed, paged and shown by the other, whose page image fetches the input from S3."""
    env = shared_env(database_url, f"s3://{bucket}/dotsocr")
    args = ("--server", standin.url, "--engine", "server")
    with (
        running_gateway(tmp_path / "a", *args, env=env, ready=True) as a,
        running_gateway(tmp_path / "b", *args, env=env, ready=True) as b,
    ):
        sent = a.client().post("/v1/jobs", files=[upload(SAMPLE)])
        assert sent.status_code == 202, sent.text
        job_id = sent.json()["id"]
        streamed = events(b.client(), f"/v1/jobs/{job_id}/events")
        assert sorted(d["page"] for n, d in streamed if n == "page") == [1, 2, 3, 4, 5]
        assert streamed[-1] == ("done", {"event": "done", "state": "done"})
        result = b.client().get(f"/v1/jobs/{job_id}/result").json()
        assert [len(p["cells"]) for p in result["documents"][0]["pages"]] == [2] * 5
        image = b.client().get(f"/v1/jobs/{job_id}/files/0/pages/2/image")
        assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
        view = b.client().get(f"/v1/jobs/{job_id}/files/0/pages/1").json()
        assert view["state"] == "done" and len(view["result"]["cells"]) == 2

    import boto3

    keys = [
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]
    ]  # fmt: skip
    assert f"dotsocr/jobs/{job_id}/inputs/0000" in keys
    assert sum(f"dotsocr/jobs/{job_id}/pages/" in k for k in keys) == 5
    assert not (tmp_path / "a" / "jobs").exists()  # nothing kept beside the bucket


def test_a_job_cancelled_on_one_gateway_ends_on_the_other(standin, database_url, tmp_path):
    standin.latency = 30.0  # pages stay in flight
    env = shared_env(database_url, str(tmp_path / "shared"))
    args = ("--server", standin.url, "--engine", "server")
    with (
        running_gateway(tmp_path / "a", *args, env=env, ready=True) as a,
        running_gateway(tmp_path / "b", *args, env=env, ready=True) as b,
    ):
        job_id = a.client().post("/v1/jobs", files=[upload(SAMPLE)]).json()["id"]
        streamed: list[tuple[str, dict]] = []
        opened = threading.Event()
        path = f"/v1/jobs/{job_id}/events"
        stream = threading.Thread(target=lambda: streamed.extend(events(a.client(), path, opened)))
        stream.start()
        assert opened.wait(60)  # following the job before it is cancelled
        wait_for(lambda: status(b.client(), job_id)["state"] == "running", 30, "a page read")
        assert b.client().delete(f"/v1/jobs/{job_id}").status_code == 204
        stream.join(30)
        assert streamed[-1] == ("done", {"event": "done", "state": "cancelled"})
        assert a.client().get(f"/v1/jobs/{job_id}").status_code == 404
    assert pages_table(database_url, job_id) == []


def test_a_stopped_worker_gives_its_pages_back(standin, database_url, tmp_path):
    """SIGTERM: the worker exits 0 within its grace and its leases are released at once,
    not at expiry."""
    standin.latency = 60.0
    env = shared_env(database_url, str(tmp_path / "shared"), DOTSOCR_LEASE_SECONDS="600")
    worker = start_worker(
        tmp_path, "w", "--server", standin.url, "--engine", "server", "--grace", "1", env=env
    )
    try:
        with running_gateway(
            tmp_path / "g", "--server", standin.url,
            env={**env, "DOTSOCR_READ_PAGES": "false"}, ready=True,
        ) as gateway:  # fmt: skip
            job_id = gateway.client().post("/v1/jobs", files=[upload(SAMPLE)]).json()["id"]
            wait_for(
                lambda: sum(w == "w" for *_, w in pages_table(database_url, job_id)) == 5,
                60, "the worker to hold all five pages",
            )  # fmt: skip
            assert worker.stop(timeout=20) == 0, worker.log_tail()
            rows = pages_table(database_url, job_id)
            assert [(state, w) for state, _, w in rows] == [("pending", None)] * 5
            assert status(gateway.client(), job_id)["state"] == "running"
    finally:
        worker.kill()


def test_worker_and_gateway_refuse_bad_settings_in_one_line(tmp_path):
    import subprocess
    import sys

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dotsocr", *args], capture_output=True, text=True,
            env={"PATH": "/usr/bin:/bin", **env}, timeout=60,
        )  # fmt: skip

    no_db = run("worker", "--data-dir", str(tmp_path))
    assert no_db.returncode == 2
    assert no_db.stderr.strip().count("\n") == 0 and "DOTSOCR_DATABASE_URL" in no_db.stderr
    mysql = run("worker", DOTSOCR_DATABASE_URL="mysql://x@h/db")
    assert mysql.returncode == 2 and "PostgreSQL URL" in mysql.stderr
    bare = run("worker", DOTSOCR_DATABASE_URL="me:s3cret@db/jobs")
    assert bare.returncode == 2 and "PostgreSQL URL" in bare.stderr
    assert "s3cret" not in bare.stderr
    alone = run("gateway", "--data-dir", str(tmp_path), DOTSOCR_READ_PAGES="false")
    assert alone.returncode == 2 and "no worker could read" in alone.stderr


def test_a_database_gone_is_a_503_not_a_crash(standin, tmp_path):
    """PostgreSQL stops under a running gateway: requests get the one JSON error shape
    with Retry-After (not a 500), and /health still answers."""
    import pg_support

    with pg_support.PostgresServer() as pg:
        env = shared_env(pg.database(), str(tmp_path / "shared"))
        with running_gateway(
            tmp_path / "g", "--server", standin.url, "--engine", "server", env=env, ready=True
        ) as gateway:
            client = gateway.client()
            job_id = client.post("/v1/jobs", files=[upload(SAMPLE)]).json()["id"]
            wait_job(client, job_id)
            pg.process.terminate()
            pg.process.wait(30)
            answer = client.get(f"/v1/jobs/{job_id}")
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "5"
            error = answer.json()["error"]
            assert error["code"] == "unavailable" and "job database" in error["message"]
            refused = client.post("/v1/jobs", files=[upload(SAMPLE)])
            assert refused.status_code == 503, refused.text
            assert client.get("/health").status_code == 200


def test_the_queue_is_counted_for_autoscaling_and_workers_export_their_pages(
    standin, database_url, tmp_path
):
    """What the autoscalers read: every gateway reports the whole shared queue; a worker's
    Prometheus port counts the pages it read (and answers its liveness probe)."""
    import httpx

    from vllm_support.server import free_port

    env = shared_env(database_url, str(tmp_path / "shared"), DOTSOCR_READ_PAGES="false")
    args = ("--server", standin.url, "--engine", "server")
    waiting = ("dotsocr_queue_pages", ())
    with (
        running_gateway(tmp_path / "a", *args, env=env, ready=True) as a,
        running_gateway(tmp_path / "b", *args, env=env, ready=True) as b,
    ):
        job_id = a.client().post("/v1/jobs", files=[upload(SAMPLE)]).json()["id"]
        for gateway in (a, b):  # nobody reads yet: five pages wait, seen from both
            wait_for(lambda g=gateway: metrics(g.client())[waiting] == 5, 10, "5 waiting")
        port = free_port()
        worker = start_worker(
            tmp_path, "w", *args, "--host", "127.0.0.1", "--metrics-port", str(port),
            env=shared_env(
                database_url, str(tmp_path / "shared")
            ),
        )  # fmt: skip
        try:
            assert wait_job(a.client(), job_id)["pages"]["done"] == 5
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            assert scraped.status_code == 200
            read = [
                line for line in scraped.text.splitlines()
                if line.startswith('dotsocr_pages_total{status="ok"}')
            ]  # fmt: skip
            assert read == ['dotsocr_pages_total{status="ok"} 5.0']
            wait_for(lambda: metrics(b.client())[waiting] == 0, 10, "an empty queue")
        finally:
            assert worker.stop() == 0, worker.log_tail()
