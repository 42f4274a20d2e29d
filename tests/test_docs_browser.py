"""The API docs, opened in headless Chromium with every address but the loopback cut off: the
self-hosted Swagger UI renders, with its Authorize button, and ReDoc renders, from local files
alone; the default CDN docs show a blank page, as the README warns."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Projects
from support import ServiceProcess, free_port
from variants import DEFAULT, SELF_HOSTED_DOCS

CHROMIUM = shutil.which("chromium")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A page of one colour compresses to a few kilobytes; the rendered Swagger UI takes over 20 KB.
BLANK_PNG_BYTES = 10_000

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")


def offline_chromium(profile: Path, *args: str) -> str:
    """Chromium's output for `args`, with no way to reach any host but this one."""
    closed_port = free_port()
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # Names other than the loopback's do not resolve, and every connection that does not
        # go to the loopback is sent to a proxy port where nothing listens.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        f"--proxy-server=http://127.0.0.1:{closed_port}",
        # Virtual time runs until the page is idle (its scripts and fetches done), at most 15 s.
        "--virtual-time-budget=15000",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.fixture(scope="module")
def docs_service(projects: Projects, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    project = projects.installed(SELF_HOSTED_DOCS)
    folder = tmp_path_factory.mktemp("docs-service")
    # A database of the test's own: the render is shared with the other checks of its variant.
    database = f"sqlite+aiosqlite:///{folder / 'service.db'}"
    with ServiceProcess(
        project, SELF_HOSTED_DOCS.package, folder / "service.log", APP_DATABASE_URL=database
    ) as service:
        yield service.url


@pytest.mark.xdist_group(SELF_HOSTED_DOCS.id)
def test_swagger_ui_renders_offline_with_the_authorize_button(
    docs_service: str, tmp_path: Path
) -> None:
    dom = offline_chromium(tmp_path / "profile-dom", "--dump-dom", f"{docs_service}/docs")
    screenshot = tmp_path / "docs.png"
    offline_chromium(
        tmp_path / "profile-shot",
        f"--screenshot={screenshot}",
        "--window-size=1280,1000",
        f"{docs_service}/docs",
    )

    assert 'class="swagger-ui"' in dom
    assert "btn authorize" in dom
    # The operations were drawn from /openapi.json, the protected one with its lock.
    assert "/auth/me" in dom
    assert "authorization__btn" in dom
    image = screenshot.read_bytes()
    assert image.startswith(PNG_SIGNATURE)
    assert len(image) > 20_000, f"the screenshot looks blank: {screenshot}"


@pytest.mark.xdist_group(SELF_HOSTED_DOCS.id)
def test_redoc_renders_offline(docs_service: str, tmp_path: Path) -> None:
    dom = offline_chromium(tmp_path / "profile", "--dump-dom", f"{docs_service}/redoc")
    assert "The claims of the caller's token" in dom
    assert "BearerAuth" in dom


@pytest.mark.xdist_group(DEFAULT.id)
def test_cdn_docs_are_blank_offline_and_the_readme_says_so(
    projects: Projects, tmp_path: Path
) -> None:
    """`docs=cdn` (the default) loads Swagger UI from a CDN: offline, the user sees a blank page,
    and the README says so next to the docs' address, naming the choice that works offline."""
    project = projects.installed(DEFAULT)
    database = f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    log = tmp_path / "service.log"
    with ServiceProcess(project, DEFAULT.package, log, APP_DATABASE_URL=database) as service:
        dom = offline_chromium(tmp_path / "profile-dom", "--dump-dom", f"{service.url}/docs")
        screenshot = tmp_path / "docs.png"
        offline_chromium(
            tmp_path / "profile-shot",
            f"--screenshot={screenshot}",
            "--window-size=1280,1000",
            f"{service.url}/docs",
        )

    assert "cdn.jsdelivr.net" in dom
    assert "btn authorize" not in dom
    assert "/health/live" not in dom  # no operation was drawn
    image = screenshot.read_bytes()
    assert image.startswith(PNG_SIGNATURE)
    assert len(image) < BLANK_PNG_BYTES, f"the screenshot is not blank: {screenshot}"
    readme = " ".join((project / "README.md").read_text().split())
    docs_at = "The API docs are at http://127.0.0.1:8000/docs"
    docs_line = readme.split(docs_at, 1)[1].split(". ", 1)[0]
    assert "without internet access they stay blank" in docs_line
    assert "`docs=self_hosted`" in docs_line
    print(f"\ncdn docs offline: a blank page ({len(image)} bytes of PNG)")
