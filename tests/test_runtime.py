"""Layer 4: rendered services run as processes: they serve, stream and stop cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import Projects
from support import ServiceProcess, Variant, run
from variants import DEFAULT, SELF_HOSTED_DOCS, SQLITE_REDIS

from harness import clean_env, free_port, seed_products

PRODUCT = {"name": "Kettle", "price": "19.90", "category_id": 1, "sku": "KT-2048-001"}
OIDC = Variant("oidc", {"auth": "oidc"})


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
    assert "service stopped" in {line["event"] for line in lines}
    assert "Traceback" not in output


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
        seed_products(project, DEFAULT.package, count, url)
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
    assert output.count("service stopped") == 2
    assert "Traceback" not in output


def pids_by_request_id(output: str) -> dict[str, int]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return {line["request_id"]: line["pid"] for line in lines if "request_id" in line}


@pytest.mark.xdist_group(OIDC.id)
def test_an_oidc_service_goes_from_its_readme_to_an_authorised_write(
    projects: Projects, tmp_path: Path
) -> None:
    """ "Run it": the service, the local provider beside it, a token with the write scope."""
    project = projects.installed(OIDC)
    python = project / ".venv" / "bin" / "python"
    # The README's provider listens where `.env` says; here on a free port, so that runs in
    # parallel do not meet. The audience is the one `.env` names.
    issuer = f"http://127.0.0.1:{free_port()}"
    command = [python, "-m", f"{OIDC.package}.dev_auth"]
    with (tmp_path / "provider.log").open("w") as provider_log:
        provider = subprocess.Popen(
            [*command, "serve"],
            cwd=project,
            env=clean_env(APP_OIDC_ISSUER=issuer),
            stdout=provider_log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(f"{issuer}/.well-known/openid-configuration", provider)
        service = ServiceProcess(
            project,
            OIDC.package,
            tmp_path / "service.log",
            APP_OIDC_ISSUER=issuer,
            APP_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'service.db'}",
        )
        with service:
            token = run(
                [*command, "token", "--scope", "products:write"], project, APP_OIDC_ISSUER=issuer
            ).stdout.strip()
            created = httpx.post(
                f"{service.url}/api/v1/products",
                json=PRODUCT,
                headers={"Authorization": f"Bearer {token}"},
            )
            anonymous = httpx.post(f"{service.url}/api/v1/products", json=PRODUCT)
        output = service.stop()
    finally:
        provider.terminate()
        provider.wait(timeout=10)
    assert created.status_code == 201, created.text
    assert anonymous.status_code == 401
    assert "Traceback" not in output


@pytest.mark.xdist_group(OIDC.id)
def test_the_local_provider_refuses_to_run_outside_development(projects: Projects) -> None:
    project = projects.installed(OIDC)
    refused = subprocess.run(
        [project / ".venv" / "bin" / "python", "-m", f"{OIDC.package}.dev_auth", "serve"],
        cwd=project,
        env=clean_env(APP_ENVIRONMENT="production"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "Refusing to run a local identity provider in production" in refused.stderr


@pytest.mark.xdist_group(SELF_HOSTED_DOCS.id)
def test_a_jwt_service_goes_from_its_readme_to_an_authorised_write(
    projects: Projects, tmp_path: Path
) -> None:
    """ "Run it": the service, and a token of its mint command (both read the secret in .env)."""
    project = projects.installed(SELF_HOSTED_DOCS)
    service = ServiceProcess(
        project,
        SELF_HOSTED_DOCS.package,
        tmp_path / "service.log",
        APP_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'service.db'}",
    )
    with service:
        mint = [project / ".venv" / "bin" / "python", "-m", f"{SELF_HOSTED_DOCS.package}.security"]
        token = run([*mint, "--sub", "alice"], project).stdout.strip()
        created = httpx.post(
            f"{service.url}/api/v1/products",
            json=PRODUCT,
            headers={"Authorization": f"Bearer {token}"},
        )
    assert created.status_code == 201, created.text


def wait_for(url: str, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{url}: its server exited {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer in {seconds}s")
