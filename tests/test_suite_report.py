"""What a generated suite tells a user who runs it without the real servers."""

from __future__ import annotations

import pytest
from conftest import Projects
from support import Variant
from variants import SQLITE_REDIS


@pytest.mark.parametrize("variant", [SQLITE_REDIS.param()])
def test_the_untested_servers_line_closes_the_report_above_the_counts(
    projects: Projects, variant: Variant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the list of skipped tests (`-ra`), where it is read, not above it."""
    for name in variant.server_urls:
        monkeypatch.delenv(name, raising=False)
    tests = ["tests/test_redis_cache.py", "tests/test_health.py"]
    result = projects.run(
        variant, ["uv", "run", "--no-sync", "pytest", "-p", "no:cacheprovider", *tests]
    )
    lines = result.stdout.strip().splitlines()
    skipped = [i for i, line in enumerate(lines) if line.startswith("SKIPPED")]
    assert skipped, result.stdout
    [untested] = [i for i, line in enumerate(lines) if line.startswith("not tested against")]
    assert untested == len(lines) - 2 > max(skipped), result.stdout
    assert " skipped" in lines[-1]
