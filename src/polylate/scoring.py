"""MaxSim late-interaction scoring: score(q, d) = Σ_i max_j ⟨q_i, d_j⟩.

Two layouts, both one matmul plus a reduction (no Python loop per document):
padded ``[n_docs, L, dim]`` with a token mask, and packed (ragged) ``[total_tokens, dim]``
with per-document lengths, which is how an index stores candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from polylate.arguments import is_positive_int

ArrayLike = np.ndarray | torch.Tensor


def _tensor(x: ArrayLike, dtype=torch.float32) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    return t.to(dtype)


def maxsim(queries: ArrayLike, docs: ArrayLike, doc_mask: ArrayLike | None = None) -> torch.Tensor:
    """Padded form. queries [nq, Lq, d] (or [Lq, d]); docs [nd, Ld, d] → scores [nq, nd]."""
    q = _tensor(queries)
    d = _tensor(docs)
    single = q.dim() == 2
    if single:
        q = q[None]
    if q.shape[-1] != d.shape[-1]:
        raise ValueError(f"query dim {q.shape[-1]} != document dim {d.shape[-1]}")
    sim = torch.einsum("qid,njd->qnij", q, d)  # [nq, nd, Lq, Ld]
    if doc_mask is not None:
        m = torch.as_tensor(np.asarray(doc_mask) if not isinstance(doc_mask, torch.Tensor) else doc_mask)
        if tuple(m.shape) != tuple(d.shape[:2]):
            raise ValueError(f"doc_mask must have shape {list(d.shape[:2])} (docs, tokens), got {list(m.shape)}")
        sim = sim.masked_fill(~m.bool()[None, :, None, :], float("-inf"))
    best = sim.amax(dim=-1)
    scores = torch.where(torch.isinf(best), torch.zeros_like(best), best).sum(dim=-1)  # empty docs score 0
    return scores[0] if single else scores


def maxsim_packed(query: ArrayLike, doc_tokens: ArrayLike, doclens: ArrayLike) -> torch.Tensor:
    """Packed form. query [Lq, d]; doc_tokens [Σ doclens, d] → scores [n_docs]."""
    q = _tensor(query)
    if q.ndim != 2:
        raise ValueError(f"query must have shape [tokens, dim], got {list(q.shape)}")
    toks = _tensor(doc_tokens)
    lens = torch.as_tensor(np.asarray(doclens) if not isinstance(doclens, torch.Tensor) else doclens)
    lens = lens.to(torch.long)
    if int(lens.sum()) != toks.shape[0]:
        raise ValueError(f"doclens sum to {int(lens.sum())} but {toks.shape[0]} token rows given")
    if q.shape[-1] != toks.shape[-1]:
        raise ValueError(f"query dim {q.shape[-1]} != document dim {toks.shape[-1]}")
    sim = toks @ q.T  # [T, Lq]
    best = torch.segment_reduce(sim, "max", lengths=lens, axis=0, unsafe=True)  # [n_docs, Lq]
    best = torch.where(torch.isinf(best), torch.zeros_like(best), best)  # empty docs score 0
    return best.sum(dim=1)


def pack(docs: Sequence[ArrayLike]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged list of [n_i, d] → (packed [Σ n_i, d], doclens [n_docs])."""
    tensors = [_tensor(d) for d in docs]
    lens = torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)
    return torch.cat(tensors) if tensors else torch.zeros(0, 0), lens


def check_top_n(top_n) -> None:
    if top_n is not None and not is_positive_int(top_n):
        raise ValueError(f"top_n must be a positive integer or None, got {top_n!r}")


def rerank(query: ArrayLike, docs: Sequence[ArrayLike], top_n: int | None = None):
    """Order documents by MaxSim against one query → [(doc_index, score)], best first."""
    check_top_n(top_n)
    if len(docs) == 0:
        return []
    packed, lens = pack(docs)
    scores = maxsim_packed(query, packed, lens)
    k = len(docs) if top_n is None else min(top_n, len(docs))
    # stable: equal scores keep the documents' order (torch.topk leaves ties in any order)
    order = sorted(range(len(docs)), key=lambda i: -float(scores[i]))[:k]
    return [(i, float(scores[i])) for i in order]
