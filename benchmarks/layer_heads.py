"""Issue 4's 64-d gap: does a head over a middle encoder layer generalise across languages better?

Multilingual encoders are often reported to be most language-neutral in their middle layers.
This asks whether 64-d heads reading layer L's token states keep more of the 128-d quality on
XQuAD-R X→en than heads over the last layer. head_ceiling.py's in-domain split (questions of
half the articles train, the other half's X→en questions are scored against all 240
paragraphs); for each layer, a 128-d and a 64-d head start from the same random orthogonal
map and train alike (InfoNCE over the batch's paragraphs plus random ones, 48 candidates,
AdamW, batch 32). Diagnostic only: XQuAD-R is test data no shipped model may train on.

    python benchmarks/layer_heads.py [--layers 8,12] [--steps 300] [--test-queries 1000]

Measured on 2 CPU cores with another job beside it (bundled model as shipped; states of 8,476
questions and 240 paragraphs at both layers in 265 s, then 5-10 min per head), defaults:

    head                       nDCG@10   64/128 at its layer
    shipped 128, layer 12       0.8761
    shipped 64, layer 12        0.8299   0.947
    in-domain 128, layer 8      0.7806
    in-domain 64, layer 8       0.7496   0.960
    in-domain 128, layer 12     0.7976
    in-domain 64, layer 12      0.7650   0.959

A middle layer keeps the same share of quality at 64 dims as the last one (0.960 vs 0.959) and
is worse in absolute terms at both sizes: it is no lever for the 64-d gap. (Heads from a random
start after 300 steps are below the shipped ones, which trained far longer; the comparison
between layers is like for like.)
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_default_head import ndcg_at_10  # noqa: E402

from polylate.model.bundled import load_bundled  # noqa: E402
from polylate.train.data import read_beir  # noqa: E402
from polylate.train.losses import maxsim_scores  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "xquad_r"
LANGS = "ar de el es hi ro ru th tr vi zh".split()


@torch.no_grad()
def layer_states(model, texts: list[str], is_query: bool, layers: list[int], doc_maxlen: int = 512):
    """{layer: [padded states [n, L, H] float16, output mask [n, L]]} in the texts' order."""
    tok = model.tokenizer
    seqs = tok.sequences(texts, is_query, None if is_query else doc_maxlen)
    width = max(len(s) for s in seqs)
    out: dict[int, torch.Tensor] = {}
    mask = torch.zeros(len(texts), width, dtype=torch.bool)
    order = sorted(range(len(texts)), key=lambda i: -len(seqs[i]))
    for s in range(0, len(order), 64):
        idx = order[s : s + 64]
        batch = tok.batch([seqs[i] for i in idx], is_query)
        ids = torch.from_numpy(batch.input_ids)
        attn = torch.from_numpy(batch.attention_mask)
        x = model.encoder.embeddings(ids)
        done = 0
        for layer in sorted(layers):
            x = model.encoder.resume(x, attn, done, layer)
            done = layer
            if layer not in out:
                hidden = x.shape[-1]
                out[layer] = torch.zeros(len(texts), width, hidden, dtype=torch.float16)
            n = x.shape[1]
            out[layer][idx, :n] = x.to(torch.float16)
        keep = torch.from_numpy(batch.output_mask)
        mask[idx, : keep.shape[1]] = keep
    return out, mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="8,12")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--test-queries", type=int, default=1000)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    torch.manual_seed(0)
    model = load_bundled().eval()
    corpus, _, qrels = read_beir(args.data / "en", "test")
    dids = sorted(corpus)
    pos = {d: i for i, d in enumerate(dids)}
    article = {d: d.rsplit("-", 1)[0] for d in dids}
    train_articles = set(sorted(set(article.values()))[::2])

    def art(q):
        return article[next(iter(qrels[q]))]

    queries = {}
    for lang in LANGS + ["en"]:
        _, lq, _ = read_beir(args.data / lang, "test")
        queries.update({(lang, q): t for q, t in lq.items() if q in qrels})
    keys = sorted(queries)
    held = [k for k in keys if art(k[1]) not in train_articles and k[0] != "en"]
    test = sorted(random.Random(1).sample(held, min(args.test_queries, len(held))))
    train = [k for k in keys if art(k[1]) in train_articles]
    negatives = [i for i, d in enumerate(dids) if article[d] in train_articles]
    used = sorted(set(train) | set(test))
    row = {k: i for i, k in enumerate(used)}
    start = time.perf_counter()
    doc_states, doc_mask = layer_states(model, [corpus[d] for d in dids], False, layers)
    q_states, q_mask = layer_states(model, [queries[k] for k in used], True, layers)
    print(f"states of {len(used)} questions, {len(dids)} paragraphs at layers {layers} in "
          f"{time.perf_counter() - start:.0f}s; train {len(train)}, test {len(test)}", flush=True)
    test_rows = torch.tensor([row[k] for k in test])
    names = [f"{lang}:{q}" for lang, q in test]
    test_qrels = {f"{lang}:{q}": qrels[q] for lang, q in test}

    def project(h, weight):
        return F.normalize(h.float() @ weight.T, dim=-1)

    @torch.no_grad()
    def ndcg(layer, weight):
        docs = project(doc_states[layer], weight)
        scores = [maxsim_scores(project(q_states[layer][test_rows[s : s + 200]], weight), q_mask[test_rows[s : s + 200]],
                                docs, doc_mask, doc_chunk=60) for s in range(0, len(test), 200)]
        return ndcg_at_10(torch.cat(scores), names, dids, test_qrels)

    def train_head(layer, dim):
        gen = torch.Generator().manual_seed(0)
        hidden = q_states[layer].shape[-1]
        weight = torch.linalg.qr(torch.randn(hidden, dim, generator=gen))[0].T.contiguous().requires_grad_(True)
        opt = torch.optim.AdamW([weight], lr=args.lr, weight_decay=0.0)
        rng = random.Random(0)
        for step in range(1, args.steps + 1):
            batch = rng.sample(train, 32)
            rows = torch.tensor([row[k] for k in batch])
            wanted = sorted({pos[next(iter(qrels[k[1]]))] for k in batch})
            others = [i for i in negatives if i not in set(wanted)]
            cand = wanted + rng.sample(others, max(0, min(len(others), 48 - len(wanted))))
            where = {d: j for j, d in enumerate(cand)}
            labels = torch.tensor([where[pos[next(iter(qrels[k[1]]))]] for k in batch])
            scores = maxsim_scores(project(q_states[layer][rows], weight), q_mask[rows],
                                   project(doc_states[layer][cand], weight), doc_mask[cand], doc_chunk=16)
            loss = F.cross_entropy(scores / 0.05 / 32, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return weight.detach()

    shipped = {int(d): model.heads[str(d)].weight.detach().float() for d in model.head_dims}
    last = model.encoder.config.num_layers
    rows = []
    if last in layers:
        rows += [(f"shipped 128, layer {last}", ndcg(last, shipped[128])),
                 (f"shipped 64, layer {last}", ndcg(last, shipped[64]))]
        print(*rows, sep="\n", flush=True)
    for layer in layers:
        got = {}
        for dim in (128, 64):
            t = time.perf_counter()
            got[dim] = ndcg(layer, train_head(layer, dim))
            rows.append((f"in-domain {dim}, layer {layer}", got[dim]))
            print(f"layer {layer} dim {dim}: nDCG@10 {got[dim]:.4f} ({time.perf_counter() - t:.0f}s)", flush=True)
        rows.append((f"  64/128 at layer {layer}", got[64] / got[128]))
    print(f"\nXQuAD-R X→en, {len(test)} held-out questions × {len(dids)} paragraphs, exact MaxSim, "
          f"{args.steps} steps")
    for name, value in rows:
        print(f"{name:28s} {value:.4f}")


if __name__ == "__main__":
    main()
