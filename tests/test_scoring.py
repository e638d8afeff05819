"""MaxSim invariants, checked against a plain-Python definition on random shapes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polylate.scoring import maxsim, maxsim_packed, pack, rerank


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _definition(q, d):
    return sum(max(float(np.dot(qi, dj)) for dj in d) for qi in q)


docs_shape = st.tuples(
    st.integers(1, 6),  # query tokens
    st.lists(st.integers(1, 9), min_size=1, max_size=7),  # doc lengths
    st.integers(1, 8),  # dim
    st.integers(0, 2**31 - 1),
)


def _draw(shape):
    """(rng, query [Lq, dim], docs) for one drawn shape."""
    lq, lens, dim, seed = shape
    rng = np.random.default_rng(seed)
    return rng, _unit(rng, lq, dim), [_unit(rng, n, dim) for n in lens]


@settings(max_examples=60, deadline=None)
@given(docs_shape)
def test_packed_and_padded_equal_definition(shape):
    _, lens, dim, _ = shape
    _, q, docs = _draw(shape)
    expected = np.array([_definition(q, d) for d in docs])
    packed, doclens = pack(docs)
    np.testing.assert_allclose(maxsim_packed(q, packed, doclens).numpy(), expected, rtol=1e-5, atol=1e-5)
    width = max(lens)
    padded = np.zeros((len(docs), width, dim), np.float32)
    mask = np.zeros((len(docs), width), bool)
    for i, d in enumerate(docs):
        padded[i, : len(d)] = d
        mask[i, : len(d)] = True
    np.testing.assert_allclose(maxsim(q, padded, mask).numpy(), expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(docs_shape)
def test_rerank_is_sorted_permutation_invariant_and_bounded(shape):
    lq, _, dim, _ = shape
    rng, q, docs = _draw(shape)
    ranked = rerank(q, docs)
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    assert sorted(i for i, _ in ranked) == list(range(len(docs)))
    assert all(-lq - 1e-4 <= s <= lq + 1e-4 for s in scores)  # unit vectors: |score| ≤ Lq
    perm = rng.permutation(len(docs))
    again = dict(rerank(q, [docs[i] for i in perm]))
    for new_i, old_i in enumerate(perm):
        assert again[new_i] == pytest.approx(dict(ranked)[old_i], abs=1e-5)
    # adding tokens to a document can only raise its score
    grown = [np.concatenate([d, _unit(rng, 2, dim)]) for d in docs]
    base = dict(ranked)
    for i, s in rerank(q, grown):
        assert s >= base[i] - 1e-5


def test_top_n_and_errors():
    rng = np.random.default_rng(0)
    q = _unit(rng, 4, 8)
    docs = [_unit(rng, 3, 8) for _ in range(5)]
    assert len(rerank(q, docs, top_n=2)) == 2
    assert rerank(q, []) == []
    with pytest.raises(ValueError, match="dim"):
        maxsim_packed(q, _unit(rng, 3, 4), [3])
    with pytest.raises(ValueError, match="doclens"):
        maxsim_packed(q, _unit(rng, 3, 8), [2])
