"""Layer 1: the questions accept good answers and refuse bad ones, as a user runs copier."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pyte
import pytest
import yaml
from support import TEMPLATE_DIR, Variant, clean_env, questions
from variants import DEFAULT, FULL


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
        ("package_name=fastapi", "must not be the name of a module the service installs"),
        ("package_name=yaml", "must not be the name of a module the service installs"),
        ("package_name=tests", "nor its tests package"),
        ("package_name=" + "x" * 51, "at most 50 characters"),
        ("project_slug=" + "x" * 51, "at most 50 characters"),
        ("project_name=tab\there", "without control characters"),
        ("author_name= ", "must not be empty"),
        ("author_name=Zoë\r", "without control characters"),
        ("author_email=not-an-address", "must be an e-mail address"),
        ("author_email=a@b", "must be an e-mail address"),
        ("author_email=zoë+bill@exämple.com", "must have only ASCII characters before the @"),
        ("author_email=a..b@example.com", "that Python package metadata accepts"),
        ("description=two\nlines", "one line"),
        ("description=two\u2028lines", "one line"),
        ("description=" + "x" * 201, "at most 200 characters"),
        ("python_version=3.9", "Invalid choice for 'python_version'"),
        ("database=oracle", "Invalid choice for 'database'"),
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


@pytest.mark.parametrize(
    "answers",
    [
        ("jobs=true", "database=none"),
        ("jobs=true", "example_api=false"),
    ],
)
def test_jobs_without_a_database_or_the_example_api_are_refused_not_dropped(
    tmp_path: Path, answers: tuple[str, ...]
) -> None:
    """`jobs` is asked only with both; given anyway (`-d jobs=true`), it is refused, not
    silently left out. The message is the last line of copier's output, as the README says."""
    destination = tmp_path / "service"
    result = copier_copy(destination, *answers)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        "ValueError: Validation error for question 'jobs': needs the example API and a database"
    )
    assert not destination.exists()
    readme = (TEMPLATE_DIR / "README.md").read_text()
    assert "the message is the last line" in " ".join(readme.split())


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


@pytest.mark.parametrize("variant", [DEFAULT, FULL], ids=lambda variant: variant.id)
def test_answers_file_and_tracked_files_hold_no_secret(tmp_path: Path, variant: Variant) -> None:
    destination = tmp_path / "service"
    answers = [f"{name}={value}" for name, value in variant.answers.items()]
    assert copier_copy(destination, *answers).returncode == 0
    secret = next(
        line.split("=", 1)[1]
        for line in (destination / ".env").read_text().splitlines()
        if line.startswith("APP_SECRET_KEY=")
    )
    assert len(secret) >= 32
    for path in destination.rglob("*"):
        if path.is_file() and ".git" not in path.parts and path.name != ".env":
            assert secret not in path.read_text(), f"secret leaked into {path.name}"
    answers_file = yaml.safe_load((destination / ".copier-answers.yml").read_text())
    assert [key for key in answers_file if re.search("secret|password|token", key)] == []

    # What `git add -A` would commit: copier's task made the folder a git repository.
    git = ["git", "-C", str(destination)]
    subprocess.run([*git, "add", "-A"], check=True, timeout=60)
    tracked = subprocess.run(
        [*git, "ls-files"], check=True, capture_output=True, text=True, timeout=60
    ).stdout.splitlines()
    assert ".copier-answers.yml" in tracked
    assert ".env" not in tracked
    assert [name for name in tracked if secret in (destination / name).read_text()] == []
    assert subprocess.run([*git, "check-ignore", "--quiet", ".env"], timeout=60).returncode == 0


# Interactive: copier in a pseudo-terminal, its screen rendered as a user sees it.

ROWS, COLUMNS = 40, 120
CTRL_U = "\x15"  # clears the answer being typed


class AnsweringScreen(pyte.Screen):
    """A terminal's screen that answers the program's queries, e.g. where the cursor is."""

    def __init__(self, reply: Callable[[str], object]) -> None:
        super().__init__(COLUMNS, ROWS)
        self._reply = reply

    def write_process_input(self, data: str) -> None:
        self._reply(data)


class Terminal:
    """`copier copy` run as a user runs it, typing at its prompts."""

    def __init__(self, destination: Path) -> None:
        command = ["-m", "copier", "copy", "--trust", "--vcs-ref", "HEAD"]
        self.child = pexpect.spawn(
            sys.executable,
            [*command, str(TEMPLATE_DIR), str(destination)],
            env=clean_env(TERM="xterm"),
            encoding="utf-8",
            dimensions=(ROWS, COLUMNS),
        )
        self.screen = AnsweringScreen(reply=self.child.send)
        self.stream = pyte.Stream(self.screen)
        self.transcript = ""

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def _read(self, seconds: float) -> None:
        try:
            output = self.child.read_nonblocking(65536, timeout=seconds)
        except pexpect.TIMEOUT:
            return
        self.transcript += output
        self.stream.feed(output)

    def wait_for(self, text: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.text:
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} never showed; the screen:\n{self.text}")
            self._read(0.2)

    def settle(self, seconds: float = 1) -> None:
        """Read whatever the program shows within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._read(0.1)

    def answer(self, question: str, typed: str | None = None) -> None:
        """Wait for the question, then type an answer (None keeps the default) and Enter."""
        self.wait_for(questions()[question]["help"])
        self.child.send(("" if typed is None else CTRL_U + typed) + "\r")

    def finish(self, seconds: float = 120) -> int:
        deadline = time.monotonic() + seconds
        while self.child.isalive():
            if time.monotonic() > deadline:
                self.child.terminate(force=True)
                pytest.fail(f"copier did not finish; the screen:\n{self.text}")
            try:
                self._read(0.2)
            except pexpect.EOF:
                break
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)


def test_bad_answer_at_the_prompt_shows_the_message_then_a_good_one_proceeds(
    tmp_path: Path,
) -> None:
    destination = tmp_path / "service"
    names = list(questions())
    # question: (bad answer, the validator's message, good answer)
    retyped = {
        "package_name": (
            "class",
            "must not be a Python keyword or a standard library module name",
            "billing_api",
        ),
        "author_email": ("not-an-address", "must be an e-mail address", "ops@example.com"),
    }
    terminal = Terminal(destination)
    screens = {}
    for name in names:
        if name not in retyped:
            terminal.answer(name)
            continue
        bad, message, good = retyped[name]
        terminal.answer(name, bad)
        terminal.wait_for(f"Validation error for question '{name}': {message}")
        terminal.settle()  # the Enter just typed must not move on
        screens[name] = terminal.text
        terminal.child.send(CTRL_U + good + "\r")
    status = terminal.finish()

    for name, screen in screens.items():
        following = questions()[names[names.index(name) + 1]]["help"]
        assert following not in screen, f"copier moved on past a refused {name}"
    assert status == 0, terminal.text
    assert "Traceback" not in terminal.transcript
    assert (destination / "src" / "billing_api" / "main.py").is_file()
    answers = yaml.safe_load((destination / ".copier-answers.yml").read_text())
    assert (answers["package_name"], answers["author_email"]) == ("billing_api", "ops@example.com")


def test_ctrl_c_at_a_prompt_leaves_no_folder_and_no_traceback(tmp_path: Path) -> None:
    destination = tmp_path / "service"
    terminal = Terminal(destination)
    for name in list(questions())[: list(questions()).index("database")]:
        terminal.answer(name)
    terminal.wait_for(questions()["database"]["help"])
    terminal.child.sendintr()
    status = terminal.finish()

    assert status != 0
    assert "Traceback" not in terminal.transcript
    assert not destination.exists()
