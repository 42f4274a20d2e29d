"""Run by `copier update` in the updated project, once the template's changes are merged in.

Copier itself ends an update with "Updating to template version X" whether or not it left
conflicts: this names each file that needs a person, and what to run next.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Folders that hold none of the project's own files.
NOT_THE_PROJECT = {".git", ".venv", "node_modules"}


def unmerged_files() -> list[str]:
    """The files copier recorded as conflicted in the index (`git status` shows them as UU)."""
    listed = subprocess.run(
        ["git", "diff", "--name-only", "--diff-filter=U"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return sorted(set(listed.stdout.split())) if listed.returncode == 0 else []


def rejected_files(root: Path) -> list[str]:
    """What `copier update --conflict rej` could not apply waits in `<file>.rej`."""
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*.rej")
        if NOT_THE_PROJECT.isdisjoint(path.relative_to(root).parts)
    )


def main() -> int:
    root = Path.cwd()
    unmerged, rejected = unmerged_files(), rejected_files(root)
    lines = []
    if unmerged:
        lines.append(f"The update left conflict markers in {len(unmerged)} file(s):")
        lines += [f"  {name}" for name in unmerged]
        lines.append("Keep what you want between the markers, delete them, `git add` each file.")
    if rejected:
        lines.append(f"The update could not apply {len(rejected)} change(s) of yours; see:")
        lines += [f"  {name}" for name in rejected]
    if not lines:
        lines.append("The update merged without conflicts.")
    lines.append("Next: uv lock && uv sync && uv run pytest, then commit.")
    print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
