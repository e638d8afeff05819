"""Residual compression of token vectors (ColBERTv2): nearest centroid + quantised residual.

A token vector x is stored as its centroid id c and, per dimension, the bucket of the
residual x - C[c] among 2^nbits buckets. Bucket edges and values are per dimension
(quantiles of held-out residuals), a little sharper than ColBERTv2's pooled ones at no
decoding cost: decoding is one table lookup per packed byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from polylate.arguments import is_positive_int
from polylate.index.kernels import centroid_scores, decompress_docs
from polylate.index.storage import save_array

NBITS = (1, 2, 4)
#: fewer held-out residuals than this and bucket statistics come from the whole sample
MIN_HELDOUT = 1024


def default_num_centroids(num_embeddings: int) -> int:
    """ColBERTv2's rule: 2^floor(log2(16·√N)), at least 16."""
    return max(16, 2 ** int(math.floor(math.log2(16 * math.sqrt(max(num_embeddings, 1))))))


def _graph_index(centroids: np.ndarray):
    """HNSW over the centroids: nearest-centroid search in O(log K) instead of O(K)."""
    import faiss

    index = faiss.IndexHNSWFlat(centroids.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.hnsw.efSearch = 64
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index


#: From this many centroids on, assignment (in k-means and in compression) walks an HNSW
#: graph of the centroids instead of scoring all of them; a near-miss only means a slightly
#: larger residual, which the quantiser absorbs. Below it, scoring every centroid (one matrix
#: product) is faster and exact: on 2 cores, assigning 300k vectors took 13 s flat vs 36 s by
#: graph at 4,096 centroids, 64 vs 107 s at 16,384, 222 vs 147 s at 65,536 (and k-means on
#: 120k vectors 31 vs 44 s at 16,384 centroids).
GRAPH_ASSIGN_FROM = 32768


def train_centroids(sample: np.ndarray, k: int, niter: int = 10, seed: int = 1234,
                    max_points_per_centroid: int = 256) -> np.ndarray:
    """faiss k-means on a sample of token vectors → unit-norm centroids [k, dim] float32."""
    import faiss

    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if sample.shape[0] < k:
        raise ValueError(f"{sample.shape[0]} sample vectors cannot train {k} centroids")
    clus = faiss.Clustering(sample.shape[1], k)
    clus.niter, clus.seed, clus.spherical = niter, seed, True
    clus.max_points_per_centroid, clus.verbose = max_points_per_centroid, False
    clus.min_points_per_centroid = 1  # small collections get few centroids on purpose; no warning
    if k >= GRAPH_ASSIGN_FROM:
        index = faiss.IndexHNSWFlat(sample.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction, index.hnsw.efSearch = 40, 32
    else:
        index = faiss.IndexFlatIP(sample.shape[1])
    clus.train(sample, index)
    c = faiss.vector_to_array(clus.centroids).reshape(k, sample.shape[1]).astype(np.float32)
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)


def check_codec_settings(dim: int, nbits: int, num_centroids: int | None = None) -> None:
    """The settings a codec is trained with, checked before anything is computed or written."""
    if isinstance(nbits, bool) or nbits not in NBITS:
        raise ValueError(f"nbits must be one of {NBITS}, got {nbits!r}")
    if (dim * nbits) % 8:
        raise ValueError(f"dim {dim} × nbits {nbits} is not a whole number of bytes")
    if num_centroids is not None and not is_positive_int(num_centroids):
        raise ValueError(f"num_centroids must be a positive integer, got {num_centroids!r}")


@dataclass
class ResidualCodec:
    centroids: np.ndarray  # float32 [K, dim], unit norm (float16 values: saved as float16)
    cutoffs: np.ndarray  # float32 [dim, 2^nbits - 1], bucket edges per dimension
    weights: np.ndarray  # float32 [dim, 2^nbits], bucket values per dimension
    nbits: int

    def __post_init__(self) -> None:
        check_codec_settings(self.centroids.shape[1], self.nbits)
        self.centroids = np.ascontiguousarray(self.centroids, np.float32)  # stored as float16, computed in float32
        self._centroids_t = torch.from_numpy(self.centroids)
        self.lut = self._decode_table()  # [bytes, 256, values per byte]
        self._graph = None

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def num_centroids(self) -> int:
        return self.centroids.shape[0]

    @property
    def bytes_per_token(self) -> int:
        return self.dim * self.nbits // 8

    @property
    def code_dtype(self):
        return np.uint16 if self.num_centroids <= 65536 else np.int32

    # -- training --------------------------------------------------------------------------

    @classmethod
    def train(cls, sample: np.ndarray, nbits: int = 2, num_centroids: int | None = None,
              heldout_fraction: float = 0.05, niter: int = 10, seed: int = 1234) -> ResidualCodec:
        """Centroids from most of the sample; bucket statistics from the held-out rest."""
        check_codec_settings(sample.shape[1], nbits, num_centroids)
        sample = np.asarray(sample, dtype=np.float32)
        rng = np.random.default_rng(seed)
        sample = sample[rng.permutation(sample.shape[0])]
        n_held = max(1, min(int(sample.shape[0] * heldout_fraction), 50_000))
        held, train = sample[:n_held], sample[n_held:]
        if n_held < MIN_HELDOUT:  # too few to hold out (bucket statistics use every vector): train on all
            train = sample
        k = num_centroids or default_num_centroids(sample.shape[0])
        k = min(k, max(1, train.shape[0] // 4))  # tiny collections: keep clusters meaningful
        # float16 centroids (as colbert-ai keeps them): half the codec's bytes, which at 20k
        # documents is 7.6 of ~53 bytes per token; rounded before any residual is taken, so
        # compression and decompression see the same values
        centroids = train_centroids(train, k, niter=niter, seed=seed).astype(np.float16).astype(np.float32)
        codec = cls(centroids, np.zeros((sample.shape[1], 2**nbits - 1), np.float32),
                    np.zeros((sample.shape[1], 2**nbits), np.float32), nbits)
        # bucket edges are quantiles: from a few hundred held-out residuals they are noise,
        # so a tiny collection takes them from every residual (slightly optimistic, not degenerate)
        stats = held if n_held >= MIN_HELDOUT else sample
        residual = stats - centroids[codec.assign(stats)]
        q_cut = np.arange(1, 2**nbits) / 2**nbits
        q_mid = (np.arange(2**nbits) + 0.5) / 2**nbits
        cutoffs = np.quantile(residual, q_cut, axis=0).T.astype(np.float32)
        weights = np.quantile(residual, q_mid, axis=0).T.astype(np.float32)
        return cls(centroids, cutoffs, weights, nbits)

    # -- encode / decode -----------------------------------------------------------------

    #: bytes of the [vectors, centroids] score block assignment computes at a time
    ASSIGN_BLOCK_BYTES = 64 << 20

    def assign(self, vectors: np.ndarray, batch: int | None = None) -> np.ndarray:
        """Nearest centroid (max inner product) for each vector; scored ``batch`` vectors at a
        time (default: a 64 MiB score block, whatever the number of centroids)."""
        if self.num_centroids >= GRAPH_ASSIGN_FROM:
            if self._graph is None:
                self._graph = _graph_index(self.centroids)
            _, idx = self._graph.search(np.ascontiguousarray(vectors, np.float32), 1)
            return idx[:, 0].astype(np.int64)
        batch = batch or max(256, self.ASSIGN_BLOCK_BYTES // (4 * self.num_centroids))
        v = torch.from_numpy(np.ascontiguousarray(vectors, np.float32))
        out = np.empty(v.shape[0], dtype=np.int64)
        for s in range(0, v.shape[0], batch):
            out[s : s + batch] = (v[s : s + batch] @ self._centroids_t.T).argmax(dim=1).numpy()
        return out

    def compress(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[T, dim] → (codes [T], packed residual buckets uint8 [T, dim·nbits/8])."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape [n, {self.dim}], got {list(vectors.shape)}")
        codes = self.assign(vectors)
        residual = vectors - self.centroids[codes]
        buckets = np.empty(residual.shape, dtype=np.uint8)
        for d in range(self.dim):  # per-dimension edges; dim is small (≤128)
            buckets[:, d] = np.searchsorted(self.cutoffs[d], residual[:, d])
        return codes.astype(self.code_dtype), self._pack(buckets)

    def _pack(self, buckets: np.ndarray) -> np.ndarray:
        per = 8 // self.nbits
        b = buckets.reshape(buckets.shape[0], -1, per).astype(np.uint8)
        shifts = (np.arange(per, dtype=np.uint8) * self.nbits)[::-1]
        return np.bitwise_or.reduce(b << shifts, axis=2).astype(np.uint8)

    def _decode_table(self) -> np.ndarray:
        """[bytes_per_token, 256, values_per_byte]: residual values for every byte value."""
        per = 8 // self.nbits
        nbytes = self.dim // per
        byte = np.arange(256, dtype=np.uint16)
        shifts = (np.arange(per) * self.nbits)[::-1]
        buckets = (byte[:, None] >> shifts[None, :]) & (2**self.nbits - 1)  # [256, per]
        dims = np.arange(self.dim).reshape(nbytes, per)  # dims covered by each byte
        return self.weights[dims[:, None, :], buckets[None, :, :]].astype(np.float32)

    def decompress(self, codes: np.ndarray | torch.Tensor, packed: np.ndarray | torch.Tensor) -> torch.Tensor:
        """→ unit-norm approximations [T, dim] float32 (a torch tensor for MaxSim); the same
        compiled loop search uses, over one-token "documents"."""
        codes = np.asarray(codes)
        tokens = np.arange(len(codes), dtype=np.int64)
        vectors, _ = decompress_docs(codes, np.asarray(packed, dtype=np.uint8), np.arange(len(codes) + 1),
                                     tokens, self.centroids, self.lut)
        return torch.from_numpy(vectors)

    def centroid_scores_t(self, query: np.ndarray) -> np.ndarray:
        """[Lq, dim] → [K, Lq] float32: one contiguous row per centroid, the layout search reads."""
        return centroid_scores(self.centroids, np.ascontiguousarray(query, dtype=np.float32))

    # -- persistence ---------------------------------------------------------------------

    def save(self, folder: Path) -> list[str]:
        half = self.centroids.astype(np.float16)
        lossless = np.array_equal(half.astype(np.float32), self.centroids)  # (a codec from before: float32)
        names = {"centroids.npy": half if lossless else self.centroids, "cutoffs.npy": self.cutoffs,
                 "weights.npy": self.weights}
        for name, arr in names.items():
            save_array(folder / name, arr)  # fsynced: the manifest that names them is
        return list(names)

    @classmethod
    def load(cls, folder: Path, nbits: int) -> ResidualCodec:
        return cls(np.load(folder / "centroids.npy"), np.load(folder / "cutoffs.npy"),
                   np.load(folder / "weights.npy"), nbits)
