"""Qdrant backend vs polylate's own engines, same vectors, same queries, one run.

Corpus and queries as in ``index_vs_colbert.py`` (multilingual Tatoeba + LAReQA sentences,
bundled model, cached encodings), smaller by default. Ground truth: exact MaxSim. Rows:

- exact MaxSim (polylate ExactIndex, torch) — the reference;
- Qdrant, MaxSim over every point (``search()``): must equal the reference;
- Qdrant, ``prefetch=N``: N candidates by the pooled (mean token) vector, re-ranked by MaxSim
  in Qdrant — what scales on a cluster; its recall is the price of the pooled first stage;
- polylate PLAID (defaults and thorough) on one machine, for comparison.

Qdrant runs in its embedded local mode here (no server can be started on these machines):
its latencies are numpy in-process, not a server's, and its prefetch is exact kNN on the
pooled vectors (a server uses HNSW, which can only lose a little more). The quality columns
are what carry over to a cluster.

    python benchmarks/qdrant_backend.py [--docs 20000] [--queries 200] [--prefetch 100 300 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_vs_colbert import embeddings, exact_truth, recall, success, texts, translations, unpack  # noqa: E402

from polylate.backends.qdrant import QdrantIndex, connect  # noqa: E402
from polylate.index.plaid import PlaidIndex, SearchSettings  # noqa: E402


def timed(search, queries, k):
    for q in queries[:3]:
        search(q, k)
    lat, results = [], []
    for q in queries:
        t = time.perf_counter()
        hits = search(q, k)
        lat.append(1000 * (time.perf_counter() - t))
        results.append([int(h.id) for h in hits])
    return lat, results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--prefetch", type=int, nargs="*", default=[100, 300, 1000])
    args = ap.parse_args()

    folder = embeddings(args.docs, args.queries)
    docs, queries = unpack(folder)
    truth = exact_truth(folder, docs, queries)
    relevant = translations(*texts(args.docs, args.queries))
    ids = [str(i) for i in range(len(docs))]
    tokens = sum(len(d) for d in docs)
    print(f"{len(docs)} documents, {tokens} token vectors ({tokens / len(docs):.1f}/doc), "
          f"{len(queries)} queries, k={args.k}")

    rows = [("exact MaxSim (polylate, torch)", truth["latencies_ms"], [t[: args.k] for t in truth["ids"]], "")]
    with tempfile.TemporaryDirectory(prefix="polylate-qdrant-") as tmp:
        client = connect(path=str(Path(tmp) / "qdrant"))
        index = QdrantIndex.create(client, "bench", docs[0].shape[1])
        start = time.perf_counter()
        index.add(ids, docs, batch_size=256)
        upload = time.perf_counter() - start
        print(f"Qdrant (local mode) upload: {upload:.1f}s")
        lat, res = timed(index.search, queries, args.k)
        rows.append(("Qdrant MaxSim, every point", lat, res, f"upload {upload:.0f}s"))
        for n in args.prefetch:
            lat, res = timed(lambda q, k, n=n: index.search(q, k, prefetch=n), queries, args.k)
            rows.append((f"Qdrant prefetch {n} pooled → MaxSim", lat, res, ""))
        client.close()

        start = time.perf_counter()
        plaid = PlaidIndex.build(Path(tmp) / "plaid", ids, docs, nbits=2)
        build = time.perf_counter() - start
        lat, res = timed(plaid.search, queries, args.k)
        rows.append(("polylate PLAID 2-bit (defaults)", lat, res, f"build {build:.0f}s"))
        thorough = SearchSettings.for_k(args.k, thorough=True)
        lat, res = timed(lambda q, k: plaid.search(q, k, settings=thorough), queries, args.k)
        rows.append(("polylate PLAID 2-bit (thorough)", lat, res, ""))

    print()
    print("| engine | recall@10 vs exact | transl@10 | p50 ms | p95 ms | note |")
    print("|---|---:|---:|---:|---:|---|")
    for name, lat, res, note in rows:
        p95 = statistics.quantiles(lat, n=20)[-1]
        print(f"| {name} | {recall(res, truth['ids'], args.k):.3f} | {success(res, relevant, args.k):.3f} | "
              f"{statistics.median(lat):.2f} | {p95:.2f} | {note} |")


if __name__ == "__main__":
    main()
