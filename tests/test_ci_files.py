"""CI files: the template's own workflow, and the generated project's CI for each `ci` answer.

Every file is validated against the schema that check-jsonschema ships for it (no network), then
read for what the schema cannot know: the checks it runs, its services, its Python versions.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Projects
from support import TEMPLATE_DIR, Variant, choices, questions, run
from variants import PAIRWISE, PRESETS, VARIANTS, complete_answers

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
PROJECT_CHECKS = [
    "uv run ruff check .",
    "uv run ruff format --check .",
    "uv run mypy --strict src tests",
    "uv run deptry src",
    "uv run pytest",
]
CHECK_UPDATE = 'uvx --from "copier>=9.13,<10" copier check-update'
MIGRATE = "uv run alembic upgrade head"
ALEMBIC_CHECK = "uv run alembic check"
# The CI database each answer migrates: a file for SQLite, the job's service otherwise.
CI_DATABASE_URL_PREFIXES = {
    "sqlite": "sqlite+aiosqlite:///./",
    "postgresql": "postgresql+asyncpg://postgres@{host}:5432/test",
    "mysql": "mysql+asyncmy://root@{host}:3306/test",
}


def validate(schema: str, *files: Path) -> None:
    run([CHECK_JSONSCHEMA, "--builtin-schema", schema, *files], TEMPLATE_DIR)


def load(path: Path) -> dict[Any, Any]:
    document = yaml.safe_load(path.read_text())
    # YAML 1.1 reads a bare `on` key as the boolean True.
    if True in document:
        document["on"] = document.pop(True)
    return document


def commands(steps: list[Mapping[str, Any]]) -> list[str]:
    return [line for step in steps for line in str(step.get("run", "")).splitlines()]


def python_versions_from(floor: str) -> list[str]:
    versions = [str(v) for v in choices(questions()["python_version"])]
    return versions[versions.index(floor) :]


# The template's own workflow.

TEMPLATE_WORKFLOW = TEMPLATE_DIR / ".github" / "workflows" / "ci.yml"


def test_template_workflow_is_a_valid_github_workflow() -> None:
    validate("vendor.github-workflows", TEMPLATE_WORKFLOW)


def test_template_workflow_runs_every_variant_on_every_python_with_services() -> None:
    workflow = load(TEMPLATE_WORKFLOW)
    job = workflow["jobs"]["matrix"]
    matrix = job["strategy"]["matrix"]
    assert matrix["python"] == python_versions_from("3.11")
    # The two selections are complements: together they run every test once per Python.
    assert sorted(group["select"] for group in matrix["group"]) == ["not pw", "pw"]
    assert all(v.id.startswith("pw") for v in PAIRWISE)
    assert not any("pw" in v.id for v in PRESETS)
    assert set(job["services"]) == {"postgres", "mariadb", "redis"}
    assert {"TEST_POSTGRES_URL", "TEST_MYSQL_URL", "TEST_REDIS_URL"} <= set(workflow["env"])
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert {"actions/setup-python", "astral-sh/setup-uv"} <= {
        s.get("uses", "").split("@")[0] for s in job["steps"]
    }


# The generated project's CI, for each variant that renders one.


def ci_params(ci: str) -> list[object]:
    """The variants whose `ci` answer is `ci`, each in the xdist group that shares its render."""
    return [v.param() for v in VARIANTS if complete_answers(v.answers)["ci"] == ci]


def assert_github_migrations_checked(steps: list[Mapping[str, Any]], database: str) -> None:
    """With a database, the tests job migrates the CI database and then runs `alembic check` as
    a step of its own, before the tests; without one, no step mentions alembic."""
    runs = [str(step.get("run", "")) for step in steps]
    if database == "none":
        assert not any("alembic" in run for run in runs)
        return
    assert runs.index(MIGRATE) < runs.index(ALEMBIC_CHECK) < runs.index("uv run pytest")
    prefix = CI_DATABASE_URL_PREFIXES[database].format(host="127.0.0.1")
    for command in (MIGRATE, ALEMBIC_CHECK):
        step = steps[runs.index(command)]
        assert step["env"]["APP_DATABASE_URL"].startswith(prefix)


def assert_gitlab_migrations_checked(script: list[str], database: str) -> None:
    """The same for the pytest job's script: each alembic line names the CI database."""
    if database == "none":
        assert not any("alembic" in line for line in script)
        return
    prefix = CI_DATABASE_URL_PREFIXES[database].format(
        host={"postgresql": "postgres", "mysql": "mariadb"}.get(database, "")
    )
    migrate, check = (
        next(i for i, line in enumerate(script) if line.endswith(command))
        for command in (MIGRATE, ALEMBIC_CHECK)
    )
    assert migrate < check < script.index("uv run pytest")
    for line in (script[migrate], script[check]):
        assert line.startswith(f"APP_DATABASE_URL={prefix}")


@pytest.mark.parametrize("variant", ci_params("github"))
def test_github_ci_is_valid_and_runs_every_check(projects: Projects, variant: Variant) -> None:
    answers = complete_answers(variant.answers)
    workflows = projects.rendered(variant) / ".github" / "workflows"
    validate("vendor.github-workflows", *sorted(workflows.glob("*.yml")))

    ci = load(workflows / "ci.yml")
    steps = [step for job in ci["jobs"].values() for step in job["steps"]]
    assert set(PROJECT_CHECKS) <= set(commands(steps))
    tests = ci["jobs"]["tests"]
    assert tests["strategy"]["matrix"]["python"] == python_versions_from(
        str(answers["python_version"])
    )
    assert ci["concurrency"]["cancel-in-progress"] is True
    expected = {
        "postgres": answers["database"] == "postgresql",
        "mariadb": answers["database"] == "mysql",
        "redis": answers["cache"] == "redis" or bool(answers["jobs"]),
    }
    assert set(tests.get("services", {})) == {name for name, on in expected.items() if on}
    assert ("TEST_POSTGRES_URL" in tests["env"]) is expected["postgres"]
    assert ("TEST_MYSQL_URL" in tests["env"]) is expected["mariadb"]
    assert ("TEST_REDIS_URL" in tests["env"]) is expected["redis"]
    assert_github_migrations_checked(tests["steps"], str(answers["database"]))

    update = load(workflows / "template-update.yml")
    assert update["on"]["schedule"]
    update_commands = commands(update["jobs"]["check-update"]["steps"])
    assert any(line.startswith(CHECK_UPDATE) for line in update_commands)
    assert any("gh issue create" in line for line in update_commands)


@pytest.mark.parametrize("variant", ci_params("gitlab"))
def test_gitlab_ci_is_valid_and_runs_every_check(projects: Projects, variant: Variant) -> None:
    answers = complete_answers(variant.answers)
    path = projects.rendered(variant) / ".gitlab-ci.yml"
    validate("vendor.gitlab-ci", path)

    ci = load(path)
    jobs = {name: job for name, job in ci.items() if isinstance(job, dict) and "script" in job}
    script = [line for job in jobs.values() for line in job["script"]]
    assert set(PROJECT_CHECKS) <= set(script)
    pytest_job = jobs["pytest"]
    assert pytest_job["parallel"]["matrix"] == [
        {"PYTHON": python_versions_from(str(answers["python_version"]))}
    ]
    services = [service["name"].split(":")[0] for service in pytest_job.get("services", [])]
    expected = {
        "postgres": answers["database"] == "postgresql",
        "mariadb": answers["database"] == "mysql",
        "redis": answers["cache"] == "redis" or bool(answers["jobs"]),
    }
    assert services == [name for name, on in expected.items() if on]
    variables = pytest_job.get("variables", {})
    assert ("TEST_POSTGRES_URL" in variables) is expected["postgres"]
    assert ("TEST_MYSQL_URL" in variables) is expected["mariadb"]
    assert ("TEST_REDIS_URL" in variables) is expected["redis"]
    assert_gitlab_migrations_checked(pytest_job["script"], str(answers["database"]))

    update = jobs["template-update"]
    assert update["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "schedule"'}]
    assert update["script"][0].startswith(CHECK_UPDATE)


@pytest.mark.parametrize("variant", ci_params("none"))
def test_no_ci_answer_renders_no_ci_file(projects: Projects, variant: Variant) -> None:
    project = projects.rendered(variant)
    assert not (project / ".github").exists()
    assert not (project / ".gitlab-ci.yml").exists()
