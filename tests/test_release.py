"""The template's version is said in three places that must agree: CHANGELOG, pyproject, git tag.

The README's "Releasing" steps keep them together. A clone without tags (a shallow CI checkout, a
source archive) checks the first two only.
"""

from __future__ import annotations

import datetime
import re
import subprocess
import tomllib

from packaging.version import InvalidVersion, Version
from support import TEMPLATE_DIR

HEADING = re.compile(r"^## (?P<version>\S+) \((?P<date>unreleased|\d{4}-\d{2}-\d{2})\)$", re.M)


def changelog_entries() -> list[tuple[Version, str]]:
    """(version, date or "unreleased") of each CHANGELOG entry, newest first as written."""
    text = (TEMPLATE_DIR / "CHANGELOG.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    entries = [HEADING.match(line) for line in headings]
    assert all(entries), f"a heading is not `## X.Y.Z (YYYY-MM-DD|unreleased)`: {headings}"
    return [(Version(m["version"]), m["date"]) for m in entries if m]


def release_tags() -> list[Version]:
    """The git tags that copier reads as versions (PEP 440, `v` prefix allowed)."""
    listed = subprocess.run(
        ["git", "-C", str(TEMPLATE_DIR), "tag", "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    versions = []
    for tag in listed.stdout.split() if listed.returncode == 0 else []:
        try:
            versions.append(Version(tag))
        except InvalidVersion:
            continue
    return sorted(versions)


def test_changelog_lists_versions_newest_first_with_real_dates() -> None:
    entries = changelog_entries()
    assert entries, "CHANGELOG.md has no entry"
    versions = [version for version, _ in entries]
    assert versions == sorted(versions, reverse=True)
    assert all(date != "unreleased" for _, date in entries[1:]), "only the newest may be unreleased"
    for _, date in entries:
        if date != "unreleased":
            datetime.date.fromisoformat(date)


def test_pyproject_version_is_the_newest_changelog_entry() -> None:
    pyproject = tomllib.loads((TEMPLATE_DIR / "pyproject.toml").read_text())
    assert Version(pyproject["project"]["version"]) == changelog_entries()[0][0]


def test_newest_tag_is_the_newest_released_entry_where_the_clone_has_tags() -> None:
    tags = release_tags()
    entries = changelog_entries()
    released = [version for version, date in entries if date != "unreleased"]
    if tags:
        assert released, f"tag {tags[-1]} has no dated CHANGELOG entry"
        assert tags[-1] == released[0]
    newest, date = entries[0]
    if date == "unreleased" and tags:
        assert newest > tags[-1], "the unreleased entry must be a version after the newest tag"
