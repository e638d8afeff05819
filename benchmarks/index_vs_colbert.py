"""PLAID index benchmark on real-text embeddings: polylate vs colbert-ai, same vectors.

Documents: 120k+ multilingual sentences from ../shared/data (Tatoeba, both sides of all
112 pairs, plus LAReQA answer sentences), encoded once with the bundled default model and
cached. Queries: held-out Tatoeba sentences. Ground truth: exact MaxSim over the original
vectors. Both engines index the same float16 token vectors at nbits=2 and answer the same
queries one at a time; we report build time, p50/p95 latency, recall@10 vs exact and
bytes per token, and the polylate/colbert-ai ratios.

    python benchmarks/index_vs_colbert.py [--docs 120000] [--queries 300]

colbert-ai runs in its own venv (benchmarks/peers/setup_colbert_venv.sh); without it the
table has polylate's rows only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from polylate import load_model
from polylate.index.exact import ExactIndex
from polylate.index.plaid import PlaidIndex, SearchSettings

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
CACHE = REPO / "benchmarks" / ".cache"
PEER_PY = REPO / ".venv-colbert" / "bin" / "python"
PEER = REPO / "benchmarks" / "peers" / "colbert_plaid.py"


def _jsonl(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def texts(n_docs: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    sentences: dict[str, None] = {}
    queries: list[str] = []
    for pair in sorted((DATA / "tatoeba").glob("*-eng")):
        for f in sorted(pair.glob("corpus.jsonl*")) + sorted(pair.glob("queries.jsonl*")):
            for row in _jsonl(f):
                sentences[row["text"]] = None
    for f in sorted((DATA / "lareqa_xquad_r").glob("*/corpus.jsonl*")):
        for row in _jsonl(f):
            sentences[row["text"]] = None
    pool = list(sentences)
    if len(pool) < n_docs + n_queries:
        raise SystemExit(f"only {len(pool)} sentences under {DATA}")
    order = np.random.default_rng(seed).permutation(len(pool))
    queries = [pool[i] for i in order[:n_queries]]
    docs = [pool[i] for i in order[n_queries : n_queries + n_docs]]
    return docs, queries


def embeddings(n_docs: int, n_queries: int) -> Path:
    """Encode once; cache packed float16 doc vectors and float32 query vectors."""
    model = load_model()
    tag = hashlib.sha1(model.heads[str(model.max_dim)].weight.detach().numpy().tobytes()).hexdigest()[:8]
    folder = CACHE / f"tatoeba-lareqa-{n_docs}-{n_queries}-head-{tag}"
    if (folder / "docs.npz").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    docs, queries = texts(n_docs, n_queries)
    start = time.perf_counter()
    dvec = model.encode(docs, batch_size=64, show_progress=True, dtype=np.float16)
    print(f"encoded {len(docs)} documents in {time.perf_counter() - start:.0f}s")
    qvec = np.stack(model.encode(queries, is_query=True, batch_size=64))
    np.savez(folder / "docs.npz", vectors=np.concatenate(dvec), doclens=np.array([len(v) for v in dvec]))
    np.savez(folder / "queries.npz", vectors=qvec.astype(np.float32))
    return folder


def unpack(folder: Path):
    d = np.load(folder / "docs.npz")
    offsets = np.concatenate([[0], np.cumsum(d["doclens"])])
    vectors = d["vectors"]
    docs = [vectors[offsets[i] : offsets[i + 1]] for i in range(len(d["doclens"]))]
    return docs, np.load(folder / "queries.npz")["vectors"]


def recall(results: list[list[int]], truth: list[list[int]], k: int = 10) -> float:
    return float(np.mean([len(set(r[:k]) & set(t[:k])) / k for r, t in zip(results, truth)]))


def polylate_run(folder: Path, docs, queries, k: int, settings: SearchSettings | None, keep_vectors: bool):
    root = folder / ("polylate-kv" if keep_vectors else "polylate")
    shutil.rmtree(root, ignore_errors=True)
    ids = [str(i) for i in range(len(docs))]
    start = time.perf_counter()
    idx = PlaidIndex.build(root, ids, docs, nbits=2, keep_vectors=keep_vectors)
    build = time.perf_counter() - start
    for q in queries[:5]:
        idx.search(q, k=k, settings=settings)
    lat, results = [], []
    for q in queries:
        t = time.perf_counter()
        hits = idx.search(q, k=k, settings=settings)
        lat.append(1000 * (time.perf_counter() - t))
        results.append([int(h.id) for h in hits])
    stats = idx.stats()
    return {"build_seconds": build, "latencies_ms": lat, "results": results,
            "bytes_per_token": stats["bytes_on_disk"] / stats["tokens"], "centroids": stats["centroids"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=120_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--embeddings", type=Path, default=None,
                    help="reuse a cached embeddings folder (benchmarks/.cache/…) instead of encoding")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--rerun-peer", action="store_true", help="rebuild colbert-ai even if a result is cached")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    folder = args.embeddings or embeddings(args.docs, args.queries)
    docs, queries = unpack(folder)
    n_tokens = sum(len(d) for d in docs)
    truth_file = folder / f"exact-top{args.k}.json"
    if truth_file.exists():
        truth = json.loads(truth_file.read_text())
    else:
        exact = ExactIndex(docs[0].shape[1])
        exact.add([str(i) for i in range(len(docs))], docs)
        truth = [[int(h.id) for h in exact.search(q, k=args.k)] for q in queries]
        truth_file.write_text(json.dumps(truth))

    rows = {}
    out = folder / "colbert-ai.json"
    if PEER_PY.exists() and not args.skip_peer:
        cmd = [str(PEER_PY), str(PEER), "--docs", str(folder / "docs.npz"), "--queries",
               str(folder / "queries.npz"), "--index-dir", str(folder / "colbert-ai-index"),
               "--nbits", "2", "--k", str(args.k), "--threads", str(torch.get_num_threads())]
        if args.rerun_peer or not out.exists():
            subprocess.run(cmd + ["--out", str(out)], check=True)  # build + search
        else:  # keep the recorded build; time its search again, now, beside ours
            fresh = folder / "colbert-ai-search.json"
            subprocess.run(cmd + ["--out", str(fresh), "--reuse-index"], check=True)
            built = json.loads(out.read_text())
            out.write_text(json.dumps({**json.loads(fresh.read_text()), "build_seconds": built["build_seconds"]}))
        rows["colbert-ai PLAID"] = json.loads(out.read_text())
        rows["colbert-ai PLAID"]["bytes_per_token"] = rows["colbert-ai PLAID"]["index_bytes"] / n_tokens
    rows["polylate PLAID"] = polylate_run(folder, docs, queries, args.k, None, keep_vectors=False)
    rows["polylate PLAID + fp16 rerank"] = polylate_run(folder, docs, queries, args.k, None, keep_vectors=True)

    print(f"\n{len(docs)} documents, {n_tokens} token vectors (dim {docs[0].shape[1]}), "
          f"{len(queries)} queries, k={args.k}, nbits=2, {torch.get_num_threads()} threads")
    print(f"{'engine':<30}{'build s':>9}{'p50 ms':>9}{'p95 ms':>9}{'recall@10':>11}{'bytes/tok':>11}")
    for name, r in rows.items():
        lat = r["latencies_ms"]
        print(f"{name:<30}{r['build_seconds']:>9.1f}{statistics.median(lat):>9.2f}"
              f"{np.percentile(lat, 95):>9.2f}{recall(r['results'], truth, args.k):>11.4f}"
              f"{r['bytes_per_token']:>11.1f}")
    peer = rows.get("colbert-ai PLAID")
    if peer:
        ours = rows["polylate PLAID"]
        print(f"\npolylate / colbert-ai: build {ours['build_seconds'] / peer['build_seconds']:.2f}x, "
              f"p50 latency {statistics.median(ours['latencies_ms']) / statistics.median(peer['latencies_ms']):.2f}x, "
              f"p95 latency {np.percentile(ours['latencies_ms'], 95) / np.percentile(peer['latencies_ms'], 95):.2f}x")


if __name__ == "__main__":
    main()
