"""Search cost of an index in many segments vs the same documents in one.

Adds leave up to ``PlaidIndex.MAX_SEGMENTS`` segments before a merge, and a large build in
parts leaves one per part; search should neither slow down nor answer differently because of
it. The collection (real-text embeddings, index_vs_colbert.py's cache) is built in
``--parts`` parts; a copy is then compacted into one segment, which keeps the codec and the
codes, so the two indexes differ in segmentation only. Queries alternate between them (the
machine's noise hits both alike); the table gives latency, the ratio and recall@10 against
exact MaxSim.

    python benchmarks/segmented_search.py [--docs 20000] [--queries 200] [--parts 4 16]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time


from index_vs_colbert import CACHE, embeddings, exact_truth, recall, unpack
from polylate.index.plaid import PlaidIndex, SearchSettings


def build(root, docs, parts: int, keep_vectors: bool) -> PlaidIndex:
    ids = [str(i) for i in range(len(docs))]
    size = -(-len(docs) // parts)
    shutil.rmtree(root, ignore_errors=True)
    rest = [(ids[s : s + size], docs[s : s + size], None) for s in range(size, len(docs), size)]
    return PlaidIndex.build(root, ids[:size], docs[:size], nbits=2, keep_vectors=keep_vectors, more=rest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--parts", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    folder = embeddings(args.docs, args.queries)
    docs, queries = unpack(folder)
    truth = exact_truth(folder, docs, queries)["ids"]
    print(f"{len(docs)} documents, {sum(len(d) for d in docs)} token vectors, {len(queries)} queries, "
          f"k={args.k}, nbits=2")
    print(f"{'index':<28}{'mode':<10}{'segments':>9}{'p50 ms':>9}{'mean ms':>9}{'ratio':>7}{'recall@10':>11}")
    for keep_vectors in (False, True):
        for parts in args.parts:
            root = CACHE / "segmented"
            many = build(root / f"parts-{parts}", docs, parts, keep_vectors)
            shutil.rmtree(root / "one", ignore_errors=True)
            shutil.copytree(root / f"parts-{parts}", root / "one")
            one = PlaidIndex.open(root / "one")
            one.compact()  # same codec and codes, one segment
            for thorough in (False, True):
                settings = SearchSettings.for_k(args.k, thorough)
                lat = {"one": [], "many": []}
                found = {"one": [], "many": []}
                for q in queries[:5]:
                    one.search(q, args.k, settings=settings), many.search(q, args.k, settings=settings)
                for q in queries:
                    for name, idx in (("one", one), ("many", many)):
                        t = time.perf_counter()
                        hits = idx.search(q, args.k, settings=settings)
                        lat[name].append(1000 * (time.perf_counter() - t))
                        found[name].append([int(h.id) for h in hits])
                label = f"{parts} parts{' + fp16 kept' if keep_vectors else ''}"
                p50 = {n: statistics.median(v) for n, v in lat.items()}
                for name, idx in (("one", one), ("many", many)):
                    print(f"{label:<28}{'thorough' if thorough else 'fast':<10}{idx.stats()['segments']:>9}"
                          f"{p50[name]:>9.2f}{statistics.fmean(lat[name]):>9.2f}"
                          f"{p50[name] / p50['one']:>7.2f}{recall(found[name], truth, args.k):>11.4f}")
    shutil.rmtree(CACHE / "segmented", ignore_errors=True)


if __name__ == "__main__":
    main()
