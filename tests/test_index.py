"""PLAID index: compression, search quality against exact MaxSim, add/delete/compact,
persistence, bad input, and crash safety under SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polylate.index.codec import ResidualCodec
from polylate.index.exact import ExactIndex
from polylate.index.plaid import PlaidIndex, SearchSettings, build_ivf, merge_ivf
from polylate.index.storage import MANIFEST, IndexStoreError, SegmentTexts
from tests.synthetic import Corpus

EXHAUSTIVE = SearchSettings(ncells=10**6, centroid_score_threshold=-2.0, ndocs=10**6)


@pytest.fixture(scope="module")
def corpus():
    return Corpus(600, dim=64, seed=1)


@pytest.fixture(scope="module")
def exact(corpus):
    """Ground truth: brute-force MaxSim over the whole corpus."""
    index = ExactIndex(64)
    index.add(corpus.ids, corpus.docs)
    return index


@pytest.fixture(scope="module")
def kept(tmp_path_factory, corpus):
    """An index that keeps the float16 originals (exact stage 4)."""
    return PlaidIndex.build(tmp_path_factory.mktemp("kv") / "kv", corpus.ids, corpus.docs, num_centroids=128,
                            keep_vectors=True)


@pytest.fixture
def built(tmp_path, corpus):
    return PlaidIndex.build(tmp_path / "idx", corpus.ids, corpus.docs, nbits=2, num_centroids=128)


def _recall(a, b):
    return len({h.id for h in a} & {h.id for h in b}) / max(len(b), 1)


def test_codec_pack_unpack_and_quality(corpus):
    flat = np.concatenate(corpus.docs).astype(np.float32)
    cos = {}
    for nbits in (1, 2, 4):
        codec = ResidualCodec.train(flat, nbits=nbits, num_centroids=64, niter=5)
        codes, packed = codec.compress(flat[:500])
        assert packed.shape == (500, 64 * nbits // 8) and packed.dtype == np.uint8
        # decode by the definition: centroid + per-dimension bucket value, re-normalised
        buckets = np.stack([np.searchsorted(codec.cutoffs[d], flat[:500, d] - codec.centroids[codes.astype(int), d])
                            for d in range(64)], axis=1)
        manual = codec.centroids[codes.astype(int)] + codec.weights[np.arange(64)[None, :], buckets]
        manual /= np.linalg.norm(manual, axis=1, keepdims=True)
        got = codec.decompress(codes, packed).numpy()
        np.testing.assert_allclose(got, manual, atol=1e-5)
        cos[nbits] = float((got * flat[:500]).sum(1).mean())
    assert cos[1] < cos[2] < cos[4] and cos[2] > 0.9


def test_codec_assigns_through_the_centroid_graph_as_by_scoring_every_centroid(corpus, monkeypatch):
    """Past GRAPH_ASSIGN_FROM centroids (an index of ~10M tokens) k-means and compression walk
    an HNSW graph of the centroids: the same nearest centroid for nearly every vector, and
    k-means as good (here 64 centroids, the threshold lowered)."""
    from polylate.index import codec as codec_module

    flat = np.concatenate(corpus.docs).astype(np.float32)
    exact = ResidualCodec.train(flat, nbits=2, num_centroids=64, niter=5)
    nearest = exact.assign(flat, batch=100)  # scored in blocks, below the threshold
    assert exact._graph is None and np.array_equal(nearest, (flat @ exact.centroids.T).argmax(1))
    monkeypatch.setattr(codec_module, "GRAPH_ASSIGN_FROM", 16)
    graphed = ResidualCodec.train(flat, nbits=2, num_centroids=64, niter=5)
    by_graph = ResidualCodec(exact.centroids, exact.cutoffs, exact.weights, 2)
    assert by_graph._graph is None and (by_graph.assign(flat) == nearest).mean() > 0.97
    assert by_graph._graph is not None  # built once, kept for the next compress

    def fit(codec):  # mean cosine of each vector to its nearest centroid
        return float((flat @ codec.centroids.T).max(1).mean())

    assert abs(fit(graphed) - fit(exact)) < 0.02


def test_codec_keeps_centroids_in_float16(tmp_path, corpus):
    """Saved as float16 (half the codec's bytes) without a change of value: they were rounded
    before any residual was taken. A codec written float32 by an older version stays float32."""
    flat = np.concatenate(corpus.docs).astype(np.float32)
    codec = ResidualCodec.train(flat, nbits=2, num_centroids=64, niter=3)
    codec.save(tmp_path)
    assert np.load(tmp_path / "centroids.npy").dtype == np.float16
    again = ResidualCodec.load(tmp_path, 2)
    assert again.centroids.dtype == np.float32 and np.array_equal(again.centroids, codec.centroids)
    assert np.array_equal(again.compress(flat[:300])[1], codec.compress(flat[:300])[1])
    old = ResidualCodec(codec.centroids + np.float32(1e-6), codec.cutoffs, codec.weights, 2)
    (tmp_path / "old").mkdir()
    old.save(tmp_path / "old")
    assert np.load(tmp_path / "old" / "centroids.npy").dtype == np.float32


def test_search_agrees_with_exact(built, corpus, exact):
    recalls, wide = [], []
    for i in range(0, 600, 15):
        q = corpus.query_for(i)
        truth = exact.search(q, k=10)
        recalls.append(_recall(built.search(q, k=10), truth))
        wide.append(_recall(built.search(q, k=10, settings=EXHAUSTIVE), truth))
        assert corpus.ids[i] in {h.id for h in built.search(q, k=10)}
    assert np.mean(recalls) >= 0.9, np.mean(recalls)
    assert np.mean(wide) >= np.mean(recalls) - 1e-9


def test_a_small_index_answers_k_hits(tmp_path, corpus):
    # 40 documents over 32 centroids: a query's probed lists hold fewer than k documents
    idx = PlaidIndex.build(tmp_path / "small", corpus.ids[:40], corpus.docs[:40], nbits=2, num_centroids=32)
    q = corpus.query_for(3)
    hits = idx.search(q, k=25)
    assert len(hits) == 25 and len({h.id for h in hits}) == 25
    exact = ExactIndex(64)
    exact.add(corpus.ids[:40], corpus.docs[:40])
    assert hits[0].id == exact.search(q, k=1)[0].id
    idx.delete(corpus.ids[:30])
    assert len(idx.search(q, k=25)) == 10  # every live document, no deleted one
    assert {h.id for h in idx.search(q, k=25)} == set(corpus.ids[30:40])


def test_kept_vectors_give_exact_scores(kept, corpus, exact):
    for i in (3, 77, 400):
        q = corpus.query_for(i)
        got, truth = kept.search(q, k=10, settings=EXHAUSTIVE), exact.search(q, k=10)
        assert [h.id for h in got] == [h.id for h in truth]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in truth], rtol=1e-4)


def test_thorough_search_finds_more_of_the_exact_top(kept, corpus, exact):
    """The thorough preset probes wider and keeps more candidates: on an index with kept
    originals it returns exact scores and at least the fast preset's recall."""
    fast, thorough = [], []
    for i in range(1, 600, 20):
        q = corpus.query_for(i)
        truth = exact.search(q, k=10)
        by_id = {h.id: h.score for h in exact.search(q, k=600)}
        got = kept.search(q, k=10, settings=SearchSettings.for_k(10, thorough=True))
        np.testing.assert_allclose([h.score for h in got], [by_id[h.id] for h in got], rtol=1e-4)
        fast.append(_recall(kept.search(q, k=10), truth))
        thorough.append(_recall(got, truth))
    assert np.mean(thorough) >= max(np.mean(fast), 0.95), (np.mean(fast), np.mean(thorough))


@pytest.mark.parametrize("bad", [dict(ncells=0), dict(ndocs=0)])
def test_search_settings_reject_nonsense(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SearchSettings(**{"ncells": 2, "centroid_score_threshold": 0.4, "ndocs": 1024, **bad})


def test_add_delete_reopen_and_compact(built, corpus, tmp_path):
    new = Corpus(50, dim=64, seed=7)
    new_ids = [f"new-{i}" for i in range(50)]
    built.add(new_ids, new.docs, commit_every=20)  # three commits
    assert len(built) == 650 and len(built.segments) == 4
    gone = corpus.ids[:100] + new_ids[:10]
    assert built.delete(gone) == 110
    again = PlaidIndex.open(built.root)
    assert len(again) == 540 and set(again.ids) == set(corpus.ids[100:]) | set(new_ids[10:])
    for i in (0, 5, 99):
        assert all(h.id not in gone for h in again.search(corpus.query_for(i), k=50))
    assert again.search(new.query_for(25), k=1)[0].id == "new-25"
    queries = {i: corpus.query_for(i) for i in (150, 300)}
    before = {i: again.search(q, k=5, settings=EXHAUSTIVE) for i, q in queries.items()}
    live_tokens = sum(corpus.docs[corpus.ids.index(i)].shape[0] if i in corpus.ids
                      else new.docs[new_ids.index(i)].shape[0] for i in again.ids)
    st = again.stats()
    assert st["tokens"] == live_tokens < st["tokens_stored"]  # deleted documents' tokens wait for compaction
    again.compact()
    assert len(again.segments) == 1 and len(again) == 540
    st = again.stats()
    assert st["deleted_pending_compaction"] == 0 and st["tokens"] == st["tokens_stored"] == live_tokens
    for i, hits in before.items():
        assert again.search(queries[i], k=5, settings=EXHAUSTIVE) == hits
    # files of superseded segments and tombstones are swept
    assert len(list((again.root / "segments").iterdir())) == 1


def test_compact_copies_the_live_rows_block_by_block(tmp_path, corpus, monkeypatch):
    """A merge streams codes, residuals, kept vectors and inverted lists from the old segments into the new files;
    those hold exactly the live documents' rows, in order, whatever the block size."""
    monkeypatch.setattr(PlaidIndex, "MERGE_BLOCK_TOKENS", 7)  # blocks that split documents
    idx = PlaidIndex.build(tmp_path / "b", corpus.ids[:60], corpus.docs[:60], num_centroids=16, keep_vectors=True,
                           texts=[f"t{i}" for i in range(60)])
    idx.add(corpus.ids[60:90], corpus.docs[60:90])  # a segment without texts
    idx.delete(corpus.ids[5:50:3] + corpus.ids[61:63])
    expected = {k: [] for k in ("codes", "residuals", "vectors")}
    for seg in idx.segments:
        for row in np.flatnonzero(~seg.deleted):
            rows = slice(seg.offsets[row], seg.offsets[row + 1])
            for k in expected:
                expected[k].append(np.asarray(getattr(seg, k)[rows]))
    live = list(idx.ids)
    idx.compact()
    (seg,) = PlaidIndex.open(idx.root).segments
    assert seg.ids == live
    for k, rows in expected.items():
        assert np.array_equal(getattr(seg, k), np.concatenate(rows)), k
    # the inverted lists, merged from the segments' own, are those of the merged codes
    ivf_docs, ivf_offsets = build_ivf(np.asarray(seg.codes), seg.doclens, 16)
    assert np.array_equal(seg.ivf_offsets, ivf_offsets) and np.array_equal(seg.ivf_docs, ivf_docs)
    assert list(seg.texts()) == [f"t{corpus.ids.index(i)}" if corpus.ids.index(i) < 60 else None for i in live]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.none() | st.text(max_size=12), max_size=20))
def test_stored_texts_read_back_one_at_a_time_as_written(tmp_path_factory, texts):
    from polylate.index.storage import write_texts

    folder = tmp_path_factory.mktemp("texts")
    texts = [t if t is None else t.encode("utf-8", "replace").decode("utf-8") for t in texts]  # no lone surrogates
    assert write_texts(folder, iter(texts)) == len(texts)
    stored = SegmentTexts(folder, len(texts))
    assert list(stored) == texts and stored[::-1] == texts[::-1] and len(stored) == len(texts)
    if texts:
        assert stored[-1] == texts[-1]
    with pytest.raises(IndexError):
        stored[len(texts)]
    with pytest.raises(IndexStoreError, match="not one length per"):
        SegmentTexts(folder, len(texts) + 1)
    with pytest.raises(FileNotFoundError):  # a segment merged away meanwhile: the reader re-reads the index
        SegmentTexts(folder / "swept", len(texts))
    (folder / "texts.bin").unlink()
    with pytest.raises(IndexStoreError, match="damaged: texts.bin or text_lengths.npy is missing"):
        SegmentTexts(folder, len(texts))


def test_an_index_of_format_1_is_read_and_moves_to_format_2_on_its_next_commit(tmp_path, corpus):
    """Format 1 kept a segment's texts as one texts.json list; such segments stay readable, and
    a commit (whose new segments hold texts.bin) marks the index format 2 for older readers."""
    idx = PlaidIndex.build(tmp_path / "v1", corpus.ids[:30], corpus.docs[:30], num_centroids=16,
                           texts=[f"t{i}" if i % 4 else None for i in range(30)])
    seg = idx.root / "segments" / idx.segments[0].name
    stored = list(idx.segments[0].texts())
    (seg / "texts.json").write_text(json.dumps(stored))
    (seg / "texts.bin").unlink()
    (seg / "text_lengths.npy").unlink()
    manifest = json.loads((idx.root / MANIFEST).read_text())
    (idx.root / MANIFEST).write_text(json.dumps({**manifest, "format_version": 1}))
    old = PlaidIndex.open(idx.root)
    assert old.documents(corpus.ids[1:5] + ["nope"]) == ["t1", "t2", "t3", None, None]
    old.delete([corpus.ids[29]])  # a commit that writes no texts: still readable by format 1
    assert json.loads((idx.root / MANIFEST).read_text())["format_version"] == 1
    old.add(corpus.ids[30:40], corpus.docs[30:40], texts=[f"n{i}" for i in range(10)])
    assert json.loads((idx.root / MANIFEST).read_text())["format_version"] == 2
    assert old.documents([corpus.ids[3], corpus.ids[35]]) == ["t3", "n5"]
    old.compact()  # a format-1 segment and a format-2 one merged into one of format 2
    (merged,) = PlaidIndex.open(idx.root).segments
    assert (merged.folder / "texts.bin").exists() and not (merged.folder / "texts.json").exists()
    assert list(merged.texts()) == stored[:29] + [f"n{i}" for i in range(10)]  # (the 30th deleted)
    # texts only on deleted documents: the merge writes none
    textless = PlaidIndex.build(tmp_path / "few", corpus.ids[:6], corpus.docs[:6], num_centroids=4,
                                texts=["a", None, None, None, None, None])
    textless.add(corpus.ids[6:9], corpus.docs[6:9])
    textless.delete(corpus.ids[:1])
    textless.compact()
    (merged,) = PlaidIndex.open(tmp_path / "few").segments
    assert merged.texts() is None and not (merged.folder / "texts.bin").exists()


def test_an_array_written_in_blocks_is_the_array_np_save_writes(tmp_path):
    from polylate.index.storage import Blocks, save_array

    a = np.arange(24, dtype=np.float16).reshape(8, 3)
    save_array(tmp_path / "whole.npy", a)
    blocks = [a[:3], a[3:3], a[3:], a[8:]]  # empty blocks too
    save_array(tmp_path / "blocks.npy", Blocks((np.int64(8), np.int64(3)), a.dtype, iter(blocks)))
    assert (tmp_path / "whole.npy").read_bytes() == (tmp_path / "blocks.npy").read_bytes()
    with pytest.raises(ValueError, match="7 rows written for an array of 8"):
        save_array(tmp_path / "short.npy", Blocks(a.shape, a.dtype, [a[:7]]))
    with pytest.raises(ValueError, match="shape"):
        save_array(tmp_path / "wide.npy", Blocks(a.shape, a.dtype, [a[:, :2]]))


def test_the_kmeans_sample_sets_the_centroid_count(tmp_path, corpus):
    docs = corpus.docs[:400]
    total = sum(len(d) for d in docs)
    small = PlaidIndex.build(tmp_path / "s", corpus.ids[:400], docs, sample_tokens=total // 8)
    whole = PlaidIndex.build(tmp_path / "w", corpus.ids[:400], docs, sample_tokens=total)
    assert total // 8 <= small.manifest["sample_tokens"] <= total // 8 + max(len(d) for d in docs)  # whole documents
    assert whole.manifest["sample_tokens"] == total
    assert small.manifest["trained_tokens"] == whole.manifest["trained_tokens"] == total
    assert small.codec.num_centroids < whole.codec.num_centroids
    with pytest.raises(ValueError, match="sample_tokens must be a positive integer"):
        PlaidIndex.build(tmp_path / "bad", corpus.ids[:10], corpus.docs[:10], sample_tokens=0)
    assert not (tmp_path / "bad").exists()


def test_export_yields_every_live_document_once(tmp_path, corpus):
    idx = PlaidIndex.build(tmp_path / "kv", corpus.ids[:200], corpus.docs[:200], num_centroids=64, keep_vectors=True,
                           texts=[f"text {i}" for i in corpus.ids[:200]])
    idx.add(["late"], [corpus.docs[300]], texts=["late text"])  # a second segment
    idx.delete(corpus.ids[10:20])
    batches = list(idx.export(batch_size=64))
    ids = [i for b in batches for i in b[0]]
    assert sorted(ids) == sorted(set(corpus.ids[:200]) - set(corpus.ids[10:20]) | {"late"})
    assert all(len(b[0]) <= 64 for b in batches)
    by_id = dict(zip(corpus.ids, corpus.docs))
    for b_ids, texts, vectors in batches:
        for doc_id, text, v in zip(b_ids, texts, vectors):
            want = corpus.docs[300] if doc_id == "late" else by_id[doc_id]
            assert text == ("late text" if doc_id == "late" else f"text {doc_id}")
            np.testing.assert_allclose(v.astype(np.float32), want, atol=1e-3)  # the float16 originals
    plain = PlaidIndex.build(tmp_path / "plain", corpus.ids[:5], corpus.docs[:5], num_centroids=8)
    assert [(b[1], b[2]) for b in plain.export()] == [([None] * 5, None)]  # lossy residuals are not exported


def test_retrain_refits_the_codec_to_the_grown_collection(tmp_path, corpus):
    """Built on 30 documents and grown to 600, the codec is refit on all of them: from kept
    vectors with no encoder, else from ``encode`` of the stored texts; the rebuild is one
    commit that refuses a state another writer changed, and refusals leave the index as it was."""
    texts = [f"text {i}" for i in corpus.ids]
    kept = PlaidIndex.build(tmp_path / "kv", corpus.ids[:30], corpus.docs[:30], keep_vectors=True, texts=texts[:30])
    kept.add(corpus.ids[30:], corpus.docs[30:], texts=texts[30:])
    kept.delete(corpus.ids[:5])
    assert kept.outgrown()
    small = kept.codec.num_centroids
    new = kept.retrain()  # no encoder needed: the originals are kept
    assert not new.outgrown() and new.codec.num_centroids > small and len(new.segments) == 1
    assert sorted(new.ids) == sorted(corpus.ids[5:]) and new.documents(["doc-7"]) == ["text doc-7"]
    assert new.manifest["trained_tokens"] == new.live_tokens()
    for i in (50, 400):  # kept vectors: exact scores, as before the retrain
        assert [h.id for h in new.search(corpus.query_for(i), k=1)] == [corpus.ids[i]]

    plain = PlaidIndex.build(tmp_path / "plain", corpus.ids[:30], corpus.docs[:30], texts=texts[:30])
    plain.add(corpus.ids[30:], corpus.docs[30:], texts=texts[30:])
    before = dict(plain.manifest)
    with pytest.raises(ValueError, match="needs the model"):
        plain.retrain()
    by_text = dict(zip(texts, corpus.docs))
    with pytest.raises(ValueError, match="dim 64"):
        plain.retrain(lambda batch: [by_text[t][:, :32] for t in batch])
    stale = PlaidIndex.open(plain.root)
    plain.add(["late"], [corpus.docs[0]], texts=["late text"])  # another writer commits
    with pytest.raises(IndexStoreError, match="changed since it was read"):
        stale.retrain(lambda batch: [by_text[t] for t in batch])
    assert PlaidIndex.open(plain.root).manifest["codec"] == before["codec"]
    seen = []
    new = PlaidIndex.open(plain.root).retrain(lambda batch: seen.extend(batch) or
                                              [corpus.docs[0] if t == "late text" else by_text[t] for t in batch])
    assert sorted(seen) == sorted(texts + ["late text"]) and len(new) == 601 and not new.outgrown()

    # documents added without texts: each keeps its own (a retrain once dropped every text)
    mixed = PlaidIndex.build(tmp_path / "mixed", corpus.ids[:30], corpus.docs[:30], keep_vectors=True,
                             texts=texts[:30])
    mixed.add(corpus.ids[30:90], corpus.docs[30:90])
    new = mixed.retrain()
    assert new.documents(["doc-3", "doc-50"]) == ["text doc-3", None]
    # the codec's sample is capped; what a retrain fits is the whole collection, so the index
    # is not "outgrown" straight after a build (it once was, forever, past 2 x 2^18 tokens)
    capped = PlaidIndex.build(tmp_path / "capped", corpus.ids, corpus.docs, sample_tokens=500)
    assert capped.manifest["trained_tokens"] == capped.live_tokens() and not capped.outgrown()
    # manifests from before recorded the capped sample there: past the cap, "outgrown" is unknown
    old = dict(capped.manifest, trained_tokens=(1 << 18) + 7)
    del old["sample_tokens"]
    capped.manifest, capped.live_tokens = old, lambda: 10**7  # a large index, grown far past the sample
    assert not capped.outgrown()
    capped.manifest = dict(old, trained_tokens=100)
    assert capped.outgrown()  # a small old index: its count was its whole collection
    capped.manifest = dict(old, sample_tokens=1 << 18)
    assert capped.outgrown()  # the new meaning: a collection 38x the one the codec was fit to

    bare = PlaidIndex.build(tmp_path / "bare", corpus.ids[:30], corpus.docs[:30])
    with pytest.raises(IndexStoreError, match="nothing to retrain from"):
        bare.retrain(lambda batch: [])
    bare.delete(corpus.ids[:30])
    with pytest.raises(IndexStoreError, match="no documents"):
        bare.retrain()


def test_replace_duplicates_and_filters(built, corpus):
    with pytest.raises(ValueError, match="already in the index"):
        built.add([corpus.ids[0]], [corpus.docs[0]])
    other = Corpus(1, dim=64, seed=99).docs[0]
    built.add([corpus.ids[0]], [other], replace=True)
    assert len(built) == 600
    q = Corpus._unit(other.astype(np.float32))
    assert built.search(q, k=1)[0].id == corpus.ids[0]
    allowed = corpus.ids[200:210]
    hits = built.search(corpus.query_for(5), k=5, filter_ids=allowed)
    assert len(hits) == 5 and {h.id for h in hits} <= set(allowed)
    assert built.search(corpus.query_for(5), k=5, filter_ids=["nope"]) == []


def test_bad_input_loses_nothing(built, corpus, tmp_path):
    gen = built.manifest["generation"]
    with pytest.raises(ValueError, match=r"shape \[n, 64\]"):
        built.add(["x"], [np.zeros((3, 32), np.float32)])
    with pytest.raises(ValueError, match="no token vectors"):
        built.add(["x"], [np.zeros((0, 64), np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        built.add(["x"], [np.full((2, 64), np.nan, np.float32)])
    with pytest.raises(ValueError, match="non-empty string"):
        built.add([""], [corpus.docs[0]])
    with pytest.raises(ValueError, match="duplicate ids"):
        built.add(["a", "a"], corpus.docs[:2])
    with pytest.raises(KeyError, match="not in the index"):
        built.delete(["missing-id", corpus.ids[1]])
    with pytest.raises(ValueError, match=r"shape \[tokens, 64\]"):
        built.search(np.zeros((32, 128), np.float32))
    with pytest.raises(IndexStoreError, match="already exists"):
        PlaidIndex.build(built.root, corpus.ids, corpus.docs)
    reopened = PlaidIndex.open(built.root)
    assert reopened.manifest["generation"] == gen and len(reopened) == 600
    with pytest.raises(IndexStoreError, match="no index"):
        PlaidIndex.open(tmp_path / "nothing")
    manifest = json.loads((built.root / MANIFEST).read_text())
    manifest["format_version"] = 99
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexStoreError, match="format version 99"):
        PlaidIndex.open(foreign)


def test_one_writer_at_a_time(built, corpus):
    from polylate.index.storage import WriterLock

    with WriterLock(built.root):
        with pytest.raises(IndexStoreError, match="another process"):
            built.delete([corpus.ids[0]])
    assert built.delete([corpus.ids[0]]) == 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["add", "delete", "compact"]), st.integers(1, 6), st.integers(0, 10**6)),
                min_size=1, max_size=6))
def test_operations_match_a_model(tmp_path_factory, corpus, ops):
    """Any sequence of add/delete/compact keeps exactly the expected ids, each findable."""
    root = tmp_path_factory.mktemp("prop") / "idx"
    idx = PlaidIndex.build(root, corpus.ids[:40], corpus.docs[:40], num_centroids=32, keep_vectors=True)
    model = dict(zip(corpus.ids[:40], corpus.docs[:40]))
    fresh = iter(range(40, 600))
    for op, n, seed in ops:
        if op == "add":
            ids = [corpus.ids[next(fresh)] for _ in range(n)]
            docs = [corpus.docs[int(i.split("-")[1])] for i in ids]
            idx.add(ids, docs, commit_every=4)
            model.update(zip(ids, docs))
        elif op == "delete" and model:
            rng = np.random.default_rng(seed)
            ids = list(rng.choice(sorted(model), size=min(n, len(model)), replace=False))
            idx.delete(ids)
            for i in ids:
                del model[i]
        elif op == "compact":
            idx.compact()
    reopened = PlaidIndex.open(root)
    assert set(reopened.ids) == set(model)
    for doc_id in list(model)[:5]:
        q = model[doc_id].astype(np.float32)
        assert reopened.search(q, k=1, settings=EXHAUSTIVE)[0].id == doc_id


# -- crash safety ----------------------------------------------------------------------------

CHILD = r"""
import sys, numpy as np
from polylate.index.plaid import PlaidIndex
from tests.synthetic import Corpus
root, start = sys.argv[1], int(sys.argv[2])
idx = PlaidIndex.open(root)
batch = 0
while True:
    c = Corpus(30, dim=64, seed=start + batch)
    ids = [f"b{start + batch}-{j}" for j in range(30)]
    done = [0]
    def report(n, ids=ids):
        print("COMMITTED", " ".join(ids[done[0]:done[0] + n]), flush=True)
        done[0] += n
    if batch % 3 == 2:
        gone = idx.ids[:5]
        print("DELETING", " ".join(gone), flush=True)
        idx.delete(gone)
    idx.add(ids, c.docs, commit_every=10, progress=report)
    batch += 1
"""


def _kill_rounds(tmp_path, corpus, rounds: int, seed: int):
    root = tmp_path / "crash"
    PlaidIndex.build(root, corpus.ids[:50], corpus.docs[:50], num_centroids=32, keep_vectors=True)
    rng = np.random.default_rng(seed)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'src'}"}
    committed: set[str] = set(corpus.ids[:50])
    for r in range(rounds):
        before = set(PlaidIndex.open(root).ids)
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(1000 * (r + 1))],
                                stdout=subprocess.PIPE, text=True, env=env)
        # let it start and commit some, then kill at a random moment
        first = proc.stdout.readline()
        time.sleep(float(rng.uniform(0.0, 0.8)))
        proc.send_signal(signal.SIGKILL)
        out = first + proc.stdout.read()
        proc.wait()
        lines = out.splitlines()
        reported = {i for line in lines if line.startswith("COMMITTED") for i in line.split()[1:]}
        maybe_deleted = {i for line in lines if line.startswith("DELETING") for i in line.split()[1:]}
        idx = PlaidIndex.open(root)
        live = set(idx.ids)
        lost = (reported | (committed - maybe_deleted)) - live - maybe_deleted
        assert not lost, f"round {r}: committed docs lost: {sorted(lost)[:5]}"
        chunks: dict[str, int] = {}
        for doc_id in live - before:  # adds are all-or-nothing per 10-doc commit
            b, j = doc_id.split("-")
            chunks[f"{b}-{int(j) // 10}"] = chunks.get(f"{b}-{int(j) // 10}", 0) + 1
        assert all(n == 10 for n in chunks.values()), chunks
        for doc_id in sorted(live)[:3]:  # arrays are whole: every live doc is scorable
            assert idx.search(np.ones((4, 64), np.float32) / 8, k=len(idx), filter_ids=[doc_id])
        committed = live
    return committed


def test_sigkill_during_writes_loses_no_committed_doc(tmp_path, corpus):
    _kill_rounds(tmp_path, corpus, rounds=3, seed=0)


@pytest.mark.slow
def test_sigkill_many_times(tmp_path, corpus):
    _kill_rounds(tmp_path, corpus, rounds=25, seed=1)


def test_many_small_adds_are_merged(tmp_path, corpus, monkeypatch):
    monkeypatch.setattr(PlaidIndex, "MAX_SEGMENTS", 3)
    idx = PlaidIndex.build(tmp_path / "m", corpus.ids[:50], corpus.docs[:50], num_centroids=32)
    for start in range(50, 110, 10):
        idx.add(corpus.ids[start : start + 10], corpus.docs[start : start + 10])
        assert len(idx.segments) <= 3
    assert set(PlaidIndex.open(idx.root).ids) == set(corpus.ids[:110])


def test_adds_merge_only_the_smallest_segments(tmp_path, corpus, monkeypatch):
    """Past MAX_SEGMENTS an add merges the smallest segments, no more than MERGE_MAX_BYTES of
    them: the big parts of a large build are never read whole into memory for it."""
    monkeypatch.setattr(PlaidIndex, "MAX_SEGMENTS", 4)
    parts = [(corpus.ids[s : s + 100], corpus.docs[s : s + 100], None) for s in range(100, 400, 100)]
    idx = PlaidIndex.build(tmp_path / "m", corpus.ids[:100], corpus.docs[:100], num_centroids=32, more=parts)
    big = {seg.name for seg in idx.segments}
    per_token = idx.codec.bytes_per_token + 2  # uint16 codes, no kept vectors
    monkeypatch.setattr(PlaidIndex, "MERGE_MAX_BYTES", 40 * 25 * per_token)  # < one big part, > small adds
    q = corpus.query_for(420)
    for start in range(400, 440, 10):
        idx.add(corpus.ids[start : start + 10], corpus.docs[start : start + 10])
    names = {seg.name for seg in idx.segments}
    assert big <= names  # the four 100-document parts are untouched
    assert len(idx.segments) < 4 + 4  # the four small adds were merged
    reopened = PlaidIndex.open(idx.root)
    assert sorted(reopened.ids) == sorted(corpus.ids[:440])
    one = PlaidIndex.open(idx.root)
    one.compact()  # asked for: everything into one
    assert len(one.segments) == 1 and sorted(one.ids) == sorted(corpus.ids[:440])
    assert [h.id for h in reopened.search(q, k=10, settings=EXHAUSTIVE)] == \
        [h.id for h in one.search(q, k=10, settings=EXHAUSTIVE)]


def test_an_id_stored_before_the_control_character_rule_survives_a_retrain(tmp_path, corpus):
    """Older versions let ids with a tab in; such an index still opens, retrains (the rebuild
    rewrites ids already stored) and deletes them. Only new ids are refused."""
    idx = PlaidIndex.build(tmp_path / "old", corpus.ids[:40], corpus.docs[:40], keep_vectors=True)
    ids_file = idx.root / "segments" / idx.segments[0].name / "ids.json"
    ids_file.write_text(json.dumps(["old\tid", *corpus.ids[1:40]]))
    idx = PlaidIndex.open(idx.root).retrain()
    assert "old\tid" in idx and len(idx) == 40
    with pytest.raises(ValueError, match="control character"):
        idx.add(["new\tid"], [corpus.docs[50]])
    assert idx.delete(["old\tid"]) == 1


def test_rebuild_in_place_is_seen_by_open_handles(tmp_path, corpus):
    """A handle opened before a rebuild must not keep writing against the old index."""
    root = tmp_path / "rb"
    first = PlaidIndex.build(root, corpus.ids[:60], corpus.docs[:60], num_centroids=32)
    stale = PlaidIndex.open(root)
    PlaidIndex.build(root, corpus.ids[100:160], corpus.docs[100:160], num_centroids=32, overwrite=True)
    assert PlaidIndex.open(root).manifest["generation"] > first.manifest["generation"]
    stale.add(["extra"], [corpus.docs[300]])  # must apply to the rebuilt index
    after = PlaidIndex.open(root)
    assert set(after.ids) == set(corpus.ids[100:160]) | {"extra"}
    stale.refresh()
    assert set(stale.ids) == set(after.ids)


def test_narrow_filters_and_small_ndocs_still_answer_exactly(kept, corpus, exact):
    q = corpus.query_for(5)
    ranked = [h.id for h in exact.search(q, k=600)]
    allowed = ranked[-30:]  # the 30 documents the query likes least: no probed cell reaches them
    hits = kept.search(q, k=10, filter_ids=allowed)
    assert [h.id for h in hits] == ranked[-30:-20]
    # ndocs below k still returns k hits
    few = kept.search(q, k=20, settings=SearchSettings(ncells=2, centroid_score_threshold=0.4, ndocs=4))
    assert len(few) == 20


def test_codec_of_a_tiny_collection_has_distinct_buckets(corpus):
    flat = corpus.docs[0].astype(np.float32)  # one document: a few dozen tokens
    codec = ResidualCodec.train(flat, nbits=2, num_centroids=2)
    assert (np.diff(codec.cutoffs, axis=1) > 0).all()
    assert (np.diff(codec.weights, axis=1) > 0).all()


@pytest.mark.parametrize("damage", ["missing ids", "short ids", "junk centroids", "wrong-shape centroids",
                                    "short ivf_offsets", "corrupt texts", "lost vectors", "integer ids",
                                    "codes past the centroids"])
def test_a_damaged_index_is_reported_as_such(tmp_path, corpus, damage):
    texts = [f"t{i}" for i in range(40)]
    idx = PlaidIndex.build(tmp_path / "dmg", corpus.ids[:40], corpus.docs[:40], num_centroids=16, texts=texts,
                           keep_vectors=damage == "lost vectors")
    seg, codec = idx.root / "segments" / idx.segments[0].name, idx.root / idx.manifest["codec"]
    if damage == "lost vectors":  # search fell back to residuals, and compact committed an unreadable index
        (seg / "vectors.npy").unlink()
    elif damage == "integer ids":
        (seg / "ids.json").write_text(json.dumps(list(range(40))))
    elif damage == "codes past the centroids":  # the search kernels would read past their tables
        np.save(seg / "codes.npy", np.load(seg / "codes.npy") + 16)
    elif damage == "missing ids":
        (seg / "ids.json").unlink()
    elif damage == "short ids":
        (seg / "ids.json").write_text(json.dumps(corpus.ids[:6]))
    elif damage == "junk centroids":
        (codec / "centroids.npy").write_bytes(b"not an array")
    elif damage == "wrong-shape centroids":
        np.save(codec / "centroids.npy", np.zeros((16, 32), np.float32))
    elif damage == "short ivf_offsets":
        np.save(seg / "ivf_offsets.npy", np.load(seg / "ivf_offsets.npy")[:5])
    else:  # found when a text is read, not at open
        (seg / "texts.bin").write_bytes((seg / "texts.bin").read_bytes()[:-1])
        with pytest.raises(IndexStoreError, match="damaged: texts.bin holds 109 bytes, text_lengths.npy adds up to 110"):
            PlaidIndex.open(idx.root).documents(corpus.ids[:2])
        return
    with pytest.raises(IndexStoreError, match="damaged"):
        PlaidIndex.open(idx.root)


def test_what_an_interrupted_build_left_is_replaced_only_when_asked(tmp_path, corpus, monkeypatch):
    """A first build marks its folder until it commits: a folder with the marker and no
    manifest is its leftovers, replaced on request however many killed builds wrote there; a
    committed index that lost its manifest has no marker, and is never replaced unasked."""
    from polylate.index import plaid
    from polylate.index.plaid import BUILDING, interrupted_build

    folder = tmp_path / "killed"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill between writing the first segment and committing

    with monkeypatch.context() as m:
        m.setattr(plaid, "commit_manifest", killed)
        for _ in range(2):  # killed twice (an OOM during k-means recurs): two codecs, two segments
            with pytest.raises(KeyboardInterrupt):
                PlaidIndex.build(folder, corpus.ids[:20], corpus.docs[:20], over_interrupted=True)
    assert (folder / BUILDING).exists() and len(list(folder.glob("codec-*"))) == 2 and interrupted_build(folder)
    with pytest.raises(IndexStoreError, match="interrupted build left, overwrite them"):
        PlaidIndex.build(folder, corpus.ids[:20], corpus.docs[:20])
    idx = PlaidIndex.build(folder, corpus.ids[20:30], corpus.docs[20:30], over_interrupted=True)
    assert sorted(idx.ids) == sorted(corpus.ids[20:30]) and len(list(folder.glob("codec-*"))) == 1
    assert not (folder / BUILDING).exists() and len(list((folder / "segments").iterdir())) == 1
    # a committed index with one segment (as after a build or compaction) that lost its manifest
    PlaidIndex.build(tmp_path / "lost", corpus.ids[:5], corpus.docs[:5])
    (tmp_path / "lost" / "MANIFEST.json").unlink()
    assert not interrupted_build(tmp_path / "lost")
    for kwargs in ({"over_interrupted": True}, {"overwrite": True}):
        with pytest.raises(IndexStoreError, match="choose an empty or new folder$"):
            PlaidIndex.build(tmp_path / "lost", corpus.ids[:2], corpus.docs[:2], **kwargs)
    assert len(list((tmp_path / "lost" / "segments").iterdir())) == 1  # its data untouched
    # over_interrupted never replaces a committed index
    with pytest.raises(IndexStoreError, match="already exists"):
        PlaidIndex.build(idx.root, corpus.ids[:2], corpus.docs[:2], over_interrupted=True)
    (tmp_path / "theirs" / "segments").mkdir(parents=True)
    (tmp_path / "theirs" / "segments" / "notes.txt").write_text("mine")
    (tmp_path / "theirs" / BUILDING).touch()
    assert not interrupted_build(tmp_path / "theirs")
    with pytest.raises(IndexStoreError, match="choose an empty or new folder$"):
        PlaidIndex.build(tmp_path / "theirs", corpus.ids[:2], corpus.docs[:2], overwrite=True)


def test_inputs_are_checked_before_anything_is_written(tmp_path, corpus):
    idx = PlaidIndex.build(tmp_path / "i", corpus.ids[:1], [corpus.docs[0][:1]])  # one token is enough
    assert len(idx) == 1 and idx.search(corpus.docs[0][:1].astype(np.float32), k=1)[0].id == corpus.ids[0]
    gen = idx.manifest["generation"]
    for ids, vectors, texts, error, match in (
            ("xy", corpus.docs[1:3], None, TypeError, "not one string"),
            (["a\udc80"], corpus.docs[1:2], None, ValueError, "not valid Unicode"),
            (["a"], corpus.docs[1:2], ["caf\udce9"], ValueError, "text is not valid Unicode"),
            ([["a"]], corpus.docs[1:2], None, ValueError, "id must be a non-empty string"),
            (["a\tb"], corpus.docs[1:2], None, ValueError, "id holds a control character"),
            (["a"], [np.array([[object()] * 64])], None, ValueError, "must be numbers")):
        with pytest.raises(error, match=match):
            idx.add(ids, vectors, texts=texts)
    assert PlaidIndex.open(idx.root).manifest["generation"] == gen


def test_codes_of_segments_too_large_to_check_at_open_are_checked_by_compaction(tmp_path, corpus, monkeypatch):
    from polylate.index import plaid

    idx = PlaidIndex.build(tmp_path / "big", corpus.ids[:40], corpus.docs[:40], num_centroids=16)
    seg = idx.root / "segments" / idx.segments[0].name
    np.save(seg / "codes.npy", np.load(seg / "codes.npy") + 16)
    monkeypatch.setattr(plaid, "_CODES_CHECKED_AT_OPEN", 0)
    damaged = PlaidIndex.open(idx.root)
    with pytest.raises(IndexStoreError, match="centroid codes past"):
        damaged.compact()
    monkeypatch.setattr(PlaidIndex, "MAX_SEGMENTS", 1)  # an add's merge meets them: its documents stay
    with pytest.warns(UserWarning, match="merging .* centroid codes past"):
        damaged.add(corpus.ids[40:42], corpus.docs[40:42])
    assert corpus.ids[41] in PlaidIndex.open(idx.root)


def test_compaction_names_damaged_inverted_lists_and_keeps_the_index(tmp_path, corpus):
    """A merge takes the segments' own inverted lists: an entry past a segment's documents is
    named as damage, and the failed merge commits nothing."""
    idx = PlaidIndex.build(tmp_path / "ivf", corpus.ids[:40], corpus.docs[:40], num_centroids=16)
    idx.add(corpus.ids[40:50], corpus.docs[40:50])
    seg = idx.root / "segments" / idx.segments[1].name
    np.save(seg / "ivf_docs.npy", np.load(seg / "ivf_docs.npy") + 10)
    generation = idx.manifest["generation"]
    with pytest.raises(IndexStoreError, match="damaged: ivf_docs.npy names documents past its 10"):
        PlaidIndex.open(idx.root).compact()
    again = PlaidIndex.open(idx.root)
    assert again.manifest["generation"] == generation and len(again) == 50


@pytest.mark.parametrize("keep_vectors", [False, True])
def test_search_refuses_damage_the_open_checks_did_not_read(tmp_path, corpus, monkeypatch, keep_vectors):
    """Codes of segments too large to check at open, and inverted-list entries, are bound-checked
    by the search kernels themselves: each stage names the damage instead of reading past an
    array (which returned garbage scores or crashed the process)."""
    from polylate.index import plaid

    monkeypatch.setattr(plaid, "_CODES_CHECKED_AT_OPEN", 0)
    idx = PlaidIndex.build(tmp_path / "d", corpus.ids[:40], corpus.docs[:40], num_centroids=16,
                           keep_vectors=keep_vectors)
    seg = idx.root / "segments" / idx.segments[0].name
    q = corpus.docs[3][:6].astype(np.float32)
    few = SearchSettings(ncells=16, centroid_score_threshold=0.0, ndocs=8)  # 40 docs > keep: stages 2–3
    assert idx.search(q, k=2, settings=few)[0].id == corpus.ids[3]
    codes = np.load(seg / "codes.npy")
    np.save(seg / "codes.npy", codes + 16)
    damaged = PlaidIndex.open(idx.root)
    with pytest.raises(IndexStoreError, match="damaged: segment .* out of range"):
        damaged.search(q, k=2, settings=few)  # stage 3, centroid interaction
    if not keep_vectors:
        with pytest.raises(IndexStoreError, match="damaged: segment .* out of range"):
            damaged.search(q, k=10)  # 40 docs ≤ keep: stage 4 only, decompression
    np.save(seg / "codes.npy", codes)
    ivf = np.load(seg / "ivf_docs.npy")
    ivf[-1] = 40
    np.save(seg / "ivf_docs.npy", ivf)
    with pytest.raises(IndexStoreError, match="damaged: segment .* out of range"):
        PlaidIndex.open(idx.root).search(q, k=2, settings=few)  # stage 2, the inverted lists
    np.save(seg / "ivf_offsets.npy", np.load(seg / "ivf_offsets.npy")[::-1].copy())
    with pytest.raises(IndexStoreError, match="ivf_offsets.npy does not index"):
        PlaidIndex.open(idx.root)


def test_an_add_whose_merge_fails_keeps_its_documents(tmp_path, corpus, monkeypatch):
    idx = PlaidIndex.build(tmp_path / "m", corpus.ids[:5], corpus.docs[:5])
    monkeypatch.setattr(PlaidIndex, "MAX_SEGMENTS", 1)
    monkeypatch.setattr(PlaidIndex, "_compact", lambda self, manifest, which=None: (_ for _ in ()).throw(
        OSError(28, "No space left on device")))
    with pytest.warns(UserWarning, match="documents were added, but merging .* No space left"):
        idx.add(corpus.ids[5:8], corpus.docs[5:8])
    assert len(PlaidIndex.open(idx.root)) == 8


def test_stats_while_another_writer_sweeps(tmp_path, corpus, monkeypatch):
    """Another process's compaction removes whole segment folders and files while stats walks
    the index: what is gone is not counted, and not an error."""
    import os
    import shutil

    idx = PlaidIndex.build(tmp_path / "s", corpus.ids[:5], corpus.docs[:5])
    idx.add(corpus.ids[5:8], corpus.docs[5:8])
    segments = sorted((idx.root / "segments").iterdir())
    real_scandir, real_stat = os.scandir, os.stat

    swept = []

    def scandir(path="."):  # the walk enters one segment; meanwhile a writer sweeps the others
        if not swept and isinstance(path, (str, os.PathLike)) and Path(path).parent.name == "segments":
            swept.extend(seg for seg in segments if seg != Path(path))
            for seg in swept:
                shutil.rmtree(seg)
        return real_scandir(path)

    def stat(path, *args, **kwargs):
        if str(path).endswith("codes.npy"):
            raise FileNotFoundError(2, "No such file", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat)
    st = idx.stats()
    assert sum(s.exists() for s in segments) == 1 and st["documents"] == 8 and st["bytes_on_disk"] > 0


def test_building_into_a_foreign_folder_touches_nothing(tmp_path, corpus):
    folder = tmp_path / "mine"
    (folder / "segments" / "work").mkdir(parents=True)
    (folder / "segments" / "work" / "notes.txt").write_text("keep me")
    with pytest.raises(IndexStoreError, match="not an index but holds segments"):
        PlaidIndex.build(folder, corpus.ids[:20], corpus.docs[:20], num_centroids=8)
    assert (folder / "segments" / "work" / "notes.txt").read_text() == "keep me"


def test_small_indexes_search_exactly_and_bad_queries_are_refused(tmp_path, corpus, exact):
    idx = PlaidIndex.build(tmp_path / "sm", corpus.ids[:200], corpus.docs[:200], num_centroids=512,
                           keep_vectors=True)
    small = ExactIndex(64)
    small.add(corpus.ids[:200], corpus.docs[:200])
    for i in range(0, 200, 25):
        q = corpus.query_for(i)
        assert [h.id for h in idx.search(q, k=10)] == [h.id for h in small.search(q, k=10)]
    with pytest.raises(ValueError, match="NaN"):
        idx.search(np.full((4, 64), np.nan, np.float32))
    with pytest.raises(ValueError, match="tokens >= 1"):
        idx.search(np.zeros((0, 64), np.float32))
    with pytest.raises(TypeError, match="not one string"):
        idx.search(corpus.query_for(0), filter_ids="doc-1")
    with pytest.raises(ValueError, match="text must be a string"):
        idx.add(["x"], [corpus.docs[0]], texts=[5])


def test_an_open_handle_reads_texts_after_another_writer_compacts(tmp_path, corpus):
    root = tmp_path / "tx"
    texts = [f"text of {i}" for i in corpus.ids[:30]]
    PlaidIndex.build(root, corpus.ids[:30], corpus.docs[:30], num_centroids=16, texts=texts)
    reader, writer = PlaidIndex.open(root), PlaidIndex.open(root)
    writer.delete(corpus.ids[:5])
    writer.compact()  # sweeps the segment the reader has open
    assert reader.documents(corpus.ids[10:12]) == texts[10:12]
    assert reader.documents([corpus.ids[0]]) == [None]  # deleted meanwhile


def test_readers_never_see_a_half_swept_segment(tmp_path, corpus, monkeypatch):
    """A commit's sweep deletes superseded segments one file at a time. Readers caught between
    two unlinks (a writer descheduled there) once saw a segment without vectors.npy ("damaged:
    lost its vectors"), or without its texts (None for a live document's text). The sweep now
    renames each folder out of sight first: a reader sees it whole or not at all, and re-reads."""
    import shutil

    from polylate.index import storage
    from polylate.index.storage import read_manifest

    root = tmp_path / "race"
    texts = [f"text of {i}" for i in corpus.ids[:40]]
    PlaidIndex.build(root, corpus.ids[:20], corpus.docs[:20], num_centroids=16, keep_vectors=True,
                     texts=texts[:20])
    PlaidIndex.open(root).add(corpus.ids[20:40], corpus.docs[20:40], texts=texts[20:40])
    stale = read_manifest(root)  # a reader's open read the manifest before the commit below
    handle = PlaidIndex.open(root)  # and a reader holding the index open
    seen, real_rmtree, real_unlink = [], shutil.rmtree, os.unlink

    def rmtree(path, *args, **kwargs):
        seen.append(Path(path))
        return real_rmtree(path, *args, **kwargs)

    def unlink(path, *args, **kwargs):  # the writer, paused inside its sweep
        real_unlink(path, *args, **kwargs)
        if os.path.basename(os.fspath(path)) == "vectors.npy" and not readers:
            readers.append(PlaidIndex(root, stale))  # opens what the commit made, not an error
            readers.append(handle.documents(corpus.ids[:40]))

    readers = []
    monkeypatch.setattr(storage.shutil, "rmtree", rmtree)
    monkeypatch.setattr(os, "unlink", unlink)
    PlaidIndex.open(root).compact()
    monkeypatch.undo()
    opened, read = readers
    assert len(opened) == 40 and len(opened.segments) == 1
    assert read == texts
    assert seen and all(p.name.endswith(".swept") for p in seen)  # each folder deleted out of sight


def test_texts_are_read_again_while_other_writers_keep_committing(tmp_path, corpus, monkeypatch):
    """documents() re-opened the index once after its segments were swept; a second commit
    sweeping the fresh object's segments before it read them let FileNotFoundError out (a 500
    from the server). It now reads through fresh objects until one holds, a bounded number of
    times, then says so as IndexStoreError (the server's 409 "retry")."""
    root = tmp_path / "busy"
    texts = [f"text {i}" for i in corpus.ids[:20]]
    PlaidIndex.build(root, corpus.ids[:20], corpus.docs[:20], num_centroids=8, texts=texts)
    reader = PlaidIndex.open(root)
    PlaidIndex.open(root).compact()  # the reader's segment is swept
    real_open, commits = PlaidIndex.open.__func__, []

    def open_then_another_commit(cls, path):
        fresh = real_open(cls, path)
        if len(commits) < limit:
            commits.append(real_open(cls, path).compact())  # lands before fresh reads its texts
        return fresh

    monkeypatch.setattr(PlaidIndex, "open", classmethod(open_then_another_commit))
    limit = 2
    assert reader.documents(corpus.ids[3:5]) == texts[3:5] and len(commits) == 2
    limit = 10**6
    with pytest.raises(IndexStoreError, match="rewritten by other writers during each of 5 reads"):
        reader.documents(corpus.ids[3:5])


def test_an_index_that_really_lost_a_file_is_still_damaged(tmp_path, corpus):
    """The re-read on a damaged-looking segment retries only when the manifest moved on."""
    root = tmp_path / "lost"
    PlaidIndex.build(root, corpus.ids[:20], corpus.docs[:20], num_centroids=16, keep_vectors=True)
    seg = next((root / "segments").iterdir())
    (seg / "vectors.npy").unlink()
    with pytest.raises(IndexStoreError, match="lost its vectors.npy"):
        PlaidIndex.open(root)


def test_a_killed_sweep_leaves_nothing_behind_after_the_next_commit(tmp_path, corpus):
    root = tmp_path / "left"
    idx = PlaidIndex.build(root, corpus.ids[:20], corpus.docs[:20], num_centroids=16)
    leftover = root / "segments" / ".seg-0123456789ab.5f5f5f5f.swept"
    (leftover / "sub").mkdir(parents=True)
    (root / ".codec-0123456789ab.5f5f5f5f.swept").mkdir()
    idx.delete(corpus.ids[:2])
    assert not leftover.exists() and not (root / ".codec-0123456789ab.5f5f5f5f.swept").exists()
    assert len(PlaidIndex.open(root)) == 18


def test_two_first_builds_of_one_folder_never_replace_each_other(tmp_path, corpus, monkeypatch):
    """Both passed the "no index here" check; the one that reaches the lock second, after the
    other committed, is refused instead of building over it (its documents lost)."""
    import threading

    from polylate.index import plaid

    root = tmp_path / "twice"
    real_lock = plaid.WriterLock
    second_waits, first_done = threading.Event(), threading.Event()

    class PausingLock(real_lock):
        def __enter__(self):
            if threading.current_thread().name == "second":
                second_waits.set()
                first_done.wait(60)
            return super().__enter__()

    monkeypatch.setattr(plaid, "WriterLock", PausingLock)
    errors = []

    def second():
        try:
            PlaidIndex.build(root, corpus.ids[20:30], corpus.docs[20:30], num_centroids=8)
        except IndexStoreError as exc:
            errors.append(exc)

    thread = threading.Thread(target=second, name="second")
    thread.start()
    second_waits.wait(60)
    PlaidIndex.build(root, corpus.ids[:20], corpus.docs[:20], num_centroids=8)
    first_done.set()
    thread.join(60)
    assert errors and "built at" in str(errors[0]) and "meanwhile" in str(errors[0])
    assert sorted(PlaidIndex.open(root).ids) == sorted(corpus.ids[:20])


def test_warm_up_searches_a_throwaway_index_and_leaves_nothing(tmp_path, monkeypatch):
    """The server compiles the search kernels at start-up with it; a failure there would
    only be a warning, so it is checked here."""
    import tempfile

    from polylate.index.plaid import warm_up

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    warm_up()
    assert list(tmp_path.iterdir()) == []


def test_library_arguments_are_checked_before_anything_changes(tmp_path, corpus):
    """What an engineer embedding the library passes by mistake: one string of ids (ExactIndex
    deleted "a" and "b" for "ab"), a bad commit_every (-1 added nothing, silently), a bad nbits
    (left a half-made folder), settings of the wrong type."""
    small = ExactIndex(64)
    small.add(["a", "b", "ab"], corpus.docs[:3])
    with pytest.raises(TypeError, match="not one string"):
        small.delete("ab")
    with pytest.raises(TypeError, match="not one string"):
        small.search(corpus.docs[0], k=2, filter_ids="ab")
    for bad_k in (-1, 2.5, 0):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            small.search(corpus.docs[0], k=bad_k)
    assert len(small) == 3
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        ExactIndex("8")

    idx = PlaidIndex.build(tmp_path / "i", corpus.ids[:4], np.stack([d[:5] for d in corpus.docs[:4]]))  # 3-D array
    assert len(idx) == 4
    for every in (-1, 0, 2.5):
        with pytest.raises(ValueError, match="commit_every must be a positive number"):
            idx.add(["x"], corpus.docs[4:5], commit_every=every)
    assert "x" not in PlaidIndex.open(idx.root)
    for nbits, match in ((3, "nbits must be one of"), (True, "nbits must be one of")):
        with pytest.raises(ValueError, match=match):
            PlaidIndex.build(tmp_path / "new", corpus.ids[:2], corpus.docs[:2], nbits=nbits)
        assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="num_centroids must be a positive integer"):
        PlaidIndex.build(tmp_path / "new", corpus.ids[:2], corpus.docs[:2], num_centroids=0)
    with pytest.raises(TypeError, match="settings must be a SearchSettings"):
        idx.search(corpus.docs[0], k=2, settings=(2, 0.4, 10))
    for args in ((2.5, 0.4, 100), (2, 0.4, "10"), (2, float("nan"), 10), (0, 0.4, 10)):
        with pytest.raises(ValueError, match="must be a"):
            SearchSettings(*args)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        SearchSettings.for_k(0)
    with pytest.warns(UserWarning, match=r"1 document\(s\) have token vectors that are not unit length .*'big'"):
        idx.add(["big", "fine"], [corpus.docs[5] * 100, corpus.docs[6]])  # would outrank better documents
    assert "big" in PlaidIndex.open(idx.root)  # stored as given


def test_build_in_parts_is_one_commit(tmp_path, corpus, exact):
    parts = [(corpus.ids[i : i + 100], corpus.docs[i : i + 100], None) for i in range(200, 600, 100)]
    idx = PlaidIndex.build(tmp_path / "p", corpus.ids[:200], corpus.docs[:200], num_centroids=128,
                           keep_vectors=True, more=iter(parts))
    assert idx.manifest["generation"] == 0 and len(idx.segments) == 5 and len(idx) == 600
    assert idx.manifest["trained_tokens"] == sum(len(d) for d in corpus.docs)
    q = corpus.query_for(450)
    assert idx.search(q, k=5, settings=SearchSettings.for_k(5, thorough=True))[0].id == exact.search(q, k=1)[0].id
    bad = iter([(corpus.ids[200:210], corpus.docs[200:210], None), (corpus.ids[205:215], corpus.docs[205:215], None)])
    with pytest.raises(ValueError, match="5 id\\(s\\) given twice"):
        PlaidIndex.build(tmp_path / "dup", corpus.ids[:200], corpus.docs[:200], more=bad)
    assert not (tmp_path / "dup" / "MANIFEST.json").exists()  # nothing committed


@pytest.mark.parametrize("keep_vectors", [True, False])
def test_retrain_in_parts(tmp_path, corpus, monkeypatch, keep_vectors):
    """Past RETRAIN_PART_DOCS documents a retrain holds one part's vectors at a time: kept
    originals read from the old segments, or texts encoded a part per call; one commit."""
    monkeypatch.setattr(PlaidIndex, "RETRAIN_PART_DOCS", 150)
    vectors = dict(zip(corpus.ids, corpus.docs))
    texts = [f"text of {i}" for i in corpus.ids[:400]]
    idx = PlaidIndex.build(tmp_path / "r", corpus.ids[:100], corpus.docs[:100], num_centroids=32,
                           keep_vectors=keep_vectors, texts=texts[:100])
    idx.add(corpus.ids[100:400], corpus.docs[100:400], texts=texts[100:])
    idx.delete(corpus.ids[:10])
    calls = []

    def encode(batch):
        calls.append(len(batch))
        return [vectors[t.removeprefix("text of ")] for t in batch]

    decoded = []
    read_text = SegmentTexts.__getitem__
    monkeypatch.setattr(SegmentTexts, "__getitem__", lambda self, i: decoded.append(i) or read_text(self, i))
    new = idx.retrain(encode)
    assert calls == ([] if keep_vectors else [150, 150, 90])  # a part per call, never the whole
    assert len(decoded) == 390  # each live text read once (counting them reads none)
    assert new.manifest["generation"] == idx.manifest["generation"] + 1 and len(new.segments) == 3
    assert sorted(new.ids) == sorted(corpus.ids[10:400]) and new.manifest["trained_tokens"] == new.stats()["tokens"]
    assert new.documents([corpus.ids[200]]) == ["text of " + corpus.ids[200]]
    q = corpus.query_for(250)
    assert new.search(q, k=1, settings=SearchSettings.for_k(1, thorough=True))[0].id == corpus.ids[250]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, corpus):
    """The corpus built in eight parts, and a compacted copy: the same codec and codes in one
    segment, so the two differ in segmentation only."""
    import shutil

    root = tmp_path_factory.mktemp("parts")
    parts = [(corpus.ids[s : s + 80], corpus.docs[s : s + 80], None) for s in range(80, 600, 80)]
    many = PlaidIndex.build(root / "many", corpus.ids[:80], corpus.docs[:80], num_centroids=64, more=parts,
                            keep_vectors=True)
    many.delete(corpus.ids[100:130])
    shutil.copytree(root / "many", root / "one")
    one = PlaidIndex.open(root / "one")
    one.compact()
    assert (len(many.segments), len(one.segments)) == (8, 1)
    return many, one


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.integers(0, 599), k=st.integers(1, 40), ncells=st.integers(1, 6), ndocs=st.integers(1, 400),
       threshold=st.sampled_from([0.0, 0.4, 0.6]), filtered=st.booleans())
def test_segments_do_not_change_answers(segmented, corpus, doc, k, ncells, ndocs, threshold, filtered):
    """Each stage's cut is taken over the whole index: an index in many segments (adds, a build
    in parts) answers as the same documents in one segment do, at the same cost."""
    many, one = segmented
    q = corpus.query_for(doc)
    search = SearchSettings(ncells, threshold, ndocs)
    filter_ids = corpus.ids[doc % 7 :: 5] if filtered else None
    a = many.search(q, k=k, settings=search, filter_ids=filter_ids)
    b = one.search(q, k=k, settings=search, filter_ids=filter_ids)
    assert [h.id for h in a] == [h.id for h in b]
    assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-5)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.integers(0, 11), max_size=9), min_size=1, max_size=12))
def test_inverted_lists_hold_each_document_once_per_centroid(docs_codes):
    """build_ivf (in place, for merges of large indexes) against its definition."""
    doclens = np.array([len(c) for c in docs_codes], dtype=np.int32)
    codes = np.array([c for doc in docs_codes for c in doc], dtype=np.uint16)
    ivf_docs, ivf_offsets = build_ivf(codes, doclens, 12)
    assert ivf_docs.dtype == np.int32 and len(ivf_offsets) == 13
    for centroid in range(12):
        expected = sorted({d for d, doc in enumerate(docs_codes) if centroid in doc})
        assert ivf_docs[ivf_offsets[centroid] : ivf_offsets[centroid + 1]].tolist() == expected


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.tuples(st.lists(st.integers(0, 11), max_size=6), st.booleans()), max_size=6),
                min_size=1, max_size=4), st.integers(1, 9))
def test_merged_inverted_lists_are_those_of_the_merged_codes(segments_docs, block):
    """merge_ivf, which merges segments' own lists a block at a time, against build_ivf of the
    live documents' codes: same lists whatever the deletions and the block size."""
    from types import SimpleNamespace

    segments = []
    for docs in segments_docs:
        doclens = np.array([len(c) for c, _ in docs], dtype=np.int32)
        codes = np.array([c for doc, _ in docs for c in doc], dtype=np.uint16)
        ivf_docs, ivf_offsets = build_ivf(codes, doclens, 12)
        deleted = np.array([gone for _, gone in docs], dtype=bool)
        segments.append(SimpleNamespace(ivf_docs=ivf_docs, ivf_offsets=ivf_offsets, deleted=deleted,
                                        num_docs=len(docs), num_live=int((~deleted).sum()), folder="seg"))
    live_docs = [doc for docs in segments_docs for doc, gone in docs if not gone]
    expected_docs, expected_offsets = build_ivf(
        np.array([c for doc in live_docs for c in doc], dtype=np.uint16),
        np.array([len(doc) for doc in live_docs], dtype=np.int32), 12)
    blocks, offsets = merge_ivf(segments, 12, block)
    got = np.concatenate([np.zeros(0, np.int64), *blocks.blocks])
    assert np.array_equal(offsets, expected_offsets) and got.tolist() == expected_docs.tolist()
    assert blocks.shape == (len(expected_docs),)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=8), max_size=12), st.integers(1, 5))
def test_id_lists_written_a_chunk_at_a_time_read_back_as_json(tmp_path_factory, ids, chunk):
    from polylate.index.storage import save_json

    path = tmp_path_factory.mktemp("ids") / "ids.json"
    save_json(path, ids, chunk)
    assert json.loads(path.read_text(encoding="utf-8")) == ids
