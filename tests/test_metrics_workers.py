"""Layer 4 for metrics: with several worker processes, any scrape reports every worker's counts."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from conftest import Projects
from support import ServiceProcess
from variants import METRICS

WORKERS = 2
REQUESTS = 30
TOKEN = "metrics-token-of-the-test"
LIVE_COUNT = re.compile(
    r'^http_requests_total\{method="GET",route="/health/live",status="200"\} (\S+)$', re.M
)


def wait_for_workers(log: Path, workers: int) -> None:
    deadline = time.monotonic() + 60
    while log.read_text().count("service started") < workers:
        if time.monotonic() > deadline:
            pytest.fail(f"{workers} workers did not start in time:\n{log.read_text()}")
        time.sleep(0.1)


def live_count(scrape: str) -> float:
    match = LIVE_COUNT.search(scrape)
    assert match, scrape
    return float(match.group(1))


@pytest.mark.xdist_group(METRICS.id)
def test_metrics_add_up_across_worker_processes(projects: Projects, tmp_path: Path) -> None:
    project = projects.installed(METRICS)
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"left over from an earlier run")
    log = tmp_path / "service.log"
    env = {
        "APP_WORKERS": str(WORKERS),
        "PROMETHEUS_MULTIPROC_DIR": str(shared),
        "APP_METRICS_TOKEN": TOKEN,
        # A database of the test's own: the render is shared with the other checks of its variant.
        "APP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'service.db'}",
    }
    with ServiceProcess(project, METRICS.package, log, **env) as service:
        base_url = service.url
        wait_for_workers(log, WORKERS)
        # Each request opens a new connection, which either worker may accept.
        for _ in range(REQUESTS):
            httpx.get(f"{base_url}/health/live").raise_for_status()
        scraper = {"Authorization": f"Bearer {TOKEN}"}
        scrapes = [httpx.get(f"{base_url}/metrics", headers=scraper) for _ in range(6)]

    assert [scrape.status_code for scrape in scrapes] == [200] * len(scrapes)
    # The start-up probe answered /health/live once before the loop.
    assert [live_count(scrape.text) for scrape in scrapes] == [REQUESTS + 1] * len(scrapes)
    writers = {path.stem.rsplit("_", 1)[1] for path in shared.glob("counter_*.db")}
    assert "1" not in writers, "the stale file of an earlier run was kept"
    assert len(writers) == WORKERS, f"not every worker answered: {sorted(writers)}"
