"""How many centroids: polylate's sample-sized count vs ColBERTv2's collection-sized count.

ColBERTv2 sizes k-means to the whole collection, 2^floor(log2(16·√N)) centroids for N token
vectors, trained on a sample of 16·√(120·documents) documents. polylate applies the same rule
to its k-means sample, which is capped at 2^18 tokens, so its count stops at 8,192 once a
collection passes ~1M tokens, where ColBERTv2's keeps doubling. This run builds the index
three ways on the same cached vectors (index_vs_colbert.py's Tatoeba + LAReQA sentences,
encoded with the bundled model) and reports, side by side, build time, bytes per token,
search latency and recall@10 against exact MaxSim at both presets:

- polylate's defaults;
- ColBERTv2's collection-sized count, trained on polylate's capped sample;
- ColBERTv2's count and its sample size.

    python benchmarks/centroid_count.py [--docs 120000] [--queries 200] [--threads 1]
        [--sample-tokens 262144]

Encoding 120k sentences takes hours on two cores; ``--docs 20000 --sample-tokens 65536``
reproduces the situation at a smaller size (a cap below the collection, so polylate's count
is half ColBERTv2's) from a cache that takes minutes.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import index_vs_colbert as shared  # noqa: E402  (its cache, ground truth and measures)

from polylate.index.codec import default_num_centroids  # noqa: E402
from polylate.index.plaid import PlaidIndex, SearchSettings  # noqa: E402



def colbert_sample_tokens(doclens: np.ndarray) -> int:
    """Tokens in ColBERTv2's k-means sample: 16·√(120·documents) documents of average length."""
    docs = min(1 + int(16 * math.sqrt(120 * len(doclens))), len(doclens))
    return int(docs * doclens.mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=120_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--sample-tokens", type=int, default=1 << 18,
                    help="polylate's k-means sample cap (PlaidIndex.build's sample_tokens; default its default)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads for build and search (1 gives the steadiest ratios on a shared machine)")
    args = ap.parse_args()
    import numba

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))

    folder = shared.embeddings(args.docs, args.queries)
    docs, queries = shared.unpack(folder)
    doc_texts, query_texts = shared.texts(len(docs), len(queries))
    relevant = shared.translations(doc_texts, query_texts)
    truth = shared.exact_truth(folder, docs, queries)
    top_ids = [ids[: args.k] for ids in truth["ids"]]
    doclens = np.array([len(d) for d in docs])
    n_tokens = int(doclens.sum())
    collection_k = default_num_centroids(n_tokens)
    colbert_sample = colbert_sample_tokens(doclens)

    cap = args.sample_tokens
    configs = [("polylate rule, capped sample", None, cap),
               ("collection K, capped sample", collection_k, cap),
               ("collection K, ColBERT sample", collection_k, colbert_sample)]
    presets = [("fast", None), ("thorough", SearchSettings.for_k(args.k, thorough=True))]
    rows = []
    for name, k, sample in configs:
        root = folder / "centroid-count"
        shutil.rmtree(root, ignore_errors=True)
        start = time.perf_counter()
        idx = PlaidIndex.build(root, [str(i) for i in range(len(docs))], docs, nbits=2,
                               num_centroids=k, sample_tokens=sample)
        build = time.perf_counter() - start
        stats = idx.stats()
        row = {"name": name, "K": idx.codec.num_centroids, "sample": idx.manifest["sample_tokens"],
               "build": build, "bytes": stats["bytes_on_disk"] / stats["tokens"]}
        for label, settings in presets:
            r = shared.polylate_search(idx, queries, args.k, settings)
            row[label] = (statistics.median(r["latencies_ms"]), shared.recall(r["results"], top_ids, args.k),
                          shared.success(r["results"], relevant, args.k))
        rows.append(row)
        del idx
    shutil.rmtree(folder / "centroid-count", ignore_errors=True)

    print(f"\n{len(docs)} documents, {n_tokens} token vectors, {len(queries)} queries, k={args.k}, "
          f"nbits=2, {args.threads} thread(s); exact MaxSim p50 {statistics.median(truth['latencies_ms']):.1f} ms "
          f"(from the run that cached it)")
    print(f"{'configuration':<31}{'K':>7}{'sample':>9}{'build s':>9}{'bytes/tok':>10}"
          f"{'fast ms':>9}{'recall':>8}{'transl':>8}{'thor. ms':>10}{'recall':>8}{'transl':>8}")
    for r in rows:
        print(f"{r['name']:<31}{r['K']:>7}{r['sample']:>9}{r['build']:>9.1f}{r['bytes']:>10.1f}"
              f"{r['fast'][0]:>9.2f}{r['fast'][1]:>8.4f}{r['fast'][2]:>8.4f}"
              f"{r['thorough'][0]:>10.2f}{r['thorough'][1]:>8.4f}{r['thorough'][2]:>8.4f}")
    base = rows[0]
    for r in rows[1:]:
        print(f"{r['name']} / default: build {r['build'] / base['build']:.2f}x, "
              f"fast p50 {r['fast'][0] / base['fast'][0]:.2f}x, thorough p50 {r['thorough'][0] / base['thorough'][0]:.2f}x, "
              f"bytes/token {r['bytes'] / base['bytes']:.3f}x")


if __name__ == "__main__":
    main()
