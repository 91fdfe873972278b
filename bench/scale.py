"""Pages/s with 1, 2 and 4 model-server replicas, and with 1, 2 and 4 workers sharing
jobs through PostgreSQL, as ratios of linear scaling.

Each replica is a stand-in vLLM (tests/vllm_support/standin.py) that answers C requests at
once after L seconds, so N replicas can do at most N*C/L pages/s.

- replicas: ``dotsocr ocr`` reads one book through them twice: with the replicas listed
  (``--server A,B,...``: our own least-busy pool) and through the vLLM project's router
  (vllm-router, power of two).
- workers: a gateway that reads nothing takes the book as a job; N ``dotsocr worker``
  processes, each with a stand-in of its own (a GPU each), claim its pages from a
  PostgreSQL started here (Debian's server, tests/pg_support.py). Also printed: the
  database's transactions and CPU seconds per page, to size it.

    .venv/bin/python bench/scale.py [--pages 200] [--capacity 4] [--latency 0.25]
                                    [--only replicas|workers]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from gateway_support import start_gateway, start_worker, upload, wait_job  # noqa: E402
from pg_support import PostgresServer  # noqa: E402
from vllm_support.documents import book  # noqa: E402
from vllm_support.server import free_port  # noqa: E402
from vllm_support.standin import StandIn, start  # noqa: E402

ROUTER = shutil.which("vllm-router", path=str(Path(sys.executable).parent))


def read(pdf: Path, server: str, concurrency: int, out: Path) -> float:
    """Seconds ``dotsocr ocr`` takes over the book."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dotsocr", "ocr", str(pdf), "--dpi", "72", "--server", server,
         "--engine", "server", "--concurrency", str(concurrency), "-o", str(out), "--force"],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"dotsocr ocr failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def router(urls: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    policy = "power_of_two" if len(urls) > 1 else "round_robin"  # two needs two
    process = subprocess.Popen(
        [ROUTER, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
         "--worker-urls", *urls, "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    sys.exit("vllm-router did not start")


def database_load(pg: PostgresServer, url: str) -> tuple[int, float]:
    """Transactions committed in the bench's database, and CPU seconds of every
    PostgreSQL process, so far."""
    import psycopg

    with psycopg.connect(url) as conn:
        commits = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if str(pg.folder).encode() in command or b"postgres: " in command:
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return commits, ticks / os.sysconf("SC_CLK_TCK")


def workers(args: argparse.Namespace, pdf: Path, folder: Path) -> None:
    """Pages/s of N workers, each with a stand-in of its own, sharing one job."""
    print("\nworkers   ideal p/s  workers p/s  ratio   db commits/page  db CPU ms/page")
    with PostgresServer() as pg:
        for count in (1, 2, 4):
            url = pg.database()
            env = {"DOTSOCR_DATABASE_URL": url, "DOTSOCR_STORAGE_URL": str(folder / f"s{count}")}
            states = [
                StandIn(capacity=args.capacity, latency=args.latency, record=False)
                for _ in range(count)
            ]
            servers = [start(state) for state in states]
            gateway = start_gateway(
                folder / f"gateway-{count}", env={**env, "DOTSOCR_READ_PAGES": "false"}
            )
            slots = str(2 * args.capacity)  # enough waiting to keep every slot busy
            readers = [
                start_worker(
                    folder / f"workers-{count}",
                    f"w{n}",
                    *("--server", state.url, "--engine", "server", "--max-in-flight", slots),
                    env=env,
                )
                for n, state in enumerate(states)
            ]
            try:
                client = gateway.client(timeout=120)
                commits, cpu = database_load(pg, url)
                started = time.perf_counter()
                sent = client.post("/v1/jobs", files=[upload(pdf)], data={"dpi": "72"})
                job = wait_job(client, sent.json()["id"], timeout=3600)
                rate = args.pages / (time.perf_counter() - started)
                commits_after, cpu_after = database_load(pg, url)
                assert job["pages"]["done"] == args.pages, job
            finally:
                for reader in readers:
                    reader.stop()
                gateway.stop()
                for server in servers:
                    server.shutdown()
                    server.server_close()
            ideal = count * args.capacity / args.latency
            print(
                f"{count:7d}  {ideal:10.1f}  {rate:11.1f}  {rate / ideal:5.2f}  "
                f"{(commits_after - commits) / args.pages:15.1f}  "
                f"{1000 * (cpu_after - cpu) / args.pages:14.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--only", choices=("replicas", "workers"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pdf = book(args.pages, folder)
        print(
            f"{args.pages} pages; each replica answers {args.capacity} at once after "
            f"{args.latency:g} s ({args.capacity / args.latency:g} pages/s at most)"
        )
        if args.only != "workers":
            replicas(args, pdf, folder)
        if args.only != "replicas":
            workers(args, pdf, folder)


def replicas(args: argparse.Namespace, pdf: Path, folder: Path) -> None:
    """Pages/s of one client through N replicas: our pool, then vllm-router."""
    print("replicas  ideal p/s   pool p/s  ratio   router p/s  ratio")
    for count in (1, 2, 4):
        states = [
            StandIn(capacity=args.capacity, latency=args.latency, record=False)
            for _ in range(count)
        ]
        servers = [start(state) for state in states]
        urls = [state.url for state in states]
        ideal = count * args.capacity / args.latency
        concurrency = 2 * count * args.capacity  # enough waiting to keep every slot busy
        try:
            pool = args.pages / read(pdf, ",".join(urls), concurrency, folder / "pool")
            routed = "      -      -"
            if ROUTER:
                process, url = router(urls)
                try:
                    rate = args.pages / read(pdf, url, concurrency, folder / "router")
                finally:
                    process.terminate()
                    process.wait()
                routed = f"{rate:12.1f}  {rate / ideal:5.2f}"
        finally:
            for server in servers:
                server.shutdown()
                server.server_close()
        print(f"{count:8d}  {ideal:9.1f}  {pool:9.1f}  {pool / ideal:5.2f} {routed}")


if __name__ == "__main__":
    main()
