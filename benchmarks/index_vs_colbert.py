"""PLAID index benchmark on real-text embeddings: polylate vs colbert-ai, same vectors.

Documents: 120k+ multilingual sentences from ../shared/data (Tatoeba, both sides of all
112 pairs, plus LAReQA answer sentences), encoded once with the bundled default model and
cached. Queries: held-out sentences of the same pool. Ground truth: exact MaxSim over the
original vectors. Both engines index the same float16 token vectors at nbits=2 and answer the
same queries one at a time; we report build time, p50/p95 latency, bytes per token, the
polylate/colbert-ai ratios, and three quality columns:

- recall@10: overlap with the exact top 10 (the strict measure);
- 1%-ties: the same, counting a hit whose exact score is within 1% of the exact 10th score
  (ann-benchmarks' ε-recall) — this corpus holds each sentence in up to dozens of languages,
  so a query's exact top 10 is a set of near-equal translations (the run prints how flat);
- transl@10: share of queries with a translation in the corpus that find one in the top 10
  (labelled quality; exact MaxSim's own value is the ceiling).

    python benchmarks/index_vs_colbert.py [--docs 120000] [--queries 300]
        [--embeddings benchmarks/.cache/<folder>] [--settings 4,0.4,4096 ...] [--threads N]

Rows: each engine at its defaults; polylate at colbert-ai's settings (k=10: 1,0.5,256; the same
work, for a like-for-like latency ratio); colbert-ai at its widest search (16 cells, no
pruning, ndocs 16384: its recall ceiling); polylate's ``thorough`` preset with and without the
kept float16 originals (with them, stage 4 scores the candidates exactly, at 6-7x the bytes).

colbert-ai runs in its own venv (benchmarks/peers/setup_colbert_venv.sh); without it the
table has polylate's rows only. It is built in the same run as polylate (``--fast-assign``:
its nearest-centroid step without torch 2.x's CPU slowdown, the same index; see
peers/README.md). The exact row's latency comes from the run that cached the ground truth.
``--threads 1`` gives the steadiest ratios on a shared machine.
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


def _translation_groups() -> dict[str, int]:
    """Text → group id, where a group is a sentence and its translations (Tatoeba pairs are
    aligned by qrels, LAReQA sentences by their id across languages)."""
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        while parent.setdefault(t, t) != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    for pair in sorted((DATA / "tatoeba").glob("*-eng")):
        by_id = {}
        for f in sorted(pair.glob("corpus.jsonl*")) + sorted(pair.glob("queries.jsonl*")):
            by_id.update((row["_id"], row["text"]) for row in _jsonl(f))
        for line in (pair / "qrels" / "test.tsv").read_text().splitlines()[1:]:
            q, d, _ = line.split("\t")
            union(by_id[q], by_id[d])
    first: dict[str, str] = {}
    for f in sorted((DATA / "lareqa_xquad_r").glob("*/corpus.jsonl*")):
        if f.parent.name == "pooled":
            continue
        for row in _jsonl(f):
            union(row["text"], first.setdefault(row["_id"], row["text"]))
    roots: dict[str, int] = {}
    return {t: roots.setdefault(find(t), len(roots)) for t in parent}


def texts(n_docs: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    sentences: dict[str, None] = {}
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


def translations(docs: list[str], queries: list[str]) -> list[set[int]]:
    """For each query, the documents that translate it: labelled relevance for a quality check
    that, unlike overlap with the exact top 10, does not hinge on near-ties."""
    group = _translation_groups()
    members: dict[int, set[int]] = {}
    for i, t in enumerate(docs):
        if t in group:
            members.setdefault(group[t], set()).add(i)
    return [members.get(group.get(q, -1), set()) for q in queries]


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
    qvec = model.encode(queries, is_query=True, batch_size=64)
    lengths = np.array([len(q) for q in qvec])
    padded = np.zeros((len(qvec), lengths.max(), qvec[0].shape[1]), dtype=np.float32)
    for i, q in enumerate(qvec):
        padded[i, : len(q)] = q
    np.savez(folder / "docs.npz", vectors=np.concatenate(dvec), doclens=np.array([len(v) for v in dvec]))
    np.savez(folder / "queries.npz", vectors=padded, lengths=lengths)
    return folder


def unpack(folder: Path):
    d = np.load(folder / "docs.npz")
    offsets = np.concatenate([[0], np.cumsum(d["doclens"])])
    vectors = d["vectors"]
    docs = [vectors[offsets[i] : offsets[i + 1]] for i in range(len(d["doclens"]))]
    q = np.load(folder / "queries.npz")
    lengths = q["lengths"] if "lengths" in q.files else [q["vectors"].shape[1]] * len(q["vectors"])
    return docs, [v[:n] for v, n in zip(q["vectors"], lengths)]


def recall(results: list[list[int]], truth: list[list[int]], k: int = 10) -> float:
    return float(np.mean([len(set(r[:k]) & set(t[:k])) / k for r, t in zip(results, truth)]))


def tie_recall(results, docs, queries, kth_scores, k: int = 10, tolerance: float = 0.01) -> float:
    """Recall@k that counts a returned document as right when its exact score is within
    ``tolerance`` (relative) of the exact k-th score (ann-benchmarks' ε-recall): on corpora
    where dozens of documents sit within 1% of the k-th score, strict overlap measures
    which near-tie won."""
    hits = []
    for r, q, s in zip(results, queries, kth_scores):
        exact = [float((docs[i].astype(np.float32) @ q.T).max(0).sum()) for i in r[:k]]
        hits.append(sum(e >= s - tolerance * abs(s) for e in exact) / k)
    return float(np.mean(hits))


def success(results, relevant, k: int = 10) -> float:
    """Share of queries (with a translation in the corpus) that find one in their top k."""
    pairs = [(r, rel) for r, rel in zip(results, relevant) if rel]
    return float(np.mean([bool(set(r[:k]) & rel) for r, rel in pairs]))


def polylate_build(folder: Path, docs, keep_vectors: bool):
    root = folder / ("polylate-kv" if keep_vectors else "polylate")
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    idx = PlaidIndex.build(root, [str(i) for i in range(len(docs))], docs, nbits=2, keep_vectors=keep_vectors)
    stats = idx.stats()
    return idx, {"build_seconds": time.perf_counter() - start,
                 "bytes_per_token": stats["bytes_on_disk"] / stats["tokens"]}


def polylate_search(idx: PlaidIndex, queries, k: int, settings: SearchSettings | None):
    for q in queries[:5]:
        idx.search(q, k=k, settings=settings)
    lat, results = [], []
    for q in queries:
        t = time.perf_counter()
        hits = idx.search(q, k=k, settings=settings)
        lat.append(1000 * (time.perf_counter() - t))
        results.append([int(h.id) for h in hits])
    return {"latencies_ms": lat, "results": results}


def exact_truth(folder: Path, docs, queries, depth: int = 50) -> dict:
    """Exact MaxSim top-``depth`` ids and scores per query (cached), timed as a baseline."""
    path = folder / f"exact-top{depth}.json"
    if path.exists():
        return json.loads(path.read_text())
    exact = ExactIndex(docs[0].shape[1])
    exact.add([str(i) for i in range(len(docs))], docs)
    truth = {"ids": [], "scores": [], "latencies_ms": []}
    for q in queries:
        t = time.perf_counter()
        hits = exact.search(q, k=depth)
        truth["latencies_ms"].append(1000 * (time.perf_counter() - t))
        truth["ids"].append([int(h.id) for h in hits])
        truth["scores"].append([h.score for h in hits])
    path.write_text(json.dumps(truth))
    return truth


def peer_defaults(k: int) -> SearchSettings:
    """colbert-ai's own settings for k (its Searcher's defaults: ncells, threshold, ndocs):
    polylate doing the peer's amount of work, for a like-for-like latency ratio."""
    if k <= 10:
        return SearchSettings(1, 0.5, 256)
    if k <= 100:
        return SearchSettings(2, 0.45, 1024)
    return SearchSettings(4, 0.4, max(k * 4, 4096))


def _settings(text: str) -> SearchSettings:
    ncells, threshold, ndocs = text.split(",")
    return SearchSettings(int(ncells), float(threshold), int(ndocs))


def _label(s: SearchSettings) -> str:
    return f"{s.ncells},{s.centroid_score_threshold},{s.ndocs}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=120_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--embeddings", type=Path, default=None,
                    help="reuse a cached embeddings folder (benchmarks/.cache/…) instead of encoding")
    ap.add_argument("--settings", type=_settings, nargs="*", default=[],
                    help="extra polylate rows at ncells,threshold,ndocs (e.g. 4,0.4,4096)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both engines and the exact baseline (default: all cores); on a "
                         "shared machine 1 gives the steadiest ratios")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--reuse-peer-build", action="store_true",
                    help="take colbert-ai's build time from an earlier run (its searches are timed anew); "
                         "by default it is rebuilt beside polylate's build")
    ap.add_argument("--peer-stock-assign", action="store_true",
                    help="build colbert-ai with its stock nearest-centroid step (5-6x slower on CPU under "
                         "torch 2.x, same index; peers/README.md) instead of --fast-assign")
    args = ap.parse_args()
    import numba

    threads = args.threads or torch.get_num_threads()  # the same count for both engines
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))

    folder = args.embeddings or embeddings(args.docs, args.queries)
    docs, queries = unpack(folder)
    doc_texts, query_texts = texts(len(docs), len(queries))
    relevant = translations(doc_texts, query_texts)
    n_tokens = sum(len(d) for d in docs)
    truth = exact_truth(folder, docs, queries)
    top_ids = [ids[: args.k] for ids in truth["ids"]]
    kth = [s[args.k - 1] for s in truth["scores"]]

    rows = {"exact MaxSim (fp16 originals)": {"build_seconds": float("nan"), "bytes_per_token": 2.0 * docs[0].shape[1],
                                              "latencies_ms": truth["latencies_ms"], "results": top_ids}}
    out = folder / "colbert-ai.json"
    if not PEER_PY.exists() and not args.skip_peer:
        print(f"note: no colbert-ai at {PEER_PY} (benchmarks/peers/setup_colbert_venv.sh makes it): "
              "polylate's rows only, no ratios")
    if PEER_PY.exists() and not args.skip_peer:
        cmd = [str(PEER_PY), str(PEER), "--docs", str(folder / "docs.npz"), "--queries",
               str(folder / "queries.npz"), "--index-dir", str(folder / "colbert-ai-index"),
               "--nbits", "2", "--k", str(args.k), "--threads", str(torch.get_num_threads())]
        if not args.reuse_peer_build or not out.exists():  # build + search, now, beside ours
            subprocess.run(cmd + ["--out", str(out)] + ([] if args.peer_stock_assign else ["--fast-assign"]),
                           check=True)
        else:  # keep the recorded build; time its search again, now, beside ours
            fresh = folder / "colbert-ai-search.json"
            subprocess.run(cmd + ["--out", str(fresh), "--reuse-index"], check=True)
            built = json.loads(out.read_text())
            out.write_text(json.dumps({**json.loads(fresh.read_text()), "build_seconds": built["build_seconds"]}))
        rows["colbert-ai PLAID"] = json.loads(out.read_text())
        # its widest search (every probe, no pruning, PLAID's largest ndocs): colbert-ai's recall ceiling
        wide = folder / "colbert-ai-widest.json"
        subprocess.run(cmd + ["--out", str(wide), "--reuse-index", "--ncells", "16",
                              "--centroid-score-threshold", "0", "--ndocs", "16384"], check=True)
        rows["colbert-ai PLAID 16,0,16384"] = {**json.loads(wide.read_text()),
                                               "build_seconds": rows["colbert-ai PLAID"]["build_seconds"]}
        for name in ("colbert-ai PLAID", "colbert-ai PLAID 16,0,16384"):
            rows[name]["bytes_per_token"] = rows[name]["index_bytes"] / n_tokens
    thorough = SearchSettings.for_k(args.k, thorough=True)
    for keep_vectors in (False, True):
        idx, built = polylate_build(folder, docs, keep_vectors)
        name = "polylate PLAID" + (" + fp16 rerank" if keep_vectors else "")
        for settings in [None, thorough, peer_defaults(args.k), *args.settings]:
            label = name if settings is None else (f"{name} thorough" if settings is thorough else f"{name} {_label(settings)}")
            rows[label] = {**built, **polylate_search(idx, queries, args.k, settings)}

    gaps = [(s[args.k - 1] - s[args.k]) / abs(s[args.k - 1]) for s in truth["scores"]]
    near = [sum(x >= s[args.k - 1] * 0.99 for x in s) for s in truth["scores"]]
    print(f"\n{len(docs)} documents, {n_tokens} token vectors (dim {docs[0].shape[1]}), "
          f"{len(queries)} queries, k={args.k}, nbits=2, {torch.get_num_threads()} threads")
    print(f"exact scores: median gap between ranks {args.k} and {args.k + 1} {100 * statistics.median(gaps):.3f}%, "
          f"median {statistics.median(near):.0f} documents within 1% of the {args.k}th score; "
          f"{sum(map(bool, relevant))} queries have a translation in the corpus")
    head = (f"{'engine':<40}{'build s':>9}{'p50 ms':>9}{'p95 ms':>9}{'recall@10':>11}"
            f"{'1%-ties':>9}{'transl@10':>11}{'bytes/tok':>11}")
    print(head)
    for name, r in rows.items():
        lat = r["latencies_ms"]
        print(f"{name:<40}{r['build_seconds']:>9.1f}{statistics.median(lat):>9.2f}"
              f"{np.percentile(lat, 95):>9.2f}{recall(r['results'], top_ids, args.k):>11.4f}"
              f"{tie_recall(r['results'], docs, queries, kth, args.k):>9.4f}"
              f"{success(r['results'], relevant, args.k):>11.4f}{r['bytes_per_token']:>11.1f}")
    pairs = [("polylate PLAID", "colbert-ai PLAID", "each at its defaults"),
             (f"polylate PLAID {_label(peer_defaults(args.k))}", "colbert-ai PLAID", "both at colbert-ai's settings"),
             ("polylate PLAID thorough", "colbert-ai PLAID 16,0,16384", "widest / thorough, same storage"),
             ("polylate PLAID + fp16 rerank thorough", "colbert-ai PLAID 16,0,16384",
              "widest / thorough, polylate keeping fp16 originals: 6-7x the bytes/token")]
    for ours_name, peer_name, what in pairs:
        ours, peer = rows.get(ours_name), rows.get(peer_name)
        if ours and peer:
            print(f"polylate / colbert-ai ({what}): build {ours['build_seconds'] / peer['build_seconds']:.2f}x, "
                  f"p50 {statistics.median(ours['latencies_ms']) / statistics.median(peer['latencies_ms']):.2f}x, "
                  f"p95 {np.percentile(ours['latencies_ms'], 95) / np.percentile(peer['latencies_ms'], 95):.2f}x, "
                  f"recall@10 {recall(ours['results'], top_ids, args.k):.4f} vs {recall(peer['results'], top_ids, args.k):.4f}")

if __name__ == "__main__":
    main()
