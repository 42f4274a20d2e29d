"""Rendering a variant of the template with copier, installing it with uv, timing both."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import harness
from harness import clean_env

PACKAGE = "my_service"


def _uv() -> str:
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv is None:
        raise RuntimeError("uv is not on PATH")
    return uv


def _timed(command: Sequence[str | Path], cwd: Path, env: Mapping[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(map(str, command))}` exited {result.returncode} in {cwd}\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return elapsed


@dataclass
class Project:
    """One rendered and installed variant, with how long each step took."""

    variant: str
    answers: Mapping[str, str]
    path: Path
    render_seconds: float = 0.0
    install_seconds: float = 0.0
    suite_seconds: float | None = None
    suite_summary: str = ""

    @property
    def python(self) -> Path:
        return self.path / ".venv" / "bin" / "python"

    def has_file(self, relative: str) -> bool:
        return (self.path / relative).is_file()

    def example_setting(self, name: str) -> str | None:
        """The value that `.env.example` documents for `name` (commented out or not), if any."""
        example = self.path / ".env.example"
        if not example.is_file():
            return None
        for line in example.read_text().splitlines():
            key, sep, value = line.removeprefix("#").strip().partition("=")
            if sep and key == name:
                return value.strip()
        return None

    def run_suite(self) -> None:
        """Times the render's own test suite, as a developer runs it (`uv run pytest`)."""
        env = clean_env()
        started = time.perf_counter()
        result = subprocess.run(
            [_uv(), "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        self.suite_seconds = time.perf_counter() - started
        lines = result.stdout.strip().splitlines()
        self.suite_summary = lines[-1] if lines else f"exit {result.returncode}"
        if result.returncode != 0:
            raise RuntimeError(f"{self.variant}: generated suite failed\n{result.stdout[-4000:]}")


def render(template: Path, workdir: Path, variant: str, answers: Mapping[str, str]) -> Project:
    """Renders the template's working tree (uncommitted changes included) and installs it."""
    started = time.perf_counter()
    destination = harness.render(workdir / variant, answers, template=template)
    project = Project(variant, answers, destination)
    project.render_seconds = time.perf_counter() - started
    project.install_seconds = _timed([_uv(), "sync", "--quiet"], destination, clean_env())
    return project
