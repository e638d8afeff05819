"""Train the bundled model's ColBERT heads (and optionally top encoder layers) on CPU.

Starts from multilingual-e5-small as published (the shipped fine-tuned layers are reset) and
the stand-in orthogonal projection. Token hidden states below the trained layers are computed
once and cached; the heads (one per Matryoshka dim 128/96/64, or with ``--nested`` one 128-d
head truncated) and the top ``--train-layers`` layers are trained with InfoNCE (in-batch +
in-article hard negatives) plus KL distillation from e5's own dense similarity (cosine of
mean-pooled "query: "/"passage: " states). ``--dim-weights`` weighs the per-dim losses.

Training: shared/data/train/{jsquad,arcd} (ja, ar) + SciFact train qrels (en), plus
``--parallel N`` cross-lingual pairs (translation → English) from the machine's gettext
catalogs (:mod:`polylate.train.parallel`), held-out texts excluded.
Held out: SciFact test (queries × a corpus slice containing their relevant abstracts) and
XQuAD-R paragraph retrieval (X→en and X→X). ``--eval-tatoeba`` adds Tatoeba X→en bitext
slices, reported in their own mean. Exact MaxSim, nDCG@10, beside the shipped model, dense
e5 and BM25, with each dim's ratio to 128.

Writes ``--out`` (default: the shipped src/polylate/model/e5_small_colbert_heads.safetensors)
only when the trained model beats the stand-in on the held-out mean at every dim and loses no
slice by more than 0.01 at 128 — and, for the shipped file, is not more than 0.005 under the
shipped model's held-out mean at 128 (``--force`` overrides).

    .venv/bin/python benchmarks/train_default_head.py --no-query-expansion --train-layers 2 --epochs 3

That recipe (the shipped model) takes ~31 min on 2 CPU cores; ``--parallel 5000`` doubles it.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import torch

from polylate.model.bundled import HEAD_FILE, base_encoder, load_bundled, untrained_head
from polylate.train.data import load_pairs, load_triplets, read_beir
from polylate.train.losses import maxsim_scores
from polylate.train.parallel import DEFAULT_LOCALE_DIR, load_gettext_pairs
from polylate.train.trainer import HiddenCache, Trainer, project, save_heads

ROOT = Path(__file__).resolve().parents[1]
DIMS = (128, 96, 64)


def ndcg_at_10(scores: torch.Tensor, qids: list[str], dids: list[str], qrels: dict) -> float:
    top = torch.topk(scores, min(10, scores.shape[1]), dim=1).indices.tolist()
    total = 0.0
    for qi, row in zip(qids, top):
        rel = qrels.get(qi, {})
        dcg = sum(rel.get(dids[j], 0) / math.log2(r + 2) for r, j in enumerate(row))
        ideal = sorted((v for v in rel.values() if v > 0), reverse=True)[:10]
        idcg = sum(v / math.log2(r + 2) for r, v in enumerate(ideal))
        total += dcg / idcg if idcg > 0 else 0.0
    return total / max(1, len(qids))


def sample_ids(rng: random.Random, ids, n: int) -> list:
    """``n`` of ``ids`` (all when fewer), drawn in a seed-stable order, sorted."""
    ids = sorted(ids)
    return sorted(rng.sample(ids, min(n, len(ids))))


def eval_slices(data: Path, n_scifact_q: int, n_scifact_docs: int, n_xquad_q: int, langs, seed: int,
                mono_langs=()):
    """→ list of (name, {qid: query}, {did: doc}, qrels): SciFact, XQuAD-R X→en and X→X."""
    rng = random.Random(seed)
    slices = []
    corpus, queries, qrels = read_beir(data / "scifact", "test")
    qids = sample_ids(rng, (q for q in qrels if q in queries), n_scifact_q)
    rel = {d for q in qids for d in qrels[q] if d in corpus}
    others = sorted(set(corpus) - rel)
    dids = sorted(rel) + sorted(rng.sample(others, max(0, n_scifact_docs - len(rel))))
    slices.append((f"scifact test ({len(qids)}q/{len(dids)}d)", {q: queries[q] for q in qids},
                   {d: corpus[d] for d in dids}, {q: qrels[q] for q in qids}))
    en_corpus, _, en_qrels = read_beir(data / "xquad_r" / "en", "test")
    pick = sample_ids(rng, en_qrels, n_xquad_q)
    for lang in langs:
        _, lq, _ = read_beir(data / "xquad_r" / lang, "test")
        qs = {q: lq[q] for q in pick if q in lq}
        slices.append((f"xquad_r {lang}→en ({len(qs)}q/{len(en_corpus)}d)", qs, en_corpus,
                       {q: en_qrels[q] for q in qs}))
    for lang in mono_langs:  # within a language: where BM25 is strongest
        corpus, lq, qrels = read_beir(data / "xquad_r" / lang, "test")
        qs = {q: lq[q] for q in pick if q in lq and q in qrels}
        slices.append((f"xquad_r {lang}→{lang} ({len(qs)}q/{len(corpus)}d)", qs, corpus,
                       {q: qrels[q] for q in qs}))
    return slices


def add_held_out_args(ap: argparse.ArgumentParser) -> None:
    """The options that size the held-out slices (:func:`held_out_slices`)."""
    ap.add_argument("--eval-scifact-queries", type=int, default=100)
    ap.add_argument("--eval-scifact-docs", type=int, default=1000)
    ap.add_argument("--eval-xquad-queries", type=int, default=200)
    ap.add_argument("--eval-langs", default="en,de,ar,zh,hi")
    ap.add_argument("--mono-langs", default="zh,th,hi,ru", help="X→X slices (en→en is in --eval-langs)")


def held_out_slices(data: Path, args: argparse.Namespace):
    """:func:`eval_slices` as sized by :func:`add_held_out_args`'s options (and ``--seed``)."""
    return eval_slices(data, args.eval_scifact_queries, args.eval_scifact_docs, args.eval_xquad_queries,
                       args.eval_langs.split(","), args.seed, [x for x in args.mono_langs.split(",") if x])


def tatoeba_slices(data: Path, pairs, n_queries: int, seed: int):
    """Tatoeba X→en bitext retrieval slices (all English sentences of the pair as documents)."""
    rng = random.Random(seed)
    out = []
    for pair in pairs:
        corpus, queries, qrels = read_beir(data / "tatoeba" / pair, "test")
        qids = sample_ids(rng, (q for q in qrels if q in queries), n_queries)
        out.append((f"tatoeba {pair} ({len(qids)}q/{len(corpus)}d)", {q: queries[q] for q in qids},
                    corpus, {q: qrels[q] for q in qids}))
    return out


def slice_texts(slices) -> list[str]:
    """Every query and document text of the given eval slices (to keep out of training)."""
    return [t for _, qs, ds, _ in slices for t in (*qs.values(), *ds.values())]


def first_changed_layer(encoder, base) -> int:
    """Index of the first layer whose weights differ between two encoders (0 when the
    embeddings differ; the layer count when none do)."""
    def same(a, b):
        return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))

    if not same(encoder.embeddings, base.embeddings):
        return 0
    for i, (a, b) in enumerate(zip(encoder.layers, base.layers)):
        if not same(a, b):
            return i
    return len(encoder.layers)


def bm25_ndcg(queries: dict, docs: dict, qrels: dict) -> float:
    from polylate.eval.bm25 import BM25Baseline

    run = BM25Baseline(docs).search(queries, k=10)
    dids = list(docs)
    pos = {d: i for i, d in enumerate(dids)}
    qids = list(queries)
    scores = torch.full((len(qids), len(dids)), -1e9)
    for i, q in enumerate(qids):
        for d, s in run.get(q, {}).items():
            scores[i, pos[d]] = s
    return ndcg_at_10(scores, qids, dids, qrels)


def score_slice(model, cache: HiddenCache, queries: dict, docs: dict, dim: int, weight=None):
    qids, dids = list(queries), list(docs)
    qh, qm = cache.padded([queries[q] for q in qids], True)
    dh, dm = cache.padded([docs[d] for d in dids], False)
    with torch.no_grad():
        if weight is None:
            Q, D = project(model, qh, dim), project(model, dh, dim)
        else:
            Q = torch.nn.functional.normalize(qh @ weight[:dim].T, dim=-1)
            D = torch.nn.functional.normalize(dh @ weight[:dim].T, dim=-1)
        out = []
        for s in range(0, len(qids), 25):
            out.append(maxsim_scores(Q[s : s + 25], qm[s : s + 25], D, dm, doc_chunk=100))
    return torch.cat(out), qids, dids


def dense_scores(cache: HiddenCache, queries: dict, docs: dict):
    qids, dids = list(queries), list(docs)
    s = cache.pooled_matrix([queries[q] for q in qids], True) @ cache.pooled_matrix([docs[d] for d in dids], False).T
    return s, qids, dids


def evaluate(model, cache, slices, weight):
    res = {}
    for name, qs, ds, qrels in slices:
        for dim in DIMS:
            s, qids, dids = score_slice(model, cache, qs, ds, dim, weight)
            res[(name, dim)] = ndcg_at_10(s, qids, dids, qrels)
    return res


def mean_over(res: dict, names: list[str], dim: int) -> float:
    """Mean nDCG@10 over the held-out slices at one dim (``res`` from :func:`evaluate`)."""
    return sum(res[(n, dim)] for n in names) / len(names)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--jsquad", type=int, default=None, help="items (default: all 8862)")
    ap.add_argument("--arcd", type=int, default=None, help="items (default: all 1395)")
    ap.add_argument("--scifact", type=int, default=None, help="items (default: all 809)")
    ap.add_argument("--parallel", type=int, default=0,
                    help="cross-lingual (translation → English) pairs from gettext catalogs")
    ap.add_argument("--locale-dir", type=Path, default=DEFAULT_LOCALE_DIR)
    ap.add_argument("--dim-weights", default="1,1,1", help="Matryoshka loss weights for 128,96,64")
    ap.add_argument("--doc-maxlen", type=int, default=180)
    ap.add_argument("--eval-doc-maxlen", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-layers", type=int, default=0,
                    help="also fine-tune the top N encoder layers (lower layers' output is cached)")
    ap.add_argument("--encoder-lr", type=float, default=5e-5)
    ap.add_argument("--no-query-expansion", action="store_true",
                    help="queries without mask-token padding (ColBERTConfig.query_expansion=False)")
    ap.add_argument("--nested", action="store_true",
                    help="one 128-d head truncated to 96/64 (default: a head per dim)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--distill-weight", type=float, default=1.0)
    ap.add_argument("--teacher-temperature", type=float, default=0.02)
    add_held_out_args(ap)
    ap.add_argument("--eval-tatoeba", default="", help="Tatoeba pairs reported (not in the mean), e.g. deu-eng")
    ap.add_argument("--eval-tatoeba-queries", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--out", type=Path, default=HEAD_FILE)
    ap.add_argument("--force", action="store_true", help="overwrite the shipped head even when worse than it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = args.data.resolve()
    t0 = time.perf_counter()

    model = load_bundled()  # the shipped model: evaluated first, as the bar to beat
    model.eval()
    if args.no_query_expansion:
        model.config.query_expansion = model.tokenizer.config.query_expansion = False
    hidden = model.encoder.config.hidden_size
    n_layers = len(model.encoder.layers)
    base = base_encoder()
    # the eval cache holds states below both the trained layers and the first layer where the
    # shipped encoder differs from base e5, so shipped and base/trained models share it
    eval_lower = min(n_layers - args.train_layers, first_changed_layer(model.encoder, base))
    w0 = untrained_head(hidden, 128)
    heads = [128] if args.nested else list(DIMS)
    dim_weights = [float(w) for w in args.dim_weights.split(",")]
    print(f"model: {model.name}; training heads {heads} (input {hidden}) and the top "
          f"{args.train_layers} encoder layer(s); query expansion {model.config.query_expansion}; "
          f"dim weights {dim_weights}")

    slices = held_out_slices(data, args)
    reported = tatoeba_slices(data, [p for p in args.eval_tatoeba.split(",") if p],
                              args.eval_tatoeba_queries, args.seed)
    every_slice = slices + reported
    held_out = slice_texts(every_slice)

    train = (load_triplets(data / "train" / "jsquad", max_negatives=1, limit=args.jsquad, seed=args.seed)
             + load_triplets(data / "train" / "arcd", max_negatives=1, limit=args.arcd, seed=args.seed)
             + load_pairs(data / "scifact", "train", limit=args.scifact, seed=args.seed))
    parallel = (load_gettext_pairs(args.locale_dir, args.parallel, args.seed, exclude=held_out)
                if args.parallel else [])
    print(f"training items: {len(train) + len(parallel)} (jsquad {args.jsquad or 'all'}, arcd "
          f"{args.arcd or 'all'}, scifact train {args.scifact or 'all'}, gettext translation→en "
          f"{len(parallel)} from {args.locale_dir}); doc_maxlen {args.doc_maxlen}")
    train += parallel

    eval_cache = HiddenCache(model, args.eval_doc_maxlen, lower_layers=eval_lower)
    for _, qs, ds, _ in every_slice:
        eval_cache.add(qs.values(), True)
        eval_cache.add(ds.values(), False, show_progress=True)
    print(f"eval cache: {len(eval_cache)} texts in {eval_cache.seconds:.0f}s")
    shipped = evaluate(model, eval_cache, every_slice, None)
    # train from multilingual-e5-small as published (not from the shipped layers)
    model.encoder.load_state_dict(base.state_dict())
    model.tuned_layers = []  # no layer differs from base e5 now
    eval_cache.refresh_from_lower()
    with torch.no_grad():  # start from (and compare against) the stand-in projection
        model.heads["128"].weight.copy_(w0)
    before = evaluate(model, eval_cache, every_slice, w0)
    dense = {name: ndcg_at_10(*dense_scores(eval_cache, qs, ds), qrels)
             for name, qs, ds, qrels in every_slice}
    bm25 = {name: bm25_ndcg(qs, ds, qrels) for name, qs, ds, qrels in every_slice}
    if not args.nested:  # own heads for 96 and 64, started from their own stand-ins
        for d in DIMS[1:]:
            model.heads[str(d)] = torch.nn.Linear(hidden, d, bias=False)
            with torch.no_grad():
                model.heads[str(d)].weight.copy_(untrained_head(hidden, d))

    t_train = time.perf_counter()
    trainer = Trainer(model, train, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                      warmup_ratio=0.1, grad_accum=1, dims=DIMS, seed=args.seed,
                      temperature=args.temperature, distill_weight=args.distill_weight,
                      teacher="mean_pool", teacher_temperature=args.teacher_temperature,
                      doc_maxlen=args.doc_maxlen, show_progress=True, log_every=100,
                      train_encoder_layers=args.train_layers, encoder_lr=args.encoder_lr,
                      dim_weights=dim_weights)
    print(f"train cache: {len(trainer.cache)} texts in {trainer.cache.seconds:.0f}s")
    t_loop = time.perf_counter()
    trainer.train()
    loop_s = time.perf_counter() - t_loop
    train_s = time.perf_counter() - t_train
    eval_cache.refresh_from_lower()  # final states through the trained layers
    after = evaluate(model, eval_cache, every_slice, None)

    names = [s[0] for s in slices]
    shown = names + [s[0] for s in reported]
    print(f"\nnDCG@10, exact MaxSim (training: {train_s:.0f}s incl. caching, loop {loop_s:.0f}s)")
    print(f"{'slice':34s} {'dim':>4s} {'untrained':>10s} {'shipped':>8s} {'trained':>9s} {'vs ship':>8s} "
          f"{'e5 dense':>9s} {'BM25':>7s}")
    nan = float("nan")
    for name in shown:
        for dim in DIMS:
            b, a = before[(name, dim)], after[(name, dim)]
            s0 = shipped[(name, dim)]
            ref = (dense[name], bm25[name]) if dim == 128 else (nan, nan)
            print(f"{name:34s} {dim:4d} {b:10.4f} {s0:8.4f} {a:9.4f} {a - s0:+8.4f} {ref[0]:9.4f} {ref[1]:7.4f}")
    wins = True
    groups = [("mean (held out)", names)] + ([("mean (tatoeba)", [s[0] for s in reported])] if reported else [])
    for label, group in groups:
        for dim in DIMS:
            mb, ma = mean_over(before, group, dim), mean_over(after, group, dim)
            ms = mean_over(shipped, group, dim)
            ratio = ma / mean_over(after, group, 128)
            ship_ratio = ms / mean_over(shipped, group, 128)
            print(f"{label:34s} {dim:4d} {mb:10.4f} {ms:8.4f} {ma:9.4f} {ma - ms:+8.4f}   "
                  f"of 128: shipped {ship_ratio:.3f}, trained {ratio:.3f}")
            if group is names:
                wins &= ma > mb
    wins &= all(after[(n, 128)] > before[(n, 128)] - 0.01 for n in names)  # no slice loses > 0.01
    print(f"total {time.perf_counter() - t0:.0f}s")
    behind = mean_over(shipped, names, 128) - mean_over(after, names, 128)
    if wins and behind > 0.005 and args.out.resolve() == HEAD_FILE.resolve() and not args.force:
        print(f"trained head beats the stand-in but is {behind:.4f} under the shipped one (held-out "
              f"mean at 128): shipped head kept; --out PATH or --force to write it")
    elif wins and not args.no_save:
        save_heads(model, args.out, dims=heads, encoder_layers=range(n_layers - args.train_layers, n_layers))
        print(f"trained head beats the stand-in: wrote {args.out} ({args.out.stat().st_size} bytes)")
    elif not wins:
        print("trained head does NOT beat the stand-in (mean at every dim, no slice −0.01): nothing written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
