"""IR metrics through ``pytrec_eval`` (trec_eval's C code; the library BEIR uses).

Metric names: ``ndcg@k``, ``recall@k``, ``map@k``, ``p@k`` (``precision@k``), ``mrr@k``,
``success@k`` (``hit@k``, ``accuracy@k``: 1 if a relevant document is in the top k — Tatoeba's
accuracy is ``success@1``); without ``@k`` the measure runs over the whole ranking
(``ndcg``, ``map``, ``mrr``).

Conventions (trec_eval's, so numbers match BEIR and other trec_eval users):

* nDCG uses linear gain (``rel / log2(rank + 1)``), not ``2^rel - 1``; with binary labels
  the two are the same.
* Ties in score are broken by document id, *descending* (trec_eval sorts that way). ``mrr@k``
  truncates the ranking to k with the same order before computing reciprocal rank.
* The mean is over queries that have at least one relevant judgment (``rel > 0``); a judged
  query absent from the run scores 0 on every metric. Run entries for queries that are not
  in the qrels are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["DEFAULT_METRICS", "evaluate", "parse_metric"]

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")

_ALIASES = {
    "ndcg": "ndcg", "recall": "recall", "r": "recall", "map": "map", "p": "p", "precision": "p",
    "mrr": "mrr", "rr": "mrr", "recip_rank": "mrr", "success": "success", "hit": "success",
    "hits": "success", "accuracy": "success", "acc": "success",
}
_PATTERN = re.compile(r"^\s*([a-z_]+)\s*(?:@\s*(\d+))?\s*$")


def parse_metric(name: str) -> tuple[str, int | None]:
    """``"nDCG@10"`` → ``("ndcg", 10)``; raises ValueError naming the accepted forms."""
    m = _PATTERN.match(name.lower())
    kind = _ALIASES.get(m.group(1)) if m else None
    if kind is None:
        raise ValueError(f"unknown metric {name!r}; use one of ndcg, recall, map, p, mrr, success, "
                         "optionally with @k (e.g. ndcg@10)")
    k = int(m.group(2)) if m.group(2) else None
    if k is not None and k < 1:
        raise ValueError(f"metric {name!r}: k must be positive")
    if kind in ("p", "success", "recall") and k is None:
        raise ValueError(f"metric {name!r} needs a cutoff, e.g. {kind}@10")
    return kind, k


def _trec_measure(kind: str, k: int | None) -> tuple[str, str]:
    """(measure to request, key in pytrec_eval's result) for everything except mrr."""
    base = {"ndcg": ("ndcg", "ndcg_cut"), "recall": ("recall", "recall"), "map": ("map", "map_cut"),
            "p": ("P", "P"), "success": ("success", "success")}[kind]
    if k is None:
        return base[0], base[0]
    return f"{base[1]}.{k}", f"{base[1]}_{k}"


def _ranked(scores: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval's order: score descending, then id descending."""
    return sorted(scores, key=lambda d: (float(scores[d]), d), reverse=True)


def scored_queries(qrels: Mapping[str, Mapping[str, int]]) -> int:
    """How many queries the means are over: those with a relevant (score > 0) judgment (BEIR's
    and trec_eval's convention; a query judged only non-relevant has no ideal ranking)."""
    return sum(any(int(r) > 0 for r in rels.values()) for rels in qrels.values())


def evaluate(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[str] | str = DEFAULT_METRICS,
    per_query: bool = False,
) -> dict:
    """Score a run (qid → {docid: score}) against qrels (qid → {docid: relevance}).

    Returns ``{metric: mean}`` with the metric names as given; with ``per_query=True``,
    ``{qid: {metric: value}}`` for every query that has a relevant judgment.
    """
    try:
        import pytrec_eval
    except ImportError as exc:
        raise ImportError("metrics need pytrec_eval: pip install pytrec-eval-terrier "
                          "(or pip install 'polylate[eval]')") from exc

    if isinstance(metrics, str):
        metrics = (metrics,)
    parsed = {name: parse_metric(name) for name in metrics}
    # ids compared as strings (pytrec_eval takes nothing else): int ids from a caller still match
    judged = {str(q): {str(d): int(r) for d, r in rels.items()} for q, rels in qrels.items()
              if any(int(r) > 0 for r in rels.values())}
    if not judged:
        raise ValueError("the qrels hold no relevant (score > 0) judgment")
    run = {str(q): docs for q, docs in run.items()}
    full_run = {q: {str(d): float(s) for d, s in run.get(q, {}).items()} for q in judged}

    # one pytrec_eval pass per run variant: the full ranking, and one truncation per mrr@k
    passes: dict[int | None, list[tuple[str, str, str]]] = {}  # cutoff → [(name, measure, key)]
    for name, (kind, k) in parsed.items():
        if kind == "mrr":
            passes.setdefault(k or 0, []).append((name, "recip_rank", "recip_rank"))
        else:
            passes.setdefault(None, []).append((name, *_trec_measure(kind, k)))

    values: dict[str, dict[str, float]] = {q: {} for q in judged}
    for cutoff, wanted in passes.items():
        if cutoff:
            this_run = {q: {d: docs[d] for d in _ranked(docs)[:cutoff]} for q, docs in full_run.items()}
        else:
            this_run = full_run
        evaluator = pytrec_eval.RelevanceEvaluator(judged, {measure for _, measure, _ in wanted})
        result = evaluator.evaluate(this_run)
        for q in judged:
            got = result.get(q, {})
            for name, _, key in wanted:
                values[q][name] = float(got.get(key, 0.0))

    if per_query:
        return values
    n = len(values)
    return {name: sum(v[name] for v in values.values()) / n for name in parsed}
