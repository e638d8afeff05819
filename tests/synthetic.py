"""Clustered unit vectors shaped like ColBERT token embeddings, for fast index tests."""

from __future__ import annotations

import numpy as np


class Corpus:
    def __init__(self, n_docs: int, dim: int = 64, n_topics: int = 200, noise: float = 0.06, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.dim, self.noise = dim, noise
        self.topics = self._unit(self.rng.standard_normal((n_topics, dim)))
        self.docs = [self.doc() for _ in range(n_docs)]
        self.ids = [f"doc-{i}" for i in range(n_docs)]

    @staticmethod
    def _unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    def doc(self, length: int | None = None) -> np.ndarray:
        n = length or int(self.rng.integers(5, 40))
        # a document mixes a few topics; its tokens are noisy copies of them
        own = self.topics[self.rng.integers(0, len(self.topics), 3)]
        base = own[self.rng.integers(0, 3, n)]
        return self._unit(base + self.noise * self.rng.standard_normal((n, self.dim))).astype(np.float16)

    def query_for(self, i: int, length: int = 32) -> np.ndarray:
        d = self.docs[i].astype(np.float32)
        picks = d[self.rng.integers(0, len(d), length)]
        return self._unit(picks + self.noise * self.rng.standard_normal(picks.shape))
