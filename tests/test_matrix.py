"""The variant matrix itself: it covers every pair of values, and every process builds it alike."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Sequence

import pytest
from support import TEMPLATE_DIR, choices, clean_env, questions
from variants import PAIRWISE_QUESTIONS, VARIANTS, complete_answers, possible, values_of

Pair = tuple[tuple[str, object], tuple[str, object]]


def uncovered_pairs(names: Sequence[str], rows: list[dict[str, object]]) -> list[Pair]:
    """The pairs of values of two of `names` that copier allows and no row answers together."""
    covered = {
        ((a, row[a]), (b, row[b])) for row in rows for a, b in itertools.combinations(names, 2)
    }
    return [
        ((a, va), (b, vb))
        for a, b in itertools.combinations(names, 2)
        for va in values_of(a)
        for vb in values_of(b)
        if ((a, va), (b, vb)) not in covered and possible({a: va, b: vb})
    ]


def test_matrix_covers_every_question_with_choices() -> None:
    with_choices = {name for name, spec in questions().items() if choices(spec)}
    assert set(PAIRWISE_QUESTIONS) == with_choices


def test_every_pair_of_values_is_rendered_in_some_variant() -> None:
    rows = [complete_answers(v.answers) for v in VARIANTS]
    assert uncovered_pairs(PAIRWISE_QUESTIONS, rows) == []


def test_every_pair_of_module_values_runs_its_suite_on_the_default_python() -> None:
    default_python = questions()["python_version"]["default"]
    rows = [complete_answers(v.answers) for v in VARIANTS]
    on_default = [row for row in rows if row["python_version"] == default_python]
    modules = [q for q in PAIRWISE_QUESTIONS if q != "python_version"]
    assert uncovered_pairs(modules, on_default) == []


def test_no_variant_answers_what_copier_does_not_allow() -> None:
    rows = [complete_answers(v.answers) for v in VARIANTS]
    assert [row for row in rows if not possible(row)] == []
    assert any(row["jobs"] for row in rows)


def test_the_jobs_constraint_is_the_one_copier_applies() -> None:
    assert "example_api" in questions()["jobs"]["when"]
    assert "database != 'none'" in questions()["jobs"]["when"]
    assert not possible({"jobs": True, "database": "none"})
    assert not possible({"jobs": True, "example_api": False})
    assert possible({"jobs": True, "database": "sqlite", "example_api": True})


def test_variant_ids_are_unique() -> None:
    ids = [v.id for v in VARIANTS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("hash_seed", ["1", "2"])
def test_every_process_builds_the_same_matrix(hash_seed: str) -> None:
    """xdist workers collect separately: a matrix that varied between processes would break."""
    script = "import variants; print([(v.id, dict(v.answers)) for v in variants.VARIANTS])"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=TEMPLATE_DIR / "tests",
        # The repository root too: the tests import its harness package.
        env=clean_env(PYTHONHASHSEED=hash_seed, PYTHONPATH=str(TEMPLATE_DIR)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == str([(v.id, dict(v.answers)) for v in VARIANTS])
