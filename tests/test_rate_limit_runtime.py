"""Layer 4 for the rate limit: worker processes that share Redis spend one budget per client; on
either server, only a trusted proxy names the client, and only with an address."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import Projects
from support import ServiceProcess, Variant
from variants import RATE_LIMIT, RATE_LIMIT_GRANIAN

WORKERS = 2
BUDGET = 30
# A day's window: the test's requests never straddle two windows.
LIMIT = f"{BUDGET}/day"
MAX_REQUESTS = 200
REQUEST_ID_PREFIX = "list-"
STATE = re.compile(r'^"default";r=(\d+);t=(\d+)$')


def wait_for_workers(log: Path, workers: int) -> None:
    deadline = time.monotonic() + 60
    while log.read_text().count("service started") < workers:
        if time.monotonic() > deadline:
            pytest.fail(f"{workers} workers did not start in time:\n{log.read_text()}")
        time.sleep(0.1)


def pids_by_request_id(output: str) -> dict[str, int]:
    """The worker that served each of the test's requests (not the start-up probe's)."""
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return {
        line["request_id"]: line["pid"]
        for line in lines
        if line.get("request_id", "").startswith(REQUEST_ID_PREFIX)
    }


@pytest.mark.xdist_group(RATE_LIMIT.id)
def test_two_workers_sharing_redis_spend_one_budget(projects: Projects, tmp_path: Path) -> None:
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        pytest.skip("TEST_REDIS_URL is not set: two workers share the budget through a real Redis")
    project = projects.installed(RATE_LIMIT)
    log = tmp_path / "service.log"
    service = ServiceProcess(
        project,
        RATE_LIMIT.package,
        log,
        APP_WORKERS=str(WORKERS),
        APP_REDIS_URL=redis_url,
        APP_RATE_LIMIT=LIMIT,
        APP_RATE_LIMIT_PREFIX=f"workers-{uuid.uuid4().hex}",
        APP_LOG_FORMAT="json",
    )
    answers: list[tuple[str, httpx.Response]] = []
    with service:
        wait_for_workers(log, WORKERS)
        for number in range(MAX_REQUESTS):
            # A new connection each time: either worker may accept it.
            request_id = f"{REQUEST_ID_PREFIX}{number}"
            response = httpx.get(
                f"{service.url}/api/v1/products", headers={"X-Request-ID": request_id}
            )
            answers.append((request_id, response))
            # Access lines reach the log within a tenth of a second, not at once.
            if number >= BUDGET + 10 and len(set(pids_by_request_id(service.output).values())) > 1:
                break
        ready = httpx.get(f"{service.url}/health/ready")
    output = service.stop()

    statuses = [response.status_code for _, response in answers]
    remaining = [STATE.match(response.headers["ratelimit"]) for _, response in answers]
    pids = pids_by_request_id(output)
    served = {
        pid: sum(1 for request_id, _ in answers if pids.get(request_id) == pid)
        for pid in set(pids.values())
    }
    print(
        f"\n{WORKERS} workers, one Redis, a budget of {BUDGET}: {statuses.count(200)} allowed, "
        f"{statuses.count(429)} refused; requests per worker: {sorted(served.values())}"
    )
    # Both workers served, yet BUDGET requests were allowed in all: with a budget each, the worker
    # that refused first would have allowed BUDGET requests on its own, the other its share besides.
    assert len(served) == WORKERS, "every request went to the same worker"
    assert statuses == [200] * BUDGET + [429] * (len(answers) - BUDGET)
    assert [int(match.group(1)) for match in remaining if match] == [
        *reversed(range(BUDGET)),
        *[0] * (len(answers) - BUDGET),
    ]
    assert all(response.headers["retry-after"] for _, response in answers[BUDGET:])
    assert ready.json()["checks"] == {"rate_limit": "ok"}
    assert service.process.returncode == 0, output
    assert "Traceback" not in output


FORWARDED_BUDGET = 10
FORWARDED_REQUESTS = 30


def forwarded_for(number: int) -> str:
    """A different X-Forwarded-For each time: an address, or any string a client may invent."""
    return f"198.51.100.{number % 250}" if number % 2 else f"client-{uuid.uuid4().hex}"


@pytest.mark.parametrize("variant", [RATE_LIMIT_GRANIAN.param(), RATE_LIMIT.param()])
@pytest.mark.parametrize(
    ("trusted_proxies", "forwarded"),
    [
        # No proxy trusted: the loopback peer's header names nobody, address or not.
        ("", forwarded_for),
        # The peer is a trusted proxy: what it forwards that is not an address names nobody.
        ("127.0.0.1", lambda number: f"client-{uuid.uuid4().hex}, not-an-address-{number}"),
    ],
    ids=["none-trusted", "loopback-trusted"],
)
def test_a_forwarded_client_is_believed_only_from_a_trusted_proxy_and_only_as_an_address(
    projects: Projects,
    tmp_path: Path,
    variant: Variant,
    trusted_proxies: str,
    forwarded: Callable[[int], str],
) -> None:
    service = ServiceProcess(
        projects.installed(variant),
        variant.package,
        tmp_path / "service.log",
        APP_RATE_LIMIT=f"{FORWARDED_BUDGET}/day",
        APP_TRUSTED_PROXIES=trusted_proxies,
    )
    with service, httpx.Client(base_url=service.url) as client:
        statuses = [
            client.get("/api/v1/products", headers={"X-Forwarded-For": forwarded(n)}).status_code
            for n in range(FORWARDED_REQUESTS)
        ]
        # From the trusted proxy, an address does name the client: a budget of its own.
        named = client.get("/api/v1/products", headers={"X-Forwarded-For": "203.0.113.9"})

    print(
        f"\n{variant.id}, APP_TRUSTED_PROXIES={trusted_proxies!r}: {FORWARDED_REQUESTS} requests "
        f"from 127.0.0.1, each with another X-Forwarded-For, a budget of {FORWARDED_BUDGET}: "
        f"{statuses.count(200)} allowed, {statuses.count(429)} refused"
    )
    assert statuses == [200] * FORWARDED_BUDGET + [429] * (FORWARDED_REQUESTS - FORWARDED_BUDGET)
    assert named.status_code == (200 if trusted_proxies else 429)
