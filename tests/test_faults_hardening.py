"""Layer 4, hardening: bounded waits, a consistent cache, no 5xx from races, safe outputs.

Each test starts a rendered service as a process, attacks it (a dependency that hangs behind a
proxy that stops forwarding, concurrent clients racing on one product, hostile input) and prints
its figures. The tests of one variant share an xdist group, so one render serves them.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import hmac
import io
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import Projects
from support import RedisServer, ServiceProcess, TcpProxy
from test_faults import ENVELOPE, PRODUCT, postgres_server, through_proxy, throwaway_database
from variants import DEFAULT, POSTGRES_MEMORY, SELF_HOSTED_DOCS, SQLITE_REDIS

__all__ = ["postgres_server"]  # a fixture, used by name

# What the service is told to wait for its database, at most, in these tests.
DATABASE_TIMEOUT = 1.0
SECRET = "hardening-secret-that-is-long-enough-0123456789"


@pytest.fixture
def database_proxy(postgres_server: str) -> Iterator[TcpProxy]:
    address = urlsplit(postgres_server)
    proxy = TcpProxy((address.hostname or "127.0.0.1", address.port or 5432))
    proxy.start()
    yield proxy
    proxy.close()


@pytest.fixture
def redis_proxy() -> Iterator[tuple[RedisServer, TcpProxy]]:
    server = RedisServer()
    server.start()
    proxy = TcpProxy(("127.0.0.1", server.port))
    proxy.start()
    yield server, proxy
    proxy.close()
    server.kill()


@dataclass(frozen=True)
class Timed:
    label: str
    seconds: float
    status: int | None  # None: no answer within the client's timeout
    response: httpx.Response | None


async def timed(label: str, request: Awaitable[httpx.Response]) -> Timed:
    started = time.monotonic()
    try:
        response = await request
    except httpx.TimeoutException:
        return Timed(label, time.monotonic() - started, None, None)
    return Timed(label, time.monotonic() - started, response.status_code, response)


def describe(results: list[Timed]) -> str:
    return ", ".join(
        f"{r.label} {r.status or 'no answer'} in {r.seconds:.2f}s" for r in results
    )


# 1. Database waits are bounded

CLIENT_TIMEOUT = 12.0


async def requests_while_the_database_hangs(base_url: str, product_id: int) -> list[Timed]:
    """More requests at once than the pool has connections, each needing the database."""
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT) as client:
        one = f"/api/v1/products/{product_id}"
        return list(
            await asyncio.gather(
                timed("uncached read", client.get(f"/api/v1/products/{product_id + 1}")),
                timed("list", client.get("/api/v1/products")),
                timed("stats", client.get("/api/v1/products/stats")),
                timed("export", client.get("/api/v1/products/export")),
                timed("create", client.post("/api/v1/products", json=PRODUCT)),
                timed("update", client.patch(one, json={"price": "21.50"})),
                timed("delete", client.delete(one)),
                timed("second list", client.get("/api/v1/products?page=2")),
            )
        )


async def until_served(base_url: str, path: str, seconds: float) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base_url, timeout=CLIENT_TIMEOUT) as client:
        while time.monotonic() - started < seconds:
            if (await client.get(path)).status_code == 200:
                return time.monotonic() - started
            await asyncio.sleep(0.05)
    pytest.fail(f"{path} was not served within {seconds}s of the database's return")


@pytest.mark.xdist_group(POSTGRES_MEMORY.id)
def test_hanging_database_answers_503_within_the_timeout_and_serves_again_at_once(
    projects: Projects, postgres_server: str, database_proxy: TcpProxy, tmp_path: Path
) -> None:
    project = projects.installed(POSTGRES_MEMORY)
    with throwaway_database(project, postgres_server) as database:
        service = ServiceProcess(
            project,
            POSTGRES_MEMORY.package,
            tmp_path / "service.log",
            APP_ENVIRONMENT="development",
            APP_LOG_FORMAT="json",
            APP_DATABASE_URL=through_proxy(postgres_server, database_proxy, database),
            APP_DATABASE_POOL_SIZE="2",
            APP_DATABASE_TIMEOUT_SECONDS=str(DATABASE_TIMEOUT),
        )
        with service, httpx.Client(base_url=service.url, timeout=CLIENT_TIMEOUT) as client:
            product = client.post("/api/v1/products", json=PRODUCT).json()
            # Both pooled connections open and idle, as on a service that has been serving.
            for _ in range(4):
                client.get("/api/v1/products")
            database_proxy.hang()
            down = asyncio.run(requests_while_the_database_hangs(service.url, product["id"]))
            database_proxy.resume()
            back = asyncio.run(until_served(service.url, "/api/v1/products", 10))
            # Every connection slot came back: as many requests at once as the pool holds.
            after = [client.get(f"/api/v1/products/{product['id']}") for _ in range(4)]
        output = service.stop()

    slowest = max(result.seconds for result in down)
    print(
        f"\ndatabase hanging (timeout {DATABASE_TIMEOUT}s, pool of 2, {len(down)} requests at "
        f"once): {describe(down)}; slowest {slowest:.2f}s; served again {back:.2f}s after the "
        "database came back"
    )
    for result in down:
        assert result.status == 503, (result.label, result.status)
        assert result.response is not None
        assert result.response.json().keys() >= ENVELOPE
        assert result.response.json()["error"] == "SERVICE_UNAVAILABLE"
        assert result.response.headers["retry-after"]
    # Each wait (pool checkout, connect, a command) is bounded by the timeout; a request makes
    # at most a checkout and one command, or a ping, a reconnect and a command.
    assert slowest < 3 * DATABASE_TIMEOUT + 1
    assert back < 3
    assert [response.status_code for response in after] == [200] * 4
    assert service.process.returncode == 0, output


# 2. Readiness answers within its probe's timeout


READY_PROBE_TIMEOUT = 3.0  # the Kubernetes probes' timeoutSeconds


@pytest.mark.xdist_group(POSTGRES_MEMORY.id)
def test_ready_answers_within_the_probe_timeout_while_the_database_hangs(
    projects: Projects, postgres_server: str, database_proxy: TcpProxy, tmp_path: Path
) -> None:
    project = projects.installed(POSTGRES_MEMORY)
    with throwaway_database(project, postgres_server) as database:
        service = ServiceProcess(
            project,
            POSTGRES_MEMORY.package,
            tmp_path / "service.log",
            APP_ENVIRONMENT="development",
            APP_LOG_FORMAT="json",
            APP_DATABASE_URL=through_proxy(postgres_server, database_proxy, database),
        )
        with service, httpx.Client(base_url=service.url, timeout=CLIENT_TIMEOUT) as client:
            assert client.get("/health/ready").status_code == 200
            database_proxy.hang()
            probes = []
            for _ in range(3):
                started = time.monotonic()
                response = client.get("/health/ready")
                probes.append((time.monotonic() - started, response))
            database_proxy.resume()
        output = service.stop()

    timings = ", ".join(f"{seconds:.2f}s" for seconds, _ in probes)
    print(
        f"\n/health/ready with the database hanging: 3 probes answered "
        f"{[response.status_code for _, response in probes]} in {timings} "
        f"(probe timeout {READY_PROBE_TIMEOUT}s)"
    )
    for seconds, response in probes:
        assert response.status_code == 503
        assert response.json()["checks"]["database"] == "unavailable"
        assert seconds < READY_PROBE_TIMEOUT - 0.5
    assert service.process.returncode == 0, output
