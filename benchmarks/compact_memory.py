"""Peak memory of merging an index's segments (``compact``), against the size of what it merges.

A compact rewrites every live token's code, residual and (``keep_vectors``) float16 original
into one segment. Memory is what decides whether a large index can be compacted at all, so
this reports the peak of the Python heap (tracemalloc: numpy's buffers included; pages of
the memory-mapped segments are not, being the kernel's reclaimable cache) during
``compact()`` beside the bytes of the segments merged, and the merge's own peak (before the
commit re-reads the new segment's ids into the index's id → document map, which an open index
holds anyway).

Vectors are random unit vectors: memory does not depend on what they mean. ``--text-bytes N``
stores a text of N bytes with each document (SciFact's average is ~1,500).

    python benchmarks/compact_memory.py [--tokens 1000000] [--segments 4] [--keep-vectors] [--text-bytes 1500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from polylate.index.plaid import PlaidIndex


def _docs(rng, n_docs: int, doclen: int, dim: int = 128) -> list[np.ndarray]:
    v = rng.standard_normal((n_docs * doclen, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return list(v.reshape(n_docs, doclen, dim))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--doclen", type=int, default=30)
    ap.add_argument("--keep-vectors", action="store_true")
    ap.add_argument("--text-bytes", type=int, default=0, help="a stored text of this many bytes per document")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    per_segment = args.tokens // args.segments // args.doclen
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        for s in range(args.segments):
            ids = [f"{s}-{i}" for i in range(per_segment)]
            docs = _docs(rng, per_segment, args.doclen)
            texts = [(f"{i} " * args.text_bytes)[:args.text_bytes] for i in ids] if args.text_bytes else None
            if s == 0:
                idx = PlaidIndex.build(root, ids, docs, keep_vectors=args.keep_vectors, num_centroids=1024,
                                       texts=texts)
            else:
                idx.add(ids, docs, texts=texts)
            del docs
        idx.delete([f"0-{i}" for i in range(0, per_segment, 10)])  # a tenth of one segment: dropped by the merge
        idx = PlaidIndex.open(root)
        stats = idx.stats()
        merged_bytes = stats["bytes_on_disk"]
        merge = {}
        commit = idx._commit

        def measured_commit(manifest):  # the merge's own peak, before the commit re-reads the ids
            merge["peak"] = tracemalloc.get_traced_memory()[1]
            commit(manifest)

        idx._commit = measured_commit
        tracemalloc.start()
        start = time.perf_counter()
        idx.compact()
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        reopened = PlaidIndex.open(root)
        after = reopened.stats()
        tracemalloc.start()  # a search showing its hits' texts: the first read of a segment's texts
        reopened.documents(reopened.ids[:10])
        _, shown_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"{stats['segments']} segments, {stats['tokens']} live tokens, keep_vectors={args.keep_vectors}, "
          f"{args.text_bytes} text bytes per document")
    print(f"{'index bytes':>14}{'compact peak heap':>19}{'peak / index':>14}{'merge alone':>13}{'seconds':>9}"
          f"{'segments after':>16}")
    print(f"{merged_bytes:>14,}{peak:>19,}{peak / merged_bytes:>14.2f}{merge['peak']:>13,}{seconds:>9.1f}"
          f"{after['segments']:>16}")
    if args.text_bytes:
        print(f"peak heap of the first documents() of 10 hits, after: {shown_peak:,}")


if __name__ == "__main__":
    main()
