"""Why a document matched: for every query token, the document token that was its MaxSim
argmax and their similarity. The scores add up to the document's MaxSim score."""

from __future__ import annotations

import numpy as np

from polylate.text.tokenizer import TokenSpan


def token_info(spans: list[TokenSpan], mask_id: int | None = None) -> list[dict]:
    """Each query token with its kind: ``text`` (covers characters of the query),
    ``expansion`` (a [MASK] of query augmentation) or ``other`` (special tokens, the query
    marker or prefix), so a page can tell what a match came from."""
    return [{"index": i, "piece": s.piece, "start": s.start, "end": s.end,
             "kind": "text" if s.start is not None else "expansion" if s.id == mask_id else "other"}
            for i, s in enumerate(spans)]


def explain_match(query: np.ndarray, doc: np.ndarray, doc_spans: list[TokenSpan]) -> dict:
    """query [Lq, d] and doc [Ld, d] unit vectors; doc_spans aligned with doc's rows."""
    if len(doc_spans) != doc.shape[0]:
        raise ValueError(f"{len(doc_spans)} token spans for {doc.shape[0]} document vectors")
    sim = query.astype(np.float32) @ doc.astype(np.float32).T  # [Lq, Ld]
    best = sim.argmax(axis=1)
    scores = sim[np.arange(sim.shape[0]), best]
    matches = []
    for qi, (dj, score) in enumerate(zip(best.tolist(), scores.tolist())):
        span = doc_spans[dj]
        matches.append({"query_token": qi, "doc_token": dj, "piece": span.piece,
                        "start": span.start, "end": span.end, "score": round(score, 6)})
    return {"score": round(float(scores.sum()), 6), "matches": matches}
