"""polylate.train.mining and `polylate mine`: hard negatives and teacher scores → pairs.jsonl."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from polylate.cli import app
from polylate.train import load_triplets
from polylate.train.data import read_beir
from polylate.train.mining import add_teacher_scores, mine_hard_negatives, write_pairs
from tests.test_train import tiny_model

TEXTS = {
    "d0": "paris is the capital of france",
    "d1": "the capital of germany is berlin",
    "d2": "rome is the capital of italy",
    "d3": "madrid is the capital of spain and its largest city",
    "d4": "the eiffel tower stands in paris france",
    "d5": "bananas are yellow fruit",
    "d6": "france borders spain italy and germany",
}
QUERIES = {"q0": "capital of france", "q1": "capital of germany", "q2": "yellow fruit", "q9": "unjudged"}
QRELS = {"q0": {"d0": 1, "d4": 0}, "q1": {"d1": 2, "d6": 1}, "q2": {"d5": 1}, "qx": {"d0": 1}}
# qx has no query text: every call warns about it (checked once, below)
pytestmark = [pytest.mark.filterwarnings("ignore:skipped 1 of 5 relevant judgment"),
              # the tiny model cuts documents at 16 tokens on purpose
              pytest.mark.filterwarnings("ignore:.* were cut there")]


def write_folder(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in TEXTS.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, docs in QRELS.items() for d, s in docs.items()))
    return folder


def test_bm25_negatives_leave_out_the_positives_and_skip_the_top():
    pytest.importorskip("bm25s")
    with pytest.warns(UserWarning, match="skipped 1 of 5 relevant judgment"):  # qx's, said out loud
        rows = mine_hard_negatives(TEXTS, QUERIES, QRELS, negatives=3)
    # one row per relevant pair of a query that exists (qx has no text, q9 no judgment)
    assert [(r["query_id"], r["pos_id"]) for r in rows] == [("q0", "d0"), ("q1", "d1"), ("q1", "d6"), ("q2", "d5")]
    for r in rows:
        relevant = {d for d, s in QRELS[r["query_id"]].items() if s > 0}
        assert not relevant & set(r["hard_negative_ids"]) and len(r["hard_negative_ids"]) <= 3
    q0 = rows[0]["hard_negative_ids"]
    assert "d4" in q0  # judged non-relevant stays eligible as a negative
    assert "d5" not in mine_hard_negatives(TEXTS, QUERIES, QRELS, negatives=10)[0]["hard_negative_ids"]  # no shared term
    skipped = mine_hard_negatives(TEXTS, QUERIES, QRELS, negatives=2, skip=1)
    assert skipped[0]["hard_negative_ids"] == q0[1:3]
    with pytest.raises(ValueError, match="skip"):
        mine_hard_negatives(TEXTS, QUERIES, QRELS, skip=-1)
    with pytest.raises(ValueError, match="no query has a relevant"):
        mine_hard_negatives(TEXTS, QUERIES, {"q0": {"d0": 0}})


def test_colbert_negatives_follow_the_models_maxsim_and_teacher_scores_are_its_scores():
    model = tiny_model(seed=6)
    rows = mine_hard_negatives(TEXTS, QUERIES, QRELS, retriever="colbert", model=model, negatives=4)
    doc_ids = list(TEXTS)
    for r in rows:
        scores = model.score([r["query"]], [TEXTS[d] for d in doc_ids])[0]
        relevant = {d for d, s in QRELS[r["query_id"]].items() if s > 0}
        expected = [doc_ids[i] for i in torch.argsort(scores, descending=True).tolist() if doc_ids[i] not in relevant]
        assert r["hard_negative_ids"] == expected[:4]
    scored = add_teacher_scores(rows, TEXTS, model)
    at_once = mine_hard_negatives(TEXTS, QUERIES, QRELS, retriever="colbert", model=model, negatives=4,
                                  teacher_scores=True)  # the retrieval vectors, not a second encoding
    assert at_once == scored
    for r in scored:
        ids = [r["pos_id"], *r["hard_negative_ids"]]
        reference = model.score([r["query"]], [TEXTS[d] for d in ids])[0]
        assert r["teacher_scores"] == pytest.approx(reference.tolist(), abs=2e-3)  # fp16 storage of vectors
    short = add_teacher_scores(rows, TEXTS, model, doc_maxlen=4)  # documents cut to 4 tokens
    assert short != scored
    with pytest.raises(ValueError, match="teacher_scores come from the retrieval model"):
        mine_hard_negatives(TEXTS, QUERIES, QRELS, teacher_scores=True)
    with pytest.raises(ValueError, match="not in the corpus"):
        add_teacher_scores([{**rows[0], "hard_negative_ids": ["gone"]}], TEXTS, model)
    with pytest.raises(ValueError, match="needs a model"):
        mine_hard_negatives(TEXTS, QUERIES, QRELS, retriever="colbert")


def test_written_pairs_train_with_aligned_teacher_scores(tmp_path):
    folder = write_folder(tmp_path / "data")
    model = tiny_model(seed=6)
    corpus, queries, qrels = read_beir(folder)
    rows = add_teacher_scores(mine_hard_negatives(corpus, queries, qrels, retriever="colbert", model=model,
                                                  negatives=3), corpus, model)
    write_pairs(rows, folder / "pairs.jsonl")
    with pytest.raises(FileExistsError):
        write_pairs(rows[:1], folder / "pairs.jsonl")
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no partial file left
    triplets = load_triplets(folder, max_negatives=3)
    assert len(triplets) == len(rows)
    for t, r in zip(triplets, rows):
        assert t.negatives == [corpus[d] for d in r["hard_negative_ids"]] and t.teacher_scores == r["teacher_scores"]


def test_cli_mine(tmp_path):
    pytest.importorskip("bm25s")
    folder = write_folder(tmp_path / "data")
    out = folder / "pairs.jsonl"
    run = CliRunner().invoke
    res = run(app, ["mine", str(folder), "-o", str(out), "--negatives", "2"])
    assert res.exit_code == 0 and "mined 4 (query, positive) pairs" in res.output, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["hard_negative_ids"]) <= 2 for r in rows)
    before = out.read_text()
    for args, message in ((["-o", str(out)], "exists; pass --overwrite"),
                          (["-o", str(tmp_path / "p.jsonl"), "--retriever", "splade"], "retriever must be"),
                          (["-o", str(tmp_path / "p.jsonl"), "--split", "dev"], "dev.tsv"),
                          (["-o", str(tmp_path / "p.jsonl"), "--teacher", str(tmp_path / "none")], "--teacher"),
                          (["-o", str(tmp_path / "p.jsonl"), "--depth", "0"], "--depth must be at least 1, got 0"),
                          (["-o", str(tmp_path / "p.jsonl"), "--skip", "-1"], "--skip must be at least 0")):
        res = run(app, ["mine", str(folder), *args])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, (args, res.output)
    assert out.read_text() == before
    res = run(app, ["mine", str(folder), "-o", str(tmp_path / "skip.jsonl"), "--skip", "100"])
    assert res.exit_code == 0 and "4 of 4 pairs got no negative" in res.output, res.output
