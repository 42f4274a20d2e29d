"""Layer 4, faults on MySQL (tested on MariaDB), as on PostgreSQL: a server that hangs behind a
proxy answers 503 within the bound and serves again at once, connections cut under the service
answer 503 envelopes until they come back, racing writes answer 201, 404 or 409 and never 5xx,
and the export of a million rows streams with memory flat in the row count.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import Projects
from faults import ENVELOPE, PRODUCT, MysqlDatabase, mysql_service
from support import ServiceProcess, TcpProxy
from test_faults_hardening import (
    CLIENT_TIMEOUT,
    DATABASE_TIMEOUT,
    assert_no_server_error,
    describe,
    race_writes,
    requests_while_the_database_hangs,
    until_served,
)
from variants import MYSQL_REDIS

from harness import seed_products

pytestmark = pytest.mark.xdist_group(MYSQL_REDIS.id)


def test_hanging_mysql_answers_503_within_the_timeout_and_serves_again_at_once(
    projects: Projects, mysql_database: MysqlDatabase, mysql_proxy: TcpProxy, tmp_path: Path
) -> None:
    service = mysql_service(
        projects,
        tmp_path,
        mysql_database.url_through(mysql_proxy),
        APP_DATABASE_POOL_SIZE="2",
        APP_DATABASE_TIMEOUT_SECONDS=str(DATABASE_TIMEOUT),
    )
    with service, httpx.Client(base_url=service.url, timeout=CLIENT_TIMEOUT) as client:
        product = client.post("/api/v1/products", json=PRODUCT).json()
        for _ in range(4):
            client.get("/api/v1/products")
        mysql_proxy.hang()
        down = asyncio.run(requests_while_the_database_hangs(service.url, product["id"]))
        mysql_proxy.resume()
        back = asyncio.run(until_served(service.url, "/api/v1/products", 10))
        after = [client.get(f"/api/v1/products/{product['id']}") for _ in range(4)]
    output = service.stop()

    slowest = max(result.seconds for result in down)
    print(
        f"\nMySQL hanging (timeout {DATABASE_TIMEOUT}s, pool of 2, {len(down)} requests at "
        f"once): {describe(down)}; slowest {slowest:.2f}s; served again {back:.2f}s after the "
        "database came back"
    )
    for result in down:
        assert result.status == 503, (result.label, result.status)
        assert result.response is not None
        assert result.response.json().keys() >= ENVELOPE
        assert result.response.json()["error"] == "SERVICE_UNAVAILABLE"
        assert result.response.headers["retry-after"]
    # The same bound as on PostgreSQL: a checkout and one command, or a ping, a reconnect and
    # a command, each within the timeout.
    assert slowest < 3 * DATABASE_TIMEOUT + 1
    assert back < 3
    assert [response.status_code for response in after] == [200] * 4
    assert service.process.returncode == 0, output


def test_mysql_connections_cut_answer_503_envelopes_and_recover(
    projects: Projects, mysql_database: MysqlDatabase, mysql_proxy: TcpProxy, tmp_path: Path
) -> None:
    service = mysql_service(projects, tmp_path, mysql_database.url_through(mysql_proxy))
    with service, httpx.Client(base_url=service.url, timeout=10) as client:
        product = client.post("/api/v1/products", json=PRODUCT).json()
        one = f"/api/v1/products/{product['id']}"
        client.get("/api/v1/products")

        mysql_proxy.stop()  # every open connection dropped, new ones refused
        started = time.monotonic()
        down = [
            client.get("/api/v1/products"),
            client.get("/api/v1/products/export"),
            client.post("/api/v1/products", json={**PRODUCT, "sku": "KT-2048-002"}),
            client.patch(one, json={"price": "21.50"}),
            client.delete(one),
        ]
        slowest = time.monotonic() - started
        degraded = client.get("/health/ready").json()

        mysql_proxy.start()
        back = asyncio.run(until_served(service.url, "/api/v1/products", 10))
        listed = client.get("/api/v1/products")
        created = client.post("/api/v1/products", json={**PRODUCT, "sku": "KT-2048-003"})
    output = service.stop()

    print(
        f"\nMySQL connections cut: {len(down)} requests answered "
        f"{dict(Counter(response.status_code for response in down))} within {slowest:.2f}s; "
        f"served again {back:.2f}s after the server came back"
    )
    for response in down:
        assert response.status_code == 503, (response.request.url, response.text)
        assert response.json().keys() >= ENVELOPE
        assert response.headers["retry-after"]
    assert degraded["checks"]["database"] == "unavailable"
    assert listed.status_code == 200
    assert created.status_code == 201
    assert service.process.returncode == 0, output
    assert "Traceback" not in output


async def create_at_once(base_url: str, clients: int) -> Counter[int]:
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT) as client:
        responses = await asyncio.gather(
            *(client.post("/api/v1/products", json=PRODUCT) for _ in range(clients))
        )
    return Counter(response.status_code for response in responses)


def test_one_sku_created_at_once_on_mysql_answers_one_201_and_409s(
    projects: Projects, mysql_database: MysqlDatabase, tmp_path: Path
) -> None:
    clients = 40
    service = mysql_service(projects, tmp_path, mysql_database.url(), APP_WORKERS="2")
    service.wait_until_live(120)
    with service:
        statuses = asyncio.run(create_at_once(service.url, clients))
        listed = httpx.get(f"{service.url}/api/v1/products", timeout=10).json()
    print(f"\none sku POSTed by {clients} clients at once on MySQL (2 workers): {dict(statuses)}")
    assert statuses == {201: 1, 409: clients - 1}
    assert listed["total"] == 1


def test_writes_racing_on_mysql_answer_404_or_409_never_5xx(
    projects: Projects, mysql_database: MysqlDatabase, tmp_path: Path
) -> None:
    rounds = 100
    url = mysql_database.url()
    outcomes = race_writes(projects, MYSQL_REDIS, tmp_path, rounds, APP_DATABASE_URL=url)
    print(
        f"\nwrites racing on MySQL (2 workers): {rounds} rounds of 2 PATCHes and a DELETE of one "
        f"product at once: {dict(sorted(outcomes.items()))}"
    )
    assert_no_server_error(outcomes)


def export_growth_mib(service: ServiceProcess, rows: int) -> float:
    """Streams the whole export; the server's peak memory growth over it."""
    baseline_kib = service.rss_kib()
    lines = 0
    export_url = f"{service.url}/api/v1/products/export"
    with httpx.stream("GET", export_url, timeout=600) as response:
        for chunk in response.iter_bytes():
            lines += chunk.count(b"\n")
    assert response.status_code == 200
    assert lines == rows + 1
    return max(0, service.peak_rss_kib() - baseline_kib) / 1024


def test_export_of_a_million_rows_from_mysql_keeps_memory_flat(
    projects: Projects, mysql_database: MysqlDatabase, tmp_path: Path
) -> None:
    project = projects.installed(MYSQL_REDIS)
    url = mysql_database.url()
    growth: dict[int, float] = {}
    for rows in (100_000, 1_000_000):
        with mysql_service(projects, tmp_path, url):
            pass  # the first start applies the migrations
        seed_products(project, MYSQL_REDIS.package, rows, url)
        service = mysql_service(
            projects,
            tmp_path,
            url,
            APP_DATABASE_MIGRATE_ON_START="false",
            APP_LOG_LEVEL="WARNING",
            APP_DATABASE_TIMEOUT_SECONDS="30",
        )
        with service:
            started = time.monotonic()
            growth[rows] = export_growth_mib(service, rows)
            seconds = time.monotonic() - started
        print(
            f"\nexport of {rows:,} rows from MySQL: {seconds:.1f}s, server peak RSS growth "
            f"{growth[rows]:.1f} MiB"
        )
    # Ten times the rows must not mean more memory: a server-side cursor, batch by batch; and
    # under the budget of 50 MB for a million rows.
    assert growth[1_000_000] < growth[100_000] + 10
    assert growth[1_000_000] < 50
