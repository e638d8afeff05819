"""Command line: `polylate encode`, `polylate demo` (more verbs arrive with their modules)."""

from __future__ import annotations

import gzip
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Multilingual late-interaction (ColBERT) retrieval.")
console = Console(stderr=True)

MODEL_HELP = "checkpoint folder, hub id, or 'default' for the bundled offline model"


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def read_texts(path: Path | None, texts: list[str]) -> tuple[list[str], list[str]]:
    """(ids, texts) from arguments, a .txt (one per line) or .jsonl[.gz] file, or stdin."""
    if texts:
        return [str(i) for i in range(len(texts))], texts
    if path is None or str(path) == "-":
        lines = [ln.rstrip("\n") for ln in sys.stdin]
        return [str(i) for i in range(len(lines))], lines
    if not path.exists():
        _fail(f"input file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        if ".jsonl" in path.suffixes:
            ids, out = [], []
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    _fail(f"{path}:{n}: not valid JSON ({exc})")
                text = " ".join(x for x in (row.get("title"), row.get("text")) if x)
                ids.append(str(row.get("_id", row.get("id", n - 1))))
                out.append(text)
            return ids, out
        lines = [ln.rstrip("\n") for ln in f]
        return [str(i) for i in range(len(lines))], lines


@app.command()
def encode(
    texts: list[str] = typer.Argument(None, help="texts to encode (else --input or stdin)"),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help=".txt, .jsonl or .jsonl.gz (BEIR corpus/queries)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help=".npz (packed vectors) or .jsonl; default: JSON lines on stdout"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    query: bool = typer.Option(False, "--query/--document", help="encode as queries (32 tokens, mask-augmented) or documents"),
    dim: int = typer.Option(128, "--dim", "-d", help="output dimension: 128, 96 or 64"),
    batch_size: int = typer.Option(32, "--batch-size", "-b"),
    doc_maxlen: Optional[int] = typer.Option(None, "--doc-maxlen", help="document token limit (up to 8192)"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ..."),
) -> None:
    """Encode texts into L2-normalised token vectors."""
    from polylate import load_model

    ids, items = read_texts(input, texts or [])
    if not items:
        _fail("no input texts")
    if output is not None and output.suffix not in (".npz", ".jsonl"):
        _fail(f"output must end in .npz or .jsonl, got {output.name}")
    try:
        m = load_model(model, device=device)
        start = time.perf_counter()
        vectors = m.encode(items, is_query=query, dim=dim, batch_size=batch_size,
                           show_progress=sys.stderr.isatty(), doc_maxlen=doc_maxlen)
    except (ValueError, TypeError) as exc:
        _fail(str(exc))
    elapsed = time.perf_counter() - start
    n_tokens = sum(v.shape[0] for v in vectors)
    if output is not None and output.suffix == ".npz":
        np.savez(output, ids=np.array(ids), doclens=np.array([v.shape[0] for v in vectors], np.int64),
                 vectors=np.concatenate(vectors).astype(np.float16), dim=dim)
    else:
        with open(output, "w", encoding="utf-8") if output else nullcontext(sys.stdout) as sink:
            for i, v in zip(ids, vectors):
                sink.write(json.dumps({"id": i, "embeddings": np.round(v, 6).tolist()}) + "\n")
    console.print(f"encoded {len(items)} {'queries' if query else 'documents'} → {n_tokens} vectors "
                  f"of dim {dim} in {elapsed:.2f}s" + (f" → {output}" if output else ""))


@app.command()
def demo(
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    dim: int = typer.Option(128, "--dim", "-d"),
) -> None:
    """Rank a small multilingual sample for queries in several languages."""
    from polylate import load_model
    from polylate.sample import SAMPLE_DOCUMENTS, SAMPLE_QUERIES

    m = load_model(model)
    console.print(f"model: {m.name}  encoder: {m.encoder.config.num_layers} layers × "
                  f"{m.encoder.config.hidden_size}  heads: {m.head_dims}")
    docs = [d["text"] for d in SAMPLE_DOCUMENTS]
    start = time.perf_counter()
    doc_vectors = m.encode(docs, dim=dim, show_progress=sys.stderr.isatty())
    console.print(f"encoded {len(docs)} documents ({sum(len(v) for v in doc_vectors)} token vectors) "
                  f"in {time.perf_counter() - start:.2f}s")
    from polylate.scoring import rerank

    out = Console()
    for q in SAMPLE_QUERIES:
        qv = m.encode(q["text"], is_query=True, dim=dim)
        table = Table(title=f"[{q['lang']}] {q['text']}", title_justify="left", show_lines=False)
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        table.add_column("lang")
        table.add_column("document")
        for rank, (i, s) in enumerate(rerank(qv, doc_vectors, top_n=3), 1):
            d = SAMPLE_DOCUMENTS[i]
            table.add_row(str(rank), f"{s:.2f}", d["lang"], d["text"][:90])
        out.print(table)


if __name__ == "__main__":
    app()
