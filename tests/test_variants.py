"""Layers 2 and 3: every variant renders clean, passes the static checks and its own test suite."""

from __future__ import annotations

import os

import pytest
from conftest import Projects
from support import LEFTOVER_JINJA, Variant, project_files, run
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


def test_ruff_check(projects: Projects, variant: Variant) -> None:
    run(["uv", "run", "--no-sync", "ruff", "check", "."], projects.installed(variant))


def test_ruff_format_check(projects: Projects, variant: Variant) -> None:
    run(["uv", "run", "--no-sync", "ruff", "format", "--check", "."], projects.installed(variant))


def test_mypy_strict(projects: Projects, variant: Variant) -> None:
    run(["uv", "run", "--no-sync", "mypy", "--strict", "src", "tests"], projects.installed(variant))


def test_declared_dependencies_match_imports(projects: Projects, variant: Variant) -> None:
    run(["uv", "run", "--no-sync", "deptry", "src"], projects.installed(variant))


def test_generated_suite_passes(projects: Projects, variant: Variant) -> None:
    command = ["uv", "run", "--no-sync", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    result = run(command, projects.installed(variant))
    assert " passed" in result.stdout
    missing = [name for name in variant.server_urls if not os.environ.get(name)]
    if not missing:
        # With the servers at hand, no test of the generated suite may skip.
        assert " skipped" not in result.stdout, result.stdout
