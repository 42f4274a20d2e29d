"""Layers 2 and 3: every variant renders clean, passes the static checks and its own test suite."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SUITE_COUNTS, SUITE_PYTHON, Projects
from support import (
    LEFTOVER_JINJA,
    Variant,
    interpreter_for,
    missing_interpreter_reason,
    project_files,
)
from variants import VARIANTS

pytestmark = pytest.mark.parametrize("variant", [v.param() for v in VARIANTS])


def test_no_leftover_jinja_and_no_empty_file(projects: Projects, variant: Variant) -> None:
    project = projects.rendered(variant)
    files = project_files(project)
    assert files, "nothing was rendered"
    empty = [str(path.relative_to(project)) for path in files if path.stat().st_size == 0]
    leftovers = [
        str(path.relative_to(project))
        for path in files
        if LEFTOVER_JINJA.search(path.name.encode()) or LEFTOVER_JINJA.search(path.read_bytes())
    ]
    assert empty == []
    assert leftovers == []


# The static checks name the project's Python floor explicitly: they hold for that target even
# where they run on an older interpreter.


def ruff_target(variant: Variant) -> list[str]:
    return ["--target-version", "py" + variant.python_version.replace(".", "")]


def test_ruff_check(projects: Projects, variant: Variant) -> None:
    projects.run(variant, ["uv", "run", "--no-sync", "ruff", "check", *ruff_target(variant), "."])


def test_ruff_format_check(projects: Projects, variant: Variant) -> None:
    command = ["uv", "run", "--no-sync", "ruff", "format", "--check", *ruff_target(variant), "."]
    projects.run(variant, command)


def test_mypy_strict(projects: Projects, variant: Variant) -> None:
    target = ["--python-version", variant.python_version]
    cache = ["--cache-dir", str(projects.mypy_cache(variant))]
    projects.run(
        variant, ["uv", "run", "--no-sync", "mypy", "--strict", *target, *cache, "src", "tests"]
    )


def test_declared_dependencies_match_imports(projects: Projects, variant: Variant) -> None:
    projects.run(variant, ["uv", "run", "--no-sync", "deptry", "src"])


def test_generated_suite_passes(
    projects: Projects, variant: Variant, record_property: Callable[[str, object], None]
) -> None:
    if interpreter_for(variant.python_version) is None:
        record_property(SUITE_PYTHON, f"skipped: no Python {variant.python_version} here")
        pytest.skip(missing_interpreter_reason(variant.python_version))
    record_property(SUITE_PYTHON, projects.python_of(variant))
    result = projects.run(
        variant, ["uv", "run", "--no-sync", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    )
    assert " passed" in result.stdout
    # The report shows each variant's own counts: a green suite whose server tests all skipped
    # must be visible.
    record_property(SUITE_COUNTS, result.stdout.strip().splitlines()[-1].strip("= "))
    missing = [name for name in variant.server_urls if not os.environ.get(name)]
    if not missing:
        # With the servers at hand, no test of the generated suite may skip.
        assert " skipped" not in result.stdout, result.stdout


PRIVATE_API_SCAN = (Path(__file__).parent / "private_api_scan.py").read_text()


def test_generated_code_uses_no_private_api_of_a_dependency(
    projects: Projects, variant: Variant
) -> None:
    """An import of a dependency's internals, an assignment to what a framework owns, an override
    of its private methods: each works until the next minor release. The scan runs with the
    service's interpreter, so that it can ask a dependency's class what it defines."""
    command = ["uv", "run", "--no-sync", "python", "-c", PRIVATE_API_SCAN, "src", variant.package]
    result = projects.run(variant, command)
    assert result.stdout.strip() == ""
