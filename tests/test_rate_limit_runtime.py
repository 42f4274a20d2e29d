"""Layer 4 for the rate limit: worker processes that share Redis spend one budget per client."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import Projects
from support import ServiceProcess
from variants import RATE_LIMIT

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
