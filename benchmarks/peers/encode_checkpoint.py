#!/usr/bin/env python
"""Encode texts with a peer library's own loader and encoder, for export parity checks.

Runs inside a peer's venv and never imports polylate:

    /path/to/pylate-venv/bin/python benchmarks/peers/encode_checkpoint.py --engine pylate \\
        --folder exported/ --texts texts.json --out vectors.npz
    .venv-colbert/bin/python benchmarks/peers/encode_checkpoint.py --engine colbert-ai ...

texts.json: {"queries": [...], "documents": [...]}. vectors.npz: float32 arrays ``q0..`` (each
query's token vectors) and ``d0..`` (each document's, with the library's skiplist applied).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def pylate_vectors(folder: str, queries: list[str], documents: list[str]):
    from pylate import models

    model = models.ColBERT(model_name_or_path=folder, device="cpu")
    q = model.encode(queries, is_query=True, convert_to_numpy=True)
    d = model.encode(documents, is_query=False, convert_to_numpy=True)
    return [np.asarray(x, np.float32) for x in q], [np.asarray(x, np.float32) for x in d]


def colbert_ai_vectors(folder: str, queries: list[str], documents: list[str]):
    import torch
    from colbert.infra import ColBERTConfig
    from colbert.modeling.checkpoint import Checkpoint

    ckpt = Checkpoint(folder, colbert_config=ColBERTConfig())
    with torch.inference_mode():
        q = ckpt.queryFromText(queries)
        d = ckpt.docFromText(documents, keep_dims=False)
    d = d[0] if isinstance(d, tuple) else d
    return [x.float().numpy() for x in q], [x.float().numpy() for x in d]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", choices=["pylate", "colbert-ai"], required=True)
    ap.add_argument("--folder", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    texts = json.loads(open(args.texts, encoding="utf-8").read())
    encode = pylate_vectors if args.engine == "pylate" else colbert_ai_vectors
    q, d = encode(args.folder, texts["queries"], texts["documents"])
    np.savez(args.out, **{f"q{i}": v for i, v in enumerate(q)}, **{f"d{i}": v for i, v in enumerate(d)})


if __name__ == "__main__":
    main()
