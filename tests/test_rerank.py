"""polylate.eval.rerank and `polylate rerank`: a first-stage run re-scored by exact MaxSim."""

from __future__ import annotations

import pytest
import torch

from polylate.eval.beir import DatasetError
from polylate.eval.rerank import read_trec_run, rerank_run
from polylate.eval.runner import write_trec_run
from tests.server_fixtures import tiny_model
from tests.test_eval import _jsonl, _write

CORPUS = {f"d{i}": t for i, t in enumerate([
    "Berlin is the capital of Germany.", "Paris is the capital of France.", "Tokyo is the capital of Japan.",
    "Der Rhein fließt durch Köln.", "La Seine traverse Paris.", "Mount Fuji is the highest peak in Japan.",
    "Coffee is grown in Brazil and Vietnam.", "Tea comes from China and India."])}
QUERIES = {"q1": "capital of Germany", "q2": "which river flows through Paris", "q3": "where is coffee grown"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("rerank"))


def first_stage() -> dict[str, dict[str, float]]:
    """A run that ranks every document for q1/q2 (q3: four), in an arbitrary first-stage order."""
    ids = sorted(CORPUS)
    return {"q1": {d: float(len(ids) - i) for i, d in enumerate(ids)},
            "q2": {d: float(i) for i, d in enumerate(ids)},
            "q3": {"d6": 3.0, "d7": 2.5, "d1": 2.0, "d5": 1.0}}


def test_read_trec_run_six_and_three_columns(tmp_path):
    path = tmp_path / "run.trec"
    write_trec_run(first_stage(), path, "bm25")
    assert read_trec_run(path) == first_stage()
    marco = tmp_path / "run.tsv"
    marco.write_text("q1\td3\t1\nq1\td1\t2\n\nq2\td0\t1\n", encoding="utf-8")
    assert read_trec_run(marco) == {"q1": {"d3": -1.0, "d1": -2.0}, "q2": {"d0": -1.0}}


@pytest.mark.parametrize("text, words", [
    ("q1 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n", ":2: query 'q1' lists document 'd1' twice"),
    ("q1\td1\t9.5\n", ":1: rank '9.5' is not a whole number from 1"),  # a score column would reverse the run
    ("q1\td1\t0\n", ":1: rank '0' is not a whole number from 1"),
    ("q1 Q0 d1 1 2.0\n", ":1: expected TREC's six columns"),
    ("q1 Q0 d1 1 high t\n", ":1: score 'high' is not a number"),
    ("q1 Q0 d1 1 nan t\n", ":1: score 'nan' is not finite"),
    ("\n\n", "holds no ranking"),
    ('{"_id": "d1", "text": "a corpus"}\n', ":1: this is JSON, not a TREC run file"),
])
def test_read_trec_run_refuses_bad_lines_naming_them(tmp_path, text, words):
    path = tmp_path / "bad.trec"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match="bad.trec") as err:
        read_trec_run(path)
    assert words in str(err.value)
    with pytest.raises(DatasetError, match="does not exist"):
        read_trec_run(tmp_path / "nowhere.trec")


class Counting:
    """The model, counting the documents it encodes."""

    def __init__(self, model):
        self.model, self.docs = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, texts, is_query=False, **kw):
        self.docs += 0 if is_query else len(texts)
        return self.model.encode(texts, is_query=is_query, **kw)


@pytest.mark.parametrize("dim, depth, per_step, cap, encoded", [
    (128, 100, 64, 10**6, 8), (64, 3, 1, 10**6, 6), (96, 5, 2, 10**6, 8),
    (64, 100, 1, 0, 20),   # nothing kept between steps: each query encodes its own 8, 8 and 4
    (64, 100, 1, 40, 12),  # room for about one document: the one needed soonest is kept
])
def test_rerank_run_scores_the_top_candidates_by_exact_maxsim(model, dim, depth, per_step, cap, encoded):
    run = first_stage()
    seen = []
    counted = Counting(model)
    out = rerank_run(counted, run, QUERIES, CORPUS, dim=dim, depth=depth, queries_per_step=per_step,
                     max_cached_tokens=cap, progress=seen.append)
    assert sum(seen) == 3 and set(out) == {"q1", "q2", "q3"}
    for q, docs in run.items():
        top = sorted(docs, key=lambda d: (docs[d], d), reverse=True)[:depth]  # the run's best, trec order
        assert list(out[q]) == top
        exact = model.score(QUERIES[q], [CORPUS[d] for d in top], dim=dim)[0]
        assert torch.allclose(torch.tensor([out[q][d] for d in top]), exact, atol=1e-5)
    if cap != 40:
        assert counted.docs == encoded
    else:  # between "all kept" (8) and "none kept" (20)
        assert 8 < counted.docs < 20


def test_rerank_run_refuses_a_run_that_does_not_match_the_texts(model):
    run = first_stage()
    with pytest.raises(ValueError, match=r"1 queries of the run not in the queries, e.g. \['q3'\]"):
        rerank_run(model, run, {q: t for q, t in QUERIES.items() if q != "q3"}, CORPUS)
    with pytest.raises(ValueError, match=r"1 documents of the run not in the corpus, e.g. \['d6'\]"):
        rerank_run(model, run, QUERIES, {d: t for d, t in CORPUS.items() if d != "d6"})
    with pytest.raises(ValueError, match="depth must be an integer of at least 1"):
        rerank_run(model, run, QUERIES, CORPUS, depth=0)
    with pytest.raises(ValueError, match="batch_size must be an integer of at least 1"):
        rerank_run(model, run, QUERIES, CORPUS, batch_size=0)
    with pytest.raises(ValueError, match="dim"):
        rerank_run(model, run, QUERIES, CORPUS, dim=200)


def _dataset(folder):
    _write(folder / "corpus.jsonl", _jsonl({"_id": d, "text": t} for d, t in CORPUS.items()))
    _write(folder / "queries.jsonl", _jsonl({"_id": q, "text": t} for q, t in QUERIES.items()))
    _write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td0\t1\nq2\td4\t1\nq3\td6\t1\n")
    return folder


def test_cli_rerank_writes_the_run_and_scores_both_stages(model, tmp_path):
    pytest.importorskip("pytrec_eval")
    from typer.testing import CliRunner

    from polylate.cli import app
    from polylate.eval.metrics import evaluate

    data = _dataset(tmp_path / "toy")
    first = tmp_path / "bm25.trec"
    write_trec_run(first_stage(), first, "bm25")
    model.save(tmp_path / "m")
    out = tmp_path / "reranked.trec"
    res = CliRunner().invoke(app, ["rerank", str(first), "--data", str(data), "-m", str(tmp_path / "m"),
                                   "-o", str(out), "--depth", "4", "--dim", "64", "--metrics", "ndcg@3,mrr@10"])
    assert res.exit_code == 0, res.output
    got = read_trec_run(out)
    assert all(len(docs) == 4 for docs in got.values()) and set(got) == {"q1", "q2", "q3"}
    assert all(line.split()[5] == "polylate" for line in out.read_text().splitlines())
    expected = rerank_run(model, first_stage(), QUERIES, CORPUS, dim=64, depth=4)
    for q in got:
        assert got[q] == pytest.approx(expected[q], abs=1e-5)
    qrels = {"q1": {"d0": 1}, "q2": {"d4": 1}, "q3": {"d6": 1}}
    after = evaluate(got, qrels, ["ndcg@3"])["ndcg@3"]
    assert "first stage" in res.output and f"{after:.4f}" in res.output

    # stdout by default; cross-lingual queries from another file; no qrels: no table
    (tmp_path / "q.jsonl").write_text(_jsonl([{"_id": "q1", "text": "Hauptstadt von Deutschland"}]))
    one = tmp_path / "one.trec"
    one.write_text("q1 Q0 d0 1 5 bm25\nq1 Q0 d1 2 4 bm25\n")
    res = CliRunner().invoke(app, ["rerank", str(one), "--corpus", str(data / "corpus.jsonl"),
                                   "--queries", str(tmp_path / "q.jsonl"), "-m", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("q1 Q0")]
    assert [ln.split()[2] for ln in lines] in (["d0", "d1"], ["d1", "d0"]) and "first stage" not in res.output


def test_cli_rerank_bm25_first_stage(model, tmp_path):
    pytest.importorskip("bm25s")
    pytest.importorskip("pytrec_eval")
    from typer.testing import CliRunner

    from polylate.cli import app
    from polylate.eval.bm25 import BM25Baseline

    data = _dataset(tmp_path / "toy")
    model.save(tmp_path / "m")
    out = tmp_path / "r.trec"
    res = CliRunner().invoke(app, ["rerank", "--bm25", "--data", str(data), "-m", str(tmp_path / "m"), "-o", str(out),
                                   "--depth", "3", "--tag", "bm25+colbert"])
    assert res.exit_code == 0, res.output
    bm25 = BM25Baseline(CORPUS).search(QUERIES, k=3)
    got = read_trec_run(out)
    assert {q: set(d) for q, d in got.items()} == {q: set(d) for q, d in bm25.items() if d}
    expected = rerank_run(model, bm25, QUERIES, CORPUS, depth=3)
    assert all(got[q] == pytest.approx(expected[q], abs=1e-5) for q in got)
    assert "first stage" in res.output and out.read_text().split("\n")[0].endswith(" bm25+colbert")


@pytest.mark.parametrize("args, words", [
    ([], "give a run file, or --bm25"),
    (["RUN", "--bm25"], "not both"),
    (["RUN", "--depth", "0"], "--depth must be at least 1, got 0"),
    (["RUN", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["RUN", "--doc-maxlen", "2"], "--doc-maxlen must be in [4, 12288] tokens, got 2"),
    (["RUN", "--split", "train"], "--split train: "),
    (["RUN", "--queries", "."], "--queries . is a folder"),
    (["RUN", "--tag", "two words"], "--tag must be one word"),
    (["RUN", "--metrics", "ndcg@x"], "ndcg@x"),
    (["RUN", "--queries", "nowhere.jsonl"], "--queries nowhere.jsonl does not exist"),
])
def test_cli_rerank_bad_options_fail_in_one_line_before_the_model_loads(tmp_path, args, words):
    from typer.testing import CliRunner

    from polylate.cli import app

    data = _dataset(tmp_path / "toy")
    first = tmp_path / "bm25.trec"
    write_trec_run(first_stage(), first, "bm25")
    res = CliRunner().invoke(app, ["rerank", *[str(first) if a == "RUN" else a for a in args], "--data", str(data),
                                   "-m", str(tmp_path / "no-model")])
    assert res.exit_code == 2 and words in res.output and "no-model" not in res.output, res.output


def test_cli_rerank_names_a_run_that_does_not_match_the_corpus(model, tmp_path):
    from typer.testing import CliRunner

    from polylate.cli import app

    data = _dataset(tmp_path / "toy")
    run = tmp_path / "other.trec"
    run.write_text("q1 Q0 d0 1 5 bm25\nq1 Q0 doc-from-elsewhere 2 4 bm25\n")
    model.save(tmp_path / "m")
    res = CliRunner().invoke(app, ["rerank", str(run), "--data", str(data), "-m", str(tmp_path / "m")])
    assert res.exit_code == 2 and "1 documents of the run not in the corpus" in res.output
    assert "doc-from-elsewhere" in res.output


def test_cli_rerank_metrics_count_the_judged_queries_the_run_ranks(model, tmp_path):
    """trec_eval's default: a run of one judged query scores that query, not 1/3 of it."""
    pytest.importorskip("pytrec_eval")
    from typer.testing import CliRunner

    from polylate.cli import app

    data = _dataset(tmp_path / "toy")
    run = tmp_path / "one.trec"
    run.write_text("q1 Q0 d0 1 5 bm25\nq1 Q0 d1 2 4 bm25\n")
    model.save(tmp_path / "m")
    res = CliRunner().invoke(app, ["rerank", str(run), "--data", str(data), "-m", str(tmp_path / "m"), "-o",
                                   str(tmp_path / "out.trec"), "--metrics", "success@2,recall@100", "--depth", "2"])
    assert res.exit_code == 0, res.output
    row = next(ln for ln in res.output.splitlines() if "success@2" in ln)
    assert row.count("1.0000") == 2  # q1's relevant d0 is among its two, in both stages
    assert "recall@100 (≤ 2 ranked)" in res.output and "1 judged queries, the top 2" in res.output
    assert "2 judged queries have no ranking in the run and are not counted" in res.output
    some = tmp_path / "some-queries.jsonl"  # BM25 over a part of the queries: the rest were not read
    _write(some, _jsonl({"_id": q, "text": QUERIES[q]} for q in ("q1",)))
    res = CliRunner().invoke(app, ["rerank", "--bm25", "--data", str(data), "--queries", str(some), "-m",
                                   str(tmp_path / "m"), "-o", str(tmp_path / "bm25.trec"), "--depth", "2"])
    assert res.exit_code == 0, res.output
    assert "2 judged queries are not among the queries read" in res.output and "no ranking" not in res.output
