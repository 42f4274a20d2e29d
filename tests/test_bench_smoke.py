"""The benchmark's smoke run: a few seconds of every measure, so that `bench/` cannot rot.

It proves that the harness renders, serves, loads and reports; the figures of a smoke run are
too short to judge (the full run, `python -m bench`, is not part of the test suite).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import TEMPLATE_DIR, clean_env

from bench.__main__ import (
    BARE,
    BARE_GRANIAN,
    DATABASE_MEASURES,
    FEATURE_MEASURES,
    GENERATED,
    GENERATED_UVICORN,
    LIVENESS_MEASURES,
    MYSQL_MEASURES,
    OFFICIAL_TRACING_MEASURES,
    TAIL_MEASURES,
    TRACED_DATABASE_MEASURES,
)

MEASURES = [
    *LIVENESS_MEASURES,
    *FEATURE_MEASURES,
    *DATABASE_MEASURES,
    *MYSQL_MEASURES,
    *TRACED_DATABASE_MEASURES,
    *TAIL_MEASURES,
    "CSV export peak RSS growth, 200 rows",
    "CSV export peak RSS growth, 1,000 rows",
    "CSV export peak RSS growth, 5,000 rows",
    "Whole benchmark wall time",
]


def table_rows(markdown: str, heading: str) -> dict[str, list[str]]:
    """The rows of the table under `## heading`, keyed by their first cell."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("|")]
    return {cells[0]: cells[1:] for cells in rows[2:]}


def smoke_run(output: Path, *options: str) -> str:
    """`python -m bench --smoke` with `options`; returns the report it wrote."""
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output", output, *options],
        cwd=TEMPLATE_DIR,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    return (output / "latest.md").read_text()


@pytest.mark.xdist_group("bench")
def test_bench_smoke_run_reports_every_measure(tmp_path: Path) -> None:
    markdown = smoke_run(tmp_path)
    budget = table_rows(markdown, "Budget")
    assert list(budget) == MEASURES
    assert all(cells[0] for cells in budget.values()), "a measure without a result"
    servers = table_rows(markdown, "Servers under load")
    assert {GENERATED, GENERATED_UVICORN, BARE, BARE_GRANIAN} <= set(servers)
    assert (tmp_path / "latest.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.xdist_group("bench")
def test_bench_smoke_run_of_the_official_tracing_section(tmp_path: Path) -> None:
    """The section that runs only on request: ours against OpenTelemetry's FastAPI
    instrumentation, every row with a result and a verdict."""
    markdown = smoke_run(tmp_path, "--only", "official-tracing")

    budget = table_rows(markdown, "Budget")
    assert list(budget) == [*OFFICIAL_TRACING_MEASURES, "Whole benchmark wall time"]
    assert all(cells[0] and cells[3] for cells in list(budget.values())[:-1])
