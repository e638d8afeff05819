"""Benchmark scripts are not run by the default test suite (they take minutes to hours), so
at least make sure each one still parses: a broken script is otherwise found only when
someone sets aside an hour to run it."""

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.rglob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(BENCHMARKS)))
def test_benchmark_script_compiles(script):
    compile(script.read_text(encoding="utf-8"), str(script), "exec")


def test_benchmark_scripts_found():
    assert len(SCRIPTS) >= 3
