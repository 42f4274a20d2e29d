"""Layer 4 for error reporting: a rendered service reports an unhandled error to a Sentry-protocol
receiver that the test runs, and a receiver that refuses or hangs costs the requests nothing."""

from __future__ import annotations

import gzip
import json
import statistics
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Projects
from support import (
    HoldingServer,
    QuietHandler,
    ServiceProcess,
    free_port,
    json_lines,
    logged_at,
    serving,
    timed_liveness_reads,
)
from variants import ERROR_REPORTING

REQUESTS = 200
ENVELOPE_PATH = "/api/1/envelope/"

pytestmark = pytest.mark.xdist_group(ERROR_REPORTING.id)

# A domain whose one route fails, added to the render as a team adds one.
FAILING_DOMAIN = '''
    """A route that fails, as a bug would make one."""

    from fastapi import APIRouter

    from .features import Feature

    router = APIRouter(prefix="/api/v1/failing", tags=["failing"])


    @router.get("")
    async def fail() -> None:
        raise RuntimeError("a bug in the failing route")


    feature: Feature[object] = Feature(name="failing", routers=[router])
'''


class Receiver(HoldingServer):
    """A Sentry envelope endpoint on a free loopback port, keeping the events it is sent."""

    def __init__(self, *, hold: bool = False) -> None:
        super().__init__(EnvelopeHandler, hold=hold)
        self.events: list[dict[str, Any]] = []

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.server_port}/1"


class EnvelopeHandler(QuietHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.server.hold:
            self.server.released.wait(timeout=60)
        if self.path != ENVELOPE_PATH:
            self.send_error(404)
            return
        # An envelope: a header line, then each item's header line and payload line.
        lines = body.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header).get("type") == "event":
                with self.server.lock:
                    self.server.events.append(json.loads(payload))
        self.answer()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serving(Receiver())


@pytest.fixture
def hung_receiver() -> Iterator[Receiver]:
    yield from serving(Receiver(hold=True))


@pytest.fixture(scope="module")
def project(projects: Projects) -> Path:
    """The render, with a domain whose route fails registered in its domains.py."""
    project = projects.installed(ERROR_REPORTING)
    source = project / "src" / ERROR_REPORTING.package
    if not (source / "failing.py").exists():
        (source / "failing.py").write_text(textwrap.dedent(FAILING_DOMAIN).lstrip())
        registry = source / "domains.py"
        text = registry.read_text().replace(
            "from .features import Feature\n",
            "from .failing import feature as failing\nfrom .features import Feature\n",
        )
        registry.write_text(text.replace(" = []\n", " = [failing]\n"))
    return project


def service(project: Path, tmp_path: Path, dsn: str, **env: str) -> ServiceProcess:
    return ServiceProcess(
        project,
        ERROR_REPORTING.package,
        tmp_path / "service.log",
        APP_LOG_FORMAT="json",
        APP_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'service.db'}",
        SENTRY_DSN=dsn,
        **env,
    )


def test_an_unhandled_error_reaches_the_receiver_with_its_request_id(
    project: Path, tmp_path: Path, receiver: Receiver
) -> None:
    with service(project, tmp_path, receiver.dsn) as running_service:
        failed = httpx.get(
            f"{running_service.url}/api/v1/failing", headers={"X-Request-ID": "req-bug-1"}
        )
        missing = httpx.get(f"{running_service.url}/api/v1/products/999999")
    output = running_service.stop()

    assert (failed.status_code, missing.status_code) == (500, 404)
    assert running_service.process.returncode == 0, output
    [event] = receiver.events
    assert event["tags"]["request_id"] == "req-bug-1"
    assert event["release"].startswith("my-service@")
    assert event["environment"] == "development"
    [exception] = event["exception"]["values"]
    assert (exception["type"], exception["value"]) == ("RuntimeError", "a bug in the failing route")
    print(f"\nthe receiver got {len(receiver.events)} event, tagged {event['tags']}")


def test_a_refusing_receiver_costs_requests_nothing_and_its_losses_are_counted(
    project: Path, tmp_path: Path
) -> None:
    nowhere = f"http://public@127.0.0.1:{free_port()}/1"
    with service(project, tmp_path, nowhere) as running_service:
        failures = [httpx.get(f"{running_service.url}/api/v1/failing") for _ in range(3)]
        durations = timed_liveness_reads(running_service.url, REQUESTS)
    output = running_service.stop()

    assert {response.status_code for response in failures} == {500}
    assert running_service.process.returncode == 0, output
    events = [line["event"] for line in json_lines(output)]
    assert [event for event in events if "not delivered" in event] == [
        "3 error reports were not delivered"
    ]
    print(
        f"\nreceiver refusing: {REQUESTS} reads, median {statistics.median(durations):.2f} ms, "
        f"slowest {max(durations):.2f} ms"
    )


def test_a_hung_receiver_delays_no_request_and_shutdown_ends_within_the_graceful_timeout(
    project: Path, tmp_path: Path, hung_receiver: Receiver
) -> None:
    graceful = 2
    running_service = service(
        project, tmp_path, hung_receiver.dsn, APP_GRACEFUL_TIMEOUT=str(graceful)
    )
    with running_service:
        failures = [httpx.get(f"{running_service.url}/api/v1/failing") for _ in range(3)]
        durations = timed_liveness_reads(running_service.url, REQUESTS)
        started = time.monotonic()
        output = running_service.stop(seconds=60)
        stopped_after = time.monotonic() - started

    assert {response.status_code for response in failures} == {500}
    assert running_service.process.returncode == 0, output
    assert max(durations) < 1000
    lines = json_lines(output)
    shutdown_took = logged_at(lines, "service stopped") - logged_at(lines, "service stopping")
    # The lifespan's shutdown within the graceful timeout, a second of slack for a loaded machine.
    assert shutdown_took < graceful + 1
    assert stopped_after < 30
    print(
        f"\nreceiver hung: {REQUESTS} reads, median {statistics.median(durations):.2f} ms, "
        f"slowest {max(durations):.2f} ms; the lifespan's shutdown took {shutdown_took:.2f} s "
        f"(graceful timeout {graceful} s), the process stopped {stopped_after:.1f} s after SIGTERM"
    )
