"""Layer 6: a service generated from the last release and edited as a team does in its first
months updates to this working tree with no conflict, every edit alive and every check green.

The last release is found in this repository alone: its tag where the clone has tags, else its
`Release X.Y.Z` commit. A template repository is built in a temporary folder (the release, tagged
with its version; then this working tree, tagged with the next one), so the real tags are never
needed. The edits are the ones the release's own README asks for, and the template owes them
a clean merge: where a later change rewrites a place a team must edit, that is a defect of the
template, not a conflict to document.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.version import InvalidVersion, Version
from support import TEMPLATE_DIR, Variant, clean_env, project_files, run, run_static_checks
from variants import DEFAULT, FULL, MINIMAL, PAIRWISE

from harness import render

CONFLICT_MARKER = re.compile(r"^(<<<<<<<|>>>>>>>) (before|after) updating$", re.MULTILINE)
NOT_THE_TEMPLATE = shutil.ignore_patterns(
    ".git", ".venv", ".tools", "__pycache__", "*.py[co]", ".*_cache"
)
RELEASE_SUBJECT = re.compile(r"^Release (?P<version>\d+\.\d+\.\d+)$")


@dataclass(frozen=True)
class Release:
    version: Version
    commit: str
    found_by: str


def git(cwd: Path, *args: str) -> str:
    return run(["git", *args], cwd).stdout


def last_release() -> Release:
    """The newest release: by its tag where the clone has tags, else by its release commit."""
    tagged = []
    for tag in git(TEMPLATE_DIR, "tag", "--list").split():
        try:
            tagged.append((Version(tag), tag))
        except InvalidVersion:
            continue
    if tagged:
        version, tag = max(tagged)
        commit = git(TEMPLATE_DIR, "rev-list", "-n", "1", tag).strip()
        return Release(version, commit, f"tag {tag}")
    log = git(TEMPLATE_DIR, "log", "--format=%H %s", "--extended-regexp", "--grep=^Release [0-9]")
    for line in log.splitlines():
        commit, _, subject = line.partition(" ")
        if match := RELEASE_SUBJECT.match(subject):
            return Release(Version(match["version"]), commit, f"commit {commit[:12]}")
    pytest.fail("no release in this clone: no version tag, no `Release X.Y.Z` commit")


def working_tree_version(release: Version) -> str:
    """The version the working tree will be released as (pyproject.toml), after `release`."""
    pyproject = tomllib.loads((TEMPLATE_DIR / "pyproject.toml").read_text())
    version = Version(pyproject["project"]["version"])
    return str(version) if version > release else f"{release}.post1"


def build_template_repository(path: Path, release: Release, change: Callable[[Path], None]) -> str:
    """The release at its version's tag, then this working tree changed by `change` at the next
    version's tag, which it returns."""
    archive = subprocess.run(
        ["git", "-C", str(TEMPLATE_DIR), "archive", release.commit],
        capture_output=True,
        check=True,
        timeout=120,
    )
    path.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(path)], input=archive.stdout, check=True, timeout=120)
    git(path, "init", "--quiet")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", f"Release {release.version}")
    git(path, "tag", str(release.version))
    for entry in path.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shutil.copytree(TEMPLATE_DIR, path, ignore=NOT_THE_TEMPLATE, dirs_exist_ok=True)
    change(path)
    following = working_tree_version(release.version)
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "--allow-empty", "-m", f"Working tree as {following}")
    git(path, "tag", following)
    return following


@dataclass(frozen=True)
class TemplateRepository:
    path: Path
    release: Release
    following: str


@pytest.fixture(scope="session")
def release_and_working_tree(tmp_path_factory: pytest.TempPathFactory) -> TemplateRepository:
    release = last_release()
    path = tmp_path_factory.mktemp("from-release") / "template"
    following = build_template_repository(path, release, lambda _: None)
    return TemplateRepository(path, release, following)


def release_questions(template: TemplateRepository) -> dict[str, dict[str, object]]:
    config = yaml.safe_load(git(template.path, "show", f"{template.release.version}:copier.yml"))
    return {name: spec for name, spec in config.items() if not name.startswith("_")}


def known_at_release(answers: Mapping[str, object], questions: Mapping[str, object]) -> bool:
    """Whether the release could render these answers: every question and value existed."""
    for question, value in answers.items():
        spec = questions.get(question)
        if not isinstance(spec, dict):
            return False
        declared = spec.get("choices")
        values = declared.values() if isinstance(declared, dict) else declared
        if values is not None and value not in list(values):
            return False
    return True


def pairwise_row(predicate: Callable[[Mapping[str, object]], bool]) -> Variant:
    """The first pairwise row on the default Python that `predicate` accepts, as the release
    knows its questions (checked when it is rendered)."""
    return next(
        variant
        for variant in PAIRWISE
        if variant.answers.get("python_version") == "3.11" and predicate(variant.answers)
    )


# PostgreSQL with Redis, as the jobs' broker or the rate limit's store (which the pairwise rows
# pair with PostgreSQL moves with the matrix); a Redis cache with the standard library's logging.
PG_REDIS_ROW = pairwise_row(
    lambda a: a["database"] == "postgresql" and (a["jobs"] is True or a["rate_limit"] is True)
)
REDIS_CACHE_ROW = pairwise_row(lambda a: a["cache"] == "redis" and a["logging"] == "stdlib")
VARIANTS = [DEFAULT, MINIMAL, FULL, PG_REDIS_ROW, REDIS_CACHE_ROW]


# The team's work on its service, each step committed as a team would. `check` says how the test
# knows the edit survived the update.


def package_of(project: Path) -> str:
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return str(answers["package_name"])


ORDERS_INIT = '''
    """Orders: what customers bought."""

    from ..features import Feature
    from .router import TAG, router

    feature: Feature[object] = Feature(name="orders", routers=[router], tags=[TAG])
'''

ORDERS_ROUTER = '''
    """HTTP routes of the orders API."""

    from fastapi import APIRouter
    from pydantic import BaseModel

    from ..config import SettingsDep

    TAG = {"name": "orders", "description": "What customers bought."}

    router = APIRouter(prefix="/api/v1/orders", tags=["orders"])


    class OrderLimits(BaseModel):
        max_items: int


    @router.get("/limits", summary="How many items one order may hold")
    async def read_limits(settings: SettingsDep) -> OrderLimits:
        return OrderLimits(max_items=settings.orders_max_items)
'''

ORDERS_TEST = """
    import pytest
    from httpx import AsyncClient

    from {package}.config import Settings


    async def test_order_limits_come_from_the_settings(client: AsyncClient) -> None:
        response = await client.get("/api/v1/orders/limits")
        assert response.status_code == 200
        assert response.json() == {{"max_items": 50}}


    def test_order_limit_is_read_from_its_variable(
        settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("APP_ORDERS_MAX_ITEMS", "7")
        read = Settings(_env_file=None, **settings.model_dump(exclude={{"orders_max_items"}}))
        assert read.orders_max_items == 7


    def test_graceful_timeout_defaults_to_thirty_seconds() -> None:
        assert Settings.model_fields["graceful_timeout"].default == 30


    def test_support_email_has_its_default(settings: Settings) -> None:
        assert settings.support_email == "support@example.com"
"""

# Appended to `DomainSettings`, whose body is its docstring.
DOMAIN_FIELDS = """
    orders_max_items: int = Field(default=50, ge=1, le=10_000, description="Items one order holds")
    support_email: str = Field(
        default="support@example.com", description="Where the API's users write to"
    )
"""

CATALOGUE_ROUTE = """@router.get("/catalogue", summary="The catalogue's name")
async def read_catalogue() -> dict[str, str]:
    return {"name": "Spring catalogue"}
"""

CATALOGUE_TEST = """
    from httpx import AsyncClient


    async def test_the_catalogue_has_a_name(client: AsyncClient) -> None:
        response = await client.get("/api/v1/products/catalogue")
        assert response.json() == {"name": "Spring catalogue"}
"""

RETRIES = '''
    """Calls to the warehouse, which drops one now and then, are tried again."""

    from tenacity import retry, stop_after_attempt, wait_exponential

    warehouse_retry = retry(stop=stop_after_attempt(3), wait=wait_exponential(max=2), reraise=True)
'''

README_SECTION = """
## Runbook

When the orders API answers 503, check the database first; page the on-call engineer after
five minutes.
"""

ENV_LINES = """# Items one order may hold
# APP_ORDERS_MAX_ITEMS=50
# Where the API's users write to
# APP_SUPPORT_EMAIL=support@example.com
"""

README_ROWS = (
    "| `APP_ORDERS_MAX_ITEMS` | `50` | items one order may hold |\n"
    "| `APP_SUPPORT_EMAIL` | `support@example.com` | where the API's users write to |\n"
)
README_TABLE = "| variable | default | meaning |\n| --- | --- | --- |\n"
OWN_TABLE = "### Settings of your own domains"


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name} no longer has exactly one {old!r}"
    path.write_text(text.replace(old, new))


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", message)


def add_orders_domain(project: Path) -> None:
    """The README's "Adding a domain", for a domain with settings and no table."""
    package = package_of(project)
    source = project / "src" / package
    (source / "orders").mkdir()
    (source / "orders" / "__init__.py").write_text(dedent(ORDERS_INIT))
    (source / "orders" / "router.py").write_text(dedent(ORDERS_ROUTER))
    (project / "tests" / "test_orders.py").write_text(dedent(ORDERS_TEST.format(package=package)))
    settings = source / "domain_settings.py"
    replace_once(
        settings, "from pydantic import BaseModel\n", "from pydantic import BaseModel, Field\n"
    )
    with settings.open("a") as domain_settings:
        domain_settings.write(DOMAIN_FIELDS)
    replace_once(
        source / "domains.py",
        "from .features import Feature\n",
        "from .features import Feature\nfrom .orders import feature as orders\n",
    )
    replace_once(source / "domains.py", " = []\n", " = [\n    orders,\n]\n")
    with (project / ".env.example").open("a") as env_example:
        env_example.write(ENV_LINES)
    readme = project / "README.md"
    text = readme.read_text()
    table = text.index(README_TABLE, text.index(OWN_TABLE)) + len(README_TABLE)
    readme.write_text(text[:table] + README_ROWS + text[table:])
    commit_all(project, "Add the orders domain and its settings")


def add_products_route(project: Path) -> None:
    router = project / "src" / package_of(project) / "products" / "router.py"
    if not router.exists():
        return
    with router.open("a") as routes:
        routes.write("\n\n" + CATALOGUE_ROUTE)
    (project / "tests" / "test_catalogue.py").write_text(dedent(CATALOGUE_TEST))
    commit_all(project, "The catalogue's name")


def change_a_default(project: Path) -> None:
    replace_once(
        project / "src" / package_of(project) / "settings.py",
        "default=10, ge=0, le=300",
        "default=30, ge=0, le=300",
    )
    replace_once(project / ".env.example", "# APP_GRACEFUL_TIMEOUT=10", "# APP_GRACEFUL_TIMEOUT=30")
    commit_all(project, "Longer graceful shutdown")


def add_a_dependency(project: Path) -> None:
    run(["uv", "add", "--quiet", "tenacity"], project)
    orders = project / "src" / package_of(project) / "orders"
    (orders / "retries.py").write_text(dedent(RETRIES))
    commit_all(project, "Retry the warehouse with tenacity")


def add_a_readme_section(project: Path) -> None:
    with (project / "README.md").open("a") as readme:
        readme.write(README_SECTION)
    commit_all(project, "Runbook")


TEAM_EDITS = [
    add_orders_domain,
    add_products_route,
    change_a_default,
    add_a_dependency,
    add_a_readme_section,
]


def surviving_edits(project: Path) -> dict[str, bool]:
    """Each edit of the team, by name: whether it is still there after the update."""
    source = project / "src" / package_of(project)
    dependencies = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    readme = (project / "README.md").read_text()
    edits = {
        "orders domain folder": (source / "orders" / "router.py").read_text()
        == dedent(ORDERS_ROUTER),
        "orders registered in domains.py": "    orders,\n" in (source / "domains.py").read_text(),
        "orders settings in domain_settings.py": "orders_max_items: int"
        in (source / "domain_settings.py").read_text(),
        "graceful_timeout default 30": "default=30, ge=0, le=300"
        in (source / "settings.py").read_text(),
        "tenacity a dependency": any(
            re.match(r"tenacity\b", requirement) for requirement in dependencies["dependencies"]
        ),
        "README section": README_SECTION.strip() in readme,
        "README settings rows": README_ROWS in readme,
        ".env.example lines": ENV_LINES in (project / ".env.example").read_text(),
    }
    if (source / "products").exists():
        edits["products route"] = (
            CATALOGUE_ROUTE.strip() in (source / "products" / "router.py").read_text()
        )
    return edits


def merge_leftovers(project: Path) -> list[str]:
    """`.rej` files and conflict markers: what an update leaves when it could not merge."""
    return [
        str(path.relative_to(project))
        for path in project_files(project)
        if path.suffix == ".rej" or CONFLICT_MARKER.search(path.read_text(errors="replace"))
    ]


def copier_update(project: Path, version: str) -> subprocess.CompletedProcess[str]:
    """`copier update --trust --defaults`, as a team runs it, to `version`."""
    command = [sys.executable, "-m", "copier", "update", "--trust", "--defaults"]
    return subprocess.run(
        [*command, "--vcs-ref", version],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def rendered_at_release(template: TemplateRepository, variant: Variant, workdir: Path) -> Path:
    questions = release_questions(template)
    answers = {q: v for q, v in variant.answers.items() if q in questions}
    assert known_at_release(answers, questions), f"{variant.id}: the release cannot render it"
    project = render(
        workdir, answers, template=template.path, vcs_ref=str(template.release.version)
    )
    commit_all(project, f"Generate from the template's {template.release.version}")
    return project


@pytest.mark.parametrize("variant", [pytest.param(v, id=v.id) for v in VARIANTS])
def test_a_teams_service_updates_from_the_last_release_without_conflict(
    release_and_working_tree: TemplateRepository, variant: Variant, tmp_path: Path
) -> None:
    template = release_and_working_tree
    project = rendered_at_release(template, variant, tmp_path / "service")
    for edit in TEAM_EDITS:
        edit(project)
    edited = surviving_edits(project)
    assert all(edited.values()), edited

    updated = copier_update(project, template.following)

    assert updated.returncode == 0, updated.stderr[-4000:]
    changed = sorted(line[3:] for line in git(project, "status", "--porcelain").splitlines())
    leftovers = merge_leftovers(project)
    survived = surviving_edits(project)
    print(
        f"\n{variant.id}: {template.release.version} ({template.release.found_by}) -> "
        f"{template.following}: {len(changed)} files changed by the update, "
        f"{len(leftovers)} conflicts; edits that survived: "
        f"{sum(survived.values())} of {len(survived)} ({', '.join(survived)})"
    )
    if changed:
        print("  changed: " + ", ".join(changed))
    assert leftovers == []
    assert "merged without conflicts" in updated.stderr
    assert survived == dict.fromkeys(survived, True)

    run(["uv", "lock", "--quiet"], project)
    run(["uv", "lock", "--check", "--quiet"], project)
    run(["uv", "sync", "--quiet"], project)
    run_static_checks(project)
    run(["uv", "run", "--no-sync", "python", "-c", "import tenacity"], project)
    suite = run(["uv", "run", "--no-sync", "pytest", "-v", "-p", "no:cacheprovider"], project)
    team_tests = [
        "test_order_limits_come_from_the_settings",
        "test_order_limit_is_read_from_its_variable",
        "test_graceful_timeout_defaults_to_thirty_seconds",
        "test_support_email_has_its_default",
    ]
    if "products route" in survived:
        team_tests.append("test_the_catalogue_has_a_name")
    for name in team_tests:
        # A test may run once per backend: `name[embedded] PASSED`.
        assert re.search(rf"::{name}(\[\w+\])? PASSED", suite.stdout), name
    print(f"  its suite after the update: {suite.stdout.strip().splitlines()[-1].strip('= ')}")


def conflicting_change(template: Path) -> None:
    """A template change on the very line a team edits (a setting's default): a conflict."""
    settings = template / "template" / "src" / "{{ package_name }}" / "settings.py"
    text = settings.read_text()
    old = '"Seconds in-flight requests get after SIGTERM"'
    assert text.count(old) == 1, "settings.py no longer describes graceful_timeout this way"
    settings.write_text(
        text.replace(old, '"Seconds in-flight requests get to finish after SIGTERM"')
    )


def test_an_update_that_leaves_a_conflict_names_the_file(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    release = last_release()
    path = tmp_path_factory.mktemp("conflicting") / "template"
    template = TemplateRepository(
        path, release, build_template_repository(path, release, conflicting_change)
    )
    project = rendered_at_release(template, DEFAULT, tmp_path / "service")
    change_a_default(project)

    updated = copier_update(project, template.following)

    assert updated.returncode == 0, updated.stderr[-4000:]
    settings = f"src/{package_of(project)}/settings.py"
    assert merge_leftovers(project) == [settings]
    report = updated.stderr[updated.stderr.index("The update left conflict markers") :]
    assert report.splitlines()[:2] == [
        "The update left conflict markers in 1 file(s):",
        f"  {settings}",
    ]
    assert "Next: uv lock && uv sync && uv run pytest" in report
    print("\n" + report.strip())
