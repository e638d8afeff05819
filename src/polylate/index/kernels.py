"""Compiled inner loops of PLAID search (numba): one pass each, no temporaries per entry.

Stages 2–4 touch a few thousand postings and tokens per query; as chains of torch/numpy ops
they cost more in dispatch and temporaries than in arithmetic. These loops read the
memory-mapped segment arrays directly. ``cache=True`` keeps the machine code on disk, so only
the first search after installation pays for compilation.

The per-document loops run on all cores (``prange``; numba's thread count, see
``numba.set_num_threads``). Nothing on this path calls BLAS: OpenBLAS's worker threads keep
spinning after a call and starve the parallel loops that follow (measured: stage 3 took 5.5 ms
instead of 0.13 ms on 2 cores), so the one matrix product, query × centroids, is a loop here too.
"""

from __future__ import annotations

import contextlib
import threading

import numba
import numpy as np
from numba import njit, prange

# reassociation and fused multiply-add for the dot products, but not the flags that assume
# no infinities: the running maxima start at -inf
_FAST = {"nsz", "arcp", "contract", "reassoc"}


@njit(cache=True, nogil=True, parallel=True)
def _warm(n):
    total = 0
    for i in prange(n):
        total += i
    return total


#: what the kernels raise (or mark with a NaN score, inside parallel loops) on a centroid code
#: or inverted-list entry out of range, rather than read past an array: only damaged segment
#: files hold one (two compares per token or posting: no measurable cost)
DAMAGED = "a centroid code or inverted-list entry is out of range"


_SECTION = None  # set on first use: numba names its threading layer only once one has run
_SECTION_INIT = threading.Lock()


def parallel_section():
    """Context for calling the parallel kernels: serialised only where the layer needs it —
    numba's fallback "workqueue" layer must not be entered from two threads at once (the
    server searches from several); the OpenMP and TBB layers may."""
    global _SECTION
    if _SECTION is None:
        with _SECTION_INIT:
            if _SECTION is None:
                _warm(2)
                workqueue = numba.threading_layer() == "workqueue"
                _SECTION = threading.Lock() if workqueue else contextlib.nullcontext()
    return _SECTION


@njit(cache=True, nogil=True, parallel=True, fastmath=_FAST)
def centroid_scores(centroids, q):
    """[K, dim] × [Lq, dim] → [K, Lq] float32: one contiguous row per centroid."""
    n_k, dim = centroids.shape
    n_q = q.shape[0]
    out = np.empty((n_k, n_q), np.float32)
    for k in prange(n_k):
        for t in range(n_q):
            acc = np.float32(0.0)
            for j in range(dim):
                acc += centroids[k, j] * q[t, j]
            out[k, t] = acc
    return out


@njit(cache=True, nogil=True, parallel=True)
def probe_cells(centroid_scores_t, ncells):
    """Stage 1: the union over query tokens of each token's ``ncells`` best centroids.

    centroid_scores_t: [K, Lq] → sorted centroid ids. One pass per token (in parallel), a small
    insertion list each.
    """
    n_k, n_q = centroid_scores_t.shape
    n = min(ncells, n_k)
    best_i = np.zeros((n_q, n), np.int64)
    for t in prange(n_q):
        best_v = np.full(n, -np.inf, np.float32)
        for k in range(n_k):
            v = centroid_scores_t[k, t]
            if v > best_v[n - 1]:
                j = n - 1
                while j > 0 and best_v[j - 1] < v:
                    best_v[j] = best_v[j - 1]
                    best_i[t, j] = best_i[t, j - 1]
                    j -= 1
                best_v[j] = v
                best_i[t, j] = k
    chosen = np.zeros(n_k, np.bool_)
    for t in range(n_q):
        for j in range(n):
            chosen[best_i[t, j]] = True
    return np.flatnonzero(chosen)


@njit(cache=True, nogil=True, parallel=True)
def ivf_interaction(ivf_docs, ivf_offsets, cells, cell_scores, deleted, allowed, use_allowed):
    """Stage 2: approximate MaxSim of every document in the probed inverted lists.

    A document scores, per query token, its best probed centroid among the lists it appears
    in (0 when none scores higher) — computed from the postings alone. One pass numbers the
    documents; then each query token (in parallel) walks the postings once, keeping its best
    cell score per document, so the cost is postings × query tokens whatever the number of
    probed cells. cell_scores: [len(cells), Lq] float32 (one row per cell).
    → (local doc numbers, approximate scores), in order of first appearance.
    """
    n_cells = cells.shape[0]
    n_docs = deleted.shape[0]
    slot = np.full(n_docs, -1, np.int32)
    total = 0
    for c in range(n_cells):
        total += ivf_offsets[cells[c] + 1] - ivf_offsets[cells[c]]
    docs = np.empty(total, np.int32)
    n = 0
    for c in range(n_cells):
        for p in range(ivf_offsets[cells[c]], ivf_offsets[cells[c] + 1]):
            d = ivf_docs[p]
            if d < 0 or d >= n_docs:
                raise IndexError(DAMAGED)
            if slot[d] >= 0 or deleted[d] or (use_allowed and not allowed[d]):
                continue
            slot[d] = n
            docs[n] = d
            n += 1
    n_q = cell_scores.shape[1]
    best = np.zeros((n_q, n), np.float32)  # one contiguous row per query token
    for t in prange(n_q):
        row = best[t]
        for c in range(n_cells):
            v = cell_scores[c, t]
            if v <= 0.0:
                continue  # never beats the 0 a document starts from
            for p in range(ivf_offsets[cells[c]], ivf_offsets[cells[c] + 1]):
                s = slot[ivf_docs[p]]
                if s >= 0 and v > row[s]:
                    row[s] = v
    scores = np.zeros(n, np.float32)
    for s in prange(n):
        acc = np.float32(0.0)
        for t in range(n_q):
            acc += best[t, s]
        scores[s] = acc
    return docs[:n].astype(np.int64), scores


@njit(cache=True, nogil=True, parallel=True)
def centroid_interaction(codes, offsets, cand, centroid_scores_t):
    """Stage 3: MaxSim with every token of each candidate replaced by its centroid.

    centroid_scores_t: [K, Lq] (one contiguous row per centroid) → scores [len(cand)].
    """
    n_k, n_q = centroid_scores_t.shape
    out = np.empty(cand.shape[0], np.float32)
    for i in prange(cand.shape[0]):
        d = cand[i]
        best = np.full(n_q, -np.inf, np.float32)
        for p in range(offsets[d], offsets[d + 1]):
            if codes[p] < 0 or codes[p] >= n_k:
                best[0] = np.nan  # a damaged code: NaN marks the document (see DAMAGED)
                break
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


@njit(cache=True, nogil=True, fastmath=_FAST)
def _decode_token(centroid, lut, residual, out):
    """One token: its centroid plus the residual values of its packed bytes, into ``out``
    → 1/‖out‖ (the factor that re-normalises it). Scalar indexing into ``lut`` (no row view
    per byte): decoding alone ~20% faster, stage 4 on 4,096 candidates 8.8 → 7.7 ms."""
    per = lut.shape[2]
    norm = np.float32(0.0)
    for b in range(lut.shape[0]):
        r = residual[b]
        o = b * per
        for j in range(per):
            v = centroid[o + j] + lut[b, r, j]
            out[o + j] = v
            norm += v * v
    return np.float32(1.0) / max(np.sqrt(norm), np.float32(1e-12))


@njit(cache=True, nogil=True, fastmath=_FAST)
def _total(best):
    acc = np.float32(0.0)
    for t in range(best.shape[0]):
        acc += best[t]
    return acc


@njit(cache=True, nogil=True, fastmath=_FAST)
def _keep_best(x, scale, q, best):
    """best[t] = max(best[t], scale·⟨x, q[t]⟩) for every query token t. Four query tokens
    per pass over ``x`` (each element loaded once for four products): stage 4 ~15% faster."""
    n_q, dim = q.shape
    t = 0
    while t + 4 <= n_q:
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for k in range(dim):
            xk = x[k]
            a0 += xk * q[t, k]
            a1 += xk * q[t + 1, k]
            a2 += xk * q[t + 2, k]
            a3 += xk * q[t + 3, k]
        best[t] = max(best[t], a0 * scale)
        best[t + 1] = max(best[t + 1], a1 * scale)
        best[t + 2] = max(best[t + 2], a2 * scale)
        best[t + 3] = max(best[t + 3], a3 * scale)
        t += 4
    for r in range(t, n_q):
        acc = np.float32(0.0)
        for k in range(dim):
            acc += x[k] * q[r, k]
        best[r] = max(best[r], acc * scale)


@njit(cache=True, nogil=True)
def decompress_docs(codes, residuals, offsets, cand, centroids, lut):
    """Stage 4 input: unit-norm reconstructions of every token of the candidates, packed.

    lut: [bytes_per_token, 256, values_per_byte] residual values per byte value.
    → (vectors [Σ doclens, dim] float32, doclens [len(cand)]).
    """
    dim = centroids.shape[1]
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
            if codes[p] < 0 or codes[p] >= centroids.shape[0]:
                raise IndexError(DAMAGED)
            inv = _decode_token(centroids[codes[p]], lut, residuals[p], out[r])
            for k in range(dim):
                out[r, k] *= inv
            r += 1
    return out, lens


@njit(cache=True, nogil=True, parallel=True, fastmath=_FAST)
def decompressed_maxsim(codes, residuals, offsets, cand, centroids, lut, q):
    """Stage 4: MaxSim of q [Lq, dim] against each candidate's decompressed, re-normalised
    tokens (as ``decompress_docs`` makes them), without materialising them → [len(cand)]."""
    n_q = q.shape[0]
    out = np.zeros(cand.shape[0], np.float32)
    for i in prange(cand.shape[0]):
        d = cand[i]
        if offsets[d + 1] == offsets[d]:
            continue  # an empty document scores 0
        best = np.full(n_q, -np.inf, np.float32)
        x = np.empty(centroids.shape[1], np.float32)
        for p in range(offsets[d], offsets[d + 1]):
            if codes[p] < 0 or codes[p] >= centroids.shape[0]:
                best[0] = np.nan  # a damaged code: NaN marks the document (see DAMAGED)
                break
            inv = _decode_token(centroids[codes[p]], lut, residuals[p], x)
            _keep_best(x, inv, q, best)
        out[i] = _total(best)
    return out


# float16 bit pattern → float32 value: numba compiles no float16 arithmetic, and a 256 KiB
# table (resident in L2) converts one element per load
HALF_TO_FLOAT = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@njit(cache=True, nogil=True, parallel=True, fastmath=_FAST)
def half_maxsim(bits, offsets, cand, half_to_float, q):
    """Exact MaxSim of q [Lq, dim] against each candidate's kept float16 vectors, read in
    place: ``bits`` is the memory-mapped [tokens, dim] float16 array viewed as uint16 →
    [len(cand)]. As fast per document as decompression, and exact."""
    n_q, dim = q.shape
    out = np.zeros(cand.shape[0], np.float32)
    for i in prange(cand.shape[0]):
        d = cand[i]
        if offsets[d + 1] == offsets[d]:
            continue  # an empty document scores 0
        best = np.full(n_q, -np.inf, np.float32)
        x = np.empty(dim, np.float32)
        for p in range(offsets[d], offsets[d + 1]):
            row = bits[p]
            for k in range(dim):
                x[k] = half_to_float[row[k]]
            _keep_best(x, np.float32(1.0), q, best)
        out[i] = _total(best)
    return out


def top_indices(scores: np.ndarray, keep: int, key: np.ndarray | None = None) -> np.ndarray:
    """Positions of the `keep` highest scores, in ascending position order. Ties at the cut go
    to the lowest ``key`` (default: position), so the cut does not depend on how the
    candidates happen to be ordered (stage-2 scores tie often: documents in the same cells)."""
    if len(scores) <= keep:
        return np.arange(len(scores))
    cut = np.partition(scores, len(scores) - keep)[len(scores) - keep]
    above = np.flatnonzero(scores > cut)
    ties = np.flatnonzero(scores == cut)
    need = keep - len(above)
    if len(ties) < need:  # NaNs, which no comparison counts: rank them below every number
        return top_indices(np.where(np.isnan(scores), -np.inf, scores), keep, key)
    if key is not None and len(ties) > need:  # (pruned stage-2 scores tie at 0 by the thousand)
        ties = ties[np.argpartition(key[ties], need - 1)[:need]]
    return np.sort(np.concatenate([above, ties[:need]]))
