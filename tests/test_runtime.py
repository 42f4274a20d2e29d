"""Layer 4: rendered services run as processes: they serve, survive outages, stop cleanly."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Projects
from support import ServiceProcess, free_port, run
from variants import DEFAULT, SQLITE_REDIS

PRODUCT = {"name": "Kettle", "price": "19.90", "category_id": 1, "sku": "KT-2048-001"}


@pytest.mark.xdist_group(DEFAULT.id)
def test_default_service_serves_and_stops_cleanly_on_sigterm(
    projects: Projects, tmp_path: Path
) -> None:
    project = projects.installed(DEFAULT)
    database = f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    service = ServiceProcess(
        project,
        DEFAULT.package,
        tmp_path / "service.log",
        APP_LOG_FORMAT="json",
        APP_DATABASE_URL=database,
    )
    with service:
        live = httpx.get(f"{service.url}/health/live", headers={"X-Request-ID": "abc-123"})
        ready = httpx.get(f"{service.url}/health/ready")
        created = httpx.post(f"{service.url}/api/v1/products", json=PRODUCT)
        missing = httpx.get(f"{service.url}/nowhere", headers={"X-Request-ID": "abc-123"})
    output = service.stop()

    assert live.status_code == 200
    assert live.headers["x-request-id"] == "abc-123"
    assert ready.json() == {"status": "healthy", "checks": {"database": "ok"}}
    assert created.status_code == 201
    assert missing.status_code == 404
    assert missing.json()["request_id"] == "abc-123"
    assert service.process.returncode == 0, output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("path") == "/health/live"]
    assert access[-1]["request_id"] == "abc-123"
    assert "Application shutdown complete." in {line["event"] for line in lines}
    assert "Traceback" not in output


class RedisServer:
    """A throw-away redis-server on a free port, which the test can kill and bring back."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed: the Redis outage test needs one")
        self.command = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*self.command, "--port", str(self.port)], stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.kill()


def wait_for_status(url: str, status: int, seconds: float = 10) -> float:
    """Poll until `url` answers `status`; return how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if httpx.get(url, timeout=2).status_code == status:
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"{url} did not answer {status} within {seconds}s")


@pytest.mark.xdist_group(SQLITE_REDIS.id)
def test_redis_outage_degrades_to_misses_and_recovers(
    projects: Projects, redis_server: RedisServer, tmp_path: Path
) -> None:
    project = projects.installed(SQLITE_REDIS)
    service = ServiceProcess(
        project,
        SQLITE_REDIS.package,
        tmp_path / "service.log",
        APP_REDIS_URL=redis_server.url,
        APP_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'service.db'}",
    )
    with service:
        product = httpx.post(f"{service.url}/api/v1/products", json=PRODUCT).json()
        read_url = f"{service.url}/api/v1/products/{product['id']}"
        ready_url = f"{service.url}/health/ready"
        before = [httpx.get(read_url).headers["x-cache"] for _ in range(2)]

        redis_server.kill()
        during = [httpx.get(read_url) for _ in range(50)]
        time_to_503 = wait_for_status(ready_url, 503)
        degraded = httpx.get(ready_url).json()

        redis_server.start()
        time_to_200 = wait_for_status(ready_url, 200)
        time.sleep(1.1)  # the cache rests for a second after its last failure
        after = [httpx.get(read_url).headers["x-cache"] for _ in range(2)]

    statuses = [response.status_code for response in during]
    print(
        f"\nredis outage: {len(during)} reads while down, "
        f"{sum(status >= 500 for status in statuses)} answered 5xx; "
        f"/health/ready 503 after {time_to_503:.2f}s, 200 again {time_to_200:.2f}s after restart"
    )
    assert before == ["MISS", "HIT"]
    assert statuses == [200] * len(during)
    assert {response.headers["x-cache"] for response in during} == {"MISS"}
    assert degraded["checks"]["redis"] == "unavailable"
    assert time_to_503 < 1
    assert after == ["MISS", "HIT"]
    assert service.process.returncode == 0, service.output


def seed_products(database: Path, count: int) -> None:
    """Bulk rows straight into the service's SQLite file (the API would take minutes)."""
    now = "2026-01-01 00:00:00.000000"
    rows = (
        (
            f"Product {i}",
            None,
            1990 + i % 1000,
            1 + i % 50,
            f"AA-{i // 1000:04d}-{i % 1000:03d}",
            now,
            now,
        )
        for i in range(count)
    )
    with sqlite3.connect(database) as connection:
        connection.executemany(
            "INSERT INTO products (name, description, price, category_id, sku, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


@pytest.mark.xdist_group(DEFAULT.id)
def test_export_streams_with_memory_flat_in_the_row_count(
    projects: Projects, tmp_path: Path
) -> None:
    project = projects.installed(DEFAULT)
    growth_mib: dict[int, float] = {}
    for count in (10_000, 100_000):
        database = tmp_path / f"export-{count}.db"
        url = f"sqlite+aiosqlite:///{database}"
        log = tmp_path / f"export-{count}.log"
        with ServiceProcess(project, DEFAULT.package, log, APP_DATABASE_URL=url):
            pass  # the first start applies the migrations
        seed_products(database, count)
        service = ServiceProcess(
            project,
            DEFAULT.package,
            log,
            APP_DATABASE_URL=url,
            APP_DATABASE_MIGRATE_ON_START="false",
            APP_LOG_LEVEL="WARNING",
        )
        with service:
            baseline_kib = service.rss_kib()
            started = time.monotonic()
            first_chunk_at, chunks, lines = 0.0, 0, 0
            export_url = f"{service.url}/api/v1/products/export"
            with httpx.stream("GET", export_url, timeout=120) as response:
                for chunk in response.iter_bytes():
                    chunks += 1
                    first_chunk_at = first_chunk_at or time.monotonic() - started
                    lines += chunk.count(b"\n")
            total = time.monotonic() - started
            growth_mib[count] = max(0, service.peak_rss_kib() - baseline_kib) / 1024
        print(
            f"\nexport of {count} rows: {lines} lines in {chunks} chunks, first chunk after "
            f"{first_chunk_at * 1000:.0f} ms, all after {total * 1000:.0f} ms, "
            f"server peak RSS growth {growth_mib[count]:.1f} MiB"
        )
        assert response.status_code == 200
        assert lines == count + 1
        assert chunks > count // 1000
    # Ten times the rows must not mean more memory: batches are read and sent one by one.
    assert growth_mib[100_000] < growth_mib[10_000] + 10


@pytest.mark.xdist_group(SQLITE_REDIS.id)
def test_two_workers_share_one_redis_cache(projects: Projects, tmp_path: Path) -> None:
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("TEST_REDIS_URL is not set: two workers share the cache through a real Redis")
    project = projects.installed(SQLITE_REDIS)
    env = {
        "APP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
        "APP_REDIS_URL": redis_url,
        "APP_CACHE_PREFIX": f"workers-{uuid.uuid4().hex}",
        "APP_LOG_FORMAT": "json",
    }
    # Migrate once, as a deployment's migration job does, rather than in both workers.
    run([project / ".venv" / "bin" / "alembic", "upgrade", "head"], project, **env)
    service = ServiceProcess(
        project,
        SQLITE_REDIS.package,
        tmp_path / "service.log",
        APP_WORKERS="2",
        APP_DATABASE_MIGRATE_ON_START="false",
        **env,
    )
    with service:
        product = httpx.post(f"{service.url}/api/v1/products", json=PRODUCT).json()
        reads: list[tuple[str, str]] = []
        for number in range(200):
            # A new connection each time: either worker may accept it.
            request_id = f"read-{number}"
            response = httpx.get(
                f"{service.url}/api/v1/products/{product['id']}",
                headers={"X-Request-ID": request_id},
            )
            reads.append((request_id, response.headers["x-cache"]))
            # Access lines reach the log within a tenth of a second, not at once.
            pids = pids_by_request_id(service.output)
            if len({pids[read] for read, _ in reads if read in pids}) > 1:
                break
    output = service.stop()

    pids = pids_by_request_id(output)
    filled_by = pids[reads[0][0]]
    served_by_other = [cache for request_id, cache in reads if pids[request_id] != filled_by]
    print(
        f"\ntwo workers: first read {reads[0][1]} by pid {filled_by}; "
        f"reads by the other worker: {served_by_other}"
    )
    assert reads[0][1] == "MISS"
    assert served_by_other, "every read went to the same worker"
    assert set(served_by_other) == {"HIT"}
    assert service.process.returncode == 0, output
    assert output.count("Application shutdown complete.") == 2
    assert "Traceback" not in output


def pids_by_request_id(output: str) -> dict[str, int]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return {line["request_id"]: line["pid"] for line in lines if "request_id" in line}
