"""The floors in a generated `pyproject.toml` are true: the default and the full render pass their
own suites with every direct dependency at the lowest version its floor allows.

Each render is copied before it is installed this way, so the variant's own install (the newest
versions, as `uv sync` picks them) is left as it is for the other checks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import Projects
from support import Variant, run
from variants import DEFAULT, FULL

# Shown in the report: what "lowest" meant in this run.
SHOWN = ("fastapi", "starlette", "pydantic", "granian", "sqlalchemy", "redis", "pytest")


@pytest.mark.parametrize(
    "variant",
    [v.param() for v in (DEFAULT, FULL)],
)
def test_the_suite_passes_with_every_dependency_at_its_floor(
    projects: Projects, variant: Variant, tmp_path: Path
) -> None:
    project = tmp_path / "lowest"
    shutil.copytree(
        projects.rendered(variant), project, ignore=shutil.ignore_patterns(".venv", "uv.lock")
    )
    run(["uv", "sync", "--quiet", "--resolution", "lowest-direct"], project, timeout=900)
    listed = run(["uv", "pip", "list", "--format", "freeze"], project).stdout.splitlines()
    versions = [line for line in listed if line.partition("==")[0].lower() in SHOWN]
    suite = run(["uv", "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider"], project)
    print(
        f"\n{variant.id} at its floors ({', '.join(versions)}): "
        f"{suite.stdout.strip().splitlines()[-1].strip('= ')}"
    )
