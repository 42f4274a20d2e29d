"""The Debian 13 root that gives the 3.13 variants their Python (`.ci/python313`) is a clean box.

Its runs share one root, on one machine, with other test runs: each must find the root as it was
built and leave nothing behind, neither a mount nor a process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import DEBIAN_ROOT_PYTHON, Interpreter, debian_root_interpreter


@pytest.fixture(scope="module")
def debian_root() -> Interpreter:
    interpreter = debian_root_interpreter()
    if interpreter is None:
        pytest.skip("no Debian 13 root here (`.ci/python313 build` makes one; `.ci/run` does)")
    return interpreter


def processes_naming(token: str) -> list[int]:
    """The processes on this machine whose command line holds `token`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and token.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


def test_commands_run_on_debian_python_in_the_shared_folder(
    debian_root: Interpreter, tmp_path: Path
) -> None:
    script = (
        "import pathlib, platform, sys;"
        "pathlib.Path('where').write_text(f'{platform.python_version()} {sys.prefix}')"
    )
    debian_root.run([debian_root.python, "-c", script], tmp_path)
    version, prefix = (tmp_path / "where").read_text().split()
    assert version.startswith(f"{DEBIAN_ROOT_PYTHON}.")
    assert prefix == "/usr"


def test_a_run_cannot_change_the_root_and_leaves_no_mount_nor_process(
    debian_root: Interpreter, tmp_path: Path
) -> None:
    assert debian_root.root is not None
    root = (debian_root.root / "root").resolve()
    # A process left running in the background, and a write outside the shared folders.
    sleeper = f'{debian_root.python} -c \'import time; open("started", "w"); time.sleep(120)\''
    command = (
        f"{sleeper} {tmp_path} & while [ ! -e started ]; do sleep 0.05; done;"
        " touch /usr/written 2>error; echo $? >status"
    )
    # A process left behind would hold the output pipe open: the run would wait for it.
    debian_root.run(["sh", "-c", command], tmp_path, timeout=30)
    assert (tmp_path / "started").exists()
    assert (tmp_path / "status").read_text().strip() != "0"
    assert "Read-only file system" in (tmp_path / "error").read_text()
    assert not (root / "usr" / "written").exists()
    assert processes_naming(str(tmp_path)) == []
    assert str(root) not in Path("/proc/self/mounts").read_text()
