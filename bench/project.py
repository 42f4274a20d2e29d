"""Rendering a variant of the template with copier, installing it with uv, timing both."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "my_service"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for commands inside a render: no APP_* leaking in, no Python download."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV" and not k.startswith("APP_")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.update(extra)
    return env


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
        """The value that `.env.example` documents for `name`, if the render has that setting."""
        example = self.path / ".env.example"
        if not example.is_file():
            return None
        for line in example.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == name:
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
    settings = workdir / "copier-settings.yml"
    if not settings.exists():
        settings.write_text("{}\n")
    destination = workdir / variant
    data = [arg for key, value in answers.items() for arg in ("--data", f"{key}={value}")]
    project = Project(variant, answers, destination)
    project.render_seconds = _timed(
        [
            sys.executable,
            "-m",
            "copier",
            "copy",
            "--quiet",
            "--trust",
            "--defaults",
            "--vcs-ref",
            "HEAD",
            *data,
            template,
            destination,
        ],
        cwd=workdir,
        env=clean_env(
            COPIER_SETTINGS_PATH=str(settings),
            GIT_AUTHOR_NAME="Bench",
            GIT_AUTHOR_EMAIL="bench@example.com",
            GIT_COMMITTER_NAME="Bench",
            GIT_COMMITTER_EMAIL="bench@example.com",
        ),
    )
    project.install_seconds = _timed([_uv(), "sync", "--quiet"], destination, clean_env())
    return project
