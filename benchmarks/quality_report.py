"""Quality report of the bundled default model over every shared benchmark, against BM25 and
against the same encoder used as a dense model (e5's mean-pooled embedding).

Sets (from ../shared/data): SciFact test (en); XQuAD-R paragraphs within each of 12 languages
and from each language to English; LAReQA XQuAD-R answer sentences within each of 11
languages and pooled over all of them; Tatoeba bitext (112 languages → English). ColBERT is
ranked by exact MaxSim at 128/96/64 dims (each dim through its own head when the model has
one); one encoder pass per text serves ColBERT and the dense baseline (the published e5
encoder's upper layers continue from the shared lower layers when polylate's model carries
fine-tuned top layers). BM25 is bm25s over
XLM-R pieces (polylate.eval.bm25). Metrics: nDCG@10 and Recall@100 by pytrec_eval.

    python benchmarks/quality_report.py [--max-queries 400] [--fp32] [--json out.json] [--plot out.png]

By default the encoder runs with bfloat16 weights (4× faster on CPU; token vectors agree with
fp32 at cosine ≥ 0.9995, see benchmarks/encode_throughput.py); ``--fp32`` for full precision.
Queries are subsampled per set (same ids across parallel languages); corpora are complete.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from polylate import load_model
from polylate.eval.bm25 import BM25Baseline
from polylate.eval.beir import load_beir
from polylate.eval.metrics import evaluate
from polylate.eval.runner import plot_quality_vs_storage
from polylate.model.bundled import base_encoder
from polylate.train.losses import maxsim_scores
from polylate.train.trainer import HiddenCache

ROOT = Path(__file__).resolve().parents[1]
DIMS = (128, 96, 64)
METRICS = ("ndcg@10", "recall@100")
K = 100


def slices(data: Path, families: list[str]):
    """→ [(family, name, corpus folder, queries folder or None)]."""
    out = []
    if "scifact" in families:
        out.append(("scifact", "scifact", data / "scifact", None))
    xq = sorted(p.name for p in (data / "xquad_r").iterdir() if p.is_dir()) if "xquad_r" in families else []
    for lang in xq:
        out.append(("xquad_r mono", f"xquad_r {lang}", data / "xquad_r" / lang, None))
    for lang in xq:
        if lang != "en":
            out.append(("xquad_r X→en", f"xquad_r {lang}→en", data / "xquad_r" / "en", data / "xquad_r" / lang))
    if "lareqa" in families:
        for p in sorted((data / "lareqa_xquad_r").iterdir()):
            if p.is_dir():
                fam = "lareqa pooled" if p.name == "pooled" else "lareqa mono"
                out.append((fam, f"lareqa {p.name}", p, None))
    if "tatoeba" in families:
        for p in sorted((data / "tatoeba").iterdir()):
            if p.is_dir():
                out.append(("tatoeba X→en", f"tatoeba {p.name}", p, None))
    return out


def pick_queries(dataset, n: int | None, seed: int):
    qids = sorted(dataset.queries)
    if n is not None and len(qids) > n:
        qids = sorted(random.Random(seed).sample(qids, n))
    return qids


def colbert_runs(model, cache: HiddenCache, queries: dict, corpus: dict, dims, chunk: int = 64):
    """Exact MaxSim top-K per query for each dim, docs scored in length-sorted chunks."""
    qids, dids = list(queries), list(corpus)
    dids.sort(key=lambda d: cache.tokens[(corpus[d], False)].shape[0])
    qh, qm = cache.padded([queries[q] for q in qids], True)
    scores = {d: torch.empty(len(qids), len(dids)) for d in dims}
    with torch.no_grad():
        Q = {d: model.project(qh, d) for d in dims}
        for s in range(0, len(dids), chunk):
            dh, dm = cache.padded([corpus[x] for x in dids[s : s + chunk]], False)
            for d in dims:
                scores[d][:, s : s + chunk] = maxsim_scores(Q[d], qm, model.project(dh, d), dm)
    return {d: _run(scores[d], qids, dids) for d in dims}


def dense_run(cache: HiddenCache, queries: dict, corpus: dict):
    qids, dids = list(queries), list(corpus)
    s = cache.pooled_matrix([queries[q] for q in qids], True) @ cache.pooled_matrix([corpus[d] for d in dids], False).T
    return _run(s, qids, dids)


def _run(scores: torch.Tensor, qids, dids):
    top = torch.topk(scores, min(K, scores.shape[1]), dim=1)
    return {q: {dids[j]: float(v) for v, j in zip(vals.tolist(), idx.tolist())}
            for q, vals, idx in zip(qids, top.values, top.indices)}


def _first_changed_layer(encoder, base) -> int | None:
    """Index of the first layer that differs from the base encoder (None: identical)."""
    for i, (a, b) in enumerate(zip(encoder.layers, base.layers)):
        if any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values())):
            return i
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--families", default="scifact,xquad_r,lareqa,tatoeba")
    ap.add_argument("--max-queries", type=int, default=400, help="per set (tatoeba: all 1000)")
    ap.add_argument("--pooled-queries", type=int, default=500)
    ap.add_argument("--fp32", action="store_true", help="encode with float32 weights")
    ap.add_argument("--only", default=None, help="run only sets whose name contains this")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data.resolve()
    if not data.is_dir():
        print(f"no data at {data}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    model = load_model(args.model)
    model.eval()
    base_enc = base_encoder() if args.model is None else None
    lower = _first_changed_layer(model.encoder, base_enc) if base_enc is not None else None
    if not args.fp32:
        model.encoder.to(torch.bfloat16)  # heads stay float32
        if base_enc is not None:
            base_enc.to(torch.bfloat16)
    print(f"model: {model.name}; heads {model.head_dims}; encoder {'fp32' if args.fp32 else 'bf16'}")

    rows = []
    cache, cache_key = None, None
    for family, name, corpus_dir, queries_dir in slices(data, args.families.split(",")):
        if args.only and args.only not in name:
            continue
        ds = load_beir(corpus_dir, queries_from=queries_dir)
        n = None if family == "tatoeba X→en" else args.pooled_queries if family == "lareqa pooled" else args.max_queries
        qids = pick_queries(ds, n, args.seed)
        queries = {q: ds.queries[q] for q in qids}
        qrels = {q: ds.qrels[q] for q in qids}
        key = name if family.startswith("tatoeba") else family.split()[0]
        if cache_key != key:  # one cache per family of sets sharing texts (xquad_r, lareqa)
            cache, cache_key = HiddenCache(model, model.config.doc_maxlen, lower_layers=lower,
                                           pooled_from=base_enc if lower is not None else None), key
        start = time.perf_counter()
        cache.add(queries.values(), True)
        cache.add(ds.corpus.values(), False)
        enc_s = time.perf_counter() - start
        tokens = statistics.mean(cache.tokens[(t, False)].shape[0] for t in ds.corpus.values())
        base = {"family": family, "dataset": name, "queries": len(qids), "docs": len(ds.corpus)}
        for dim, run in colbert_runs(model, cache, queries, ds.corpus, DIMS).items():
            rows.append({**base, "method": "exact", "dim": dim, **evaluate(run, qrels, METRICS),
                         "bytes_per_doc": tokens * dim * 2})
        rows.append({**base, "method": "e5 dense", "dim": "dense", **evaluate(dense_run(cache, queries, ds.corpus), qrels, METRICS),
                     "bytes_per_doc": 384 * 2})
        bm25 = BM25Baseline(ds.corpus)
        rows.append({**base, "method": "bm25", "dim": "bm25", **evaluate(bm25.search(queries, K), qrels, METRICS),
                     "bytes_per_doc": bm25.index_bytes / len(bm25)})
        r = {x["dim"]: x["ndcg@10"] for x in rows[-5:]}
        print(f"{name:26s} q={len(qids):5d} d={len(ds.corpus):6d}  colbert 128/96/64 "
              f"{r[128]:.4f}/{r[96]:.4f}/{r[64]:.4f}  e5 {r['dense']:.4f}  bm25 {r['bm25']:.4f}  "
              f"(encode {enc_s:.0f}s, total {time.perf_counter() - t0:.0f}s)", flush=True)

    print(f"\nnDCG@10 per family (mean over sets), ColBERT exact MaxSim vs e5 dense vs BM25; "
          f"{time.perf_counter() - t0:.0f}s")
    print(f"{'family':16s} {'sets':>4s} {'128':>7s} {'96':>7s} {'64':>7s} {'64/128':>7s} {'e5':>7s} {'bm25':>7s} "
          f"{'beats bm25 (128)':>17s}")
    families = list(dict.fromkeys(r["family"] for r in rows))
    summary = []
    for fam in families:
        sets = list(dict.fromkeys(r["dataset"] for r in rows if r["family"] == fam))

        def mean(key, metric="ndcg@10"):
            return statistics.mean(r[metric] for r in rows if r["family"] == fam and r["dim"] == key)

        m = {k: mean(k) for k in (*DIMS, "dense", "bm25")}
        wins = sum(1 for s in sets
                   if next(r["ndcg@10"] for r in rows if r["dataset"] == s and r["dim"] == 128)
                   > next(r["ndcg@10"] for r in rows if r["dataset"] == s and r["dim"] == "bm25"))
        print(f"{fam:16s} {len(sets):4d} {m[128]:7.4f} {m[96]:7.4f} {m[64]:7.4f} {m[64] / m[128]:7.3f} "
              f"{m['dense']:7.4f} {m['bm25']:7.4f} {wins:>11d}/{len(sets)}")
        for k in (*DIMS, "dense", "bm25"):
            summary.append({"dataset": fam, "method": "exact" if k in DIMS else k.replace("dense", "e5 dense"),
                            "dim": k, "ndcg@10": m[k],
                            "bytes_per_doc": statistics.mean(r["bytes_per_doc"] for r in rows
                                                             if r["family"] == fam and r["dim"] == k)})
    losses = [(r["dataset"], r["ndcg@10"], b["ndcg@10"]) for r in rows if r["dim"] == 128
              for b in rows if b["dataset"] == r["dataset"] and b["dim"] == "bm25" and b["ndcg@10"] >= r["ndcg@10"]]
    print(f"\nsets where BM25 ≥ ColBERT-128: {len(losses)}"
          + "".join(f"\n  {n}: colbert {c:.4f} bm25 {b:.4f}" for n, c, b in losses))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    if args.plot:
        plot_quality_vs_storage([s for s in summary if s["method"] != "e5 dense"], args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
