"""Layer 4 for `jobs`: the API and its workers as processes, on PostgreSQL and a real Redis.

A worker killed mid-import (SIGKILL) leaves the job to the next worker, and the import ends with
every row exactly once; a worker stopped with SIGTERM mid-import loses nothing; a job that Redis
lost while it waited runs after the restarts. The tests print the import throughput and the
API's latency while an import runs.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Projects
from support import ServiceProcess, clean_env, free_port
from variants import JOBS

from harness import throwaway_database

pytestmark = pytest.mark.xdist_group(JOBS.id)

CSV = {"Content-Type": "text/csv"}
# Quick takeover of a dead worker's job: heartbeat 3 s + sweep 2 s + SAQ's 5 s wait.
TAKEOVER_BOUND_SECONDS = 3 + 2 + 5


class WorkerProcess(ServiceProcess):
    """`python -m <package>.worker`, its health probes on a free port."""

    def __init__(self, project: Path, package: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("w") as output:
            self.process = subprocess.Popen(
                [project / ".venv" / "bin" / "python", "-m", f"{package}.worker"],
                cwd=project,
                env=clean_env(APP_JOBS_WORKER_PORT=str(self.port), PYTHONUNBUFFERED="1", **env),
                stdout=output,
                stderr=subprocess.STDOUT,
            )


def csv_rows(count: int, prefix: str = "AA") -> str:
    lines = ["name,description,price,category_id,sku"]
    lines += [
        f"Product {n},,{1 + n % 50}.90,{1 + n % 7},{prefix}-{n // 1000:04d}-{n % 1000:03d}"
        for n in range(count)
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def env(projects: Projects) -> Iterator[dict[str, str]]:
    """Settings for an API and its workers: a database and a queue of the test's own."""
    postgres, redis = os.environ.get("TEST_POSTGRES_URL"), os.environ.get("TEST_REDIS_URL")
    if not postgres or not redis:
        pytest.skip("TEST_POSTGRES_URL and TEST_REDIS_URL are needed: workers share both")
    project = projects.installed(JOBS)
    with throwaway_database(project, postgres) as database:
        server = postgres.replace("postgresql://", "postgresql+asyncpg://", 1).rsplit("/", 1)[0]
        yield {
            "APP_DATABASE_URL": f"{server}/{database}",
            "APP_JOBS_BROKER_URL": redis,
            "APP_JOBS_QUEUE": f"runtime-{uuid.uuid4().hex}",
            "APP_JOBS_HEARTBEAT_SECONDS": "3",
            "APP_JOBS_SWEEP_SECONDS": "2",
            "APP_LOG_FORMAT": "json",
        }


def api(
    projects: Projects, tmp_path: Path, env: dict[str, str], name: str = "api"
) -> ServiceProcess:
    # The API migrates the new database as it starts; workers start after it and do not.
    log = tmp_path / f"{name}.log"
    return ServiceProcess(projects.installed(JOBS), JOBS.package, log, **env)


def worker(
    projects: Projects, tmp_path: Path, env: dict[str, str], name: str, **extra: str
) -> WorkerProcess:
    log = tmp_path / f"{name}.log"
    settings = {**env, "APP_DATABASE_MIGRATE_ON_START": "false", **extra}
    return WorkerProcess(projects.installed(JOBS), JOBS.package, log, **settings)


def submit(service: ServiceProcess, body: str) -> str:
    response = httpx.post(f"{service.url}/api/v1/products/imports", content=body, headers=CSV)
    assert response.status_code == 202, response.text
    return f"{service.url}{response.headers['location']}"


def job_state(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(url, timeout=5).json()
    return body


def wait_until_finished(url: str, seconds: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = job_state(url)
        if state["status"] in {"succeeded", "failed"}:
            return state
        time.sleep(0.05)
    pytest.fail(f"{url} did not finish in {seconds}s")


def product_count(service: ServiceProcess) -> int:
    count: int = httpx.get(f"{service.url}/api/v1/products", params={"size": 1}).json()["total"]
    return count


def wait_for_rows(service: ServiceProcess, seconds: float = 60) -> int:
    """Polls until some rows of the running import are committed; their number."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        count = product_count(service)
        if count:
            return count
        time.sleep(0.02)
    pytest.fail(f"no row was imported in {seconds}s")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_imports_run_on_a_worker_and_the_api_stays_responsive(
    projects: Projects, tmp_path: Path, env: dict[str, str]
) -> None:
    with api(projects, tmp_path, env) as service, worker(projects, tmp_path, env, "worker") as w:
        ready = httpx.get(f"{w.url}/health/ready").json()
        started = time.monotonic()
        small = wait_until_finished(submit(service, csv_rows(1_000)))
        small_seconds = time.monotonic() - started

        idle = [latency(service) for _ in range(200)]
        started = time.monotonic()
        url = submit(service, csv_rows(20_000, prefix="BB"))
        busy: list[float] = []
        while True:
            busy += [latency(service) for _ in range(20)]
            state = job_state(url)
            if state["status"] in {"succeeded", "failed"}:
                break
        large_seconds = time.monotonic() - started
        total = product_count(service)
    print(
        f"\nimport of 1,000 rows: {small_seconds:.2f} s ({1_000 / small_seconds:.0f} rows/s); "
        f"of 20,000 rows: {large_seconds:.2f} s ({20_000 / large_seconds:.0f} rows/s), "
        "one worker, PostgreSQL\n"
        f"GET /health/live idle: p50 {statistics.median(idle):.1f} ms, "
        f"p99 {percentile(idle, 0.99):.1f} ms; during the import ({len(busy)} requests): "
        f"p50 {statistics.median(busy):.1f} ms, p99 {percentile(busy, 0.99):.1f} ms"
    )
    assert ready["checks"] == {"database": "ok", "broker": "ok", "worker": "ok"}
    assert small["status"] == "succeeded", small
    assert small["result"] == {"created": 1_000, "skipped": 0, "invalid": 0, "errors": []}
    assert state["status"] == "succeeded", state
    assert state["result"]["created"] == 20_000
    assert total == 21_000
    assert w.process.returncode == 0, w.output


def latency(service: ServiceProcess) -> float:
    started = time.perf_counter()
    response = httpx.get(f"{service.url}/health/live")
    assert response.status_code == 200
    return (time.perf_counter() - started) * 1000


def test_a_worker_killed_mid_import_leaves_the_job_to_the_next_one(
    projects: Projects, tmp_path: Path, env: dict[str, str]
) -> None:
    with api(projects, tmp_path, env) as service:
        first = worker(projects, tmp_path, env, "first")
        first.wait_until_live()
        url = submit(service, csv_rows(20_000))
        wait_for_rows(service)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        killed_at = time.monotonic()
        at_kill = product_count(service)
        assert at_kill < 20_000, "the import ended before the worker could be killed"
        with worker(projects, tmp_path, env, "second") as second:
            live_after = time.monotonic() - killed_at
            taken_over_after = 0.0
            while time.monotonic() - killed_at < 120 and not taken_over_after:
                if "attempt 2" in second.output:
                    taken_over_after = time.monotonic() - killed_at
                time.sleep(0.05)
            state = wait_until_finished(url)
            finished_after = time.monotonic() - killed_at
            total = product_count(service)
    print(
        f"\nSIGKILL with {at_kill} of 20,000 rows committed; the next worker was live "
        f"{live_after:.1f} s after the kill, took the job over after {taken_over_after:.1f} s "
        f"(bound: heartbeat 3 s + sweep 2 s + 5 s from the later of the kill and its start) and "
        f"finished it {finished_after:.1f} s after the kill; rows: {total}"
    )
    # The bound, with room for a loaded machine: the job is the next worker's once it is stuck.
    assert 0 < taken_over_after <= max(3, live_after) + 2 + 5 + 10
    assert state["status"] == "succeeded", state
    assert state["result"] == {"created": 20_000, "skipped": 0, "invalid": 0, "errors": []}
    assert total == 20_000


def test_a_worker_stopped_mid_import_finishes_or_requeues_and_loses_nothing(
    projects: Projects, tmp_path: Path, env: dict[str, str]
) -> None:
    with api(projects, tmp_path, env) as service:
        # SIGTERM with time to spare: the worker ends the job, then exits.
        patient = worker(projects, tmp_path, env, "patient")
        patient.wait_until_live()
        finished_url = submit(service, csv_rows(20_000, prefix="CC"))
        wait_for_rows(service)
        patient_output = patient.stop(seconds=60)
        finished = job_state(finished_url)
        after_patient = product_count(service)

        # SIGTERM with no time: the job goes back to the queue, and the next worker ends it.
        impatient = worker(projects, tmp_path, env, "impatient", APP_JOBS_SHUTDOWN_SECONDS="0")
        impatient.wait_until_live()
        requeued_url = submit(service, csv_rows(20_000, prefix="DD"))
        while product_count(service) == after_patient:
            time.sleep(0.02)
        impatient_output = impatient.stop()
        at_stop = job_state(requeued_url)
        with worker(projects, tmp_path, env, "next"):
            requeued = wait_until_finished(requeued_url)
        total = product_count(service)
    print(
        f"\nSIGTERM mid-import: the job {finished['status']} before the worker exited; with no "
        f"grace period it was {at_stop['status']} at exit and then {requeued['status']}; "
        f"rows: {total}"
    )
    assert patient.process.returncode == 0, patient_output
    assert finished["status"] == "succeeded", finished
    assert after_patient == 20_000
    assert impatient.process.returncode == 0, impatient_output
    assert at_stop["status"] == "queued"
    assert requeued["status"] == "succeeded", requeued
    assert requeued["result"]["created"] == 20_000
    assert total == 40_000


def purge_queue(project: Path, url: str, queue: str) -> None:
    """Deletes every key of the queue in Redis, as a broker restarted without persistence."""
    script = (
        "import sys, redis\n"
        "client = redis.Redis.from_url(sys.argv[1], socket_timeout=5)\n"
        "for pattern in (f'saq:{sys.argv[2]}:*', f'saq:job:{sys.argv[2]}:*'):\n"
        "    keys = list(client.scan_iter(match=pattern))\n"
        "    if keys:\n"
        "        client.delete(*keys)\n"
    )
    python = project / ".venv" / "bin" / "python"
    subprocess.run([python, "-c", script, url, queue], check=True, timeout=30)


def test_a_job_that_redis_lost_runs_after_the_restarts(
    projects: Projects, tmp_path: Path, env: dict[str, str]
) -> None:
    quick = {**env, "APP_JOBS_LOST_AFTER_SECONDS": "2"}
    with api(projects, tmp_path, quick) as service:
        path = submit(service, csv_rows(100)).removeprefix(service.url)
    purge_queue(projects.installed(JOBS), env["APP_JOBS_BROKER_URL"], env["APP_JOBS_QUEUE"])
    with (
        api(projects, tmp_path, quick, "restarted-api") as service,
        worker(projects, tmp_path, quick, "worker"),
    ):
        started = time.monotonic()
        before = job_state(f"{service.url}{path}")
        state = wait_until_finished(f"{service.url}{path}")
        finished_after = time.monotonic() - started
    print(
        f"\nA job Redis lost, {before['status']} after the restarts, {state['status']} "
        f"{finished_after:.1f} s after the worker was live (bound: one sweep period, 2 s, the job "
        "being unchanged for over 2 s; then its run)"
    )
    assert before["status"] == "queued"
    assert state["status"] == "succeeded", state
    assert state["result"]["created"] == 100
    # The bound, with room for a loaded machine and the run.
    assert finished_after <= 2 + 10
