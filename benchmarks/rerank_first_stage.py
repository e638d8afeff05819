"""BM25 → ColBERT rerank (``polylate rerank``) vs ColBERT over the whole corpus, one run.

Per dataset: BM25 (bm25s, XLM-R pieces) ranks the corpus; ``rerank_run`` re-scores its top k
by exact MaxSim, encoding only those candidates; full retrieval encodes every document and
ranks by exact MaxSim. Columns: nDCG@10, Recall@100, documents encoded, and encoder seconds
of each, measured side by side with the same model and dtype.

    python benchmarks/rerank_first_stage.py [--depths 20 100] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from polylate import load_model
from polylate.eval.beir import load_beir, subsample
from polylate.eval.bm25 import BM25Baseline
from polylate.eval.metrics import evaluate
from polylate.eval.rerank import rerank_run
from polylate.eval.runner import rank_exact

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
# (folder, queries from, max queries, max docs)
SETS = [("scifact", None, 150, 2000), ("xquad_r/zh", None, 300, None), ("xquad_r/en", "xquad_r/de", 300, None),
        ("lareqa_xquad_r/pooled", None, 200, 5000)]
METRICS = ["ndcg@10", "recall@100"]


class CountingModel:
    """The model, with the documents it encodes and the seconds it takes counted."""

    def __init__(self, model):
        self.model, self.docs, self.seconds = model, 0, 0.0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, texts, is_query=False, **kw):
        start = time.perf_counter()
        out = self.model.encode(texts, is_query=is_query, **kw)
        if not is_query:
            self.docs += len(texts)
            self.seconds += time.perf_counter() - start
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_model("default", dtype=getattr(torch, args.dtype))
    rows = []
    for folder, queries_from, max_q, max_d in SETS:
        path = args.data / folder
        if not path.is_dir():
            print(f"skipped {folder}: not in {args.data}")
            continue
        ds = load_beir(path, queries_from=args.data / queries_from if queries_from else None)
        ds = subsample(ds, max_q, max_d, seed=0)
        bm25 = BM25Baseline(ds.corpus).search(ds.queries, k=max(100, *args.depths))
        rows.append((ds.name, "BM25", evaluate(bm25, ds.qrels, METRICS), 0, 0.0))
        for depth in args.depths:
            counted = CountingModel(model)
            run = rerank_run(counted, bm25, ds.queries, ds.corpus, dim=args.dim, depth=depth)
            rows.append((ds.name, f"BM25 top {depth} → ColBERT", evaluate(run, ds.qrels, METRICS),
                         counted.docs, counted.seconds))
        start = time.perf_counter()
        ids = list(ds.corpus)
        vecs = model.encode([ds.corpus[d] for d in ids], dim=args.dim)
        seconds = time.perf_counter() - start
        qids = list(ds.queries)
        qvecs = model.encode([ds.queries[q] for q in qids], is_query=True, dim=args.dim)
        full, _ = rank_exact(args.dim, ids, vecs, qids, qvecs, 100)
        rows.append((ds.name, "ColBERT, whole corpus", evaluate(full, ds.qrels, METRICS), len(ids), seconds))
        print(f"{ds.name}: {len(ds.queries)} queries, {len(ds.corpus)} documents", flush=True)

    print(f"\nnDCG@10 / Recall@100, bundled model at {args.dim} d, encoder {args.dtype}, exact MaxSim")
    print(f"{'dataset':24s} {'method':26s} {'nDCG@10':>8s} {'R@100':>7s} {'docs enc.':>10s} {'enc. s':>8s}")
    for name, method, m, docs, sec in rows:
        print(f"{name:24s} {method:26s} {m['ndcg@10']:8.4f} {m['recall@100']:7.4f} {docs:10d} {sec:8.1f}")


if __name__ == "__main__":
    main()
