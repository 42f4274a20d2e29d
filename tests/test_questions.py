"""Layer 1: the questions accept good answers and refuse bad ones, as a user runs copier."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import TEMPLATE_DIR, clean_env


def copier_copy(destination: Path, *answers: str) -> subprocess.CompletedProcess[str]:
    data = [arg for answer in answers for arg in ("--data", answer)]
    command = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "--quiet"]
    return subprocess.run(
        [*command, "--vcs-ref", "HEAD", *data, str(TEMPLATE_DIR), str(destination)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("project_name=", "must not be empty"),
        ("project_name=" + "x" * 61, "at most 60 characters"),
        ("project_slug=Billing_API", "lowercase letters, digits and single dashes"),
        ("project_slug=9lives", "must start with a letter"),
        ("package_name=billing-api", "must be a lowercase Python identifier"),
        ("package_name=Billing", "must be a lowercase Python identifier"),
        ("package_name=class", "must not be a Python keyword"),
        ("package_name=json", "standard library module"),
        ("author_name= ", "must not be empty"),
        ("author_email=not-an-address", "must be an e-mail address"),
        ("author_email=a@b", "must be an e-mail address"),
        ("description=two\nlines", "one line"),
        ("python_version=3.9", "Invalid choice for 'python_version'"),
        ("database=mysql", "Invalid choice for 'database'"),
        ("cache=memcached", "Invalid choice for 'cache'"),
        ("logging=loguru", "Invalid choice for 'logging'"),
        ("auth=basic", "Invalid choice for 'auth'"),
        ("docs=local", "Invalid choice for 'docs'"),
        ("deployment=nomad", "Invalid choice for 'deployment'"),
        ("ci=jenkins", "Invalid choice for 'ci'"),
    ],
)
def test_bad_answer_is_refused_with_message_and_no_folder(
    tmp_path: Path, answer: str, message: str
) -> None:
    destination = tmp_path / "service"
    result = copier_copy(destination, answer)
    assert result.returncode != 0
    assert message in result.stderr
    assert not destination.exists()


def test_good_answers_are_accepted_and_derived_names_follow(tmp_path: Path) -> None:
    destination = tmp_path / "service"
    result = copier_copy(
        destination,
        "project_name=Billing API v2",
        'author_name=O\'Hara "Ops" Team',
        "author_email=ops.team+billing@example.co.uk",
        'description=Bills customers; says "why" in quotes',
    )
    assert result.returncode == 0, result.stderr
    answers = yaml.safe_load((destination / ".copier-answers.yml").read_text())
    assert answers["project_slug"] == "billing-api-v2"
    assert answers["package_name"] == "billing_api_v2"
    assert (destination / "src" / "billing_api_v2" / "main.py").is_file()


def test_answers_file_and_tracked_files_hold_no_secret(tmp_path: Path) -> None:
    destination = tmp_path / "service"
    assert copier_copy(destination).returncode == 0
    secret = next(
        line.split("=", 1)[1]
        for line in (destination / ".env").read_text().splitlines()
        if line.startswith("APP_SECRET_KEY=")
    )
    assert len(secret) >= 32
    assert ".env" in (destination / ".gitignore").read_text().splitlines()
    for path in destination.rglob("*"):
        if path.is_file() and ".git" not in path.parts and path.name != ".env":
            assert secret not in path.read_text(), f"secret leaked into {path.name}"
