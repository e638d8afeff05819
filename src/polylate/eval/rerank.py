"""Second stage: re-score each query's first-stage candidates (a run from BM25 or any other
retriever) by exact MaxSim.

Why: ColBERT over a cheap first stage encodes only the candidates, never the whole corpus,
and it is how a late-interaction model improves an existing system without re-indexing it.
Each candidate is encoded once however many queries rank it, and dropped once the last
query that ranks it is scored, so memory holds the candidates in flight, not the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from polylate.eval.beir import DatasetError, _lines
from polylate.eval.metrics import _ranked
from polylate.scoring import maxsim_packed, pack

__all__ = ["read_trec_run", "rerank_run"]


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    """``qid Q0 docid rank score tag`` lines (TREC; spaces or tabs) → {qid: {docid: score}}.

    MS MARCO's three columns ``qid docid rank`` are read too, as score = −rank. A document
    listed twice for one query, a short line or a score that is not a number is an error
    naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"run file {path} " + ("is a folder" if path.is_dir() else "does not exist"))
    run: dict[str, dict[str, float]] = {}
    for n, line in _lines(path):
        row = line.split()
        if not row:
            continue
        if len(row) == 6:
            qid, did, value = row[0], row[2], row[4]
        elif len(row) == 3:
            qid, did, value = row[0], row[1], row[2]
        else:
            raise DatasetError(f"{path}:{n}: expected TREC's six columns 'qid Q0 docid rank score tag' "
                               f"(or MS MARCO's 'qid docid rank'), got {len(row)}: {line.strip()[:120]!r}")
        try:
            score = float(value)
        except ValueError:
            raise DatasetError(f"{path}:{n}: {'score' if len(row) == 6 else 'rank'} {value!r} "
                               "is not a number") from None
        if not math.isfinite(score):
            raise DatasetError(f"{path}:{n}: score {value!r} is not finite")
        docs = run.setdefault(qid, {})
        if did in docs:
            raise DatasetError(f"{path}:{n}: query {qid!r} lists document {did!r} twice")
        docs[did] = -score if len(row) == 3 else score
    if not run:
        raise DatasetError(f"run file {path} holds no ranking")
    return run


def _missing(what: str, ids: list[str], where: str) -> str:
    return f"{len(ids)} {what} of the run not in {where}, e.g. {sorted(ids)[:5]}"


def rerank_run(
    model,
    run: Mapping[str, Mapping[str, float]],
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    dim: int | None = None,
    depth: int = 100,
    batch_size: int = 32,
    doc_maxlen: int | None = None,
    queries_per_step: int = 64,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Each query's top ``depth`` candidates of ``run`` (best first-stage score first) →
    {qid: {docid: MaxSim}} at ``dim``. Queries or candidates missing from ``queries`` /
    ``corpus`` are an error (the run and the texts do not belong together) raised before any
    encoding. ``progress(n)`` is called as each step's ``n`` queries are scored."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    if queries_per_step < 1:
        raise ValueError(f"queries_per_step must be positive, got {queries_per_step}")
    dim = model.config.dim if dim is None else dim
    model._projection(dim)  # an unknown dim fails before any encoding
    shortlist = {q: _ranked(docs)[:depth] for q, docs in run.items() if docs}
    no_text = [q for q in shortlist if q not in queries]
    if no_text:
        raise ValueError(_missing("queries", no_text, "the queries"))
    no_doc = sorted({d for docs in shortlist.values() for d in docs if d not in corpus})
    if no_doc:
        raise ValueError(_missing("documents", no_doc, "the corpus"))

    order = sorted(shortlist)
    last_use = {d: i for i, q in enumerate(order) for d in shortlist[q]}
    cache: dict[str, torch.Tensor] = {}  # doc id → float16 [n, dim], while a later query needs it
    out: dict[str, dict[str, float]] = {}
    for start in range(0, len(order), queries_per_step):
        step = order[start : start + queries_per_step]
        todo = list(dict.fromkeys(d for q in step for d in shortlist[q] if d not in cache))
        if todo:
            encoded = model.encode([corpus[d] for d in todo], dim=dim, batch_size=batch_size,
                                   doc_maxlen=doc_maxlen, to_numpy=False, dtype=torch.float16)
            cache.update((d, v.cpu()) for d, v in zip(todo, encoded))
        q_vecs = model.encode([queries[q] for q in step], is_query=True, dim=dim, batch_size=batch_size,
                              to_numpy=False)
        for q, qv in zip(step, q_vecs):
            docs = shortlist[q]
            packed, lens = pack([cache[d].float() for d in docs])
            scores = maxsim_packed(qv.float().cpu(), packed, lens).tolist()
            out[q] = dict(zip(docs, scores))
        end = start + len(step) - 1
        for d in [d for d in cache if last_use[d] <= end]:
            del cache[d]
        if progress is not None:
            progress(len(step))
    return out
