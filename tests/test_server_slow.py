"""Slow server checks: schemathesis fuzzes every operation of the OpenAPI (no 5xx allowed),
and the bounded loopback load test runs end to end with small settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from tests.server_fixtures import app_for, tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    from fastapi.testclient import TestClient

    root = tmp_path_factory.mktemp("fuzz-indexes")
    app = app_for(tiny_model(tmp_path_factory.mktemp("model")), root, max_batch=16, max_text_chars=2000)
    with TestClient(app) as c:  # an index to hit, so search/add/delete reach the index code
        docs = [{"id": f"d{i}", "text": f"hello world search engine {i}"} for i in range(8)]
        assert c.post("/v1/indexes", json={"name": "a", "documents": docs}).status_code == 201
    return app


def _fuzz(case) -> None:
    case.call_and_validate(checks=[not_a_server_error])


@pytest.mark.slow
def test_fuzzed_requests_never_crash_the_server(fuzz_app):
    """Every operation, with schema-valid and schema-violating inputs; index routes also
    aimed at an existing index. (Driven here rather than by schemathesis' pytest plugin,
    whose lazy loader does not run under pytest 9.)"""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    failures, ran = [], 0
    operations = sorted((r.ok() for r in schema.get_all_operations()),
                        key=lambda op: op.method.upper() == "DELETE")  # drop the index last
    for op in operations:
        variants = [op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)]
        if "{name}" in op.path:
            variants.append(op.as_strategy(GenerationMode.POSITIVE, path_parameters={"name": "a"}))
        for strategy in variants:
            ran += 1
            test = settings(max_examples=30, deadline=None, database=None,
                            suppress_health_check=list(HealthCheck))(given(case=strategy)(_fuzz))
            try:
                test()
            except Unsatisfiable:
                continue  # negative mode for an operation without inputs: nothing to violate
            except Exception as exc:  # collect all operations' failures, then report them together
                failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert ran >= 20
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
def test_load_test_runs_clean(tmp_path):
    out = tmp_path / "load.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--search", "20",
                          "--encode", "10", "--rerank", "6", "--docs", "40", "--encode-batch", "2",
                          "--rerank-docs", "4", "--max-seconds", "300", "--json", str(out)],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "p95 ms" in res.stdout
    import json

    rows = json.loads(out.read_text())["endpoints"]
    assert set(rows) == {"search", "multi-vector", "rerank"}
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in rows.values())
