"""Brute-force exact MaxSim over every stored token vector.

For small collections, and as the ground truth that PLAID's recall is measured against.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from polylate.arguments import is_positive_int
from polylate.index.plaid import Hit, _checked_docs, _id_list, validate_query
from polylate.scoring import maxsim_packed


class ExactIndex:
    def __init__(self, dim: int):
        if not is_positive_int(dim):
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)
        self._ids: list[str] = []
        self._vectors: list[torch.Tensor] = []
        self._packed: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: Sequence[str], vectors: Sequence[np.ndarray]) -> None:
        ids, vectors = _checked_docs(ids, vectors, self.dim)
        present = set(self._ids).intersection(ids)
        if present:
            raise ValueError(f"id(s) already in the index: {sorted(present)[:5]}")
        self._ids.extend(ids)
        self._vectors.extend(torch.from_numpy(v.astype(np.float16)) for v in vectors)
        self._packed = None

    def delete(self, ids: Iterable[str]) -> None:
        drop = set(_id_list(ids, "ids"))  # one string is not its characters
        unknown = drop.difference(self._ids)
        if unknown:
            raise KeyError(f"id(s) not in the index: {sorted(unknown)[:5]}")
        keep = [i for i, d in enumerate(self._ids) if d not in drop]
        self._ids = [self._ids[i] for i in keep]
        self._vectors = [self._vectors[i] for i in keep]
        self._packed = None

    def scores(self, query) -> torch.Tensor:
        """MaxSim of the query against every document, in insertion order."""
        return self._scores(validate_query(query, self.dim, 1))

    def _scores(self, q: np.ndarray) -> torch.Tensor:
        """``scores`` of a query ``validate_query`` already checked and converted."""
        if self._packed is None:
            lens = torch.tensor([v.shape[0] for v in self._vectors], dtype=torch.long)
            self._packed = (torch.cat(self._vectors).float() if self._vectors else torch.zeros(0, self.dim), lens)
        return maxsim_packed(torch.from_numpy(q), *self._packed)

    def search(self, query, k: int = 10, filter_ids: Iterable[str] | None = None) -> list[Hit]:
        q = validate_query(query, self.dim, k, filter_ids)  # the same checks as PlaidIndex.search
        if not self._ids:
            return []
        scores = self._scores(q)
        if filter_ids is not None:
            allowed = set(filter_ids)
            mask = torch.tensor([d in allowed for d in self._ids])
            scores = scores.masked_fill(~mask, float("-inf"))
        top = torch.topk(scores, min(k, len(self._ids)))
        return [Hit(self._ids[i], float(s)) for s, i in zip(top.values, top.indices) if s != float("-inf")]
