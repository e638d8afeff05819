"""Which negatives (and which teacher) train ColBERT heads best? One ablation, one run.

Over multilingual-e5-small as published (frozen; the shipped fine-tuned layers reset), fresh
128/96/64 heads are trained heads-only on the same (query, positive) pairs — JSQuAD (ja, a
``--jsquad`` query subset), ARCD (ar) and SciFact train (en) — five ways, with the same steps:

1. in-batch negatives only;
2. + the datasets' own in-article negatives (pairs.jsonl; SciFact has none);
3. + ``--negatives`` BM25-mined negatives (:func:`polylate.train.mining.mine_hard_negatives`);
4. + ``--negatives`` negatives mined by the shipped model's exact MaxSim;
5. = 4 + KL distillation from the shipped model's MaxSim over the positive and those
   negatives, i.e. ``polylate mine --retriever colbert --teacher default`` then
   ``polylate train --teacher data``. Mining and the teacher see documents cut at the
   training ``--doc-maxlen``, as the student does.

Scored on the held-out slices of ``train_default_head.py`` (SciFact test + XQuAD-R X→en and
X→X), nDCG@10 per dim and the mean, beside the untrained stand-in heads.

    .venv/bin/python benchmarks/mined_negatives.py [--jsquad 3000] [--negatives 3] [--epochs 3]

Defaults, 2 CPU cores, 3,909 s (benchmarks/results/mined_negatives.txt), held-out mean
nDCG@10 at 128 / 96 / 64: untrained 0.8353 / 0.7940 / 0.7367; in-batch only 0.8802 / 0.8628 /
0.8273; + in-article 0.8776 / 0.8634 / 0.8253; + BM25-mined 0.8751 / 0.8582 / 0.8181;
+ ColBERT-mined 0.8754 / 0.8556 / 0.8132; + ColBERT-mined + teacher KL 0.8870 / 0.8647 /
0.8277. For heads over a frozen encoder, hard negatives alone did not help (SciFact rose,
+0.015 to +0.018 at 128, but X→en fell, ColBERT-mined zh→en −0.044 at 64); the teacher's
scores over them did: +0.0068 at 128 (SciFact 0.7935 → 0.8364), level at 96 and 64.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

from polylate.eval.beir import find_file, read_jsonl
from polylate.model.bundled import base_encoder, load_bundled, untrained_head
from polylate.train.data import Triplet, read_beir
from polylate.train.mining import mine_hard_negatives
from polylate.train.trainer import HiddenCache, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_default_head import DIMS, add_held_out_args, evaluate, held_out_slices, mean_over  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def training_rows(data: Path, n_jsquad: int, seed: int) -> list[tuple[Path, dict, dict, dict]]:
    """(folder, corpus, queries, qrels) per training set; JSQuAD cut to ``n_jsquad`` queries."""
    out = []
    for folder in (data / "train" / "jsquad", data / "train" / "arcd", data / "scifact"):
        corpus, queries, qrels = read_beir(folder, "train")
        if folder.name == "jsquad":
            keep = sorted(random.Random(seed).sample(sorted(qrels), min(n_jsquad, len(qrels))))
            qrels = {q: qrels[q] for q in keep}
        out.append((folder, corpus, queries, qrels))
    return out


def own_negatives(folder: Path) -> dict[tuple[str, str], list[str]]:
    """(query id, positive id) → the dataset's own hard negative ids (pairs.jsonl), if any."""
    path = find_file(folder, "pairs.jsonl")
    rows = read_jsonl(path, require_id=False) if path is not None else ()
    return {(str(r["query_id"]), str(r["pos_id"])): [str(n) for n in r["hard_negative_ids"]] for r in rows}


def to_triplets(rows: list[dict], corpus: dict, k: int, with_teacher: bool = False) -> list[Triplet]:
    out = []
    for r in rows:
        negs = r["hard_negative_ids"][:k]
        teacher = r["teacher_scores"][: 1 + len(negs)] if with_teacher else None
        out.append(Triplet(r["query"], corpus[r["pos_id"]], [corpus[d] for d in negs], teacher))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--jsquad", type=int, default=3000, help="JSQuAD training queries (of 8862)")
    ap.add_argument("--negatives", type=int, default=3, help="hard negatives per query")
    ap.add_argument("--skip", type=int, default=0, help="top unjudged candidates dropped when mining")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--distill-weight", type=float, default=1.0)
    ap.add_argument("--doc-maxlen", type=int, default=180)
    ap.add_argument("--eval-doc-maxlen", type=int, default=256)
    add_held_out_args(ap)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data.resolve()
    if not (data / "train" / "jsquad").exists():
        print(f"no training data under {data}; nothing to run")
        return 0
    t0 = time.perf_counter()

    # mining and teacher scores come from the shipped model (bf16: ~3x faster, same ranking)
    shipped = load_bundled().to(torch.bfloat16).eval()
    sets = training_rows(data, args.jsquad, args.seed)
    mined: dict[str, list[tuple[dict, list[dict]]]] = {"bm25": [], "colbert": []}
    for folder, corpus, queries, qrels in sets:
        for how in mined:
            start = time.perf_counter()
            rows = mine_hard_negatives(corpus, queries, qrels, retriever=how, model=shipped,
                                       negatives=args.negatives, depth=max(100, 4 * args.negatives),
                                       skip=args.skip, doc_maxlen=args.doc_maxlen,
                                       teacher_scores=how == "colbert")
            mined[how].append((corpus, rows))
            print(f"mined {folder.name} with {how}: {len(rows)} pairs in {time.perf_counter() - start:.0f}s",
                  flush=True)
    del shipped

    variants: dict[str, list[Triplet]] = {"in-batch only": [], "+ in-article (dataset)": [],
                                          f"+ {args.negatives} BM25-mined": [],
                                          f"+ {args.negatives} ColBERT-mined": [],
                                          f"+ {args.negatives} ColBERT-mined + teacher KL": []}
    names = list(variants)
    for (folder, corpus, _, _), (_, bm25_rows), (_, cb_rows) in zip(sets, mined["bm25"], mined["colbert"]):
        own = own_negatives(folder)
        variants[names[0]] += to_triplets([{**r, "hard_negative_ids": []} for r in bm25_rows], corpus, 0)
        variants[names[1]] += to_triplets(
            [{**r, "hard_negative_ids": own.get((r["query_id"], r["pos_id"]), [])} for r in bm25_rows],
            corpus, args.negatives)
        variants[names[2]] += to_triplets(bm25_rows, corpus, args.negatives)
        variants[names[3]] += to_triplets(cb_rows, corpus, args.negatives)
        variants[names[4]] += to_triplets(cb_rows, corpus, args.negatives, with_teacher=True)

    model = load_bundled()
    model.encoder.load_state_dict(base_encoder().state_dict())  # e5 as published, frozen
    model.tuned_layers = []
    model.eval()
    hidden = model.encoder.config.hidden_size
    slices = held_out_slices(data, args)
    eval_cache = HiddenCache(model, args.eval_doc_maxlen)
    for _, qs, ds, _ in slices:
        eval_cache.add(qs.values(), True)
        eval_cache.add(ds.values(), False)
    train_cache = HiddenCache(model, args.doc_maxlen)  # shared: every variant reads the same states

    def fresh_heads():
        with torch.no_grad():
            for d in DIMS:
                model.heads[str(d)].weight.copy_(untrained_head(hidden, d))

    fresh_heads()
    results = {"untrained stand-in": evaluate(model, eval_cache, slices, None)}
    seconds = {}
    for name, items in variants.items():
        fresh_heads()
        start = time.perf_counter()
        teacher = name.endswith("teacher KL")
        trainer = Trainer(model, items, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                          dims=DIMS, seed=args.seed, doc_maxlen=args.doc_maxlen, cache=train_cache,
                          distill_weight=args.distill_weight if teacher else 0.0, teacher="items")
        trainer.train()
        seconds[name] = time.perf_counter() - start
        results[name] = evaluate(model, eval_cache, slices, None)
        print(f"trained '{name}': {len(items)} items, {trainer.step} steps, {seconds[name]:.0f}s "
              f"(held-out 128 {mean_over(results[name], [s[0] for s in slices], 128):.4f})", flush=True)

    slice_names = [s[0] for s in slices]
    print(f"\nnDCG@10 on held-out slices, heads trained over frozen base e5 "
          f"({len(variants[names[0]])} (query, positive) pairs, {args.epochs} epochs; {time.perf_counter() - t0:.0f}s)")
    header = f"{'slice':34s}" + "".join(f"{n[:22]:>24s}" for n in results)
    for dim in DIMS:
        print(f"\n-- dim {dim}\n{header}")
        for s in slice_names:
            print(f"{s[:34]:34s}" + "".join(f"{results[n][(s, dim)]:24.4f}" for n in results))
        print(f"{'mean':34s}" + "".join(f"{mean_over(results[n], slice_names, dim):24.4f}" for n in results))
    print("\nmean over slices (128 / 96 / 64), and vs in-batch only at 128:")
    base128 = mean_over(results[names[0]], slice_names, 128)
    for n in results:
        means = [mean_over(results[n], slice_names, d) for d in DIMS]
        print(f"  {n:34s} {' / '.join(f'{m:.4f}' for m in means)}   {means[0] - base128:+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
