"""Template test set-up: isolated copier settings, one render and one install per variant."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from support import Interpreter, Variant, interpreter_for, run

from harness import render

# The fault tests' fixtures: the servers a rendered service depends on, and proxies in front.
pytest_plugins = ["faults"]


@pytest.fixture(scope="session", autouse=True)
def _isolated_copier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A developer's own copier settings and git identity must not leak into renders."""
    settings = tmp_path_factory.mktemp("copier-settings") / "settings.yml"
    settings.write_text("{}\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COPIER_SETTINGS_PATH", str(settings))
        patch.setenv("UV_PYTHON_DOWNLOADS", "never")
        for name in ("AUTHOR", "COMMITTER"):
            patch.setenv(f"GIT_{name}_NAME", "Template Tests")
            patch.setenv(f"GIT_{name}_EMAIL", "tests@example.com")
        yield


class Projects:
    """Renders each variant once per test session (per xdist worker) and installs it with uv.

    A project is installed with an interpreter of its Python floor (`interpreter_for`), and its
    commands run where that interpreter lives: here, or inside a Debian root. A project whose
    floor has none (e.g. 3.12 on a machine with 3.11 only) cannot be `uv sync`ed: its
    dependencies go into a virtual environment of this interpreter instead, which is enough for
    the static checks aimed at its floor (ruff, mypy, deptry), not for its suite.
    """

    def __init__(self, workdir: Path, mypy_caches: Path) -> None:
        self._workdir = workdir
        self._mypy_caches = mypy_caches
        self._rendered: dict[str, Path] = {}
        self._installed: set[str] = set()

    def mypy_cache(self, variant: Variant) -> Path:
        """One mypy cache per target version, shared by the variants of this worker.

        Most of mypy's time goes to the same third-party packages in every variant; its cache
        entries are checked against each file's content hash, so sharing them is safe.
        """
        return self._mypy_caches / variant.python_version

    def rendered(self, variant: Variant) -> Path:
        if variant.id not in self._rendered:
            self._rendered[variant.id] = render(self._workdir, variant.answers)
        return self._rendered[variant.id]

    def installed(self, variant: Variant) -> Path:
        project = self.rendered(variant)
        if variant.id not in self._installed:
            interpreter = interpreter_for(variant.python_version)
            if interpreter:
                sync = ["uv", "sync", "--quiet", "--python", interpreter.python]
                interpreter.run(sync, project, shared=[self._mypy_caches])
            else:
                run(["uv", "venv", "--quiet", "--python", sys.executable], project)
                # Reads the dependency lists only, so the project's requires-python is not checked.
                install = ["uv", "pip", "install", "--quiet", "-r", "pyproject.toml"]
                run([*install, "--group", "dev"], project)
            self._installed.add(variant.id)
        return project

    def run(
        self, variant: Variant, command: Sequence[str | Path]
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the variant's installed project, where its interpreter lives."""
        project = self.installed(variant)
        interpreter = interpreter_for(variant.python_version) or Interpreter(sys.executable)
        return interpreter.run(command, project, shared=[self._mypy_caches])

    def python_of(self, variant: Variant) -> str:
        """The Python the variant's environment was made with, and where it runs."""
        project = self.installed(variant)
        config = (project / ".venv" / "pyvenv.cfg").read_text()
        version = next(
            line.partition("=")[2].strip()
            for line in config.splitlines()
            if line.partition("=")[0].strip() in {"version_info", "version"}
        )
        interpreter = interpreter_for(variant.python_version) or Interpreter(sys.executable)
        return f"on Python {version} {interpreter.where}"


# The user properties under which each variant's suite test records its suite's own counts, and
# the Python it ran on (or why it did not run).
SUITE_COUNTS = "generated suite"
SUITE_PYTHON = "generated suite python"


@pytest.fixture(scope="session")
def projects(tmp_path_factory: pytest.TempPathFactory) -> Projects:
    return Projects(tmp_path_factory.mktemp("renders"), tmp_path_factory.mktemp("mypy-cache"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    _report_variants(terminalreporter)
    _report_figures(terminalreporter)


def _report_variants(terminalreporter: pytest.TerminalReporter) -> None:
    """One line per rendered variant: its id, how its checks ended, where its suite ran."""
    outcomes: dict[str, dict[str, int]] = {}
    suites: dict[str, dict[str, str]] = {}
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "test_variants.py::" not in nodeid or "[" not in nodeid:
                continue
            variant = nodeid.rsplit("[", 1)[1].rstrip("]")
            counts = outcomes.setdefault(variant, {})
            counts[outcome] = counts.get(outcome, 0) + 1
            for name, value in getattr(report, "user_properties", []):
                if name in {SUITE_COUNTS, SUITE_PYTHON}:
                    suites.setdefault(variant, {})[name] = str(value)
    if outcomes:
        terminalreporter.section("variants")
        for variant, counts in sorted(outcomes.items()):
            summary = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))
            parts = [suites.get(variant, {}).get(name) for name in (SUITE_COUNTS, SUITE_PYTHON)]
            suite = ", ".join(part for part in parts if part) or "not run"
            terminalreporter.write_line(f"{variant}: {summary}; its own suite: {suite}")


def _report_figures(terminalreporter: pytest.TerminalReporter) -> None:
    """Show what passing tests printed: the runtime and fault tests print their figures."""
    printed = [
        (report.nodeid, report.capstdout.strip())
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call" and report.capstdout.strip()
    ]
    if printed:
        terminalreporter.section("figures printed by the tests")
        for nodeid, output in printed:
            terminalreporter.write_line(f"{nodeid}\n    " + output.replace("\n", "\n    "))
