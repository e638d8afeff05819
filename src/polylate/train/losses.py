"""Differentiable late-interaction scores and the losses used to train ColBERT heads."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def maxsim_scores(Q: torch.Tensor, Qmask: torch.Tensor | None, D: torch.Tensor,
                  Dmask: torch.Tensor | None, doc_chunk: int | None = None) -> torch.Tensor:
    """Batched MaxSim: queries [nq, Lq, d], docs [nd, Ld, d] (padded) → scores [nq, nd].

    score(q, n) = Σ_{i: Qmask[q,i]} max_{j: Dmask[n,j]} ⟨Q[q,i], D[n,j]⟩. Differentiable
    (gradients reach the arg-max tokens). ``doc_chunk`` bounds the [nq, chunk, Lq, Ld] buffer.
    """
    if Q.shape[-1] != D.shape[-1]:
        raise ValueError(f"query dim {Q.shape[-1]} != document dim {D.shape[-1]}")
    nd = D.shape[0]
    step = nd if not doc_chunk else max(1, doc_chunk)
    out = []
    for s in range(0, max(nd, 1), step):
        d = D[s : s + step]
        sim = torch.einsum("qid,njd->qnij", Q, d)
        if Dmask is not None:
            sim = sim.masked_fill(~Dmask[s : s + step].bool()[None, :, None, :], -1e4)
        best = sim.amax(dim=-1)  # [nq, n, Lq]
        if Dmask is not None:  # a document with no tokens scores 0
            best = best.masked_fill(~Dmask[s : s + step].bool().any(-1)[None, :, None], 0.0)
        if Qmask is not None:
            best = best * Qmask.to(best.dtype)[:, None, :]
        out.append(best.sum(dim=-1))
    return torch.cat(out, dim=1) if out else Q.new_zeros(Q.shape[0], 0)


def infonce(scores: torch.Tensor, labels: torch.Tensor | None = None,
            temperature: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each query's positive among all scored documents (in-batch negatives).

    scores [nq, nd]; labels [nq] index the positive column (default ``arange(nq)``: positives
    first). ``mask`` [nq, nd] True where a column must be ignored (e.g. a duplicate positive).
    """
    if labels is None:
        labels = torch.arange(scores.shape[0], device=scores.device)
    logits = scores / temperature
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, labels)


def kl_distillation(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                    temperature: float = 1.0, teacher_temperature: float | None = None,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher ‖ student) over each row's documents, averaged over rows.

    Both are turned into distributions with a softmax at their temperature
    (``teacher_temperature`` defaults to ``temperature``); masked columns are left out.
    """
    t_logits = teacher_scores.detach() / (temperature if teacher_temperature is None else teacher_temperature)
    s_logits = student_scores / temperature
    if mask is not None:
        t_logits = t_logits.masked_fill(mask, float("-inf"))
        s_logits = s_logits.masked_fill(mask, float("-inf"))
    t_logp = F.log_softmax(t_logits, dim=-1)
    s_logp = F.log_softmax(s_logits, dim=-1)
    p = t_logp.exp()
    terms = torch.where(p > 0, p * (t_logp - s_logp), torch.zeros_like(p))
    return terms.sum(dim=-1).mean()


def truncate(x: torch.Tensor, dim: int) -> torch.Tensor:
    """First ``dim`` components, re-normalised to unit length (Matryoshka view)."""
    return F.normalize(x[..., :dim], p=2, dim=-1)


def matryoshka(loss_fn: Callable[..., torch.Tensor], dims: Sequence[int] = (128, 96, 64),
               weights: Sequence[float] | None = (1.0, 1.0, 1.0)):
    """Wrap ``loss_fn(Q, Qmask, D, Dmask, *args, **kw)`` to sum it over nested truncations.

    The returned function takes full-size token vectors and returns
    ``(weighted total, {dim: loss})``; each dim sees the first ``dim`` components
    re-normalised (identical to using the first ``dim`` rows of the projection).
    """
    dims = tuple(int(d) for d in dims)
    weights = tuple(float(w) for w in (weights if weights is not None else [1.0] * len(dims)))
    if len(weights) != len(dims):
        raise ValueError(f"{len(dims)} dims but {len(weights)} weights")

    def wrapped(Q, Qmask, D, Dmask, *args, **kwargs):
        parts = {}
        total = Q.new_zeros(())
        for d, w in zip(dims, weights):
            if d > Q.shape[-1]:
                raise ValueError(f"dim {d} exceeds the vectors' size {Q.shape[-1]}")
            loss = loss_fn(truncate(Q, d), Qmask, truncate(D, d), Dmask, *args, **kwargs)
            parts[d] = loss
            total = total + w * loss
        return total, parts

    return wrapped
