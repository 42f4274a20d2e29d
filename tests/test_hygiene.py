"""The generated project's hygiene files: pre-commit hooks, dependency updates, the lock file.

Each file is checked with the tool that reads it: pre-commit's own validator, check-jsonschema's
schemas for Dependabot and Renovate, yamllint. The hooks run for real: pre-commit fetches hook
repositories from GitHub, so the two remote hooks are run here from their PyPI releases at the
versions the configuration names, with the configuration's own arguments.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Projects
from support import TEMPLATE_DIR, Variant, clean_env, run
from test_ci_files import ci_params, validate
from test_deployment import YAMLLINT_CONFIG
from test_update import TemplateRepository, commit_all, update
from variants import DEFAULT, FULL, complete_answers

TOOLS = Path(sys.executable).parent
PRE_COMMIT_CONFIG = ".pre-commit-config.yaml"
# The remote hooks: their repository, the PyPI distribution of the same release, the command
# their `.pre-commit-hooks.yaml` runs.
REMOTE_HOOKS = {
    "check-merge-conflict": (
        "https://github.com/pre-commit/pre-commit-hooks",
        "pre-commit-hooks",
        "check-merge-conflict",
    ),
    "detect-secrets": (
        "https://github.com/Yelp/detect-secrets",
        "detect-secrets",
        "detect-secrets-hook",
    ),
}
# What `copier update` writes where the user and the template changed the same lines.
COPIER_CONFLICT = """SETTING = (
<<<<<<< before updating
    "mine"
=======
    "the template's"
>>>>>>> after updating
)
"""


def hooks_config(project: Path) -> dict[str, Any]:
    return yaml.safe_load((project / PRE_COMMIT_CONFIG).read_text())


def runnable_here(config: dict[str, Any], home: Path) -> Path:
    """The configuration with each remote hook turned into a local one running its PyPI release."""
    repos = []
    for repo in config["repos"]:
        if repo["repo"] == "local":
            repos.append(repo)
            continue
        hooks = []
        for hook in repo["hooks"]:
            url, distribution, command = REMOTE_HOOKS[hook["id"]]
            assert repo["repo"] == url
            assert repo["rev"] == "v" + importlib.metadata.version(distribution), (
                f"the dev group's {distribution} must be the release the hook's rev names"
            )
            hooks.append(
                {
                    **hook,
                    "name": hook["id"],
                    "entry": str(TOOLS / command),
                    "language": "unsupported",
                }
            )
        repos.append({"repo": "local", "hooks": hooks})
    path = home / "pre-commit-config.yaml"
    path.write_text(yaml.safe_dump({**config, "repos": repos}))
    return path


def pre_commit(
    project: Path, config: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TOOLS / "pre-commit", "run", "--config", config, "--color", "never", *args],
        cwd=project,
        env=clean_env(PRE_COMMIT_HOME=str(config.parent / "cache"), **env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize("variant", [DEFAULT.param()])
def test_pre_commit_config_is_valid_and_its_hooks_pass_on_the_fresh_project(
    projects: Projects, variant: Variant, tmp_path: Path
) -> None:
    project = projects.installed(variant)
    run([TOOLS / "pre-commit", "validate-config", PRE_COMMIT_CONFIG], project)
    run([TOOLS / "yamllint", "--strict", "-d", YAMLLINT_CONFIG, PRE_COMMIT_CONFIG], project)
    config = hooks_config(project)
    local = {
        hook["id"]: hook
        for repo in config["repos"]
        if repo["repo"] == "local"
        for hook in repo["hooks"]
    }
    assert set(local) == {"ruff", "ruff-format", "mypy"}
    assert all(hook["entry"].startswith("uv run ") for hook in local.values())
    remote = {
        hook["id"]: hook
        for repo in config["repos"]
        if repo["repo"] != "local"
        for hook in repo["hooks"]
    }
    assert set(remote) == set(REMOTE_HOOKS)
    assert remote["check-merge-conflict"]["args"] == ["--assume-in-merge"]

    run(["git", "add", "--all"], project)
    result = pre_commit(
        project,
        runnable_here(config, tmp_path),
        "--all-files",
        MYPY_CACHE_DIR=str(projects.mypy_cache(variant)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    passed = [line for line in result.stdout.splitlines() if line.endswith("Passed")]
    assert len(passed) == len(local) + len(remote), result.stdout


@pytest.mark.parametrize("variant", [DEFAULT.param(), FULL.param()])
def test_pre_commit_refuses_copier_conflict_markers_and_a_committed_secret(
    projects: Projects, variant: Variant, tmp_path: Path
) -> None:
    """The fresh project passes the two remote hooks; a conflict or the `.env` staged does not."""
    project = tmp_path / "project"
    shutil.copytree(
        projects.rendered(variant),
        project,
        ignore=shutil.ignore_patterns(".git", ".venv", ".*_cache"),
    )
    run(["git", "init", "--quiet"], project)
    run(["git", "add", "--all"], project)
    config = runnable_here(hooks_config(project), tmp_path)
    for hook in REMOTE_HOOKS:
        clean = pre_commit(project, config, hook, "--all-files")
        assert clean.returncode == 0, clean.stdout

    (project / "settings.py").write_text(COPIER_CONFLICT)
    run(["git", "add", "settings.py"], project)
    conflict = pre_commit(project, config, "check-merge-conflict", "--all-files")
    assert conflict.returncode == 1
    assert "settings.py:2: Merge conflict string '<<<<<<<' found" in conflict.stdout

    run(["git", "add", "--force", ".env"], project)
    secret = pre_commit(project, config, "detect-secrets", "--all-files")
    assert secret.returncode == 1
    assert "Location:    .env:" in secret.stdout


# Dependency updates.


def test_each_ci_answer_gets_its_dependency_update_file() -> None:
    """Dependabot lives in `.github/`, Renovate beside `.gitlab-ci.yml`: one file each."""
    skeleton = TEMPLATE_DIR / "template"
    assert (
        skeleton / "{% if ci == 'github' %}.github{% endif %}" / "dependabot.yml.jinja"
    ).is_file()
    assert (skeleton / "{% if ci == 'gitlab' %}renovate.json{% endif %}").is_file()


@pytest.mark.parametrize("variant", ci_params("github"))
def test_dependabot_is_valid_and_updates_lock_hooks_actions_and_images(
    projects: Projects, variant: Variant
) -> None:
    project = projects.rendered(variant)
    path = project / ".github" / "dependabot.yml"
    validate("vendor.dependabot", path)
    run([TOOLS / "yamllint", "--strict", "-d", YAMLLINT_CONFIG, path], project)
    updates = yaml.safe_load(path.read_text())["updates"]
    expected = {"uv", "pre-commit", "github-actions"}
    if complete_answers(variant.answers)["deployment"] != "none":
        expected |= {"docker", "docker-compose"}
    assert sorted(update["package-ecosystem"] for update in updates) == sorted(expected)
    assert not (project / "renovate.json").exists()


@pytest.mark.parametrize("variant", ci_params("gitlab"))
def test_renovate_is_valid_and_maintains_the_lock_and_hooks(
    projects: Projects, variant: Variant
) -> None:
    project = projects.rendered(variant)
    path = project / "renovate.json"
    validate("vendor.renovate", path)
    config = yaml.safe_load(path.read_text())
    assert config["lockFileMaintenance"]["enabled"] is True
    assert config["pre-commit"]["enabled"] is True
    assert not (project / ".github").exists()


@pytest.mark.parametrize("variant", ci_params("none"))
def test_no_ci_answer_gets_no_dependency_update_file(projects: Projects, variant: Variant) -> None:
    project = projects.rendered(variant)
    assert not (project / ".github").exists()
    assert not (project / "renovate.json").exists()


# The lock file: the project's own, never the template's.


def test_the_skeleton_holds_no_lock_file_for_any_variant() -> None:
    names = [path.name for path in (TEMPLATE_DIR / "template").rglob("*")]
    assert [name for name in names if "uv.lock" in name] == []


def test_copy_says_to_commit_the_lock_file_and_update_leaves_it_alone(tmp_path: Path) -> None:
    template = TemplateRepository(tmp_path / "template")
    project = tmp_path / "service"
    copy = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "--vcs-ref", "0.1.0"]
    result = run([*copy, template.path, project], tmp_path)
    assert "commit uv.lock too" in result.stdout + result.stderr
    assert "Commit `uv.lock`" in (project / "README.md").read_text()
    run(["uv", "lock", "--quiet"], project)
    locked = (project / "uv.lock").read_bytes()
    commit_all(project, "Generated, with its lock file")

    template.replace("extensions/context.py", '"pydantic>=2.10",', '"pydantic>=2.11",')
    template.release("0.2.0")
    update(project, "0.2.0")

    assert '"pydantic>=2.11",' in (project / "pyproject.toml").read_text()
    assert (project / "uv.lock").read_bytes() == locked
    status = run(["git", "status", "--porcelain"], project).stdout.splitlines()
    assert " M pyproject.toml" in status
    assert not [line for line in status if line.endswith("uv.lock")]
