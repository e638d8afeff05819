"""Compiled inner loops of PLAID search (numba): one pass each, no temporaries per entry.

Stages 2–4 touch a few thousand postings and tokens per query; as chains of torch/numpy ops
they cost more in dispatch and temporaries than in arithmetic. These loops read the
memory-mapped segment arrays directly. ``cache=True`` keeps the machine code on disk, so only
the first search after installation pays for compilation.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def probe_cells(centroid_scores_t, ncells):
    """Stage 1: the union over query tokens of each token's ``ncells`` best centroids.

    centroid_scores_t: [K, Lq] → sorted centroid ids. One pass, a small insertion list per token.
    """
    n_k, n_q = centroid_scores_t.shape
    n = min(ncells, n_k)
    best_v = np.full((n_q, n), -np.inf, np.float32)
    best_i = np.zeros((n_q, n), np.int64)
    for k in range(n_k):
        row = centroid_scores_t[k]
        for t in range(n_q):
            v = row[t]
            if v > best_v[t, n - 1]:
                j = n - 1
                while j > 0 and best_v[t, j - 1] < v:
                    best_v[t, j] = best_v[t, j - 1]
                    best_i[t, j] = best_i[t, j - 1]
                    j -= 1
                best_v[t, j] = v
                best_i[t, j] = k
    chosen = np.zeros(n_k, np.bool_)
    for t in range(n_q):
        for j in range(n):
            chosen[best_i[t, j]] = True
    return np.flatnonzero(chosen)


@njit(cache=True, nogil=True)
def ivf_interaction(ivf_docs, ivf_offsets, cells, cell_scores, deleted, allowed, use_allowed):
    """Stage 2: approximate MaxSim of every document in the probed inverted lists.

    A document scores, per query token, its best probed centroid among the lists it appears
    in (0 when none scores higher) — computed from the postings alone, with each document's
    probed cells held as a bitmask. cell_scores: [len(cells), Lq] float32 (one row per cell).
    → (local doc numbers, approximate scores), in order of first appearance.
    """
    n_cells = cells.shape[0]
    words = (n_cells + 63) // 64
    n_docs = deleted.shape[0]
    slot = np.full(n_docs, -1, np.int32)
    total = 0
    for c in range(n_cells):
        total += ivf_offsets[cells[c] + 1] - ivf_offsets[cells[c]]
    docs = np.empty(total, np.int32)
    masks = np.zeros((total, words), np.uint64)
    n = 0
    for c in range(n_cells):
        word, bit = c // 64, np.uint64(1) << np.uint64(c % 64)
        for p in range(ivf_offsets[cells[c]], ivf_offsets[cells[c] + 1]):
            d = ivf_docs[p]
            if deleted[d] or (use_allowed and not allowed[d]):
                continue
            s = slot[d]
            if s < 0:
                s = n
                slot[d] = n
                docs[n] = d
                n += 1
            masks[s, word] |= bit
    n_q = cell_scores.shape[1]
    scores = np.zeros(n, np.float32)
    best = np.empty(n_q, np.float32)
    for s in range(n):
        best[:] = 0.0
        for w in range(words):
            m = masks[s, w]
            for c in range(w * 64, min(w * 64 + 64, n_cells)):
                if m & (np.uint64(1) << np.uint64(c - w * 64)):
                    row = cell_scores[c]
                    for t in range(n_q):
                        if row[t] > best[t]:
                            best[t] = row[t]
        acc = np.float32(0.0)
        for t in range(n_q):
            acc += best[t]
        scores[s] = acc
    return docs[:n].astype(np.int64), scores


@njit(cache=True, nogil=True)
def centroid_interaction(codes, offsets, cand, centroid_scores_t):
    """Stage 3: MaxSim with every token of each candidate replaced by its centroid.

    centroid_scores_t: [K, Lq] (one contiguous row per centroid) → scores [len(cand)].
    """
    n_q = centroid_scores_t.shape[1]
    out = np.empty(cand.shape[0], np.float32)
    best = np.empty(n_q, np.float32)
    for i in range(cand.shape[0]):
        d = cand[i]
        best[:] = -np.inf
        for p in range(offsets[d], offsets[d + 1]):
            row = centroid_scores_t[codes[p]]
            for t in range(n_q):
                if row[t] > best[t]:
                    best[t] = row[t]
        acc = np.float32(0.0)
        if offsets[d + 1] > offsets[d]:
            for t in range(n_q):
                acc += best[t]
        out[i] = acc
    return out


@njit(cache=True, nogil=True)
def decompress_docs(codes, residuals, offsets, cand, centroids, lut):
    """Stage 4 input: unit-norm reconstructions of every token of the candidates, packed.

    lut: [bytes_per_token, 256, values_per_byte] residual values per byte value.
    → (vectors [Σ doclens, dim] float32, doclens [len(cand)]).
    """
    dim = centroids.shape[1]
    nbytes, per = lut.shape[0], lut.shape[2]
    lens = np.empty(cand.shape[0], np.int64)
    total = 0
    for i in range(cand.shape[0]):
        lens[i] = offsets[cand[i] + 1] - offsets[cand[i]]
        total += lens[i]
    out = np.empty((total, dim), np.float32)
    r = 0
    for i in range(cand.shape[0]):
        d = cand[i]
        for p in range(offsets[d], offsets[d + 1]):
            c = centroids[codes[p]]
            norm = np.float32(0.0)
            for b in range(nbytes):
                vals = lut[b, residuals[p, b]]
                for j in range(per):
                    x = c[b * per + j] + vals[j]
                    out[r, b * per + j] = x
                    norm += x * x
            inv = np.float32(1.0) / max(np.sqrt(norm), np.float32(1e-12))
            for k in range(dim):
                out[r, k] *= inv
            r += 1
    return out, lens


@njit(cache=True, nogil=True)
def segment_maxsim(sim, lens):
    """sim [Σ lens, Lq] token×query-token scores → MaxSim per document (0 for an empty one)."""
    n_q = sim.shape[1]
    out = np.empty(lens.shape[0], np.float32)
    best = np.empty(n_q, np.float32)
    r = 0
    for i in range(lens.shape[0]):
        best[:] = -np.inf
        for _ in range(lens[i]):
            for t in range(n_q):
                if sim[r, t] > best[t]:
                    best[t] = sim[r, t]
            r += 1
        acc = np.float32(0.0)
        if lens[i] > 0:
            for t in range(n_q):
                acc += best[t]
        out[i] = acc
    return out


def top_indices(scores: np.ndarray, keep: int) -> np.ndarray:
    """Positions of the `keep` highest scores, in ascending position order."""
    if len(scores) <= keep:
        return np.arange(len(scores))
    return np.sort(np.argpartition(-scores, keep - 1)[:keep])
