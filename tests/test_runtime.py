"""Layer 4: the rendered service starts with `python -m <package>`, serves, and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import Projects
from support import clean_env
from variants import DEFAULT

STARTUP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_live(base_url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"service exited {process.returncode}:\n{process.communicate()[0]}")
        try:
            if httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("service did not answer /health/live in time")


@pytest.mark.xdist_group(DEFAULT.id)
def test_default_service_serves_and_stops_cleanly_on_sigterm(projects: Projects) -> None:
    project: Path = projects.installed(DEFAULT)
    port = free_port()
    env = clean_env(APP_PORT=str(port), APP_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [project / ".venv" / "bin" / "python", "-m", DEFAULT.package],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_live(base_url, process)
        live = httpx.get(f"{base_url}/health/live", headers={"X-Request-ID": "abc-123"})
        ready = httpx.get(f"{base_url}/health/ready")
        missing = httpx.get(f"{base_url}/no-such-route", headers={"X-Request-ID": "abc-123"})
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)

    assert live.status_code == 200
    assert live.headers["x-request-id"] == "abc-123"
    assert ready.status_code == 200
    assert ready.json()["status"] == "healthy"
    assert missing.status_code == 404
    assert missing.json()["request_id"] == "abc-123"
    assert process.returncode == 0, output

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("path") == "/health/live"]
    assert access[-1]["request_id"] == "abc-123"
    assert "Application shutdown complete." in {line["event"] for line in lines}
    assert "Traceback" not in output
