"""Re-train the bundled model's 96- and 64-d heads to keep the 128-d head's geometry.

The heads of the shipped model were each trained on monolingual retrieval (ja, ar, en), and
the small ones lose more across languages than within one (X→en: 64 is 6.9% under 128; within
a language 1.2%). There are no cross-lingual training pairs under shared/data, but the 128-d
head *is* cross-lingual. So the small heads are distilled from it at the token level: over
batches of token states drawn from mixed-language texts, each student token's similarity
distribution to the other tokens (softmax over dot products / τ) is fitted to the 128-d
head's (relational KL), plus the student's MaxSim score distribution over in-batch documents
to the 128-d head's. The encoder and the 128-d head stay fixed.

    .venv/bin/python benchmarks/distill_small_heads.py [--steps 600] [--no-save]

Measured (defaults, 1,148 s on 2 busy cores): held-out means 96d 0.8800 → 0.8822, 64d
0.8597 → 0.8621 — within noise, and slice by slice mixed (64d zh→en +0.019, de→en −0.030,
SciFact +0.040 / 96d −0.037), so the shipped heads were kept: the 128-d head's token
geometry over ja/ar/en text does not carry the cross-lingual gap; that needs cross-lingual
pairs.

Held-out slices and metric are those of benchmarks/train_default_head.py. Writes the model
file (same encoder layers, 128-d head unchanged) only when the mean at 96 and 64 improves and
no slice loses more than 0.01.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from polylate.model.bundled import HEAD_FILE, load_bundled
from polylate.train.data import load_pairs, load_triplets
from polylate.train.losses import maxsim_scores
from polylate.train.trainer import HiddenCache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_default_head import DIMS, eval_slices, evaluate, mean_over  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def relational_kl(h: torch.Tensor, teacher: torch.Tensor, student: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(teacher ‖ student) of each token's softmax similarity to the other tokens in ``h``."""
    t = F.normalize(h @ teacher.T, dim=-1)
    s = F.normalize(h @ student.T, dim=-1)
    eye = torch.eye(len(h), dtype=torch.bool)
    tl = (t @ t.T / tau).masked_fill(eye, -1e4)
    sl = (s @ s.T / tau).masked_fill(eye, -1e4)
    return F.kl_div(F.log_softmax(sl, -1), F.log_softmax(tl, -1), log_target=True, reduction="batchmean")


def score_kl(q, qm, d, dm, teacher, student, tau: float) -> torch.Tensor:
    """KL(teacher ‖ student) of MaxSim score distributions of queries over in-batch documents."""
    def scores(w):
        return maxsim_scores(F.normalize(q @ w.T, dim=-1), qm, F.normalize(d @ w.T, dim=-1), dm)
    with torch.no_grad():
        target = F.log_softmax(scores(teacher) / tau, -1)
    return F.kl_div(F.log_softmax(scores(student) / tau, -1), target, log_target=True, reduction="batchmean")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    ap.add_argument("--texts", type=int, default=1500, help="training items (questions + their paragraphs)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--tokens", type=int, default=2048, help="token states per relational batch")
    ap.add_argument("--batch-size", type=int, default=32, help="queries per score-distillation batch")
    ap.add_argument("--tau", type=float, default=0.05)
    ap.add_argument("--score-tau", type=float, default=1.0)
    ap.add_argument("--score-weight", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-xquad-queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--out", type=Path, default=HEAD_FILE)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    data = args.data.resolve()
    t0 = time.perf_counter()

    model = load_bundled()
    model.eval()
    slices = eval_slices(data, 100, 1000, args.eval_xquad_queries, "en,de,ar,zh,hi".split(","), 0,
                         ("zh", "th", "hi", "ru"))
    eval_cache = HiddenCache(model, 256)
    for _, qs, ds, _ in slices:
        eval_cache.add(qs.values(), True)
        eval_cache.add(ds.values(), False)
    before = evaluate(model, eval_cache, slices, None)
    print(f"eval cache {len(eval_cache)} texts ({eval_cache.seconds:.0f}s)", flush=True)

    n = args.texts // 3
    items = (load_triplets(data / "train" / "jsquad", max_negatives=1, limit=n, seed=args.seed)
             + load_triplets(data / "train" / "arcd", max_negatives=1, limit=n, seed=args.seed)
             + load_pairs(data / "scifact", "train", limit=n, seed=args.seed))
    queries = [it.query for it in items]
    docs = sorted({it.positive for it in items})
    cache = HiddenCache(model, 180)
    cache.add(queries, True)
    cache.add(docs, False)
    print(f"train cache {len(cache)} texts ({cache.seconds:.0f}s)", flush=True)
    states = torch.cat([cache.tokens[(t, True)] for t in queries] + [cache.tokens[(t, False)] for t in docs])
    print(f"{len(states)} token states from {len(queries)} queries and {len(docs)} documents "
          f"(ja, ar, en)", flush=True)

    teacher = model.heads["128"].weight.detach()
    students = {d: torch.nn.Parameter(model.heads[str(d)].weight.detach().clone()) for d in DIMS[1:]}
    opt = torch.optim.AdamW(students.values(), lr=args.lr, weight_decay=0.0)
    pairs = list(zip(queries, [it.positive for it in items]))
    t_train = time.perf_counter()
    for step in range(args.steps):
        h = states[torch.randint(len(states), (args.tokens,))].float()
        batch = rng.sample(pairs, args.batch_size)
        q, qm = cache.padded([p[0] for p in batch], True)
        d, dm = cache.padded([p[1] for p in batch], False)
        loss = 0.0
        for w in students.values():
            loss = loss + relational_kl(h, teacher, w, args.tau)
            if args.score_weight:
                loss = loss + args.score_weight * score_kl(q, qm, d, dm, teacher, w, args.score_tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f}", flush=True)
    with torch.no_grad():
        for d, w in students.items():
            model.heads[str(d)].weight.copy_(w)
    after = evaluate(model, eval_cache, slices, None)
    print(f"trained {args.steps} steps in {time.perf_counter() - t_train:.0f}s")

    names = [s[0] for s in slices]
    print(f"\n{'slice':34s} {'dim':>4s} {'shipped':>9s} {'distilled':>10s} {'delta':>7s}")
    for name in names:
        for dim in DIMS:
            b, a = before[(name, dim)], after[(name, dim)]
            print(f"{name:34s} {dim:4d} {b:9.4f} {a:10.4f} {a - b:+7.4f}")
    wins = True
    for dim in DIMS:
        mb, ma = mean_over(before, names, dim), mean_over(after, names, dim)
        print(f"{'mean':34s} {dim:4d} {mb:9.4f} {ma:10.4f} {ma - mb:+7.4f}  ({ma / mean_over(after, names, 128):.3f} of 128)")
        wins &= dim == 128 or ma > mb
    wins &= all(after[(n, d)] > before[(n, d)] - 0.01 for n in names for d in DIMS[1:])
    print(f"total {time.perf_counter() - t0:.0f}s")
    if wins and not args.no_save:
        state = load_file(str(args.out))
        for d, w in students.items():
            state[f"heads.{d}.weight"] = w.detach().float().contiguous()
        save_file(state, str(args.out), metadata={"format": "pt"})
        print(f"wrote {args.out}")
    elif not wins:
        print("distilled heads do NOT win (mean at 96 and 64, no slice −0.01): nothing written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
