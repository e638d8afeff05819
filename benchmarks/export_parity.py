"""Export parity: models written by ``polylate convert`` encode, in PyLate and colbert-ai
themselves, exactly as polylate encodes them.

For each source model and target layout: polylate writes the layout, the peer library loads
the folder with its own loader and encodes real multilingual queries and documents (XQuAD-R
questions and paragraphs in 6 languages), and the table gives the largest absolute difference
from polylate's vectors of the same model, token by token (rows must match one for one). A
change the layout cannot avoid is declared by polylate before it writes (last column). The
"re-loading" column compares the peer with polylate's own loader of the written folder: the
loaders' parity with the real libraries, on real text.

Sources: tiny random checkpoints in the Stanford and PyLate layouts (tests/layouts.py), and the
bundled e5-small encoder with its trained 128-d head under Jina-ColBERT-v2's settings
(query expansion, colbert-ai's punctuation rule) and single-token markers ``▁Q``/``▁D`` (PyLate
and colbert-ai insert one marker token; the bundled model's own ``query:``/``passage:`` markers
are refused by both layouts); and that model again with XLM-R's position numbering, which is
written as an ``xlm-roberta`` encoder (``roberta.`` keys) rather than a BERT one.

Peers run in their own venvs (``--pylate-python``, ``--colbert-python``; see peers/README.md);
a missing one is skipped.

    python benchmarks/export_parity.py [--texts 24]
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.layouts: the tiny published-layout writers

from polylate import load_model  # noqa: E402
from polylate.config import ColBERTConfig  # noqa: E402
from polylate.model.colbert import ColBERT  # noqa: E402
from polylate.model.export import check_layout, export_model  # noqa: E402
from polylate.text.tokenizer import ColBERTTokenizer  # noqa: E402

DATA = ROOT / ".." / "shared" / "data"
LANGS = ("en", "de", "zh", "ar", "hi", "ru")


def _jsonl(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def real_texts(per_language: int) -> tuple[list[str], list[str]]:
    queries, docs = [], []
    for lang in LANGS:
        folder = DATA / "xquad_r" / lang
        q = next(folder.glob("queries.jsonl*"), None)
        c = next(folder.glob("corpus.jsonl*"), None)
        if q is None or c is None:
            continue
        queries += [r["text"] for r, _ in zip(_jsonl(q), range(per_language))]
        docs += [r["text"] for r, _ in zip(_jsonl(c), range(per_language))]
    if not queries:  # no shared data: a few texts of our own
        queries = ["Which city is the capital of Germany?", "Wer schrieb den Faust?", "什么是晚期交互?"]
        docs = ["Berlin is the capital of Germany.", "Goethe schrieb Faust (1808).", "晚期交互检索。"]
    return queries, docs


def e5_single_markers() -> ColBERT:
    bundled = load_model()
    config = ColBERTConfig(**{**bundled.config.to_dict(), "query_marker": "▁Q", "doc_marker": "▁D",
                              "query_expansion": True, "attend_to_mask_tokens": True, "doc_maxlen": 512,
                              "skiplist_rule": "colbert"})
    tok = ColBERTTokenizer(bundled.tokenizer.tokenizer, config)
    return ColBERT(bundled.encoder, {128: bundled.heads["128"]}, tok, config, name="e5-small-colbert-Q-D")


def as_xlmr_positions(model: ColBERT) -> ColBERT:
    """The same model with XLM-R's position numbering (from pad id + 1 = 2): the position table
    shifted by two rows, so it computes the same vectors and is written as ``xlm-roberta``."""
    import dataclasses

    import torch

    from polylate.model.encoder import Encoder

    offset = model.tokenizer.pad_id + 1
    cfg = dataclasses.replace(model.encoder.config, position_offset=offset,
                              max_positions=model.encoder.config.max_positions + offset)
    state = model.encoder.state_dict()
    table = state["embeddings.position.weight"]
    state["embeddings.position.weight"] = torch.cat([torch.zeros(offset, table.shape[1]), table])
    encoder = Encoder(cfg)
    encoder.load_state_dict(state)
    return ColBERT(encoder, {d: model.heads[str(d)] for d in model.head_dims}, model.tokenizer, model.config,
                   name=model.name + "-xlmr")


def tiny(kind: str, folder: Path) -> ColBERT:
    from tests.layouts import write_pylate, write_stanford

    if kind == "stanford":
        write_stanford(folder)
    else:
        write_pylate(folder, query_expansion=kind != "pylate-noexp")
    return load_model(folder)


def peer_vectors(python: str, engine: str, folder: Path, texts: Path, out: Path):
    cmd = [python, str(ROOT / "benchmarks" / "peers" / "encode_checkpoint.py"), "--engine", engine,
           "--folder", str(folder), "--texts", str(texts), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{engine} failed:\n{done.stderr[-3000:]}")
    z = np.load(out)
    return ([z[f"q{i}"] for i in range(sum(k.startswith("q") for k in z.files))],
            [z[f"d{i}"] for i in range(sum(k.startswith("d") for k in z.files))])


def _version(python: str, engine: str) -> str:
    dist = "pylate" if engine == "pylate" else "colbert-ai"
    done = subprocess.run([python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                          capture_output=True, text=True)
    return f"{engine} {done.stdout.strip() or '?'}"


def max_diff(ours: list[np.ndarray], theirs: list[np.ndarray]) -> str:
    if len(ours) != len(theirs):
        return f"{len(theirs)} texts, not {len(ours)}"
    worst, shapes = 0.0, 0
    for a, b in zip(ours, theirs):
        if a.shape != b.shape:
            shapes += 1
        else:
            worst = max(worst, float(np.abs(a - b).max()))
    return f"{worst:.1e}" + (f" ({shapes} row-count mismatches)" if shapes else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=4, help="queries and paragraphs per language")
    ap.add_argument("--pylate-python", action="append", help="a PyLate venv's python (repeatable; default: "
                    ".venv-pylate*/bin/python, e.g. 1.6.0 and 1.2.0 side by side)")
    ap.add_argument("--colbert-python", default=str(ROOT / ".venv-colbert" / "bin" / "python"))
    args = ap.parse_args()
    queries, docs = real_texts(args.texts)
    pylates = args.pylate_python or [str(p / "bin" / "python") for p in sorted(ROOT.glob(".venv-pylate*"))]
    peers = [("pylate", "pylate", p) for p in pylates] + [("stanford", "colbert-ai", args.colbert_python)]
    peers = [(layout, engine, python, _version(python, engine)) for layout, engine, python in peers
             if Path(python).exists()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        texts = tmp / "texts.json"
        texts.write_text(json.dumps({"queries": queries, "documents": docs}, ensure_ascii=False))
        sources = {"stanford (tiny)": lambda: tiny("stanford", tmp / "src-stanford"),
                   "pylate (tiny)": lambda: tiny("pylate", tmp / "src-pylate"),
                   "pylate, no query expansion": lambda: tiny("pylate-noexp", tmp / "src-pylate-noexp"),
                   "e5-small + ▁Q/▁D": e5_single_markers,
                   "the same, XLM-R positions": lambda: as_xlmr_positions(e5_single_markers())}
        for name, make in sources.items():
            model = make()
            ours_q = [model.encode(q, is_query=True) for q in queries]
            ours_d = [model.encode(d) for d in docs]
            for layout, engine, python, version in peers:
                blockers, changes = check_layout(model, layout)
                if blockers:
                    rows.append((name, version, "refused: " + "; ".join(blockers), "", "", ""))
                    continue
                folder = tmp / f"out-{layout}"
                export_model(model, folder, layout, allow_changes=True)
                theirs_q, theirs_d = peer_vectors(python, engine, folder, texts, tmp / "v.npz")
                back = load_model(folder)  # polylate's own loader of the written folder
                back_q = [back.encode(q, is_query=True) for q in queries]
                back_d = [back.encode(d) for d in docs]
                rows.append((name, version, max_diff(ours_q, theirs_q), max_diff(ours_d, theirs_d),
                             max_diff(back_q + back_d, theirs_q + theirs_d), "; ".join(changes) or "none"))
    print(f"{len(queries)} queries, {len(docs)} documents ({', '.join(LANGS)}); max |polylate − peer|, float32")
    header = ("source model", "peer", "queries", "documents", "polylate re-loading it", "declared changes")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
