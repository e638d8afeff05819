"""Second stage: re-score each query's first-stage candidates (a run from BM25 or any other
retriever) by exact MaxSim.

Why: ColBERT over a cheap first stage encodes only the candidates, never the whole corpus,
and it is how a late-interaction model improves an existing system without re-indexing it.
Each candidate is encoded once however many queries rank it and dropped after the last query
that ranks it; a cache bound (furthest next use goes first) keeps memory flat on long runs.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from polylate.config import check_doc_maxlen
from polylate.eval.beir import DatasetError, _lines
from polylate.eval.metrics import _ranked
from polylate.scoring import maxsim_packed, pack

__all__ = ["candidates", "read_trec_run", "rerank_candidates", "rerank_run"]


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
        if line.lstrip().startswith(("{", "[")):
            raise DatasetError(f"{path}:{n}: this is JSON, not a TREC run file ('qid Q0 docid rank score tag' "
                               "per line; polylate eval --runs and polylate rerank -o write them)")
        if len(row) == 6:
            qid, did, value = row[0], row[2], row[4]
        elif len(row) == 3:
            qid, did, value = row[0], row[1], row[2]
            if not (value.isascii() and value.isdigit() and int(value) >= 1):
                raise DatasetError(f"{path}:{n}: rank {value!r} is not a whole number from 1 (three columns are "
                                   "MS MARCO's 'qid docid rank'; write scores as TREC's six columns)")
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


def candidates(run: Mapping[str, Mapping[str, float]], queries: Mapping[str, str], corpus: Mapping[str, str],
               depth: int) -> dict[str, list[str]]:
    """Each ranked query's top ``depth`` documents by the run (trec_eval's order), after checking
    that every one of them has a text: a run that does not belong to these texts is an error."""
    shortlist = {q: _ranked(docs)[:depth] for q, docs in run.items() if docs}
    no_text = [q for q in shortlist if q not in queries]
    if no_text:
        raise ValueError(_missing("queries", no_text, "the queries"))
    no_doc = sorted({d for docs in shortlist.values() for d in docs if d not in corpus})
    if no_doc:
        raise ValueError(_missing("documents", no_doc, "the corpus"))
    return shortlist


def rerank_run(
    model,
    run: Mapping[str, Mapping[str, float]],
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    dim: int | None = None,
    depth: int = 100,
    **kwargs,
) -> dict[str, dict[str, float]]:
    """Each query's top ``depth`` candidates of ``run`` (best first-stage score first) →
    {qid: {docid: MaxSim}} at ``dim``, equal to ``model.score`` (float32 vectors throughout).

    Queries or candidates missing from ``queries`` / ``corpus`` are an error (the run and the
    texts do not belong together) raised before any encoding. ``kwargs``: those of
    :func:`rerank_candidates`."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer of at least 1, got {depth!r}")
    dim = model.config.dim if dim is None else dim
    model.source_head(dim)  # an unknown dim fails before any reading or encoding
    return rerank_candidates(model, candidates(run, queries, corpus, depth), queries, corpus, dim=dim, **kwargs)


def rerank_candidates(
    model,
    shortlist: Mapping[str, list[str]],
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    dim: int | None = None,
    batch_size: int = 32,
    doc_maxlen: int | None = None,
    queries_per_step: int = 32,
    max_cached_tokens: int = 2_000_000,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Each query's documents in ``shortlist`` (what :func:`candidates` returns) → {qid: {docid:
    MaxSim}} at ``dim``. Encoded candidates stay cached while a later query ranks them, up to
    ``max_cached_tokens`` token vectors (2M: 1 GB at 128 d); past that, those whose next use is
    furthest away are dropped first (Belady's rule: the whole run is known in advance) and
    encoded again when needed. ``progress(n)`` is called as each step's ``n`` queries are scored."""
    for name, value, least in (("queries_per_step", queries_per_step, 1), ("max_cached_tokens", max_cached_tokens, 0),
                               ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer of at least {least}, got {value!r}")
    if doc_maxlen is not None:
        check_doc_maxlen(doc_maxlen)  # before any encoding
    dim = model.config.dim if dim is None else dim
    model.source_head(dim)  # an unknown dim fails before any encoding

    order = sorted(shortlist)
    steps = [order[i : i + queries_per_step] for i in range(0, len(order), queries_per_step)]
    uses: dict[str, list[int]] = {}  # doc id → the steps that rank it, ascending
    for n, step in enumerate(steps):
        for d in dict.fromkeys(d for q in step for d in shortlist[q]):
            uses.setdefault(d, []).append(n)
    cache: dict[str, torch.Tensor] = {}  # doc id → float32 [tokens, dim]
    out: dict[str, dict[str, float]] = {}
    for n, step in enumerate(steps):
        todo = list(dict.fromkeys(d for q in step for d in shortlist[q] if d not in cache))
        if todo:
            encoded = model.encode([corpus[d] for d in todo], dim=dim, batch_size=batch_size,  # (cut on purpose)
                                   doc_maxlen=doc_maxlen, to_numpy=False, dtype=torch.float32, warn_cut=False)
            cache.update((d, v.cpu()) for d, v in zip(todo, encoded))
        q_vecs = model.encode([queries[q] for q in step], is_query=True, dim=dim, batch_size=batch_size,
                              to_numpy=False, dtype=torch.float32)
        for q, qv in zip(step, q_vecs):
            docs = shortlist[q]
            packed, lens = pack([cache[d] for d in docs])
            out[q] = dict(zip(docs, maxsim_packed(qv.cpu(), packed, lens).tolist()))
        _evict(cache, uses, n, max_cached_tokens)
        if progress is not None:
            progress(len(step))
    return out


def _evict(cache: dict[str, torch.Tensor], uses: dict[str, list[int]], done: int, max_tokens: int) -> None:
    """After step ``done``: drop documents no later step ranks, then, while the cache holds
    more than ``max_tokens`` token vectors, the one whose next use is furthest away."""
    def next_use(d: str) -> int:
        later = uses[d]
        i = bisect.bisect_right(later, done)
        return later[i] if i < len(later) else -1

    upcoming = {d: next_use(d) for d in cache}
    for d in [d for d, when in upcoming.items() if when < 0]:
        del cache[d]
    held = sum(v.shape[0] for v in cache.values())
    for d in sorted(cache, key=lambda d: upcoming[d], reverse=True):
        if held <= max_tokens:
            break
        held -= cache.pop(d).shape[0]
