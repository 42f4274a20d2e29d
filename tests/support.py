"""Shared pieces of the template's tests: variants, rendering, running commands in a project."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
# `${{ ... }}` is a CI expression (GitHub Actions), not Jinja left behind.
LEFTOVER_JINJA = re.compile(r"(?<!\$)\{\{|\{%|\.jinja\b")


@functools.cache
def questions() -> dict[str, dict[str, Any]]:
    """The questions of copier.yml (its `_` settings left out), in the order they are asked."""
    config = yaml.safe_load((TEMPLATE_DIR / "copier.yml").read_text())
    return {name: spec for name, spec in config.items() if not name.startswith("_")}


def choices(spec: Mapping[str, Any]) -> list[object]:
    """The values a question accepts: its choices in declared order, or both booleans."""
    if spec.get("type") == "bool":
        return [False, True]
    declared = spec.get("choices") or []
    return list(declared.values()) if isinstance(declared, Mapping) else list(declared)


@dataclass(frozen=True)
class Variant:
    """One combination of answers, with a readable id for the test report."""

    id: str
    answers: Mapping[str, object] = field(default_factory=dict)

    @property
    def package(self) -> str:
        return str(self.answers.get("package_name", "my_service"))

    @property
    def python_version(self) -> str:
        """The lowest Python version the rendered project supports (its `requires-python`)."""
        return str(self.answers.get("python_version", questions()["python_version"]["default"]))

    def param(self) -> object:
        """A pytest parameter whose checks run on one xdist worker, sharing one render."""
        return pytest.param(self, id=self.id, marks=pytest.mark.xdist_group(self.id))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for commands run inside a rendered project."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV" and not k.startswith("APP_")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.update(extra)
    return env


@functools.cache
def interpreter_for(floor: str) -> str | None:
    """An interpreter that satisfies a project's Python floor: this one, else any uv finds here.

    uv never downloads one (`UV_PYTHON_DOWNLOADS=never`): None when none is installed.
    """
    if sys.version_info[:2] >= tuple(int(part) for part in floor.split(".")):
        return sys.executable
    found = subprocess.run(
        ["uv", "python", "find", f">={floor}"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None


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
