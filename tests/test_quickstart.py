"""The README's quick start, run as written in a fresh clone: it serves, and the service updates.

The command is read from README.md, so the test cannot drift from what users copy. Only the target
folder and the port change (the service reads `APP_PORT`), and the template's own environment is
kept off `PATH`, as on a machine that has nothing but Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from support import TEMPLATE_DIR, clean_env, free_port, run
from test_update import NOT_THE_TEMPLATE

README_TARGET = "/tmp/my-service"


def set_up_commands() -> list[str]:
    """The bash blocks of the README's "The two commands" section, in order."""
    readme = (TEMPLATE_DIR / "README.md").read_text()
    section = readme.split("\n## The two commands\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL)]


def test_readme_has_two_set_up_commands_and_ci_runs_the_second_verbatim() -> None:
    commands = set_up_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in command for command in commands)
    assert commands[1] in (TEMPLATE_DIR / ".ci" / "run").read_text().splitlines()


def fresh_clone(path: Path) -> Path:
    """The working tree as a new clone has it: committed, no environment installed yet."""
    shutil.copytree(TEMPLATE_DIR, path, ignore=NOT_THE_TEMPLATE)
    for args in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "Clone"]):
        run(["git", *args], path)
    return path


def installed(uv: Path, environment: Path) -> set[str]:
    listing = run(
        [uv, "pip", "list", "--python", environment / "bin" / "python", "--format", "json"],
        environment,
    )
    return {package["name"].lower().replace("_", "-") for package in json.loads(listing.stdout)}


def test_quick_start_serves_and_the_service_then_updates(tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path / "clone")
    service = tmp_path / "service"
    command = set_up_commands()[0]
    assert command.count(README_TARGET) == 2
    steps = command.replace(README_TARGET, str(service)).split(" && ")
    assert "python -m my_service" in steps[-1], "the quick start must end by serving"
    render, serve = " && ".join(steps[:-1]), steps[-1]

    port = free_port()
    path = os.pathsep.join(
        entry
        for entry in os.environ["PATH"].split(os.pathsep)
        if not Path(entry).resolve().is_relative_to(TEMPLATE_DIR)
    )
    started = time.monotonic()
    run(["bash", "-c", render], clone, PATH=path)
    rendered = time.monotonic()

    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            ["bash", "-c", serve],
            cwd=clone,
            env=clean_env(PATH=path, APP_PORT=str(port), PYTHONUNBUFFERED="1"),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: bash, uv and the service
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"the quick start's server exited {server.returncode}:\n{log.read_text()}"
                )
            try:
                live = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"no answer on /health/live in 180 s:\n{log.read_text()}")
                time.sleep(0.2)
        serving = time.monotonic()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert live.status_code == 200
    assert live.json() == {"status": "alive"}

    # Only what rendering and serving take was installed.
    uv = clone / ".tools" / "bin" / "uv"
    export = ["export", "--only-group", "render", "--frozen", "--no-hashes", "--no-emit-project"]
    locked = run([uv, *export], clone).stdout
    render_group = {line.split("==")[0] for line in locked.splitlines() if "==" in line}
    assert installed(uv, clone / ".venv") == render_group
    served = installed(uv, service / ".venv")
    assert {"fastapi", "granian", "my-service"} <= served
    assert {"pytest", "mypy", "ruff"}.isdisjoint(served)

    # The answers name the clone by its absolute path, so copier finds it from the service.
    answers = yaml.safe_load((service / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == str(clone)
    run(["git", "add", "--all"], service)
    run(["git", "commit", "--quiet", "-m", "Generated"], service)
    assert "uv.lock" in run(["git", "ls-files"], service).stdout.splitlines()
    update = run([clone / ".venv" / "bin" / "copier", "update", "--trust", "--defaults"], service)
    assert run(["git", "status", "--porcelain"], service).stdout == "", update.stderr
    print(
        f"quick start: render {rendered - started:.1f} s (venv, uv, {len(render_group)} packages), "
        f"serving {serving - rendered:.1f} s later ({len(served)} packages); "
        "copier update from inside the service passed"
    )


def first_uv_command(lines: list[str]) -> int:
    return next(i for i, line in enumerate(lines) if re.match(r"\s*uv (sync|run)\b", line))


def test_next_steps_and_readme_say_how_to_get_uv_before_using_it(tmp_path: Path) -> None:
    """After the quick start, uv lives in the template clone's `.tools/`, not on `PATH`: the
    message copier prints and the service's README say how to get it before their first `uv`."""
    service = tmp_path / "service"
    command = [sys.executable, "-m", "copier", "copy", "--trust", "--defaults", "--vcs-ref", "HEAD"]
    copied = run([*command, TEMPLATE_DIR, service], tmp_path)
    message = copied.stderr.split("is ready in", 1)[1].splitlines()
    readme = (service / "README.md").read_text().split("\n## Run it\n", 1)[1].splitlines()
    for text in (message, readme):
        before = "\n".join(text[: first_uv_command(text)])
        assert "pipx install uv" in before, before
        assert "python3 -m pip install --user uv" in before, before
        assert ".tools/bin/uv" in before, before
