"""The floors in a generated `pyproject.toml` are true: the default and the full render pass their
own suites with every direct dependency at the lowest version its floor allows; and the full
render passes on the day it is rendered: at the newest versions, without the real servers.

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
NEWEST_SHOWN = (*SHOWN, "hypothesis", "schemathesis")


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


@pytest.mark.parametrize("variant", [FULL.param()])
def test_the_suite_passes_with_the_newest_versions_and_no_servers(
    projects: Projects, variant: Variant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a user gets on the day they render: every dependency at the newest version its floor
    allows (resolved afresh, not from a lock), and no `TEST_*` variables, so the suite runs on
    its embedded backends alone (in-process jobs, SQLite, the in-process cache)."""
    project = tmp_path / "newest"
    shutil.copytree(
        projects.rendered(variant), project, ignore=shutil.ignore_patterns(".venv", "uv.lock")
    )
    for name in variant.server_urls:
        monkeypatch.delenv(name, raising=False)
    run(["uv", "sync", "--quiet", "--upgrade", "--resolution", "highest"], project, timeout=900)
    listed = run(["uv", "pip", "list", "--format", "freeze"], project).stdout.splitlines()
    versions = [line for line in listed if line.partition("==")[0].lower() in NEWEST_SHOWN]
    suite = run(["uv", "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider"], project)
    print(
        f"\n{variant.id} at the newest versions, no servers ({', '.join(versions)}): "
        f"{suite.stdout.strip().splitlines()[-1].strip('= ')}"
    )
