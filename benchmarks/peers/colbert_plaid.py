#!/usr/bin/env python
"""Run Stanford colbert-ai's PLAID engine on *precomputed* token embeddings.

This is a peer harness: it builds a genuine colbert-ai index (its own faiss k-means
centroids, its residual codec at ``--nbits``, its centroid->passage IVF, its file
layout) from embeddings you give it, then searches it with colbert-ai's own
``Searcher.dense_search`` / ``IndexScorer.rank`` (the CPU PLAID pipeline: centroid
candidate generation, the ``filter_pids`` C++ pruning stages, ``decompress_residuals``
C++ decompression and ``segmented_maxsim`` scoring), one query at a time.

Only the *text encoder* is replaced: wherever colbert-ai would run its checkpoint over
passage text (``CollectionEncoder.encode_passages``), this harness hands back slices of
the given embeddings instead, and queries are given as tensors (what
``Searcher.search`` would pass to ``dense_search`` after encoding).

Run it with the interpreter of the venv made by ``setup_colbert_venv.sh``::

    .venv-colbert/bin/python benchmarks/peers/colbert_plaid.py \\
        --docs docs.npz --queries queries.npz --out result.json --index-dir /tmp/plaid-idx

Inputs
    docs.npz     ``vectors`` float16 [T, dim] (L2-normalised token vectors of all
                 documents, concatenated) and ``doclens`` int64 [N] (sum == T).
    queries.npz  ``vectors`` float32 [Q, Lq, dim]; optional ``lengths`` int [Q] (queries of
                 different lengths, zero-padded to Lq: each is searched with its own rows).

Output (JSON): build_seconds, index_bytes, num_embeddings, num_partitions, nbits,
latencies_ms, p50_ms, p95_ms, results (top-k doc indices per query; index = position
in ``doclens``), scores, colbert_ai_version, torch_version, threads, plus a few extra
descriptive fields (search settings actually used, load time, ...).  With ``--check``
it also computes exact brute-force MaxSim over the uncompressed embeddings and reports
``recall_at_k`` (|PLAID top-k ∩ exact top-k| / k, averaged over queries).

Threads: ``--threads`` or the env var ``COLBERT_PLAID_THREADS`` (else
``OMP_NUM_THREADS``, else all cores) -> ``torch.set_num_threads`` and faiss' OpenMP
threads; colbert-ai's C++ search kernels spawn ``torch.get_num_threads()`` pthreads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import time

# CPU only: hide any GPU before torch is imported (colbert-ai decides CPU vs GPU paths
# from torch.cuda.device_count() at import time).
os.environ["CUDA_VISIBLE_DEVICES"] = ""
# colbert-ai JIT-compiles its C++ kernels with torch.utils.cpp_extension, which needs
# the `ninja` executable installed into this venv's bin/ (not on PATH unless activated).
_bin = os.path.dirname(sys.executable)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402


def _threads_from_env(cli_value: int | None) -> int:
    if cli_value:
        return int(cli_value)
    for var in ("COLBERT_PLAID_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var)
        if v and v.strip().isdigit() and int(v) > 0:
            return int(v)
    return os.cpu_count() or 1


# --------------------------------------------------------------------------------------
# synthetic data (for self-tests; see README)
# --------------------------------------------------------------------------------------

def make_synthetic(docs_path, queries_path, num_docs, num_queries, dim=128, mean_doclen=30,
                   query_len=32, seed=0):
    """Clustered token vectors: a vocabulary of "word" directions, topics that prefer
    some words, documents drawn from a topic; queries are perturbed tokens of a target
    document (so each query has a known right answer)."""
    rng = np.random.default_rng(seed)
    vocab = max(4096, int(8 * np.sqrt(num_docs * mean_doclen)))
    num_topics = max(64, num_docs // 50)
    words_per_topic = 64

    W = rng.standard_normal((vocab, dim)).astype(np.float32)
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    topic_words = rng.integers(0, vocab, size=(num_topics, words_per_topic))
    zipf = 1.0 / np.arange(1, words_per_topic + 1)
    zipf /= zipf.sum()

    doclens = rng.integers(mean_doclen // 2, mean_doclen * 3 // 2 + 1, size=num_docs).astype(np.int64)
    T = int(doclens.sum())
    doc_topic = rng.integers(0, num_topics, size=num_docs)
    tok_topic = np.repeat(doc_topic, doclens)
    # 70% topic words (Zipf), 30% uniformly random words
    from_topic = rng.random(T) < 0.7
    word_rank = rng.choice(words_per_topic, size=T, p=zipf)
    words = np.where(from_topic, topic_words[tok_topic, word_rank], rng.integers(0, vocab, size=T))

    vectors = np.empty((T, dim), dtype=np.float16)
    step = 1 << 18
    for s in range(0, T, step):
        e = min(T, s + step)
        v = W[words[s:e]] + 0.35 * rng.standard_normal((e - s, dim)).astype(np.float32) / np.sqrt(dim)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        vectors[s:e] = v.astype(np.float16)

    offsets = np.concatenate([[0], np.cumsum(doclens)])
    targets = rng.choice(num_docs, size=num_queries, replace=False)
    Q = np.empty((num_queries, query_len, dim), dtype=np.float32)
    for qi, d in enumerate(targets):
        toks = vectors[offsets[d]:offsets[d + 1]].astype(np.float32)
        pick = rng.integers(0, toks.shape[0], size=query_len)
        q = toks[pick] + 0.6 * rng.standard_normal((query_len, dim)).astype(np.float32) / np.sqrt(dim)
        Q[qi] = q / np.linalg.norm(q, axis=1, keepdims=True)

    np.savez(docs_path, vectors=vectors, doclens=doclens)
    np.savez(queries_path, vectors=Q, targets=targets.astype(np.int64))
    return T


# --------------------------------------------------------------------------------------
# exact MaxSim (for --check)
# --------------------------------------------------------------------------------------

def exact_maxsim_topk(vectors_f16, doclens, queries, k, threads):
    """Brute-force MaxSim of every query against every document on the uncompressed
    (float16 -> float32) vectors.  Returns (topk indices [Q, k], topk scores [Q, k])."""
    import torch

    torch.set_num_threads(threads)
    Qn, Lq, dim = queries.shape
    Qf = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).reshape(Qn * Lq, dim)
    N = doclens.shape[0]
    offsets = np.concatenate([[0], np.cumsum(doclens)])
    scores = np.empty((N, Qn), dtype=np.float32)
    doc_step = max(1, (1 << 16) // max(1, int(doclens.mean())))
    for d0 in range(0, N, doc_step):
        d1 = min(N, d0 + doc_step)
        t0, t1 = int(offsets[d0]), int(offsets[d1])
        D = torch.from_numpy(vectors_f16[t0:t1].astype(np.float32))
        sims = (D @ Qf.T).numpy()                      # [tokens, Qn*Lq]
        seg = (offsets[d0:d1] - t0).astype(np.int64)
        mx = np.maximum.reduceat(sims, seg, axis=0)    # [docs, Qn*Lq]
        scores[d0:d1] = mx.reshape(d1 - d0, Qn, Lq).sum(-1)
    S = scores.T                                       # [Qn, N]
    idx = np.argpartition(-S, kth=min(k, N - 1), axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(S, idx, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    return idx, np.take_along_axis(S, idx, axis=1)


# --------------------------------------------------------------------------------------
# colbert-ai glue
# --------------------------------------------------------------------------------------

class PrecomputedEncoder:
    """Stands in for colbert.indexing.collection_encoder.CollectionEncoder: the
    "passages" of the collection are document indices, and encoding one returns its
    rows of the given embedding matrix (float32, flattened, as the CPU checkpoint
    path of docFromText(keep_dims='flatten') would)."""

    def __init__(self, vectors_f16, doclens):
        import torch

        self.vectors = torch.from_numpy(vectors_f16)          # [T, dim] float16, shared
        self.doclens = doclens.astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.doclens)])

    def encode_passages(self, passages):
        import torch

        if len(passages) == 0:
            return None, None
        pids = np.asarray(passages, dtype=np.int64)
        lens = self.doclens[pids]
        if pids.size and np.all(np.diff(pids) == 1):          # contiguous chunk: one slice
            embs = self.vectors[self.offsets[pids[0]]:self.offsets[pids[-1] + 1]]
        else:
            embs = torch.cat([self.vectors[self.offsets[p]:self.offsets[p + 1]] for p in pids])
        return embs.float(), lens.tolist()


def build_index(index_dir, vectors_f16, doclens, nbits, threads, verbose, seed):
    """Drive colbert-ai's CollectionIndexer (plan -> sample -> k-means -> codec ->
    compress chunks -> IVF -> metadata) with the encoder replaced."""
    import torch
    from colbert.data.collection import Collection
    from colbert.indexing.collection_indexer import CollectionIndexer
    from colbert.indexing.index_saver import IndexSaver
    from colbert.infra.config import ColBERTConfig

    class PrecomputedCollectionIndexer(CollectionIndexer):
        # Same as CollectionIndexer.__init__ minus the Checkpoint (HF model) load.
        def __init__(self, config, collection, encoder, verbose=1):
            self.phase_seconds = {}
            self.verbose = verbose
            self.config = config
            self.rank, self.nranks = self.config.rank, self.config.nranks
            self.use_gpu = self.config.total_visible_gpus > 0
            assert not self.use_gpu
            if self.config.rank == 0 and self.verbose > 1:
                self.config.help()
            self.collection = Collection.cast(collection)
            self.checkpoint = None
            self.encoder = encoder
            self.saver = IndexSaver(config)

        # Unchanged phases, only timed: setup = plan + sampling, train = k-means +
        # residual codec, index = assign + compress + write chunks, finalize = IVF.
        def _timed(self, name, fn, *a):
            t0 = time.perf_counter()
            fn(*a)
            self.phase_seconds[name] = round(time.perf_counter() - t0, 3)

        def setup(self):
            self._timed("setup", super().setup)

        def train(self, shared_lists):
            self._timed("train", super().train, shared_lists)

        def index(self):
            self._timed("index", super().index)

        def finalize(self):
            self._timed("finalize", super().finalize)

    dim = int(vectors_f16.shape[1])
    config = ColBERTConfig(
        index_path=os.path.abspath(index_dir),
        nbits=nbits,
        dim=dim,
        doc_maxlen=int(doclens.max()),
        checkpoint="precomputed-embeddings",   # informational only, never loaded
        rank=0,
        nranks=1,
        gpus=0,
        resume=False,
    )
    # colbert-ai samples pids with `random` and splits/shuffles with torch; k-means uses
    # faiss seed 123.  Seed the rest so a given input gives a reproducible index.
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)

    encoder = PrecomputedEncoder(vectors_f16, doclens)
    indexer = PrecomputedCollectionIndexer(config, list(range(len(doclens))), encoder, verbose=verbose)
    indexer.run(shared_lists=[[None]])
    return indexer


def patch_fast_assign():
    """Opt-in (--fast-assign): replace ResidualCodec.compress_into_codes (nearest
    centroid of each embedding) by an equivalent computation that is fast on CPU.

    Stock code computes ``(centroids @ batch.T).max(dim=0)`` on [ncentroids, 2^29 /
    ncentroids] float32 blocks (2 GiB each); on this torch/CPU build the reduction over
    the non-contiguous dim 0 runs ~10x slower than the matmul, and each fresh 2 GiB
    block costs seconds of page faults in a VM.  Here: ``(batch @ centroids.T)`` into
    a reused 128 MiB buffer, ``max(dim=1)``.  Same argmax (up to float summation-order
    ties), so the index is the same; only the build time changes."""
    import torch
    from colbert.indexing.codecs.residual import ResidualCodec

    def compress_into_codes(self, embs, out_device):
        C = self.centroids.float()
        bsize = max(1, (1 << 25) // C.size(0))
        buf = torch.empty(bsize, C.size(0), dtype=torch.float32)
        codes = []
        for batch in embs.split(bsize):
            out = buf[: batch.size(0)]
            torch.matmul(batch.float(), C.T, out=out)
            codes.append(out.max(dim=1).indices.to(device=out_device))
        return torch.cat(codes) if codes else torch.empty(0, dtype=torch.long)

    ResidualCodec.compress_into_codes = compress_into_codes


def load_searcher(index_dir, query_maxlen, overrides):
    """A colbert.Searcher whose __init__ is bypassed (it would load the HF checkpoint
    to encode query text); everything used by dense_search is set up as in __init__."""
    from colbert import Searcher
    from colbert.infra.config import ColBERTConfig
    from colbert.modeling.colbert import ColBERT
    from colbert.search.index_storage import IndexScorer

    # ColBERT.__init__ (checkpoint load) is what normally JIT-loads segmented_maxsim,
    # used by colbert_score_packed on CPU.
    ColBERT.try_load_torch_extensions(use_gpu=False)

    index_dir = os.path.abspath(index_dir)
    searcher = Searcher.__new__(Searcher)
    searcher.verbose = 0
    searcher.index = index_dir
    searcher.index_config = ColBERTConfig.load_from_index(index_dir)
    searcher.checkpoint = None
    searcher.collection = None
    searcher.config = ColBERTConfig.from_existing(searcher.index_config)
    # candidate generation truncates Q to query_maxlen: keep all given query tokens.
    searcher.config.configure(query_maxlen=query_maxlen, load_index_with_mmap=False)
    for key, value in overrides.items():
        if value is not None:
            searcher.config.configure(**{key: value})
    searcher.ranker = IndexScorer(index_dir, use_gpu=False, load_index_with_mmap=False)
    return searcher


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            fp = os.path.join(root, f)
            if os.path.isfile(fp) and not os.path.islink(fp):
                total += os.path.getsize(fp)
    return total


def _prepare_index_dir(index_dir):
    if os.path.isdir(index_dir) and os.listdir(index_dir):
        looks_like_index = any(
            os.path.exists(os.path.join(index_dir, f)) for f in ("plan.json", "metadata.json")
        )
        if not looks_like_index:
            raise SystemExit(f"--index-dir {index_dir} exists, is not empty and is not a "
                             "colbert index; refusing to wipe it")
        shutil.rmtree(index_dir)
    os.makedirs(index_dir, exist_ok=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", required=True, help="npz with vectors (float16 [T,dim]) and doclens (int64 [N])")
    ap.add_argument("--queries", required=True, help="npz with vectors (float32 [Q,Lq,dim])")
    ap.add_argument("--out", required=True, help="result JSON path")
    ap.add_argument("--index-dir", required=True, help="where colbert-ai writes its index (wiped first)")
    ap.add_argument("--nbits", type=int, default=2, help="residual bits per dimension (colbert-ai: 1, 2 or 4)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--ncells", type=int, default=None, help="override colbert-ai's default for k")
    ap.add_argument("--centroid-score-threshold", type=float, default=None, help="override")
    ap.add_argument("--ndocs", type=int, default=None, help="override")
    ap.add_argument("--threads", type=int, default=None, help="default: $COLBERT_PLAID_THREADS, $OMP_NUM_THREADS, all cores")
    ap.add_argument("--warmup", type=int, default=5, help="untimed warm-up queries before the timed pass")
    ap.add_argument("--reuse-index", action="store_true",
                    help="skip building if --index-dir already holds a finished index (build_seconds=null)")
    ap.add_argument("--check", action="store_true",
                    help="also compute exact brute-force MaxSim and report recall_at_k")
    ap.add_argument("--fast-assign", action="store_true",
                    help="build only: use a faster, equivalent nearest-centroid assignment "
                         "instead of colbert-ai's slow-on-CPU one (see patch_fast_assign)")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--verbose", type=int, default=1, help="colbert-ai verbosity (0-3)")
    ap.add_argument("--synthetic-docs", type=int, default=None, metavar="N",
                    help="self-test: first WRITE synthetic clustered data with N docs to --docs/--queries")
    ap.add_argument("--synthetic-queries", type=int, default=50)
    ap.add_argument("--synthetic-dim", type=int, default=128)
    args = ap.parse_args(argv)

    threads = _threads_from_env(args.threads)
    log = lambda *a: print("[colbert_plaid]", *a, file=sys.stderr, flush=True)  # noqa: E731

    if args.synthetic_docs:
        t0 = time.perf_counter()
        T = make_synthetic(args.docs, args.queries, args.synthetic_docs, args.synthetic_queries,
                           dim=args.synthetic_dim, seed=args.seed)
        log(f"wrote synthetic data: {args.synthetic_docs} docs, {T} tokens, "
            f"{args.synthetic_queries} queries in {time.perf_counter() - t0:.1f}s")

    import torch
    import faiss
    import importlib.metadata as md

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    assert torch.cuda.device_count() == 0

    with np.load(args.docs) as z:
        vectors = np.ascontiguousarray(z["vectors"], dtype=np.float16)
        doclens = np.asarray(z["doclens"], dtype=np.int64)
    with np.load(args.queries) as z:
        queries = np.ascontiguousarray(z["vectors"], dtype=np.float32)
        targets = z["targets"] if "targets" in z.files else None
        qlens = z["lengths"] if "lengths" in z.files else None
    if queries.ndim == 2:
        queries = queries[None]
    if qlens is None:
        qlens = np.full(queries.shape[0], queries.shape[1])
    assert vectors.ndim == 2 and doclens.ndim == 1
    assert int(doclens.sum()) == vectors.shape[0], (int(doclens.sum()), vectors.shape)
    assert doclens.min() >= 1, "colbert-ai cannot index empty documents"
    assert queries.shape[2] == vectors.shape[1], (queries.shape, vectors.shape)
    dim = vectors.shape[1]
    assert dim % (8 * args.nbits) == 0, f"colbert-ai needs dim % (8*nbits) == 0 (dim={dim})"
    log(f"{len(doclens)} docs, {vectors.shape[0]} embeddings, dim {dim}, "
        f"{queries.shape[0]} queries x {queries.shape[1]} tokens, nbits {args.nbits}, threads {threads}")

    # import colbert-ai (transformers, faiss, ...) before any timer starts
    with contextlib.redirect_stdout(sys.stderr):
        import colbert  # noqa: F401
        import colbert.indexing.collection_indexer  # noqa: F401
        import colbert.search.index_storage  # noqa: F401

    index_dir = os.path.abspath(args.index_dir)
    built = False
    build_seconds = None
    build_phases = None
    loadavg_start = os.getloadavg()
    have_index = os.path.exists(os.path.join(index_dir, "metadata.json")) and os.path.exists(
        os.path.join(index_dir, "ivf.pid.pt"))
    if not (args.reuse_index and have_index):
        _prepare_index_dir(index_dir)
        log("building colbert-ai index ...")
        with contextlib.redirect_stdout(sys.stderr):
            t0 = time.perf_counter()
            if args.fast_assign:
                patch_fast_assign()
            indexer = build_index(index_dir, vectors, doclens, args.nbits, threads, args.verbose, args.seed)
            build_seconds = time.perf_counter() - t0
        build_phases = indexer.phase_seconds
        built = True
        log(f"built in {build_seconds:.2f}s")
    index_bytes = dir_bytes(index_dir)
    with open(os.path.join(index_dir, "metadata.json")) as f:
        meta = json.load(f)
    assert meta["config"]["nbits"] == args.nbits, "existing index has other nbits; drop --reuse-index"

    log("loading searcher (first run JIT-compiles colbert-ai's C++ kernels) ...")
    overrides = {"ncells": args.ncells, "centroid_score_threshold": args.centroid_score_threshold,
                 "ndocs": args.ndocs}
    with contextlib.redirect_stdout(sys.stderr):
        t0 = time.perf_counter()
        searcher = load_searcher(index_dir, queries.shape[1], overrides)
        load_seconds = time.perf_counter() - t0

    # [1, Lq, dim] each, without padding rows (a zero row would still probe centroids)
    Qs = [torch.from_numpy(queries[i:i + 1, : int(qlens[i])]) for i in range(queries.shape[0])]
    k = args.k
    with torch.inference_mode(), contextlib.redirect_stdout(sys.stderr):
        for i in range(min(args.warmup, len(Qs))):
            searcher.dense_search(Qs[i], k=k)
        latencies, results, scores = [], [], []
        for Q in Qs:
            t0 = time.perf_counter()
            pids, _ranks, sc = searcher.dense_search(Q, k=k)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            results.append([int(p) for p in pids])
            scores.append([float(s) for s in sc])

    lat = np.asarray(latencies)
    cfg = searcher.config
    out = {
        "engine": "colbert-ai PLAID (CPU)",
        "build_seconds": build_seconds,
        "build_phases_seconds": build_phases,
        "fast_assign": bool(args.fast_assign) if built else None,
        "index_bytes": index_bytes,
        "num_docs": int(len(doclens)),
        "num_embeddings": int(meta["num_embeddings"]),
        "num_partitions": int(meta["num_partitions"]),
        "nbits": int(meta["config"]["nbits"]),
        "dim": int(dim),
        "k": k,
        "search_settings": {"ncells": cfg.ncells, "centroid_score_threshold": cfg.centroid_score_threshold,
                            "ndocs": cfg.ndocs, "query_maxlen": cfg.query_maxlen},
        "num_queries": len(Qs),
        "warmup_queries": min(args.warmup, len(Qs)),
        "latencies_ms": [round(x, 4) for x in latencies],
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "mean_ms": float(lat.mean()),
        "load_seconds": load_seconds,
        "index_built_this_run": built,
        "results": results,
        "scores": scores,
        "colbert_ai_version": md.version("colbert-ai"),
        "torch_version": torch.__version__,
        "faiss_version": faiss.__version__,
        "threads": threads,
        # other load on the machine skews timings: 1/5/15-min load averages
        "loadavg_start": [round(x, 2) for x in loadavg_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    log(f"p50 {out['p50_ms']:.2f} ms, p95 {out['p95_ms']:.2f} ms, index {index_bytes / 2**20:.1f} MiB, "
        f"{out['num_partitions']} partitions")

    if args.check:
        t0 = time.perf_counter()
        exact_idx, exact_sc = exact_maxsim_topk(vectors, doclens, queries, k, threads)
        recall = [len(set(r[:k]) & set(e.tolist())) / k for r, e in zip(results, exact_idx)]
        out["check"] = {
            "recall_at_k": float(np.mean(recall)),
            "recall_at_k_min": float(np.min(recall)),
            "top1_agreement": float(np.mean([bool(r) and r[0] == e[0] for r, e in zip(results, exact_idx)])),
            "exact_seconds": time.perf_counter() - t0,
            "exact_results": exact_idx.tolist(),
            "exact_scores": exact_sc.tolist(),
        }
        out["recall_at_k"] = out["check"]["recall_at_k"]
        if targets is not None:
            out["check"]["target_hit_at_k_plaid"] = float(np.mean([t in r for t, r in zip(targets, results)]))
            out["check"]["target_hit_at_k_exact"] = float(np.mean([t in e for t, e in zip(targets, exact_idx)]))
        log(f"recall@{k} vs exact MaxSim: {out['recall_at_k']:.4f} "
            f"(min {out['check']['recall_at_k_min']:.2f}, top1 agree {out['check']['top1_agreement']:.2f})")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f)
    log(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
