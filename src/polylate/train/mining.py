"""Mine hard negatives, and optionally a teacher's scores, for a BEIR training folder.

InfoNCE learns most from negatives a ranker confuses with the positive, and distillation
needs a teacher's scores over exactly the documents a query is trained against. This writes
both as ``pairs.jsonl`` rows ``{"query_id", "query", "pos_id", "hard_negative_ids",
"teacher_scores"}`` — the file :func:`polylate.train.data.load_triplets` reads, so a mined
folder trains with ``polylate train --negatives N --teacher data``.

Negatives come from BM25 (``bm25s``) or a ColBERT model's exact MaxSim over the whole
corpus. Every document judged relevant to the query is excluded; ``skip`` also drops the
top-ranked unjudged candidates, which in sparsely judged sets are often unlabelled
positives (false negatives).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["add_teacher_scores", "mine_hard_negatives", "write_pairs"]


def _positives(qrels: Mapping[str, Mapping[str, int]], corpus: Mapping[str, str],
               queries: Mapping[str, str]) -> dict[str, list[str]]:
    out, skipped, total = {}, 0, 0
    for q in sorted(qrels):
        judged = [d for d, s in qrels[q].items() if int(s) > 0]
        pos = sorted(d for d in judged if d in corpus) if q in queries else []
        total += len(judged)
        skipped += len(judged) - len(pos)
        if pos:
            out[q] = pos
    if skipped:  # qrels of another corpus would otherwise mine nothing without a word
        warnings.warn(f"skipped {skipped} of {total} relevant judgment(s) whose query or document is not in the "
                      "queries or corpus", stacklevel=3)
    return out


def mine_hard_negatives(corpus: Mapping[str, str], queries: Mapping[str, str],
                        qrels: Mapping[str, Mapping[str, int]], *, retriever: str = "bm25",
                        model=None, negatives: int = 20, depth: int = 100, skip: int = 0,
                        dim: int | None = None, doc_maxlen: int | None = None, batch_size: int = 32,
                        teacher_scores: bool = False, show_progress: bool = False) -> list[dict]:
    """One row per relevant (query, document) pair: the ``negatives`` best-ranked documents
    the query has not been judged relevant to, after skipping the first ``skip`` of them.

    ``retriever``: ``"bm25"`` or ``"colbert"`` (exact MaxSim with ``model``, at ``dim``, documents
    cut at ``doc_maxlen`` tokens). ``depth``: documents retrieved per query; a query may get
    fewer negatives than asked when the ranking runs out (BM25 leaves out documents sharing no
    term with the query). ``teacher_scores`` (colbert only): also give each row the model's
    MaxSim of the positive and each negative, from the vectors already encoded for retrieval —
    what :func:`add_teacher_scores` with the same model gives, without encoding twice.
    """
    if negatives < 1 or depth < 1 or skip < 0:
        raise ValueError(f"negatives and depth must be positive and skip >= 0, got {negatives}, {depth}, {skip}")
    if retriever not in ("bm25", "colbert"):
        raise ValueError(f"retriever must be 'bm25' or 'colbert', got {retriever!r}")
    if teacher_scores and retriever != "colbert":
        raise ValueError("teacher_scores come from the retrieval model: use retriever='colbert', "
                         "or add_teacher_scores with a ColBERT teacher")
    positives = _positives(qrels, corpus, queries)
    if not positives:
        raise ValueError("no query has a relevant (score > 0) document in the corpus")
    wanted = {q: queries[q] for q in positives}
    if retriever == "bm25":
        from polylate.eval.bm25 import BM25Baseline

        run = BM25Baseline(corpus).search(wanted, k=depth)
    else:
        if model is None:
            raise ValueError("retriever='colbert' needs a model")
        from polylate.eval.runner import rank_exact

        dim = dim or model.config.dim
        doc_ids = list(corpus)
        docs = model.encode([corpus[d] for d in doc_ids], dim=dim, batch_size=batch_size,
                            show_progress=show_progress, doc_maxlen=doc_maxlen, dtype=np.float16)
        query_vecs = model.encode(list(wanted.values()), is_query=True, dim=dim, batch_size=batch_size,
                                  show_progress=show_progress)
        run, _ = rank_exact(dim, doc_ids, docs, list(wanted), query_vecs, depth)
    rows = []
    for q, pos in positives.items():
        judged = {d for d, s in qrels[q].items() if int(s) > 0}
        scores = run.get(q, {})
        ranked = [d for d in sorted(scores, key=lambda d: (-scores[d], d)) if d not in judged]
        negs = ranked[skip : skip + negatives]
        rows.extend({"query_id": q, "query": queries[q], "pos_id": p, "hard_negative_ids": negs} for p in pos)
    if teacher_scores:
        q_vecs = dict(zip(wanted, query_vecs))
        d_vecs = dict(zip(doc_ids, docs))
        rows = [{**r, "teacher_scores": _maxsim_row(q_vecs[r["query_id"]], d_vecs, r)} for r in rows]
    return rows


def _maxsim_row(query_vec, doc_vecs: Mapping[str, np.ndarray], row: dict) -> list[float]:
    """MaxSim of one query against the row's positive, then each of its hard negatives."""
    from polylate.scoring import maxsim_packed, pack

    ids = [row["pos_id"], *row["hard_negative_ids"]]
    return [round(float(s), 5) for s in maxsim_packed(query_vec, *pack([doc_vecs[d] for d in ids]))]


def add_teacher_scores(rows: Sequence[dict], corpus: Mapping[str, str], teacher, *,
                       dim: int | None = None, doc_maxlen: int | None = None, batch_size: int = 32,
                       show_progress: bool = False) -> list[dict]:
    """Copies of ``rows`` with ``teacher_scores``: the teacher ColBERT's MaxSim of the query
    against the positive, then each hard negative (each distinct text encoded once)."""
    dim = dim or teacher.config.dim
    query_texts = sorted({r["query"] for r in rows})
    doc_ids = sorted({d for r in rows for d in (r["pos_id"], *r["hard_negative_ids"])})
    missing = [d for d in doc_ids if d not in corpus]
    if missing:
        raise ValueError(f"{len(missing)} document id(s) of the rows are not in the corpus, e.g. {missing[0]!r}")
    q_vecs = dict(zip(query_texts, teacher.encode(query_texts, is_query=True, dim=dim, batch_size=batch_size,
                                                   show_progress=show_progress)))
    d_vecs = dict(zip(doc_ids, teacher.encode([corpus[d] for d in doc_ids], dim=dim, batch_size=batch_size,
                                               show_progress=show_progress, doc_maxlen=doc_maxlen,
                                               dtype=np.float16)))
    return [{**r, "teacher_scores": _maxsim_row(q_vecs[r["query"]], d_vecs, r)} for r in rows]


def write_pairs(rows: Sequence[dict], path: str | Path, overwrite: bool = False) -> Path:
    """Write ``pairs.jsonl`` atomically (a crash leaves the old file or none, never half of one)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
