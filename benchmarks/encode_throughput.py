"""Encoding throughput: polylate vs sentence-transformers on the same model and texts.

Both encode the bundled multilingual-e5-small into per-token vectors (sentence-transformers
with ``output_value="token_embeddings"``), on real multilingual documents from
../shared/data, alternating rounds so machine noise hits both sides alike. Reports input
tokens per second and the ratio to sentence-transformers at the same precision (fp32 and
bf16), plus a check that both computed the same hidden states. (PyLate encodes through
sentence-transformers; it cannot load the bundled model's two-token markers itself.)

    python benchmarks/encode_throughput.py [--docs 512] [--rounds 3] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from pathlib import Path

import torch

from polylate import load_model
from polylate.model.bundled import base_encoder, bundled_model_path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def corpus_texts(limit: int) -> list[str]:
    """Mixed-length real documents: SciFact abstracts and XQuAD paragraphs in 12 languages."""
    files = sorted(DATA.glob("xquad_r/*/corpus.jsonl*")) + sorted(DATA.glob("scifact/corpus.jsonl*"))
    if not files:
        raise SystemExit(f"no corpora under {DATA}; this benchmark reads ../shared/data")
    per_file = -(-limit // len(files))  # rounded up: --docs N gives N documents
    texts: list[str] = []
    for f in files:
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= per_file:
                    break
                row = json.loads(line)
                texts.append(" ".join(x for x in (row.get("title"), row.get("text")) if x))
    return texts[:limit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise SystemExit("this benchmark compares against sentence-transformers: `make bench` installs it "
                         "(pip install -e '.[bench]')") from None

    texts = corpus_texts(args.docs)
    ours = load_model()
    ours_bf16 = load_model(dtype=torch.bfloat16)
    st = SentenceTransformer(str(bundled_model_path()), device="cpu")
    st_bf16 = SentenceTransformer(str(bundled_model_path()), device="cpu", model_kwargs={"torch_dtype": torch.bfloat16})
    st.max_seq_length = min(ours.config.doc_maxlen, ours.max_doc_tokens)  # one window each
    st_bf16.max_seq_length = st.max_seq_length
    st_texts = ["passage: " + t for t in texts]  # the same prefix polylate uses as its marker
    n_tokens = sum(len(s) for s in ours.tokenizer.sequences(texts, is_query=False, doc_maxlen=st.max_seq_length))

    # same work: polylate's encoder states equal sentence-transformers' token embeddings (the
    # published e5 encoder; the shipped model's fine-tuned top layers differ on purpose and
    # cost the same to run)
    base = base_encoder()
    sample = texts[:8]
    st_tok = st.encode(["passage: " + t for t in sample], output_value="token_embeddings",
                       convert_to_numpy=False)
    with torch.inference_mode():
        batch = ours.tokenizer.batch(ours.tokenizer.sequences(sample, False, st.max_seq_length), False)
        hidden = base(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
    worst = 1.0
    for i, ref in enumerate(st_tok):
        n = min(len(ref), int(batch.attention_mask[i].sum()))
        # polylate's marker "passage:" tokenises like sentence-transformers' "passage: " prefix
        cos = torch.nn.functional.cosine_similarity(hidden[i, :n], ref[:n].float(), dim=-1)
        worst = min(worst, float(cos.min()))

    runs = {
        "polylate fp32": lambda: ours.encode(texts, batch_size=args.batch_size, doc_maxlen=st.max_seq_length),
        "polylate bf16": lambda: ours_bf16.encode(texts, batch_size=args.batch_size, doc_maxlen=st.max_seq_length),
        "sentence-transformers fp32": lambda: st.encode(st_texts, batch_size=args.batch_size,
                                                        output_value="token_embeddings"),
        "sentence-transformers bf16": lambda: st_bf16.encode(st_texts, batch_size=args.batch_size,
                                                             output_value="token_embeddings"),
    }
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"\n{len(texts)} documents, {n_tokens} input tokens, batch {args.batch_size}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds (median)")
    print(f"hidden-state agreement polylate vs sentence-transformers: min token cosine {worst:.6f}\n")
    print(f"{'system':<28}{'seconds':>10}{'tokens/s':>12}{'vs ST, same precision':>23}")
    for name, t in medians.items():
        peer = medians["sentence-transformers " + name.split()[-1]]
        print(f"{name:<28}{t:>10.2f}{n_tokens / t:>12.0f}{peer / t:>22.2f}x")


if __name__ == "__main__":
    main()
