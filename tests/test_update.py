"""Layer 5: `copier update` brings template improvements into a service generated long ago.

Each test builds its own template repository in a temporary folder (the working tree, tagged
0.1.0, then a change tagged 0.2.0), so it never depends on this repository's real tags. A project
is rendered at 0.1.0 and committed, as a user would, before it is updated.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import copier
import pytest
import yaml
from support import TEMPLATE_DIR, clean_env, project_files, run
from variants import FULL

from harness import render

PACKAGE = "my_service"
SOURCE = f"src/{PACKAGE}"
CONFLICT_MARKER = re.compile(r"^(<<<<<<<|>>>>>>>)( |$)", re.MULTILINE)
NOT_THE_TEMPLATE = shutil.ignore_patterns(
    ".git", ".venv", ".tools", "__pycache__", "*.py[co]", ".*_cache"
)


def git(project: Path, *args: str) -> str:
    return run(["git", *args], project).stdout


class TemplateRepository:
    """A git repository holding a copy of this template, whose versions are its tags."""

    def __init__(self, path: Path) -> None:
        shutil.copytree(TEMPLATE_DIR, path, ignore=NOT_THE_TEMPLATE)
        self.path = path
        git(path, "init", "--quiet")
        self.release("0.1.0")

    def replace(self, relative: str, old: str, new: str) -> None:
        """Edit one file of the template; `old` must occur in it exactly once."""
        path = self.path / relative
        text = path.read_text()
        assert text.count(old) == 1, f"{relative} no longer has exactly one {old!r}"
        path.write_text(text.replace(old, new))

    def release(self, version: str) -> None:
        git(self.path, "add", "--all")
        git(self.path, "commit", "--quiet", "--allow-empty", "-m", f"Release {version}")
        git(self.path, "tag", version)


def render_at(template: TemplateRepository, workdir: Path, version: str, **answers: object) -> Path:
    return render(workdir, answers, template=template.path, vcs_ref=version)


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", message)


def update(project: Path, version: str, **answers: object) -> None:
    copier.run_update(
        project,
        data=answers,
        vcs_ref=version,
        defaults=True,
        overwrite=True,
        unsafe=True,
        quiet=True,
    )


def answers_of(project: Path) -> dict[str, object]:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


def merge_leftovers(project: Path) -> list[str]:
    """`.rej` files and conflict markers: what an update leaves when it could not merge."""
    leftovers = []
    for path in project_files(project):
        relative = str(path.relative_to(project))
        if path.suffix == ".rej" or CONFLICT_MARKER.search(path.read_text(errors="replace")):
            leftovers.append(relative)
    return leftovers


def line_with(path: Path, text: str) -> str:
    return next(line.strip() for line in path.read_text().splitlines() if text in line)


# 0.2.0 of the improved template: health probes tell proxies never to cache them (a cached
# "healthy" hides an outage), and settings read `.env` as UTF-8 whatever the machine's locale.
NEVER_CACHED = '''NO_STORE = {"Cache-Control": "no-store"}


def _never_cached(response: Response) -> None:
    """A cached probe would report a state that is gone: no proxy may keep one."""
    response.headers.update(NO_STORE)


router = APIRouter(prefix="/health", tags=["health"], dependencies=[Depends(_never_cached)])'''

PROBES_TEST = """

async def test_probes_are_never_cached(app: FastAPI, client: AsyncClient) -> None:
    async def broken() -> None:
        raise ConnectionError("refused")

    healthy = [await client.get(path) for path in ("/health/live", "/health/ready")]
    app_resources(app).health_checks["queue"] = broken
    degraded = await client.get("/health/ready")
    assert [r.headers["cache-control"] for r in [*healthy, degraded]] == ["no-store"] * 3
"""


@pytest.fixture(scope="session")
def improved_template(tmp_path_factory: pytest.TempPathFactory) -> TemplateRepository:
    template = TemplateRepository(tmp_path_factory.mktemp("improved") / "template")
    health = "template/src/{{ package_name }}/health.py"
    template.replace(
        health,
        "from fastapi import APIRouter, Request\n",
        "from fastapi import APIRouter, Depends, Request, Response\n",
    )
    template.replace(health, 'router = APIRouter(prefix="/health", tags=["health"])', NEVER_CACHED)
    template.replace(
        health,
        '            status="degraded",\n',
        '            headers=NO_STORE,\n            status="degraded",\n',
    )
    with (template.path / "template/tests/test_health.py.jinja").open("a") as tests:
        tests.write(PROBES_TEST)
    template.replace(
        "template/src/{{ package_name }}/config.py.jinja",
        'env_file=".env",',
        'env_file=".env", env_file_encoding="utf-8",',
    )
    template.release("0.2.0")
    return template


# The user's own work on the generated service: a feature of their own, wired in with its line,
# with its test, and a setting whose default they changed.
VERSION_ROUTE = '''"""The deployed build, for whoever is on call."""

from fastapi import APIRouter

from .features import Feature

router = APIRouter(tags=["meta"])


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": "2024.11.1"}


feature: Feature[object] = Feature(name="version", routers=[router])
'''

VERSION_TEST = f"""from httpx import AsyncClient

from {PACKAGE}.config import Settings


async def test_version_names_the_build(client: AsyncClient) -> None:
    response = await client.get("/version")
    assert response.json() == {{"version": "2024.11.1"}}


def test_graceful_timeout_defaults_to_thirty_seconds() -> None:
    assert Settings(_env_file=None).graceful_timeout == 30
"""


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name} no longer has exactly one {old!r}"
    path.write_text(text.replace(old, new))


def make_user_edits(project: Path) -> None:
    (project / SOURCE / "version.py").write_text(VERSION_ROUTE)
    (project / "tests" / "test_version.py").write_text(VERSION_TEST)
    main = project / SOURCE / "main.py"
    imports = "from .openapi import openapi_options\n"
    replace_once(main, imports, f"{imports}from .version import feature as version\n")
    replace_once(main, "    *domains.DOMAINS,\n", "    version,\n    *domains.DOMAINS,\n")
    replace_once(
        project / SOURCE / "settings.py", "default=10, ge=0, le=300", "default=30, ge=0, le=300"
    )
    # The generated suite holds .env.example to the defaults: it changes with them.
    replace_once(project / ".env.example", "# APP_GRACEFUL_TIMEOUT=10", "# APP_GRACEFUL_TIMEOUT=30")


def test_update_brings_template_improvement_and_keeps_user_edits(
    improved_template: TemplateRepository, tmp_path: Path
) -> None:
    project = render_at(improved_template, tmp_path / "service", "0.1.0")
    commit_all(project, "Generated from the template")
    make_user_edits(project)
    commit_all(project, "Add /version; longer graceful shutdown")

    update(project, "0.2.0")

    assert answers_of(project)["_commit"] == "0.2.0"
    assert merge_leftovers(project) == []
    source = project / SOURCE
    assert (source / "version.py").read_text() == VERSION_ROUTE
    assert "    version,\n" in (source / "main.py").read_text()
    assert "default=30," in line_with(source / "settings.py", "default=30")
    assert "env_file_encoding" in line_with(source / "config.py", "env_file=")
    assert "_never_cached" in (source / "health.py").read_text()
    report = [
        "user edits preserved:",
        f"  {SOURCE}/settings.py: {line_with(source / 'settings.py', 'default=30')}",
        f"  {SOURCE}/main.py: {line_with(source / 'main.py', 'version,')}",
        f"  {SOURCE}/version.py: unchanged, {len(VERSION_ROUTE.splitlines())} lines",
        "template change applied:",
        f"  {SOURCE}/health.py: {line_with(source / 'health.py', 'router = APIRouter')}",
        f"  {SOURCE}/config.py: {line_with(source / 'config.py', 'env_file=')}",
        f"  tests/test_health.py: {line_with(project / 'tests/test_health.py', 'never_cached')}",
    ]
    print("", *report, sep="\n")

    run(["uv", "sync", "--quiet"], project)
    result = run(["uv", "run", "--no-sync", "pytest", "-v", "-p", "no:cacheprovider"], project)
    for name in (
        "test_probes_are_never_cached",
        "test_version_names_the_build",
        "test_graceful_timeout_defaults_to_thirty_seconds",
    ):
        # A test may run once per backend: `name[embedded] PASSED`.
        assert re.search(rf"::{name}(\[\w+\])? PASSED", result.stdout), name


def test_edit_of_a_line_the_template_changed_shows_both_sides(
    improved_template: TemplateRepository, tmp_path: Path
) -> None:
    project = render_at(improved_template, tmp_path / "service", "0.1.0")
    commit_all(project, "Generated from the template")
    config = project / SOURCE / "config.py"
    config.write_text(config.read_text().replace('env_file=".env",', 'env_file=".env.local",'))
    commit_all(project, "Read .env.local")

    update(project, "0.2.0")

    assert merge_leftovers(project) == [f"{SOURCE}/config.py"]
    text = config.read_text()
    conflict = text[text.index("<<<<<<<") : text.index(">>>>>>>")]
    assert conflict.startswith("<<<<<<< before updating\n")
    assert 'env_file=".env.local",' in conflict
    assert 'env_file=".env", env_file_encoding="utf-8",' in conflict
    assert f"UU {SOURCE}/config.py" in git(project, "status", "--short").splitlines()


# Switching a module off: the update must leave exactly what a fresh render with the new answers
# has (its files gone, its wiring gone), plus nothing of the old one.
SWITCHED_OFF = [
    ("ci", "github", "none", [".github/workflows/ci.yml", ".github/workflows/template-update.yml"]),
    ("ci", "gitlab", "none", [".gitlab-ci.yml"]),
    ("logging", "structlog", "stdlib", []),
    # The other modules' files are named by the comparison with a fresh render.
    ("cache", "memory", "none", []),
    ("database", "sqlite", "none", []),
    ("example_api", True, False, []),
    ("auth", "jwt", "none", []),
    ("http_client", True, False, []),
    ("metrics", True, False, []),
    ("tracing", True, False, []),
    ("deployment", "docker", "none", []),
]


@pytest.mark.parametrize(
    ("question", "on", "off", "files_gone"),
    [pytest.param(*row, id=f"{row[0]}-{row[1]}-to-{row[2]}") for row in SWITCHED_OFF],
)
def test_switching_a_module_off_leaves_what_a_fresh_render_has(
    improved_template: TemplateRepository,
    tmp_path: Path,
    question: str,
    on: object,
    off: object,
    files_gone: list[str],
) -> None:
    project = render_at(improved_template, tmp_path / "service", "0.1.0", **{question: on})
    commit_all(project, "Generated from the template")
    before = contents(project)
    assert set(files_gone) <= set(before)

    update(project, "0.2.0", **{question: off})

    fresh = contents(render_at(improved_template, tmp_path / "fresh", "0.2.0", **{question: off}))
    after = contents(project)
    assert answers_of(project)[question] == off
    assert sorted(set(before) - set(after)) == sorted(set(before) - set(fresh))
    assert set(files_gone).isdisjoint(after)
    assert after == fresh
    removed = sorted(set(before) - set(after))
    changed = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    print(f"\n{question}: {on} -> {off}: removed {removed}, changed {changed}")


def contents(project: Path) -> dict[str, str]:
    """Every file copier manages, by path; `.env` holds a fresh secret per render."""
    return {
        str(path.relative_to(project)): path.read_text()
        for path in project_files(project)
        if path.name != ".env"
    }


RENAMED = "contact_email"
RENAME_MIGRATION = f"""
_migrations:
  # 0.2.0 renamed author_email to {RENAMED}: carry the old answer over before updating.
  - version: "0.2.0"
    when: "{{{{ _stage == 'before' }}}}"
    command:
      - "{{{{ _copier_python }}}}"
      - "-c"
      - |
        import pathlib, re
        answers = pathlib.Path("{{{{ _copier_conf.answers_file }}}}")
        text = re.sub(r"(?m)^author_email:", "{RENAMED}:", answers.read_text())
        answers.write_text(text)
"""


@pytest.fixture(scope="session")
def renaming_template(tmp_path_factory: pytest.TempPathFactory) -> TemplateRepository:
    template = TemplateRepository(tmp_path_factory.mktemp("renaming") / "template")
    renamed = 0
    for path in [template.path / "copier.yml", *(template.path / "template").rglob("*")]:
        if path.is_file() and "author_email" in path.read_text():
            path.write_text(re.sub(r"\bauthor_email\b", RENAMED, path.read_text()))
            renamed += 1
    assert renamed >= 2, "author_email is no longer asked and used: rename another question"
    with (template.path / "copier.yml").open("a") as config:
        config.write(RENAME_MIGRATION)
    template.release("0.2.0")
    return template


def test_renamed_question_keeps_its_answer_through_a_migration(
    renaming_template: TemplateRepository, tmp_path: Path
) -> None:
    email = "ops-team@example.org"
    project = render_at(renaming_template, tmp_path / "service", "0.1.0", author_email=email)
    commit_all(project, "Generated from the template")

    update(project, "0.2.0")

    answers = answers_of(project)
    assert answers["_commit"] == "0.2.0"
    assert answers[RENAMED] == email
    assert "author_email" not in answers
    assert f'email = "{email}"' in (project / "pyproject.toml").read_text()
    print(f"\n{RENAMED} carried over from author_email: {answers[RENAMED]}")


def env_secret(project: Path) -> str:
    return next(
        line.split("=", 1)[1]
        for line in (project / ".env").read_text().splitlines()
        if line.startswith("APP_SECRET_KEY=")
    )


def test_answers_file_never_holds_a_secret_and_update_keeps_env(
    improved_template: TemplateRepository, tmp_path: Path
) -> None:
    project = render_at(improved_template, tmp_path / "service", "0.1.0", **FULL.answers)
    commit_all(project, "Generated from the template")
    secret = env_secret(project)
    assert len(secret) >= 32

    update(project, "0.2.0")

    assert env_secret(project) == secret, "copier update must never rewrite .env"
    answers_text = (project / ".copier-answers.yml").read_text()
    assert secret not in answers_text
    assert not [key for key in answers_of(project) if re.search("secret|password|token", key)]
    tracked = git(project, "ls-files").splitlines()
    assert ".env" not in tracked
    leaks = [name for name in tracked if secret in (project / name).read_text()]
    assert leaks == []


def check_update(project: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """The command the generated CI runs on a schedule."""
    return subprocess.run(
        [sys.executable, "-m", "copier", "check-update", *flags],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_update_reports_a_newer_template_version(
    improved_template: TemplateRepository, tmp_path: Path
) -> None:
    project = render_at(improved_template, tmp_path / "service", "0.1.0")
    commit_all(project, "Generated from the template")

    behind = check_update(project, "--output-format", "json")
    assert json.loads(behind.stdout) == {
        "update_available": True,
        "current_version": "0.1.0",
        "latest_version": "0.2.0",
    }
    assert check_update(project, "--quiet").returncode == 2

    update(project, "0.2.0")
    commit_all(project, "Update from the template")
    current = check_update(project, "--output-format", "json")
    assert json.loads(current.stdout)["update_available"] is False


# The last commit of the flat layout, before features became modules on a typed root (0.1.0).
FLAT_LAYOUT = "a8fcaee"
OLD_VERSION_WIRING = "    app.include_router(version_router)\n    return app\n"


def test_update_from_the_flat_layout_shows_what_merges_and_what_conflicts(
    tmp_path: Path,
) -> None:
    """A project generated before the composition redesign, with a user's route wired into the
    old main.py and a changed default in the old config.py, updated to the new layout."""
    template = tmp_path / "template"
    template.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(TEMPLATE_DIR), "archive", FLAT_LAYOUT],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(f"this clone lacks commit {FLAT_LAYOUT} of the flat layout (shallow clone?)")
    subprocess.run(["tar", "-x", "-C", str(template)], input=archive.stdout, check=True)
    git(template, "init", "--quiet")
    git(template, "add", "--all")
    git(template, "commit", "--quiet", "-m", "The flat layout")
    git(template, "tag", "0.0.9")
    for path in template.iterdir():
        if path.name != ".git":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.copytree(TEMPLATE_DIR, template, ignore=NOT_THE_TEMPLATE, dirs_exist_ok=True)
    git(template, "add", "--all")
    git(template, "commit", "--quiet", "-m", "Features as modules")
    git(template, "tag", "0.1.0")

    project = render(tmp_path / "service", {}, template=template, vcs_ref="0.0.9")
    commit_all(project, "Generated from the template")
    (project / SOURCE / "version.py").write_text(
        VERSION_ROUTE.replace("\nfrom .features import Feature\n", "\n").split("\n\nfeature:")[0]
        + "\n"
    )
    main = project / SOURCE / "main.py"
    replace_once(main, "    return app\n", OLD_VERSION_WIRING)
    replace_once(
        main,
        "from .openapi import",
        "from .version import router as version_router\nfrom .openapi import",
    )
    replace_once(
        project / SOURCE / "config.py",
        "graceful_timeout: int = Field(default=10,",
        "graceful_timeout: int = Field(default=30,",
    )
    commit_all(project, "Add /version; longer graceful shutdown")

    update(project, "0.1.0")

    assert answers_of(project)["_commit"] == "0.1.0"
    conflicted = merge_leftovers(project)
    status = git(project, "status", "--short").splitlines()
    # Both files the user edited were rewritten by the template: each shows both sides.
    assert conflicted == [f"{SOURCE}/config.py", f"{SOURCE}/main.py"]
    assert "version_router" in main.read_text()
    assert (project / SOURCE / "version.py").is_file()
    # The rest merged: the new modules arrived, the moved ones left.
    for new in ("features.py", "settings.py", "request_context.py", "domains.py"):
        assert (project / SOURCE / new).is_file(), new
    merged = sorted(line for line in status if not line.startswith("UU"))
    print(
        f"\nflat layout (0.0.9) -> features (0.1.0): conflicts in {conflicted}; "
        f"{len(merged)} other paths changed without conflict:",
        *merged,
        sep="\n  ",
    )
