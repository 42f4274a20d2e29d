"""Shared pieces of the template's tests: variants, rendering, running commands in a project."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
LEFTOVER_JINJA = re.compile(r"\{\{|\{%|\.jinja\b")


@dataclass(frozen=True)
class Variant:
    """One combination of answers, with a readable id for the test report."""

    id: str
    answers: Mapping[str, object] = field(default_factory=dict)

    @property
    def package(self) -> str:
        return str(self.answers.get("package_name", "my_service"))

    def param(self) -> object:
        """A pytest parameter whose checks run on one xdist worker, sharing one render."""
        return pytest.param(self, id=self.id, marks=pytest.mark.xdist_group(self.id))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for commands run inside a rendered project."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV" and not k.startswith("APP_")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.update(extra)
    return env


def run(
    command: Sequence[str | Path], cwd: Path, *, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a command and fail the test with its output when it exits non-zero."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(map(str, command))}` exited {result.returncode} in {cwd}\n"
            f"--- stdout ---\n{result.stdout[-8000:]}\n--- stderr ---\n{result.stderr[-8000:]}",
            pytrace=False,
        )
    return result


def project_files(project: Path) -> list[Path]:
    """Every file copier wrote (not git's, not the installed environment's)."""
    skip = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__"}
    return sorted(
        path
        for path in project.rglob("*")
        if path.is_file() and not skip.intersection(path.relative_to(project).parts)
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(project: Path, package: str, log: Path, **env: str) -> Iterator[str]:
    """Runs `python -m <package>` of an installed project on a free port until the block ends.

    Yields the base URL once /health/live answers; the service's output goes to `log`. Stops it
    with SIGTERM afterwards.
    """
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    service_env = clean_env(APP_PORT=str(port), APP_LOG_FORMAT="json", PYTHONUNBUFFERED="1", **env)
    with log.open("w") as output:
        process = subprocess.Popen(
            [project / ".venv" / "bin" / "python", "-m", package],
            cwd=project,
            env=service_env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_live(base_url, process, log)
            yield base_url
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def _wait_until_live(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"service exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail(f"service did not answer /health/live in time:\n{log.read_text()}")
