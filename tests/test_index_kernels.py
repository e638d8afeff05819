"""The compiled search loops against their definitions (plain numpy / torch)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from polylate.index import kernels
from polylate.index.codec import ResidualCodec
from polylate.scoring import maxsim_packed


def _ivf(rng, n_docs, n_centroids, postings):
    cells_of_entries = rng.integers(0, n_centroids, postings)
    docs = rng.integers(0, n_docs, postings).astype(np.int32)
    order = np.argsort(cells_of_entries, kind="stable")
    ivf_docs = docs[order]
    offsets = np.zeros(n_centroids + 1, np.int64)
    np.cumsum(np.bincount(cells_of_entries, minlength=n_centroids), out=offsets[1:])
    return ivf_docs, offsets


def _ivf_definition(ivf_docs, offsets, cells, cell_scores, deleted, allowed):
    best: dict[int, np.ndarray] = {}
    for c, cell in enumerate(cells):
        for d in ivf_docs[offsets[cell] : offsets[cell + 1]]:
            if deleted[d] or (allowed is not None and not allowed[d]):
                continue
            row = best.setdefault(int(d), np.zeros(cell_scores.shape[1], np.float32))
            np.maximum(row, cell_scores[c], out=row)
    return {d: float(v.sum()) for d, v in best.items()}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n_cells=st.integers(1, 150), use_filter=st.booleans())
def test_ivf_interaction_matches_definition(seed, n_cells, use_filter):
    rng = np.random.default_rng(seed)
    n_docs, n_centroids = 50, 200
    ivf_docs, offsets = _ivf(rng, n_docs, n_centroids, 600)
    cells = np.sort(rng.choice(n_centroids, n_cells, replace=False)).astype(np.int64)
    cell_scores = rng.normal(size=(n_cells, 7)).astype(np.float32)
    deleted = rng.random(n_docs) < 0.2
    allowed = rng.random(n_docs) < 0.5 if use_filter else None
    docs, scores = kernels.ivf_interaction(ivf_docs, offsets, cells, cell_scores, deleted,
                                           allowed if use_filter else np.zeros(0, bool), use_filter)
    want = _ivf_definition(ivf_docs, offsets, cells, cell_scores, deleted, allowed)
    assert len(set(docs.tolist())) == len(docs)
    assert set(docs.tolist()) == set(want)
    for d, s in zip(docs.tolist(), scores.tolist()):
        assert abs(s - want[d]) < 1e-4


def _decode_by_definition(codec, codes, packed):
    """centroid + per-dimension bucket value (buckets unpacked high bits first), re-normalised."""
    per = 8 // codec.nbits
    shifts = (np.arange(per) * codec.nbits)[::-1]
    buckets = ((packed[:, :, None] >> shifts) & (2**codec.nbits - 1)).reshape(len(codes), codec.dim)
    v = codec.centroids[codes.astype(np.int64)] + codec.weights[np.arange(codec.dim)[None, :], buckets]
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _segment(rng, codec, n_docs):
    lens = rng.integers(0, 9, n_docs)
    lens[0] = 0  # an empty document scores 0
    vecs = rng.normal(size=(int(lens.sum()), codec.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    codes, residuals = codec.compress(vecs)
    offsets = np.zeros(n_docs + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    return codes, residuals, offsets, lens


def test_centroid_interaction_decompress_and_maxsim_match_torch():
    rng = np.random.default_rng(0)
    sample = rng.normal(size=(2000, 32)).astype(np.float32)
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    for nbits in (1, 2, 4):
        codec = ResidualCodec.train(sample, nbits=nbits, num_centroids=64)
        codes, residuals, offsets, lens = _segment(rng, codec, 40)
        cand = np.array([0, 3, 5, 17, 39, 8], dtype=np.int64)
        q = rng.normal(size=(6, 32)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        cs_t = codec.centroid_scores_t(q)

        got = kernels.centroid_interaction(codes, offsets, cand, cs_t)
        cen = codec.centroids
        for i, d in enumerate(cand):
            toks = cen[codes[offsets[d] : offsets[d + 1]].astype(np.int64)]
            want = (toks @ q.T).max(axis=0).sum() if len(toks) else 0.0
            assert abs(got[i] - want) < 1e-4

        vecs, got_lens = kernels.decompress_docs(codes, residuals, offsets, cand, codec.centroids, codec.lut)
        assert got_lens.tolist() == lens[cand].tolist()
        tok = np.concatenate([np.arange(offsets[d], offsets[d + 1]) for d in cand])
        ref = _decode_by_definition(codec, codes[tok], residuals[tok])
        np.testing.assert_allclose(vecs, ref, atol=1e-5)

        want_scores = maxsim_packed(q, ref, lens[cand]).numpy()
        fused = kernels.decompressed_maxsim(codes, residuals, offsets, cand, codec.centroids, codec.lut, q)
        np.testing.assert_allclose(fused, want_scores, atol=1e-4)
        assert fused[0] == 0.0

        # kept float16 originals, read in place through their bit patterns
        kept = _decode_by_definition(codec, codes, residuals).astype(np.float16)
        exact = kernels.half_maxsim(kept.view(np.uint16), offsets, cand, kernels.HALF_TO_FLOAT, q)
        np.testing.assert_allclose(exact, maxsim_packed(q, kept[tok].astype(np.float32), lens[cand]).numpy(), atol=1e-5)
        assert exact[0] == 0.0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), n_k=st.integers(1, 300), n_q=st.integers(1, 33))
def test_centroid_scores_is_the_matrix_product(seed, n_k, n_q):
    rng = np.random.default_rng(seed)
    centroids = rng.normal(size=(n_k, 64)).astype(np.float32)
    q = rng.normal(size=(n_q, 64)).astype(np.float32)
    np.testing.assert_allclose(kernels.centroid_scores(centroids, q), centroids @ q.T, rtol=1e-5, atol=1e-4)


def test_top_indices():
    s = np.array([0.1, 0.9, 0.5, 0.7, 0.2], np.float32)
    assert kernels.top_indices(s, 2).tolist() == [1, 3]
    assert kernels.top_indices(s, 10).tolist() == [0, 1, 2, 3, 4]


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, float("nan")]), min_size=1, max_size=40),
       keep=st.integers(1, 45), seed=st.integers(0, 1000))
def test_top_indices_cuts_ties_by_key_and_ranks_nan_last(values, keep, seed):
    """Exactly min(keep, n) positions; none left out scores higher (NaN counts lowest); a tie
    at the cut goes to the lowest key, so the cut does not depend on the candidates' order."""
    scores = np.array(values, np.float32)
    key = np.random.default_rng(seed).permutation(len(scores))
    for k in (None, key):
        top = kernels.top_indices(scores, keep, k)
        assert top.tolist() == sorted(set(top.tolist())) and len(top) == min(keep, len(scores))
        ranked = np.where(np.isnan(scores), -np.inf, scores)
        rest = np.setdiff1d(np.arange(len(scores)), top)
        if len(rest):
            assert ranked[top].min() >= ranked[rest].max()
            if k is not None:
                cut = ranked[top].min()
                assert k[top][ranked[top] == cut].max() < k[rest][ranked[rest] == cut].min(initial=len(scores))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), ncells=st.integers(1, 9), n_k=st.integers(1, 40))
def test_probe_cells_is_the_union_of_each_tokens_best(seed, ncells, n_k):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_k, 5)).astype(np.float32)
    want = set()
    for t in range(scores.shape[1]):
        want |= set(np.argsort(-scores[:, t], kind="stable")[: min(ncells, n_k)].tolist())
    got = kernels.probe_cells(scores, ncells)
    assert got.tolist() == sorted(want)
