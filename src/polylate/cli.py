"""Command line: `polylate encode`, `polylate index …`, `polylate qdrant …`, `polylate eval`, `polylate rerank`, `polylate mine`, `polylate train`, `polylate serve`, `polylate demo`."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import re
import shlex
import shutil
import sys
import time
import warnings
from contextlib import closing, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from polylate.model import identity  # no torch import: the CLI starts fast
from polylate.paths import file_in_the_way

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Multilingual late-interaction (ColBERT) retrieval.")
# soft_wrap: a message piped to a file or another program is one line, not cut at 80 columns
console = Console(stderr=True, soft_wrap=True)


def _bar():
    """A progress bar on a terminal; nothing at all when stderr is a pipe or a file."""
    from rich.progress import Progress

    return Progress(console=console, transient=True, disable=not console.is_terminal)

MODEL_HELP = ("checkpoint folder, hub id, 'default' for the bundled offline model, or a .safetensors "
              "heads file over it (polylate train --heads-only)")


@app.callback()
def _cli() -> None:
    """Multilingual late-interaction (ColBERT) retrieval."""
    # library warnings (skipped rows, ...) read as one line, not with the source line that raised them
    warnings.showwarning = lambda message, category, *_, **__: console.print(
        f"[yellow]warning:[/yellow] {escape(str(message))}", soft_wrap=True)


def _fail(message: str) -> None:
    # one unwrapped line (logs and greps see it whole); brackets in it are text, not markup
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


DEVICE_HELP = "torch device: cpu, cuda, cuda:1, mps (default: cpu)"
DTYPE_HELP = ("encoder precision: float32 (fp32), bfloat16 (bf16; 2-3x faster on CPUs with bf16 support, vectors "
              "within cosine 0.9995) or float16 (fp16, half); on CUDA half precision is what enables the flash "
              "attention kernel")
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}


def _check_device(device: str | None):
    """A usable torch device from ``--device`` (or ``None``); otherwise a one-line error."""
    import torch

    if device is None:
        return None
    try:
        dev = torch.device(device)
    except RuntimeError:
        _fail(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        _fail(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        _fail(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        _fail(f"--device {device}: MPS is not available on this machine")
    return dev


def _dtype_name(dtype: str | None) -> str | None:
    """``--dtype`` as torch's name for it (bf16 → bfloat16), or a one-line error."""
    if dtype is None:
        return None
    if dtype.lower() not in DTYPES:
        _fail(f"--dtype {dtype!r}: use float32, bfloat16 (bf16) or float16 (fp16)")
    return DTYPES[dtype.lower()]


def _check_dtype(dtype: str | None):
    import torch

    name = _dtype_name(dtype)
    return None if name is None else getattr(torch, name)


def _load_model(name: str, device: str | None = None, dtype: str | None = None, option: str = "--model"):
    """``load_model`` with a clear one-line error for a bad checkpoint, device or dtype."""
    from polylate import load_model

    dev, dt = _check_device(device), _check_dtype(dtype)
    try:
        return load_model(name, device=dev, dtype=dt)
    except (ValueError, OSError) as exc:
        _fail(f"{option} {name}: {exc}")


# files whose lines are not texts: read as lines they would index JSON syntax or binary data
NOT_TEXT_LINES = {".json", ".parquet", ".arrow", ".feather", ".csv", ".tsv", ".xlsx", ".npz", ".npy", ".pkl",
                  ".pickle", ".pt", ".safetensors", ".zip", ".tar", ".bz2", ".xz", ".zst", ".pdf"}


def read_texts(path: Path | None, texts: list[str], first_id: int = 0) -> tuple[list[str], list[str]]:
    """(ids, texts) from arguments, a .txt[.gz] (one per non-blank line) or BEIR .jsonl[.gz]
    file, or stdin. Texts without ids of their own are numbered from ``first_id``."""
    from polylate.eval.beir import DatasetError, _lines, _numbered_rows, doc_text
    from polylate.index.plaid import id_problem

    if texts:
        lines = texts
    elif path is None or str(path) == "-":
        lines = []  # decoded here, strictly: a text stdin may turn bad bytes into lone surrogates
        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        for n, line in enumerate(raw.splitlines(), 1):
            try:
                lines.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                _fail(f"stdin line {n} is not UTF-8 text")
    elif not path.is_file():
        _fail(f"input file {path} " + ("is a folder" if path.is_dir() else "does not exist"))
    elif path.suffix.lower() in NOT_TEXT_LINES or (path.suffix.lower() == ".gz"
                                                   and path.with_suffix("").suffix.lower() in NOT_TEXT_LINES):
        _fail(f"input file {path}: {path.suffix} is not read here; give .txt (one text per line) or "
              ".jsonl (one JSON object per line with _id and text), optionally .gz")
    elif ".jsonl" in path.suffixes:
        ids, out, where, empty = [], [], {}, []
        try:
            for n, row in _numbered_rows(path):
                doc_id = str(row["_id"])
                if doc_id in where:
                    _fail(f"{path}:{n}: id {doc_id!r} again (first at line {where[doc_id]})")
                problem = id_problem(doc_id)  # refused here, before hours of encoding, not after
                if problem:
                    _fail(f"{path}:{n}: id {problem}, got {doc_id!r}")
                where[doc_id] = n
                text = doc_text(path, n, row)
                if not text:  # markers only: it would match every query a little
                    empty.append(doc_id)
                    continue
                ids.append(doc_id)
                out.append(text)
        except DatasetError as exc:
            _fail(str(exc))
        if empty:
            console.print(f"[yellow]skipped {len(empty)} row(s) of {escape(str(path))} with no title or text, "
                          f"e.g. {escape(str(empty[:5]))}[/yellow]")
        return ids, out
    else:
        try:
            lines = [ln.rstrip("\r\n") for _, ln in _lines(path)]
        except DatasetError as exc:
            _fail(str(exc))
    kept = [t for t in lines if t.strip()]  # a blank line is no document
    return [str(first_id + i) for i in range(len(kept))], kept


def _read_ids(path: Path) -> list[str]:
    """Document ids from a file: a .jsonl corpus gives its _ids, any other file one id per line."""
    listed, lines = read_texts(path, [])
    return listed if ".jsonl" in path.suffixes else [t.strip() for t in lines]


def _check_dim(m, dim: int) -> None:
    if dim not in m.output_dims:
        _fail(f"--dim must be one of {m.output_dims} for this model, got {dim}")


def _check_output_file(output: Path | None, overwrite: bool | None = None, option: str = "--output") -> None:
    """A writable file name; ``overwrite=False`` also refuses an existing file (None: not asked)."""
    if output is None:
        return
    if output.is_dir():
        _fail(f"{option} {output} is a folder; give a file name")
    if not output.parent.is_dir():
        _fail(f"{option} {output}: folder {output.parent} does not exist")
    if overwrite is False and output.exists():
        _fail(f"{output} exists; pass --overwrite to replace it")


def _check_doc_maxlen(doc_maxlen: int | None) -> None:
    """--doc-maxlen by the library's rule ([4, 12288]), before any model loads."""
    from polylate.config import check_doc_maxlen

    if doc_maxlen is not None:
        try:
            check_doc_maxlen(doc_maxlen)
        except ValueError as exc:
            _fail(_option_names(str(exc)))


def _check_at_least(*checks: tuple[str, int, int]) -> None:
    """Each (option, value, least): a one-line error for the first value under its least."""
    for option, value, least in checks:
        if value < least:
            _fail(f"{option} must be at least {least}, got {value}")


@app.command()
def encode(
    texts: list[str] = typer.Argument(None, help="texts to encode (else --input or stdin)"),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help=".txt, .jsonl or .jsonl.gz (BEIR corpus/queries)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help=".npz (packed vectors) or .jsonl; default: JSON lines on stdout"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    query: bool = typer.Option(False, "--query/--document", help="encode as queries (with the query marker; models with query augmentation pad them with mask tokens to query_maxlen, 32 for Jina-ColBERT-v2) or documents"),
    dim: Optional[int] = typer.Option(None, "--dim", "-d", help="output dimension: 128, 96 or 64 (default: the "
                                      "model's; any size up to its largest head is a Matryoshka truncation)"),
    batch_size: int = typer.Option(32, "--batch-size", "-b"),
    doc_maxlen: Optional[int] = typer.Option(None, "--doc-maxlen", help="document token limit (default: the model's; past the encoder's window documents are encoded in overlapping windows)"),
    overwrite: bool = typer.Option(False, help="replace an existing output file"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Encode texts into L2-normalised token vectors."""
    if texts and input is not None:
        _fail("give texts as arguments or --input, not both")
    _check_doc_maxlen(doc_maxlen)
    if output is not None and output.suffix not in (".npz", ".jsonl"):
        _fail(f"output must end in .npz or .jsonl, got {output.name}")
    if output is not None and input is not None and output.exists() and output.resolve() == input.resolve():
        _fail(f"--output {output} is the input file: it would be replaced by its vectors")
    _check_output_file(output, overwrite)
    ids, items = read_texts(input, texts or [])
    if not items:
        _fail("no input texts")
    m = _load_model(model, device, dtype)
    dim = m.config.dim if dim is None else dim
    try:
        m.source_head(dim)
    except ValueError:
        _fail(f"--dim must be between 1 and {m.max_dim} for this model (its sizes: {m.output_dims}), got {dim}")
    try:
        start = time.perf_counter()
        vectors = m.encode(items, is_query=query, dim=dim, batch_size=batch_size,
                           show_progress=sys.stderr.isatty(), doc_maxlen=doc_maxlen)
    except (ValueError, TypeError) as exc:
        _fail(str(exc))
    elapsed = time.perf_counter() - start
    n_tokens = sum(v.shape[0] for v in vectors)
    try:
        if output is not None and output.suffix == ".npz":
            np.savez(output, ids=np.array(ids), doclens=np.array([v.shape[0] for v in vectors], np.int64),
                     vectors=np.concatenate(vectors).astype(np.float16), dim=dim)
        else:
            with open(output, "w", encoding="utf-8") if output else nullcontext(sys.stdout) as sink:
                for i, v in zip(ids, vectors):  # rounded in float64: float32 digits print long
                    sink.write(json.dumps({"id": i, "embeddings": np.round(v.astype(np.float64), 6).tolist()}) + "\n")
                sink.flush()
    except OSError as exc:
        _fail(f"cannot write {output or 'stdout'}: {exc.strerror or exc}")
    console.print(f"encoded {len(items)} {'queries' if query else 'documents'} → {n_tokens} vectors "
                  f"of dim {dim} in {elapsed:.2f}s" + (f" → {output}" if output else ""))


@app.command()
def convert(
    source: str = typer.Argument(..., help="model to convert: a checkpoint folder in any layout polylate reads, "
                                 "a hub id, a heads file, or 'default'"),
    output: Path = typer.Argument(..., help="folder to write"),
    to: str = typer.Option("polylate", "--to", "-t", help="layout: polylate (native, every Matryoshka head), "
                           "pylate (sentence-transformers), stanford (colbert-ai HF_ColBERT) or jina "
                           "(jina-colbert-v2, rotary encoders)"),
    dim: Optional[int] = typer.Option(None, "--dim", "-d", help="head size written (default: the model's); "
                                      "PyLate and Stanford hold one head, the native layout keeps all and "
                                      "makes this its default"),
    dtype: Optional[str] = typer.Option(None, help="weights' precision: float32, bfloat16 or float16 "
                                        "(default: as loaded, float32)"),
    allow_changes: bool = typer.Option(False, "--allow-changes", help="write even where the layout's library "
                                       "would encode some texts differently (the differences are printed)"),
    overwrite: bool = typer.Option(False, help="replace an existing output folder"),
) -> None:
    """Write a model in another checkpoint layout, for PyLate, colbert-ai or Jina's code to load."""
    from polylate.model.export import LAYOUTS, ExportError, check_output_folder, export_model

    if to not in LAYOUTS:
        _fail(f"--to must be one of {', '.join(LAYOUTS)}, got {to!r}")
    source_dir = Path(source).expanduser()
    if source_dir.is_dir() and (output.resolve() == source_dir.resolve() or output.resolve() in source_dir.resolve().parents):
        _fail(f"{output} is (or holds) the source model, which writing it would delete; choose another folder")
    if source_dir.is_dir() and source_dir.resolve() in output.resolve().parents:
        _fail(f"{output} is inside the source model's folder {source}; choose a folder outside it")
    try:
        check_output_folder(output)  # before the model loads; export_model checks it again
    except ExportError as exc:
        _fail(str(exc))
    if output.exists() and any(output.iterdir()) and not overwrite:
        _fail(f"{output} holds a model; pass --overwrite to replace it")
    torch_dtype = _check_dtype(dtype)
    m = _load_model(source, option="model")
    try:
        changes = export_model(m, output, to, dim=dim, dtype=torch_dtype, allow_changes=allow_changes)
    except ExportError as exc:
        _fail(str(exc).replace("dim must be", "--dim must be"))
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    for change in changes:
        console.print(f"[yellow]changed:[/yellow] {escape(change)}", soft_wrap=True)
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    held = (f"heads {'/'.join(map(str, m.head_dims))}, dim {dim or m.config.dim} by default" if to == "polylate"
            else f"at dim {dim or m.config.dim}")
    console.print(f"wrote {to} layout ({held}) → {output} ({size / 1e6:.1f} MB)")


index_app = typer.Typer(no_args_is_help=True, help="Build, update and search a PLAID index on disk.")
app.add_typer(index_app, name="index")


def _open_index(path: Path):
    from polylate.index.plaid import PlaidIndex
    from polylate.index.storage import IndexStoreError

    try:
        return PlaidIndex.open(path)
    except IndexStoreError as exc:
        _fail(str(exc))


def _empty_index(path: Path) -> dict | None:
    """The settings of an index the server created empty (None: a built index, or none)."""
    from polylate.index.storage import IndexStoreError, empty_index_settings

    try:
        return empty_index_settings(path)
    except IndexStoreError as exc:
        _fail(str(exc))


def _add_first(path: Path, settings: dict, input: Path, model: str | None, batch_size: int,
               device: str | None, dtype: str | None) -> None:
    """The first documents of an index the server created empty: they build it, with the
    settings and model it records (as the server's own first add does)."""
    from polylate.index.storage import SERVER_META, write_json

    ids, texts = read_texts(input, [])
    if not texts:
        _fail(f"{input} holds no documents")
    recorded = settings.get("model") or {}
    m, dim, doc_maxlen = _index_model(recorded, settings["dim"], model, device, dtype)
    _check_writer(path)
    # over what an interrupted first build left, if that is all the folder holds
    idx = _build_encoded(path, ids, texts, m, dim, batch_size, doc_maxlen, nbits=settings["nbits"],
                         over_interrupted=True, keep_vectors=bool(settings.get("keep_vectors")),
                         model=recorded or identity.model_record(m, model or "default", dim, doc_maxlen))
    with _writing(path):
        write_json(path / SERVER_META, {**settings, "trained_tokens": idx.manifest["trained_tokens"]})
    console.print(f"added {len(ids)} documents; {len(idx)} in the index (its first: the centroids were trained on them)")


def _retrain(path: Path, idx, m, dim: int, doc_maxlen: int | None, batch_size: int, after_add: bool = False) -> None:
    """``PlaidIndex.retrain``, its texts re-encoded by ``m`` where no vectors were kept.
    ``after_add``: the add is committed already, so what stops the retrain is a note, not a
    failed command."""
    from polylate.index.storage import IndexStoreError

    before = idx.manifest.get("trained_tokens")
    try:
        with console.status("retraining centroids and compressing"):
            # (stored texts were cut when they were added, and said so then: no warning again)
            new = idx.retrain(None if m is None else lambda texts: _encode_docs(m, texts, dim, batch_size, doc_maxlen,
                                                                                warn_cut=False))
    except (IndexStoreError, ValueError, OSError) as exc:
        message = _write_error(path, exc)
        if not after_add:
            _fail(message)
        console.print(f"[yellow]note:[/yellow] the centroids were not retrained: {escape(message)}", soft_wrap=True)
        return
    console.print(f"retrained the centroids on {new.manifest['trained_tokens']} tokens (they were trained on "
                  f"{before if before is not None else 'an unknown number of'}): {new.codec.num_centroids} centroids, "
                  f"{len(new)} documents")


def _write_error(path: Path, exc: Exception) -> str:
    """One line for what stopped a write to the index at ``path``."""
    if isinstance(exc, FileNotFoundError):  # a file read meanwhile swept by another writer's commit
        return f"index {path} changed while it was read ({exc.filename or exc} is gone): retry"
    if isinstance(exc, OSError):
        return f"cannot write index {path}: {exc.strerror or exc}"
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


@contextmanager
def _writing(path: Path):
    """A write to the index at ``path``: its refusals (a store problem, bad input, unknown ids)
    and the disk's errors end the command with one line, never a traceback."""
    from polylate.index.storage import IndexStoreError

    try:
        yield
    except (IndexStoreError, ValueError, KeyError, OSError) as exc:
        _fail(_write_error(path, exc))


def _interruptible(command):
    """An index write stopped by Ctrl-C says where it leaves the index (its last commit)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            from polylate.index.storage import MANIFEST

            path = Path(kwargs["path"])
            console.print(f"interrupted: index {path} is as its last commit left it" if (path / MANIFEST).exists()
                          else f"interrupted: no index was built at {path}")
            raise typer.Exit(130) from None

    return run


def _check_writer(path: Path, create: bool = False) -> None:
    """Before any encoding: the index folder can be written and no other process writes it
    (``create``: a new index's folder is made now)."""
    from polylate.index.storage import IndexStoreError, check_writer

    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        check_writer(path)
    except IndexStoreError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot create index folder {path}: {exc.strerror or exc}")


def _recorded_model(recorded: dict) -> str | None:
    """The model a store records, to load when no -m is given; a folder that is gone is said so
    (loading it would blame a --model option nobody gave)."""
    name = recorded.get("name_or_path")
    if name and Path(name).is_absolute() and not Path(name).exists():
        _fail(f"the model this index records, {name}, is not there any more (moved or deleted?); pass -m with "
              "where it is now, or the name it was loaded by")
    return name


def _index_model(recorded: dict | None, dim: int, override: str | None, device: str | None = None,
                 dtype: str | None = None):
    """(model, dim, doc_maxlen) an index or collection was built with, as it recorded them."""
    recorded = recorded or {}
    name = override or _recorded_model(recorded) or "default"
    m = _load_model(name, device, dtype)
    reason = identity.model_mismatch(recorded, m)
    if reason:
        _fail(f"model {name} is not the one these vectors were made with: {reason}. Vectors of two models "
              "are not comparable: pass -m with the model that built them, or rebuild with this one")
    return m, recorded.get("dim", dim), recorded.get("doc_maxlen")


def _encode_docs(model, texts, dim, batch_size, doc_maxlen, warn_cut: bool = True):
    try:
        return model.encode(texts, dim=dim, batch_size=batch_size, show_progress=True,
                            doc_maxlen=doc_maxlen, dtype=np.float16, warn_cut=warn_cut)
    except (ValueError, TypeError) as exc:
        _fail(str(exc))


#: documents encoded and compressed at a time by ``index build`` (float16 vectors in memory:
#: ~2·dim bytes per token, 1.3 GB for 50k 100-token documents at 128 d)
BUILD_PART_DOCS = 50_000


def _build_encoded(path: Path, ids: list[str], texts: list[str], m, dim: int, batch_size: int,
                   doc_maxlen: int | None, **build):
    """Encode ``texts`` and build an index of them (``PlaidIndex.build`` options in ``build``).
    A collection past ``BUILD_PART_DOCS`` documents never sits in memory whole: the codec is
    trained on a random part, then the rest is encoded and compressed a part at a time; still
    one commit at the end."""
    from polylate.index.plaid import PlaidIndex, build_parts

    if len(texts) <= BUILD_PART_DOCS:
        vectors = _encode_docs(m, texts, dim, batch_size, doc_maxlen)
        with _writing(path), console.status("training centroids and compressing"):
            return PlaidIndex.build(path, ids, vectors, texts=texts, **build)
    first, parts = build_parts(len(texts), BUILD_PART_DOCS)
    console.print(f"{len(texts)} documents: centroids from a random {len(first)}, then the rest in "
                  f"{len(parts)} part(s) of up to {BUILD_PART_DOCS}")

    def rest():
        for part in parts:
            part_texts = [texts[i] for i in part]
            yield [ids[i] for i in part], _encode_docs(m, part_texts, dim, batch_size, doc_maxlen), part_texts

    first_texts = [texts[i] for i in first]
    vectors = _encode_docs(m, first_texts, dim, batch_size, doc_maxlen)
    with _writing(path):
        return PlaidIndex.build(path, [ids[i] for i in first], vectors, texts=first_texts, more=rest(), **build)


@index_app.command("build")
@_interruptible
def index_build(
    path: Path = typer.Argument(..., help="index folder to create"),
    input: Path = typer.Option(..., "--input", "-i", help="documents: .jsonl[.gz] (BEIR corpus: _id, title, text) or .txt"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    dim: Optional[int] = typer.Option(None, "--dim", "-d", help="128, 96 or 64 (default: the model's)"),
    nbits: int = typer.Option(2, help="residual bits per dimension: 1, 2 or 4"),
    keep_vectors: bool = typer.Option(False, help="also store float16 vectors for exact re-ranking"),
    doc_maxlen: Optional[int] = typer.Option(None, "--doc-maxlen", help="document token limit, recorded in the "
                                             "index for its adds (default: the model's)"),
    sample_tokens: Optional[int] = typer.Option(None, "--sample-tokens", help="token vectors the centroids' "
                                                "k-means trains on (default 262,144: whole documents, at random, "
                                                "of the first 50k); the centroid count follows. For millions of "
                                                "tokens a larger sample gives better recall, slower (README)"),
    batch_size: int = typer.Option(32, "--batch-size", "-b"),
    overwrite: bool = typer.Option(False, help="replace an existing index"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Encode a collection and build a compressed index."""
    from polylate.index.codec import NBITS
    from polylate.index.plaid import interrupted_build
    from polylate.index.storage import MANIFEST, SERVER_META

    if nbits not in NBITS:
        _fail(f"--nbits must be one of {NBITS}, got {nbits}")
    if sample_tokens is not None:
        _check_at_least(("--sample-tokens", sample_tokens, 1024))
    _check_doc_maxlen(doc_maxlen)
    if (path / MANIFEST).exists() and not overwrite:
        _fail(f"an index already exists at {path}; pass --overwrite to replace it")
    if path.exists() and not path.is_dir():
        _fail(f"{path} is a file, not an index folder")
    if _empty_index(path) is not None and not overwrite:
        _fail(f"{path} holds an index created empty by the server: add documents with `polylate index add`, "
              "or pass --overwrite to build it here with this command's settings")
    if path.is_dir() and not (path / MANIFEST).exists() and any(p.name not in ("LOCK", SERVER_META)
                                                                for p in path.iterdir()):
        if not interrupted_build(path):
            _fail(f"{path} is not empty and holds no index; build into a new or empty folder")
        if not overwrite:
            _fail(f"{path} holds what an interrupted build left (no index); pass --overwrite to build over it")
    ids, texts = read_texts(input, [])
    if not texts:
        _fail(f"{input} holds no documents")
    m = _load_model(model, device, dtype)
    dim = m.config.dim if dim is None else dim
    _check_dim(m, dim)
    created = not path.exists()
    _check_writer(path, create=True)
    record = identity.model_record(m, model, dim, doc_maxlen)
    try:
        start = time.perf_counter()
        idx = _build_encoded(path, ids, texts, m, dim, batch_size, doc_maxlen, nbits=nbits,
                             keep_vectors=keep_vectors, model=record, overwrite=overwrite,
                             **({} if sample_tokens is None else {"sample_tokens": sample_tokens}))
    except BaseException:
        if created and not (path / MANIFEST).exists():  # a failed build leaves no folder it made
            shutil.rmtree(path, ignore_errors=True)
        raise
    (path / SERVER_META).unlink(missing_ok=True)  # a server's record of what was replaced: obsolete
    st = idx.stats()
    console.print(f"built {path}: {st['documents']} documents, {st['tokens']} tokens, {st['centroids']} centroids, "
                  f"{st['bytes_per_token']:.1f} bytes/token, in {time.perf_counter() - start:.1f}s")


@index_app.command("add")
@_interruptible
def index_add(
    path: Path = typer.Argument(..., help="existing index folder"),
    input: Path = typer.Option(..., "--input", "-i", help="documents (.jsonl[.gz] or .txt)"),
    replace: bool = typer.Option(False, help="replace documents whose id is already indexed"),
    skip: int = typer.Option(0, "--skip", min=0, help="leave out the input's first N documents (what a "
                             "stopped add committed: it says N)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="override the model recorded in the index"),
    batch_size: int = typer.Option(32, "--batch-size", "-b"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Add documents without rebuilding.

    Committed atomically every 10k documents: an add stopped midway keeps the parts it
    committed and says how to add the rest (--skip)."""

    empty = _empty_index(path)
    if empty is not None and skip:
        _fail("--skip continues an add into an index that holds documents; this one is empty")
    if empty is not None:
        _add_first(path, empty, input, model, batch_size, device, dtype)
        return
    idx = _open_index(path)
    positional = ".jsonl" not in input.suffixes
    if positional and replace:
        _fail("--replace needs the documents' ids: give a .jsonl with an _id per document "
              "(lines of a .txt are numbered after the index's documents)")
    # lines of a .txt carry no ids: number them after the largest numeric id already indexed
    first = 1 + max((int(i) for i in idx.ids if i.isascii() and i.isdigit()), default=-1) if positional else 0
    ids, texts = read_texts(input, [], first_id=first)
    if not texts:
        _fail(f"{input} holds no documents")
    if skip >= len(texts):
        _fail(f"--skip {skip} leaves none of the {len(texts)} documents of {input}")
    if skip:  # (a .txt's lines left are numbered on from the index's documents, as those skipped were)
        ids, texts = ids[skip:], texts[skip:]
        if positional:
            ids = [str(first + n) for n in range(len(texts))]
    present = [i for i in ids if i in idx]
    if present and not replace:
        _fail(f"{len(present)} id(s) already in the index, e.g. {present[:5]}; delete them first or pass --replace")
    m, dim, doc_maxlen = _index_model(idx.manifest.get("model"), idx.dim, model, device, dtype)
    _check_writer(path)
    # a part at a time (bounded memory, as index build); each add commits every 10k documents anyway
    committed = [0]  # documents of this input committed so far

    def done(n: int) -> None:
        committed[0] += n
        bar.advance(task, n)

    try:
        for start in range(0, len(ids), BUILD_PART_DOCS):
            part_ids, part_texts = ids[start : start + BUILD_PART_DOCS], texts[start : start + BUILD_PART_DOCS]
            vectors = _encode_docs(m, part_texts, dim, batch_size, doc_maxlen)
            with _writing(path), _bar() as bar:
                task = bar.add_task("committing", total=len(part_ids))
                idx.add(part_ids, vectors, replace=replace, texts=part_texts, progress=done)
    except KeyboardInterrupt:
        # counted from the index, not the commits reported: a commit may have landed after
        # its report was due (while the index was re-read). New ids go in input order.
        if not replace:
            now = _open_index(path)
            committed[0] = next((n for n, i in enumerate(ids) if i not in now), len(ids))
        if not committed[0]:
            raise
        if committed[0] == len(ids):
            console.print(f"interrupted: all {len(ids)} documents were committed (after that, only a merge of "
                          "segments was stopped)")
            raise typer.Exit(130) from None
        options = [*(["--replace"] if replace else []), *(["-m", model] if model else []), "-b", str(batch_size),
                   *(["--device", device] if device else []), *(["--dtype", dtype] if dtype else [])]
        again = " ".join(shlex.quote(a) for a in ("polylate", "index", "add", str(path), "-i", str(input),
                                                  "--skip", str(skip + committed[0]), *options))
        console.print(f"interrupted: {committed[0]} of the {len(ids)} documents were committed (the input's first "
                      f"{skip + committed[0]}); add the rest with: {again}"
                      + (" (the same input piped in again)" if str(input) == "-" else ""), soft_wrap=True)
        raise typer.Exit(130) from None
    replaced = f" ({len(present)} replaced)" if present else ""
    console.print(f"added {len(ids)} documents{replaced}; {len(idx)} in the index")
    if idx.outgrown():
        trained = idx.manifest["trained_tokens"]
        if trained < idx.AUTO_RETRAIN_BELOW_TOKENS:
            _retrain(path, idx, m, dim, doc_maxlen, batch_size, after_add=True)
        else:
            console.print(f"[yellow]note:[/yellow] the index's centroids were trained on {trained} tokens and it "
                          f"now holds {idx.live_tokens()}: `polylate index compact --retrain {path}` fits them to "
                          "the collection (recall drops as an index outgrows them)", soft_wrap=True)


@index_app.command("delete")
def index_delete(
    path: Path = typer.Argument(..., help="existing index folder"),
    ids: list[str] = typer.Argument(None, help="document ids (else --input, one per line)"),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="file of document ids, one per line"),
    missing_ok: bool = typer.Option(False, help="ignore ids that are not in the index"),
) -> None:
    """Delete documents by id (one atomic commit)."""
    if _empty_index(path) is not None:
        if not missing_ok:
            _fail(f"index {path} is empty (created by the server, no documents yet): nothing to delete")
        console.print("deleted 0 documents; 0 remain")
        return
    idx = _open_index(path)
    if not ids:
        if input is None:
            _fail("give ids as arguments or --input")
        ids = _read_ids(input)
    with _writing(path):
        n = idx.delete(ids, missing_ok=missing_ok)
    console.print(f"deleted {n} documents; {len(idx)} remain")


@index_app.command("compact")
@_interruptible
def index_compact(
    path: Path = typer.Argument(..., help="existing index folder"),
    retrain: bool = typer.Option(False, help="also retrain the centroids on the whole collection (from the kept "
                                 "vectors, or by re-encoding the stored texts): for an index grown by adds"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="override the model recorded in the index "
                                        "(--retrain re-encodes with it)"),
    batch_size: int = typer.Option(32, "--batch-size", "-b"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Merge segments and drop deleted documents (and, with --retrain, refit the centroids)."""
    if _empty_index(path) is not None:
        console.print(f"index {path} is empty (created by the server, no documents yet): nothing to compact")
        return
    idx = _open_index(path)
    if retrain:
        if not len(idx):
            _fail(f"index {path} holds no documents to retrain on")
        _check_writer(path)
        m = None
        if not idx.manifest.get("keep_vectors"):
            m, _, _ = _index_model(idx.manifest.get("model"), idx.dim, model, device, dtype)
        recorded = idx.manifest.get("model") or {}
        _retrain(path, idx, m, idx.dim, recorded.get("doc_maxlen"), batch_size)
        return
    with _writing(path):
        idx.compact()
    console.print(f"compacted: {idx.stats()['segments']} segment, {len(idx)} documents")


@index_app.command("stats")
def index_stats(path: Path = typer.Argument(..., help="existing index folder")) -> None:
    """Print the index's size and settings as JSON."""
    empty = _empty_index(path)
    if empty is not None:  # created empty by the server: settings only, until documents are added
        print(json.dumps({"documents": 0, "built": False, "dim": empty["dim"], "nbits": empty["nbits"],
                          "keeps_vectors": bool(empty.get("keep_vectors")), "model": identity.shown(empty.get("model"))}, indent=2))
        return
    print(json.dumps(_open_index(path).stats(), indent=2))


# the options of a search command (index and qdrant) that take many queries at once
QueriesFile = Annotated[Optional[Path], typer.Option(
    "--input", "-i", help="queries from a file: BEIR queries .jsonl[.gz] (_id, text) or .txt (one per line, "
    "numbered from 0); '-' for stdin")]
RunFile = Annotated[Optional[Path], typer.Option(
    "--run", help="write the rankings as a TREC run file (qid Q0 docid rank score tag) instead of printing them")]
QrelsFile = Annotated[Optional[Path], typer.Option(
    "--qrels", help="judgments .tsv (BEIR qrels, by the queries' ids): print the rankings' metrics")]
Metrics = Annotated[Optional[str], typer.Option(
    help="comma-separated metrics with --qrels (default: ndcg@10, recall@K, mrr@10)")]
QueryBatch = Annotated[int, typer.Option("--batch-size", "-b", help="queries per encoder batch")]


@index_app.command("search")
def index_search(
    path: Path = typer.Argument(..., help="index folder"),
    queries: Optional[list[str]] = typer.Argument(None, help="one or more queries (or --input)"),
    input: QueriesFile = None,
    k: int = typer.Option(10, "-k", help="results per query"),
    filter_ids: Optional[Path] = typer.Option(None, "--filter", help="file of allowed document ids, one per line"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="override the model recorded in the index"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of tables"),
    run: RunFile = None,
    qrels: QrelsFile = None,
    metrics: Metrics = None,
    thorough: bool = typer.Option(False, help="probe wider and re-rank more: recall ~0.99 vs exact on an index "
                                  "built with --keep-vectors, at ~10x the latency"),
    ncells: Optional[int] = typer.Option(None, help="override: centroids probed per query token"),
    ndocs: Optional[int] = typer.Option(None, help="override: candidates kept after stage 2"),
    threshold: Optional[float] = typer.Option(None, help="override: centroid score pruning threshold"),
    batch_size: QueryBatch = 32,
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Search the index with text queries: print the hits, or write a TREC run and score it."""
    from polylate.index.plaid import SearchSettings

    if threshold is not None and not math.isfinite(threshold):
        _fail(f"--threshold must be a number, got {threshold}")
    try:
        base = SearchSettings.for_k(k, thorough=thorough)
        settings = dataclasses.replace(base, **{name: value for name, value in (
            ("ncells", ncells), ("ndocs", ndocs), ("centroid_score_threshold", threshold)) if value is not None})
    except ValueError as exc:
        _fail(re.sub(r"^(ncells|ndocs|k) ", lambda m: ("-k" if m[1] == "k" else f"--{m[1]}") + " ", str(exc)))
    _check_at_least(("--batch-size", batch_size, 1))  # (-k: SearchSettings.for_k above)
    query_ids, query_texts, judged, metric_list, batch = _search_inputs(queries, input, run, qrels, metrics, k)
    from polylate.index.storage import IndexStoreError

    allowed = None
    if filter_ids is not None:
        allowed = _read_ids(filter_ids)
    empty = _empty_index(path)
    if empty is not None:  # created empty by the server: no hits, once the model is known to fit
        _index_model(empty.get("model"), empty["dim"], model, device, dtype)
        rankings = {q: ([], [], 0.0) for q in query_ids}
    else:
        idx = _open_index(path)
        if allowed is not None:
            _note_unknown_filter(allowed, [i for i in allowed if i in idx], filter_ids)
        m, dim, _ = _index_model(idx.manifest.get("model"), idx.dim, model, device, dtype)
        rankings = _rank_queries(m, dim, query_ids, query_texts, batch, batch_size,
                                 lambda vectors: idx.search(vectors, k=k, filter_ids=allowed, settings=settings),
                                 None if run else idx.documents, (ValueError, IndexStoreError))
    _report_search(rankings, dict(zip(query_ids, query_texts)), as_json, run, judged, metric_list, k, qrels,
                   from_file=input is not None)


def _search_inputs(queries: list[str] | None, input: Path | None, run: Path | None, qrels: Path | None,
                   metrics: str | None, k: int):
    """(query ids, texts, judgments, metric names, batch?) of a search command, all checked
    before any model loads. A batch (a file, a run or judgments) is encoded at once."""
    if bool(queries) == (input is not None):
        _fail("give queries as arguments or --input, not both" if queries else "give queries as arguments or --input")
    if any(not q.strip() for q in queries or []):
        _fail("a query is empty")
    query_ids, query_texts = read_texts(input, list(queries or []))
    if not query_texts:
        _fail(f"{input} holds no queries")
    _check_output_file(run, option="--run")
    judged, metric_list = _search_judgments(qrels, metrics, k)
    return query_ids, query_texts, judged, metric_list, input is not None or run is not None or judged is not None


def _rank_queries(m, dim: int, query_ids: list[str], query_texts: list[str], batch: bool, batch_size: int,
                  search, documents, errors: tuple) -> dict:
    """{query id: (hits, their texts, ms)} by ``search(vectors)``; texts by ``documents(ids)``
    (None: not wanted, as for a run file). Many queries are encoded in one batch; a few typed
    ones each timed with their encoding. Queries longer than the model reads are said."""
    try:
        cut = m.tokenizer.count_query_cut(m.tokenizer.content_ids(query_texts))
        if cut:
            console.print(f"[yellow]note:[/yellow] {cut} of {len(query_texts)} queries are longer than the model "
                          f"reads ({m.config.query_maxlen} tokens with its marker): only their beginning is searched",
                          soft_wrap=True)
        encoded = m.encode(query_texts, is_query=True, dim=dim, batch_size=batch_size,
                           show_progress=batch and len(query_texts) > batch_size) if batch else None
    except (ValueError, TypeError) as exc:
        _fail(str(exc))
    rankings = {}
    for n, (qid, query) in enumerate(zip(query_ids, query_texts)):
        try:
            if n == 0 and encoded is not None and len(encoded) > 1:
                # untimed: the first search of a process loads the compiled kernels and pages
                # the index in (hundreds of ms; a Qdrant connection's first request), which is
                # not what a batch's latency is about
                search(encoded[0])
            start = time.perf_counter()
            hits = search(encoded[n] if encoded is not None else m.encode(query, is_query=True, dim=dim))
            ms = 1000 * (time.perf_counter() - start)
            texts = documents([h.id for h in hits]) if documents else [None] * len(hits)
        except errors as exc:
            _fail(str(exc))
        rankings[qid] = (hits, texts, ms)
    return rankings


def _note_unknown_filter(allowed: list[str], present: list[str], filter_file: Path) -> None:
    """A --filter none of whose ids is stored returns nothing: said, rather than an empty table."""
    if allowed and not present:
        console.print(f"[yellow]note:[/yellow] none of the {len(allowed)} ids in {escape(str(filter_file))} is "
                      "stored here: no document can be returned", soft_wrap=True)


def _search_judgments(qrels: Path | None, metrics: str | None, k: int):
    """(judgments, metric names) for ``index search --qrels``, checked before any encoding."""
    from polylate.eval.beir import DatasetError, read_qrels
    from polylate.eval.metrics import parse_metric

    if qrels is None:
        if metrics is not None:
            _fail("--metrics needs --qrels (the judgments to score the rankings against)")
        return None, []
    if not qrels.is_file():
        _fail(f"--qrels {qrels} " + ("is a folder" if qrels.is_dir() else "does not exist"))
    metric_list = [x.strip() for x in (metrics or f"ndcg@10,recall@{k},mrr@10").split(",") if x.strip()]
    try:
        for name in metric_list:
            parse_metric(name)
        return read_qrels(qrels), metric_list
    except (DatasetError, ValueError, ImportError) as exc:
        _fail(str(exc))


def _report_search(rankings: dict, texts: dict, as_json: bool, run: Path | None, judged, metric_list,
                   k: int, qrels: Path | None, from_file: bool) -> None:
    """Each query's hits (tables or JSON lines), or a TREC run file; then latency and, with
    judgments, the metrics of the rankings. Latency is the search's, plus the query's encoding
    where queries are encoded one at a time (typed, printed); batches are encoded together first."""
    from polylate.eval.runner import write_trec_run

    scored = {q: {h.id: h.score for h in hits} for q, (hits, _, _) in rankings.items()}
    if run is not None:
        try:
            write_trec_run(scored, run, "polylate")
        except OSError as exc:
            _fail(f"cannot write {run}: {exc.strerror or exc}")
    else:
        out = Console(soft_wrap=True)
        for q, (hits, hit_texts, ms) in rankings.items():
            _print_hits(out, texts[q], ms, hits, hit_texts, as_json, query_id=q if from_file else None)
    if len(rankings) > 1 or run is not None:
        ms = np.array([r[2] for r in rankings.values()])
        console.print(f"searched {len(rankings)} quer{'y' if len(rankings) == 1 else 'ies'}, k={k}: "
                      f"{np.median(ms):.1f} ms median, "
                      f"{np.percentile(ms, 95):.1f} ms p95 per query" + (f" → {run}" if run else ""))
    if judged is None:
        return
    from polylate.eval.metrics import evaluate

    relevant = {q: rels for q, rels in judged.items() if q in scored and any(r > 0 for r in rels.values())}
    if not relevant:
        _fail(f"no searched query has a relevant judgment in {qrels} (are the queries' ids those of the qrels?)")
    values = evaluate({q: scored[q] for q in relevant}, relevant, metric_list)
    table = Table("metric", "value", caption=f"{len(relevant)} judged queries of {len(rankings)}")
    for name in metric_list:
        table.add_row(name, f"{values[name]:.4f}")
    console.print(table)


def _print_hits(out: Console, query: str, ms: float, hits, texts, as_json: bool, query_id: str | None = None) -> None:
    """One query's hits: a table, or one JSON line (``--json``; with the query's id when it
    came from a file)."""
    if as_json:
        print(json.dumps({**({"query_id": query_id} if query_id is not None else {}), "query": query,
                          "ms": round(ms, 2), "hits": [
            {"id": h.id, "score": round(h.score, 4), "text": t} for h, t in zip(hits, texts)]},
            ensure_ascii=False))
        return
    table = Table(title=f"{query}  ({ms:.0f} ms)", title_justify="left")
    for col, just in (("rank", "right"), ("score", "right"), ("id", "left"), ("document", "left")):
        table.add_column(col, justify=just)
    for rank, (h, t) in enumerate(zip(hits, texts), 1):
        table.add_row(str(rank), f"{h.score:.2f}", h.id, _shortened(t or "", 100))
    out.print(table)


qdrant_app = typer.Typer(no_args_is_help=True, help="Store and search collections in Qdrant: a server or cluster "
                         "(--url), or its embedded local mode (--path).")
app.add_typer(qdrant_app, name="qdrant")

# where every `polylate qdrant` command finds Qdrant
QdrantUrl = Annotated[Optional[str], typer.Option(
    help="Qdrant server or cluster, e.g. http://localhost:6333 (default: $QDRANT_URL unless --path)")]
QdrantPath = Annotated[Optional[Path], typer.Option("--path", help="folder of an embedded (local mode) Qdrant "
                                                    "instead of a server")]
QdrantKey = Annotated[Optional[str], typer.Option(envvar="QDRANT_API_KEY", help="API key (or $QDRANT_API_KEY)")]


def _qdrant(url: str | None, path: Path | None, api_key: str | None, existing: bool = False):
    """A Qdrant client from --url / --path, or a one-line error. ``existing``: a command that
    only reads or deletes, which must not make a new local store where a path was mistyped."""
    try:
        from polylate.backends.qdrant import connect
    except ImportError as exc:
        _fail(str(exc))
    if url is not None and path is not None:
        _fail("give --url (a Qdrant server or cluster) or --path (local mode), not both")
    if url is None and path is None:  # $QDRANT_URL only when neither is given: --path wins over it
        url = os.environ.get("QDRANT_URL") or None
        if url is None:
            _fail("give --url (a Qdrant server or cluster; or set $QDRANT_URL) or --path (local mode)")
    if path is not None:
        from polylate.index.storage import MANIFEST, SERVER_META

        if (path / MANIFEST).exists() or (path / SERVER_META).exists():
            _fail(f"--path {path} is a polylate index folder, not a Qdrant store (polylate index ... reads it)")
        if existing and not (path / "meta.json").is_file():  # what Qdrant's local mode keeps its collections in
            _fail(f"--path {path}: no Qdrant store there (polylate qdrant add makes one)")
    if path is not None and api_key:
        console.print("[yellow]note:[/yellow] the Qdrant API key is not used in local mode (--path)", soft_wrap=True)
    try:
        return connect(url=url, api_key=api_key) if url else connect(path=str(path))
    except Exception as exc:  # a locked local folder, a bad URL, a refused connection, a wrong key
        _fail(f"cannot open Qdrant at {url or path}: {exc}")


def _qdrant_model(idx, override: str | None, device: str | None, dtype: str | None):
    """(model, dim, doc_maxlen) for a collection: the model it recorded, or ``-m``. A collection
    made without one (the Python API's ``model=None``) needs ``-m``: guessing would search its
    vectors with another model's, and return confident nonsense."""
    if idx.model is None and override is None:
        _fail(f"collection {idx.collection!r} records no model; pass the one that encoded it with -m")
    m, dim, doc_maxlen = _index_model(idx.model, idx.dim, override, device, dtype)
    if dim != idx.dim:
        _fail(f"collection {idx.collection!r} holds {idx.dim}-d vectors but records dim {dim}")
    if idx.model is None and dim not in m.output_dims:
        _fail(f"collection {idx.collection!r} holds {dim}-d vectors; {m.name or override} makes {m.output_dims}")
    return m, dim, doc_maxlen


def _check_cluster(shards: int | None, replicas: int | None, path: Path | None = None) -> None:
    for option, value in (("--shards", shards), ("--replicas", replicas)):
        if value is not None and value < 1:
            _fail(f"{option} must be positive, got {value}")
        if value is not None and path is not None:  # local mode would accept and ignore it
            _fail(f"{option} needs a Qdrant server or cluster (--url); local mode (--path) keeps one copy")


def _refuse_stored(idx, ids: list[str], replace: bool) -> None:
    """Before any encoding or upload: ids the collection has need --replace."""
    present = [] if replace else idx.present(ids)
    if present:
        _fail(f"{len(present)} id(s) already in the collection, e.g. {present[:5]}; pass --replace")


def _collection(client, name: str):
    from polylate.backends.qdrant import QdrantIndex

    try:
        return QdrantIndex(client, name)
    except (KeyError, ValueError) as exc:
        _fail(exc.args[0] if isinstance(exc, KeyError) else str(exc))
    except Exception as exc:  # the server went away, refused the key, ...
        _fail(f"Qdrant: {exc}")


@qdrant_app.command("add")
def qdrant_add(
    collection: str = typer.Argument(..., help="collection name (created on first add)"),
    input: Path = typer.Option(..., "--input", "-i", help="documents: .jsonl[.gz] (BEIR corpus: _id, title, text) or .txt"),
    url: QdrantUrl = None,
    path: QdrantPath = None,
    api_key: QdrantKey = None,
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + "; default: the one the "
                                        "collection recorded, else 'default'"),
    dim: Optional[int] = typer.Option(None, "--dim", "-d", help="128, 96 or 64 (default: the model's; an existing "
                                      "collection keeps its own)"),
    replace: bool = typer.Option(False, help="replace documents whose id is already stored"),
    pooled: bool = typer.Option(True, help="also store each document's mean vector for --prefetch searches "
                                "(a new collection only)"),
    shards: Optional[int] = typer.Option(None, help="shards of a new collection (cluster)"),
    replicas: Optional[int] = typer.Option(None, help="replication factor of a new collection (cluster)"),
    doc_maxlen: Optional[int] = typer.Option(None, "--doc-maxlen", help="document token limit (a new collection only)"),
    batch_size: int = typer.Option(32, "--batch-size", "-b"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Encode documents and upsert them into a Qdrant collection (created, recording the model, if new)."""
    _check_cluster(shards, replicas, path)
    _check_doc_maxlen(doc_maxlen)
    with closing(_qdrant(url, path, api_key)) as client:  # local mode locks its folder until closed
        _qdrant_add(client, collection, input, model, dim, replace, pooled, shards, replicas, doc_maxlen,
                    batch_size, device, dtype)


def _qdrant_add(client, collection, input, model, dim, replace, pooled, shards, replicas, doc_maxlen,
                batch_size, device, dtype) -> None:
    from polylate.backends.qdrant import QdrantIndex

    exists = client.collection_exists(collection)
    if ".jsonl" not in input.suffixes and exists:
        _fail("adding to an existing collection needs the documents' ids: give a .jsonl with an _id per document")
    ids, texts = read_texts(input, [])
    if not texts:
        _fail(f"{input} holds no documents")
    if exists:
        idx = _collection(client, collection)
        _refuse_stored(idx, ids, replace)
        if dim is not None and dim != idx.dim:
            _fail(f"--dim {dim}: collection {collection!r} holds {idx.dim}-d vectors")
        m, dim, doc_maxlen = _qdrant_model(idx, model, device, dtype)
    else:
        m = _load_model(model or "default", device, dtype)
        dim = m.config.dim if dim is None else dim
        _check_dim(m, dim)
    vectors = _encode_docs(m, texts, dim, batch_size, doc_maxlen)
    try:
        if not exists:
            idx = QdrantIndex.create(client, collection, dim, pooled=pooled, shards=shards,
                                     replication_factor=replicas,
                                     model=identity.model_record(m, model or "default", dim, doc_maxlen))
        with console.status(f"uploading {len(ids)} documents"):
            replaced = idx.add(ids, vectors, texts=texts, replace=replace)
    except ValueError as exc:
        _fail(str(exc))
    console.print(f"added {len(ids)} documents ({replaced} replaced); {len(idx)} in {collection}")


@qdrant_app.command("import")
def qdrant_import(
    collection: str = typer.Argument(..., help="collection to create (or add to, with --replace for ids it has)"),
    index: Path = typer.Argument(..., help="a polylate index folder (polylate index build)"),
    url: QdrantUrl = None,
    path: QdrantPath = None,
    api_key: QdrantKey = None,
    replace: bool = typer.Option(False, help="replace documents whose id the collection already has"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="the model to re-encode texts with (an index "
                                        "without kept vectors); default: the one the index records"),
    shards: Optional[int] = typer.Option(None, help="shards of a new collection (cluster)"),
    replicas: Optional[int] = typer.Option(None, help="replication factor of a new collection (cluster)"),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="texts per encoder batch (re-encoding only)"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Move a PLAID index to Qdrant when it outgrows one machine.

    Its kept float16 vectors go as they are; an index built without --keep-vectors has its
    stored texts re-encoded with the model it records (2-bit residuals are lossy)."""

    from polylate.backends.qdrant import QdrantIndex

    _check_cluster(shards, replicas, path)
    src = _open_index(index)
    recorded = src.manifest.get("model") or {}
    keeps = bool(src.manifest.get("keep_vectors"))
    ids = src.ids
    if not ids:
        _fail(f"index {index} holds no documents")
    if not keeps and any(t is None for t in src.documents(ids)):
        _fail(f"index {index} keeps neither vectors (--keep-vectors) nor the texts of all its documents: "
              "nothing to copy or re-encode them from")
    m = None
    if keeps:
        made = {"dim": src.dim, **recorded} if recorded else None  # the vectors, and who made them, as they are
    else:  # re-encoded: the collection records the model that actually encodes them
        if model is None and not recorded.get("name_or_path"):
            _fail(f"index {index} does not record a loadable model to re-encode its texts with; pass -m")
        name = model or _recorded_model(recorded)
        m = _load_model(name, device, dtype)
        reason = identity.model_mismatch(recorded, m)
        if reason:
            _fail(f"index {index} was built with another model than -m {name}: {reason}; its vectors "
                  "would not match queries encoded the way the collection records")
        _check_dim(m, src.dim)
        made = identity.model_record(m, name, src.dim, recorded.get("doc_maxlen"))
    with closing(_qdrant(url, path, api_key)) as client:
        if client.collection_exists(collection):
            idx = _collection(client, collection)
            if idx.dim != src.dim:
                _fail(f"collection {collection!r} holds {idx.dim}-d vectors, index {index} {src.dim}-d")
            reason = identity.records_mismatch(idx.model, made)
            if reason:  # one collection, one vector space
                _fail(f"collection {collection!r} and index {index} were made by different models: {reason}")
            _refuse_stored(idx, ids, replace)
        else:
            idx = QdrantIndex.create(client, collection, src.dim, shards=shards, replication_factor=replicas,
                                     model=made)
        done = 0
        with _bar() as bar:
            task = bar.add_task("copying" if keeps else "re-encoding", total=len(ids))
            for batch_ids, texts, vectors in src.export():
                if vectors is None:
                    vectors = m.encode(texts, dim=src.dim, batch_size=batch_size, doc_maxlen=recorded.get("doc_maxlen"),
                                       dtype=np.float16)
                try:
                    idx.add(batch_ids, vectors, texts=texts, replace=replace)  # each document's own text
                except ValueError as exc:
                    _fail(f"{exc} (after {done} documents were imported)")
                done += len(batch_ids)
                bar.advance(task, len(batch_ids))
        how = "copied their kept vectors" if keeps else "re-encoded their texts"
        console.print(f"imported {done} documents from {index} ({how}); {len(idx)} in {collection}")


@qdrant_app.command("search")
def qdrant_search(
    collection: str = typer.Argument(..., help="collection name"),
    queries: Optional[list[str]] = typer.Argument(None, help="one or more queries (or --input)"),
    input: QueriesFile = None,
    url: QdrantUrl = None,
    path: QdrantPath = None,
    api_key: QdrantKey = None,
    k: int = typer.Option(10, "-k", help="results per query"),
    prefetch: Optional[int] = typer.Option(None, help="re-rank only the N nearest documents by pooled vector "
                                           "(HNSW) instead of scoring every document by MaxSim"),
    filter_ids: Optional[Path] = typer.Option(None, "--filter", help="file of allowed document ids, one per line"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="override the model the collection recorded"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of tables"),
    run: RunFile = None,
    qrels: QrelsFile = None,
    metrics: Metrics = None,
    batch_size: QueryBatch = 32,
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Search a Qdrant collection with text queries (MaxSim, computed by Qdrant): print the hits,
    or write a TREC run and score it."""
    if k < 1:
        _fail(f"-k must be positive, got {k}")
    if prefetch is not None and prefetch < k:
        _fail(f"--prefetch must be at least -k ({k}), got {prefetch}")
    _check_at_least(("--batch-size", batch_size, 1))
    query_ids, query_texts, judged, metric_list, batch = _search_inputs(queries, input, run, qrels, metrics, k)
    allowed = _read_ids(filter_ids) if filter_ids is not None else None
    with closing(_qdrant(url, path, api_key, existing=True)) as client:
        idx = _collection(client, collection)
        if allowed is not None:
            _note_unknown_filter(allowed, idx.present(allowed), filter_ids)
        m, dim, _ = _qdrant_model(idx, model, device, dtype)
        rankings = _rank_queries(m, dim, query_ids, query_texts, batch, batch_size,
                                 lambda vectors: idx.search(vectors, k=k, filter_ids=allowed, prefetch=prefetch),
                                 None if run else idx.documents, (ValueError,))
    _report_search(rankings, dict(zip(query_ids, query_texts)), as_json, run, judged, metric_list, k, qrels,
                   from_file=input is not None)


@qdrant_app.command("delete")
def qdrant_delete(
    collection: str = typer.Argument(..., help="collection name"),
    ids: list[str] = typer.Argument(None, help="document ids (else --input, one per line)"),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="file of document ids, one per line"),
    url: QdrantUrl = None,
    path: QdrantPath = None,
    api_key: QdrantKey = None,
    missing_ok: bool = typer.Option(False, help="ignore ids that are not in the collection"),
) -> None:
    """Delete documents by id."""
    if not ids:
        if input is None:
            _fail("give ids as arguments or --input")
        ids = _read_ids(input)
    with closing(_qdrant(url, path, api_key, existing=True)) as client:
        idx = _collection(client, collection)
        try:
            n = idx.delete(ids, missing_ok=missing_ok)
        except KeyError as exc:
            _fail(exc.args[0])
        console.print(f"deleted {n} documents; {len(idx)} remain")


@qdrant_app.command("stats")
def qdrant_stats(
    collection: str = typer.Argument(..., help="collection name"),
    url: QdrantUrl = None,
    path: QdrantPath = None,
    api_key: QdrantKey = None,
) -> None:
    """Documents, dim, sharding and the recorded model of a collection, as JSON."""
    with closing(_qdrant(url, path, api_key, existing=True)) as client:
        print(json.dumps(_collection(client, collection).stats(), indent=2))


@app.command("eval")
def eval_(
    paths: list[Path] = typer.Argument(..., help="BEIR dataset folders or roots holding them (e.g. ../shared/data/xquad_r)"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    dims: Optional[str] = typer.Option(None, help="comma-separated output dims (default: the model's "
                                       "Matryoshka dims, e.g. 128,96,64)"),
    max_queries: Optional[int] = typer.Option(None, help="subsample queries per dataset"),
    max_docs: Optional[int] = typer.Option(None, help="subsample documents (judged ones are kept)"),
    bm25: bool = typer.Option(True, help="also run the BM25 baseline"),
    colbert: bool = typer.Option(True, "--colbert/--bm25-only", help="--bm25-only: the BM25 baseline alone (no "
                                 "model is loaded)"),
    use_index: bool = typer.Option(False, "--index/--exact", help="rank with a PLAID index instead of exact MaxSim"),
    nbits: Optional[int] = typer.Option(None, help="index residual bits, with --index (default 2)"),
    split: str = typer.Option("test"),
    plot: Optional[Path] = typer.Option(None, help="write a quality-vs-storage PNG"),
    output_json: Optional[Path] = typer.Option(None, "--json", help="write the rows as JSON"),
    metrics: str = typer.Option("ndcg@10,recall@100,mrr@10", help="comma-separated: ndcg, recall, map, p, mrr, "
                                "success, each with @k (the plot uses the first)"),
    depth: int = typer.Option(100, "--depth", help="documents ranked per query"),
    doc_maxlen: Optional[int] = typer.Option(None, "--doc-maxlen", help="document token limit (default: "
                                             "the model's, whole documents in windows past the encoder's)"),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="texts per encoder batch"),
    seed: int = typer.Option(0, help="seeds --max-queries / --max-docs subsampling"),
    runs: Optional[Path] = typer.Option(None, "--runs", help="folder for one TREC run file per dataset and "
                                        "method/dim (for trec_eval, ranx significance tests)"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """nDCG@10 / Recall@100 / MRR@10 per dataset and dimension, with bytes per document, vs BM25."""
    from polylate.eval.beir import DatasetError
    from polylate.eval.runner import check_eval_args, main_eval

    try:
        dim_list = None if dims is None else [int(d) for d in dims.split(",") if d.strip()]
    except ValueError:
        _fail(f"--dims must be comma-separated integers, got {dims!r}")
    if not colbert and not bm25:
        _fail("--bm25-only with --no-bm25 leaves nothing to run")
    _check_doc_maxlen(doc_maxlen)
    if not colbert and (dims is not None or use_index):
        _fail("--bm25-only runs no ColBERT model: --dims and --index do not apply")
    if nbits is not None and not use_index:  # exact MaxSim has no residuals: it would be ignored
        _fail("--nbits applies to the index (--index); exact MaxSim keeps full vectors")
    nbits = 2 if nbits is None else nbits
    args = dict(split=split, metrics=[x.strip() for x in metrics.split(",") if x.strip()], k=depth,
                batch_size=batch_size, max_queries=max_queries, max_docs=max_docs, use_index=use_index,
                nbits=nbits, bm25=bm25, colbert=colbert, output_json=output_json, plot=plot, runs_dir=runs,
                doc_maxlen=doc_maxlen)
    read: dict = {}
    try:  # bad paths, options and data fail before the model loads
        check_eval_args([str(p) for p in paths], read_data=True, keep=read, dims=dim_list, **args)
    except (DatasetError, ValueError) as exc:
        _fail(_option_names(str(exc)))
    m = _load_model(model, device, dtype) if colbert else None
    try:
        main_eval([str(p) for p in paths], dims=(m.output_dims if dim_list is None else dim_list) if m else (),
                  model=m, seed=seed, datasets=read, **args)
    except (DatasetError, ValueError) as exc:
        _fail(_option_names(str(exc)))
    except OSError as exc:  # a disk that filled up mid-way
        _fail(f"cannot write {exc.filename or 'an output'}: {exc.strerror or exc}")


@app.command()
def rerank(
    run: Optional[Path] = typer.Argument(None, help="first-stage ranking: TREC run file (qid Q0 docid rank score "
                                         "tag), e.g. from polylate eval --runs, or MS MARCO's 'qid docid rank'"),
    bm25: bool = typer.Option(False, "--bm25", help="no run file: BM25 over the corpus is the first stage (for "
                              "the judged queries when there are judgments)"),
    data: Optional[Path] = typer.Option(None, "--data", help="BEIR folder with corpus.jsonl and queries.jsonl "
                                        "(and qrels/<split>.tsv, to score the rankings)"),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="corpus .jsonl[.gz] (instead of --data's)"),
    queries: Optional[Path] = typer.Option(None, "--queries", help="queries .jsonl[.gz] (instead of --data's, "
                                           "e.g. another language's parallel queries)"),
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="judgments .tsv (instead of --data's)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="reranked TREC run (default: stdout)"),
    depth: int = typer.Option(100, "--depth", "-k", help="candidates re-scored per query (its best by the run)"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    dim: Optional[int] = typer.Option(None, "--dim", "-d", help="output dimension: 128, 96 or 64 (default: the "
                                      "model's)"),
    split: str = typer.Option("test", help="qrels split under --data"),
    metrics: str = typer.Option("ndcg@10,recall@100,mrr@10", help="comma-separated metrics, with judgments"),
    tag: str = typer.Option("polylate", help="run tag (last TREC column)"),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="texts per encoder batch"),
    doc_maxlen: Optional[int] = typer.Option(None, "--doc-maxlen", help="document token limit (default: the model's)"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Re-score a first-stage run's top candidates by exact MaxSim (e.g. BM25 → ColBERT).

    With judgments it prints the metrics before and after."""

    from polylate.eval.beir import DatasetError, find_file, read_corpus, read_qrels, read_queries
    from polylate.eval.metrics import parse_metric
    from polylate.eval.rerank import candidates, read_trec_run, rerank_candidates
    from polylate.eval.runner import trec_lines, write_trec_run

    if (run is None) == (not bm25):
        _fail("give a run file or --bm25 (BM25 over the corpus as the first stage), not both" if bm25
              else "give a run file, or --bm25 to rank the corpus with BM25 first")
    if data is not None and not data.is_dir():
        _fail(f"--data {data} is not a folder")
    files = {}
    for option, given, name in (("--corpus", corpus, "corpus.jsonl"), ("--queries", queries, "queries.jsonl"),
                                ("--qrels", qrels, f"{split}.tsv")):
        if given is not None and not given.is_file():
            _fail(f"{option} {given} " + ("is a folder" if given.is_dir() else "does not exist"))
        found = given or (find_file(data / "qrels" if option == "--qrels" else data, name) if data else None)
        if found is None and option != "--qrels":
            _fail(f"no {option[2:]}: give {option}" + (f" ({data} has no {name})" if data else " or --data"))
        files[option] = found
    if data is not None and files["--qrels"] is None:
        if split != "test":  # asked for by name: its absence is an error, not a quiet skip
            _fail(f"--split {split}: {data} has no qrels/{split}.tsv")
        console.print(f"[yellow]note:[/yellow] {escape(str(data))} has no qrels/test.tsv: no metrics", soft_wrap=True)
    metric_list = [x.strip() for x in metrics.split(",") if x.strip()]
    _check_at_least(("--depth", depth, 1), ("--batch-size", batch_size, 1))
    _check_doc_maxlen(doc_maxlen)
    if any(ch.isspace() for ch in tag) or not tag:
        _fail(f"--tag must be one word (it is a TREC column), got {tag!r}")
    _check_output_file(output)
    try:
        for name in metric_list:
            parse_metric(name)
        first = read_trec_run(run) if run is not None else None
        doc_texts, query_texts = read_corpus(files["--corpus"]), read_queries(files["--queries"])
        judged = read_qrels(files["--qrels"]) if files["--qrels"] else None
        if first is None:
            from polylate.eval.bm25 import BM25Baseline

            asked = query_texts if not judged else {q: t for q, t in query_texts.items() if q in judged}
            with console.status("BM25 first stage"):  # with judgments, the judged queries (as eval does)
                first = BM25Baseline(doc_texts).search(asked, k=depth)
            short = sum(1 for q in asked if 0 < len(first.get(q, {})) < depth)
            none = sum(1 for q in asked if not first.get(q))
            if short or none:
                console.print(f"[yellow]note:[/yellow] BM25 found fewer than {depth} candidates for {short + none} "
                              f"of {len(asked)} queries ({none} with none): only documents sharing a token with "
                              "the query are candidates", soft_wrap=True)
    except (DatasetError, ValueError, ImportError) as exc:
        _fail(str(exc))
    try:
        shortlist = candidates(first, query_texts, doc_texts, depth)
    except ValueError as exc:  # the run does not belong to these texts
        _fail(f"{run or 'BM25'}: {exc}")
    m = _load_model(model, device, dtype)
    dim = m.config.dim if dim is None else dim
    _check_dim(m, dim)
    with _bar() as bar:
        task = bar.add_task(f"reranking top {depth}", total=len(shortlist))
        reranked = rerank_candidates(m, shortlist, query_texts, doc_texts, dim=dim, batch_size=batch_size,
                                     doc_maxlen=doc_maxlen, progress=lambda k: bar.advance(task, k))
    if output is not None:
        write_trec_run(reranked, output, tag)
    else:
        sys.stdout.writelines(trec_lines(reranked, tag))
    if judged:
        _print_rerank_metrics(first, reranked, judged, metric_list, depth, dim, files["--qrels"], set(query_texts),
                              "the run" if run is not None else "BM25")
    console.print(f"reranked {len(shortlist)} queries" + (f" → {output}" if output else ""))


def _print_rerank_metrics(first, reranked, judged, metric_list, depth, dim, qrels_path, asked: set,
                          first_stage: str) -> None:
    """Both stages over the judged queries the run ranks (trec_eval's default), on the same
    top ``depth`` candidates; says how many judged queries are left out, and why: not among
    the queries read (``asked``), or ranked nothing by the first stage."""
    from polylate.eval.metrics import evaluate, parse_metric

    relevant = {q: rels for q, rels in judged.items() if any(r > 0 for r in rels.values())}
    both = {q: rels for q, rels in relevant.items() if q in reranked}
    if not both:
        console.print(f"[yellow]note:[/yellow] no query of the run has a relevant judgment in "
                      f"{escape(str(qrels_path))}: no metrics", soft_wrap=True)
        return
    shortlist = {q: {d: first[q][d] for d in reranked[q]} for q in both}
    before = evaluate(shortlist, both, metric_list)
    after = evaluate({q: reranked[q] for q in both}, both, metric_list)
    table = Table("metric", "first stage", f"reranked ({dim} d)",
                  caption=f"{len(both)} judged queries, the top {depth} of the first stage")
    for name in metric_list:
        k = parse_metric(name)[1]
        note = f" (≤ {depth} ranked)" if k is not None and k > depth else ""
        table.add_row(name + note, f"{before[name]:.4f}", f"{after[name]:.4f}")
    console.print(table)
    absent = sum(1 for q in relevant if q not in asked)
    unranked = len(relevant) - len(both) - absent
    if absent:
        console.print(f"[yellow]note:[/yellow] {absent} judged queries are not among the queries read "
                      "and are not counted", soft_wrap=True)
    if unranked:
        console.print(f"[yellow]note:[/yellow] {unranked} judged queries have no ranking in {first_stage} "
                      "and are not counted", soft_wrap=True)


def _option_names(message: str) -> str:
    """Library messages name parameters (max_queries); the CLI user typed options (--max-queries)."""
    for param, option in (("max_queries", "--max-queries"), ("max_docs", "--max-docs"), ("nbits", "--nbits"),
                          ("depth must", "--depth must"), ("batch_size must", "--batch-size must"),
                          ("dims [", "--dims ["), ("checkpoint_dir", "--checkpoint-dir"),
                          ("resume that run (resume)", "resume that run with --resume"),
                          ("start a new run from it as the model", "start a new run from it with --model"),
                          ("doc_maxlen", "--doc-maxlen"), ("dim must be", "--dims: dim must be"),
                          ("train_encoder_layers", "--encoder-layers"),
                          ("more items per batch", "a larger --batch-size")):
        message = message.replace(param, option)
    return message


@app.command()
def train(
    data: list[Path] = typer.Argument(..., help="BEIR folders with a train split (pairs.jsonl hard negatives used "
                                      "when present), or .jsonl(.gz) files of {query, positive, negatives} texts"),
    output: Path = typer.Option(..., "--output", "-o", help="folder for the trained model (or a .safetensors file with --heads-only)"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    epochs: int = typer.Option(1),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="queries per micro-batch (in-batch negatives)"),
    grad_accum: int = typer.Option(1, "--grad-accum", help="micro-batches per optimizer step"),
    lr: float = typer.Option(2e-3, help="peak learning rate of the projection head(s)"),
    warmup: float = typer.Option(0.1, help="fraction of the steps with a linear warm-up (then linear decay)"),
    dims: Optional[str] = typer.Option(None, help="Matryoshka dims trained together (default: the model's, "
                                       "e.g. 128,96,64)"),
    dim_weights: Optional[str] = typer.Option(None, "--dim-weights", help="loss weight per dim, e.g. 1,1,2 (default: equal)"),
    encoder_layers: int = typer.Option(0, help="also train the top N encoder layers (0: head only, cached encoder)"),
    encoder_lr: float = typer.Option(5e-5, help="peak learning rate of the trained encoder layers"),
    negatives: int = typer.Option(1, help="hard negatives per query from pairs.jsonl (besides in-batch ones)"),
    teacher: str = typer.Option("dense", help="distillation teacher: 'dense' (the encoder's mean-pooled cosine), "
                                "'data' (teacher_scores in pairs.jsonl) or 'none'"),
    distill: float = typer.Option(1.0, help="weight of the KL distillation term"),
    teacher_temperature: Optional[float] = typer.Option(None, "--teacher-temperature",
                                                        help="softmax temperature of the teacher's scores "
                                                        "(default: 0.02 for dense cosines, 1 for data)"),
    temperature: float = typer.Option(1.0, help="softmax temperature of the student's MaxSim scores"),
    limit: Optional[int] = typer.Option(None, help="at most this many training items per folder"),
    split: str = typer.Option("train", help="qrels split read when a folder has no pairs.jsonl"),
    doc_maxlen: int = typer.Option(180, "--doc-maxlen"),
    heads_only: bool = typer.Option(False, help="save only the projection head(s)"),
    gettext_pairs: int = typer.Option(0, "--gettext-pairs", help="add N cross-lingual pairs (translation → "
                                      "English) from installed gettext catalogs (see --locale-dir)"),
    locale_dir: Path = typer.Option(Path("/usr/share/locale"), "--locale-dir", help="where the .mo catalogs are"),
    checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="save the model there after "
                                                  "every epoch (epoch-N/) and every --checkpoint-every steps"),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="optimizer steps between "
                                                   "checkpoints (needs --checkpoint-dir)"),
    keep_checkpoints: Optional[int] = typer.Option(None, "--keep-checkpoints", help="keep only the N most recent "
                                                   "checkpoints in --checkpoint-dir (each is a whole model)"),
    resume: Optional[Path] = typer.Option(None, help="continue the run that saved this checkpoint folder "
                                          "(same data and options; its optimizer state and place are restored)"),
    seed: int = typer.Option(0, help="seeds negative sampling and batch order"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    cache: bool = typer.Option(True, help="compute the frozen layers' states once and keep them in memory "
                               "(fast epochs); --no-cache re-runs the encoder every step in flat memory, for "
                               "large data"),
    overwrite: bool = typer.Option(False, help="replace an existing --output (a model folder or heads file)"),
    bf16: bool = typer.Option(False, "--bf16", help="compute in bfloat16 (autocast); weights and optimizer "
                              "state stay float32"),
) -> None:
    """Fine-tune a ColBERT model: InfoNCE with in-batch and hard negatives, distillation, Matryoshka."""
    from polylate.eval.beir import DatasetError
    from polylate.train.data import load_triplets, load_triplets_file
    from polylate.model.identity import fine_tuned_name
    from polylate.train.trainer import Trainer, save_heads

    if teacher not in ("dense", "data", "none"):
        _fail(f"--teacher must be dense, data or none, got {teacher!r}")
    if checkpoint_every is not None and (checkpoint_dir is None or checkpoint_every < 1):
        _fail("--checkpoint-every needs --checkpoint-dir and a positive number of steps")
    if keep_checkpoints is not None and (checkpoint_dir is None or keep_checkpoints < 1):
        _fail("--keep-checkpoints needs --checkpoint-dir and a positive number")
    for name, value in (("--batch-size", batch_size), ("--grad-accum", grad_accum), ("--epochs", epochs)):
        if value < 1:
            _fail(f"{name} must be positive, got {value}")
    if not 0 <= warmup < 1:
        _fail(f"--warmup must be a fraction in [0, 1), got {warmup}")
    for name, value in (("--lr", lr), ("--encoder-lr", encoder_lr), ("--temperature", temperature),
                        ("--teacher-temperature", teacher_temperature)):
        if value is not None and not (math.isfinite(value) and value > 0):
            _fail(f"{name} must be a positive number, got {value}")
    if not (math.isfinite(distill) and distill >= 0):
        _fail(f"--distill must be >= 0, got {distill}")
    if heads_only and output.suffix != ".safetensors":
        _fail(f"--heads-only writes one .safetensors file; got --output {output}")
    _check_train_output(output, heads_only, overwrite)
    if checkpoint_dir is not None:
        if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
            _fail(f"--checkpoint-dir {checkpoint_dir} is a file")
        inside = checkpoint_dir.resolve()
        if not heads_only and (inside == output.resolve() or output.resolve() in inside.parents):
            _fail(f"--checkpoint-dir {checkpoint_dir} is inside --output {output}, which saving the model "
                  "replaces whole; keep checkpoints elsewhere")
    if limit is not None and limit < 1:
        _fail(f"--limit must be positive, got {limit}")
    _check_doc_maxlen(doc_maxlen)
    if gettext_pairs < 0 or negatives < 0:
        _fail(f"--gettext-pairs and --negatives must be >= 0, got {gettext_pairs} and {negatives}")
    try:
        dim_list = None if dims is None else [int(d) for d in dims.split(",") if d.strip()]
        weights = None if dim_weights is None else [float(w) for w in dim_weights.split(",") if w.strip()]
    except ValueError:
        _fail(f"--dims and --dim-weights must be comma-separated numbers, got {dims!r} and {dim_weights!r}")
    if dim_list is not None and (not dim_list or len(set(dim_list)) != len(dim_list)):
        _fail(f"--dims must list distinct dims, got {dims!r}")
    if weights is not None and dim_list is not None and len(weights) != len(dim_list):
        _fail(f"--dim-weights has {len(weights)} value(s) for {len(dim_list)} dims")
    if weights is not None and not (all(math.isfinite(w) and w >= 0 for w in weights) and sum(weights) > 0):
        _fail(f"--dim-weights must be numbers >= 0, not all 0, got {dim_weights!r}")

    items = []
    for folder in data:
        text_file = folder.is_file() and folder.name.lower().endswith((".jsonl", ".jsonl.gz"))
        if not (folder.is_dir() or text_file):
            _fail(f"training data {folder} " + ("is neither a BEIR folder nor a .jsonl file of texts"
                                                 if folder.exists() else "does not exist"))
        try:
            if text_file:
                items += load_triplets_file(folder, max_negatives=negatives, limit=limit, seed=seed)
            else:
                items += load_triplets(folder, split=split, max_negatives=negatives, limit=limit, seed=seed)
        except (DatasetError, FileNotFoundError, ValueError) as exc:
            _fail(str(exc) if str(folder) in str(exc) else f"{folder}: {exc}")
    if gettext_pairs:
        from polylate.train.parallel import load_gettext_pairs

        try:
            items += load_gettext_pairs(locale_dir, gettext_pairs)
        except (FileNotFoundError, ValueError) as exc:
            _fail(f"--gettext-pairs: {exc}")
    if not items:
        _fail(f"no training items in {', '.join(map(str, data))}" + (f" (split {split!r})" if any(
            f.is_dir() for f in data) else ""))
    unscored = sum(getattr(t, "teacher_scores", None) is None for t in items)
    if teacher == "data" and distill > 0 and unscored:
        _fail(f"--teacher data: {unscored} of {len(items)} training items have no teacher_scores (rows of "
              "pairs.jsonl or of a .jsonl file without them, qrels-only folders, --gettext-pairs); use --teacher "
              "dense or none")
    m = _load_model(model, device)
    if dim_list is None:
        dim_list = m.output_dims
        if weights is not None and len(weights) != len(dim_list):
            _fail(f"--dim-weights has {len(weights)} value(s) for the model's {len(dim_list)} dims "
                  f"{dim_list}; give --dims too")
    if heads_only:
        from polylate.model.bundled import layers_over_base

        # by its weights, not its name: a model folder trained from the bundled one keeps the name
        if layers_over_base(m) is None:
            _fail(f"--heads-only writes heads that load over the bundled default model, but --model {model} is "
                  f"another model (its embeddings, shapes or settings differ): save it whole (drop --heads-only)")
    if teacher_temperature is None:
        teacher_temperature = 0.02 if teacher == "dense" else 1.0
    try:
        trainer = Trainer(m, items, lr=lr, epochs=epochs, batch_size=batch_size, grad_accum=grad_accum,
                          warmup_ratio=warmup, dims=dim_list, dim_weights=weights,
                          train_encoder_layers=encoder_layers, encoder_lr=encoder_lr,
                          distill_weight=0.0 if teacher == "none" else distill,
                          teacher="mean_pool" if teacher == "dense" else "items",
                          teacher_temperature=teacher_temperature, temperature=temperature,
                          doc_maxlen=doc_maxlen, checkpoint_dir=checkpoint_dir,
                          checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, seed=seed,
                          show_progress=True, log_every=50, resume_from=resume,
                          precision="bfloat16" if bf16 else "float32", cache_lower_layers=cache)
        if resume is not None:
            console.print(f"resuming {resume} at optimizer step {trainer.step} of {trainer.total_steps}")
    except ValueError as exc:
        _fail(_option_names(str(exc)))
    try:
        history = trainer.train()
    except FloatingPointError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        kept = trainer.written_checkpoints or ([resume] if resume is not None else [])
        console.print("interrupted; " + (
            f"resume from the last checkpoint with --resume {kept[-1]}" if kept else
            "no checkpoint was written yet (one is saved after each epoch, and every --checkpoint-every steps)"
            if checkpoint_dir is not None else "no checkpoint was written (--checkpoint-dir saves them)"))
        raise typer.Exit(130) from None
    try:
        if heads_only:  # with every encoder layer that differs from the base's: trained now or before
            save_heads(m, output)
        else:  # named for what it is: /health, answers and index records show which model is served
            m.name = fine_tuned_name(m.name, output.resolve().name)
            m.save(output)
    except OSError as exc:
        kept = trainer.written_checkpoints
        _fail(f"cannot write {output}: {exc.strerror or exc}" + (f" (last checkpoint: {kept[-1]})" if kept else ""))
    losses = [h["epoch_loss"] for h in history if "epoch_loss" in h]
    console.print(f"trained on {len(items)} items for {epochs} epoch(s), {trainer.step} optimizer steps; "
                  f"mean loss per epoch {', '.join(f'{x:.4f}' for x in losses)}; saved {output}")


def _check_train_output(output: Path, heads_only: bool, overwrite: bool) -> None:
    """Refuse, before any training, an --output that saving would fail on or silently clobber."""
    from polylate.model.colbert import NATIVE_CONFIG

    if not heads_only and output.suffix.lower() == ".safetensors" and not output.is_dir():
        _fail(f"--output {output} names a .safetensors file, but a model is saved as a folder: name a folder, "
              "or pass --heads-only to write just the heads (over the bundled default model)")
    if heads_only:
        if output.is_dir():
            _fail(f"--output {output} is a folder; --heads-only writes one .safetensors file")
        if output.exists() and not overwrite:
            _fail(f"--output {output} exists; pass --overwrite to replace it")
    elif output.exists():
        if not output.is_dir():
            _fail(f"--output {output} is a file; a model is saved as a folder")
        if any(output.iterdir()):
            if not (output / NATIVE_CONFIG).exists():
                _fail(f"--output {output} is a non-empty folder that holds no polylate model; choose another")
            if not overwrite:
                _fail(f"--output {output} holds a model; pass --overwrite to replace it")
    blocker = file_in_the_way(output.parent)
    if blocker:
        _fail(f"--output {output}: {blocker} is a file, not a folder")
    parent = next(p for p in output.parents if p.exists())
    if not os.access(parent, os.W_OK):
        _fail(f"--output {output}: {parent} is not writable")


@app.command()
def mine(
    data: Path = typer.Argument(..., help="BEIR folder with corpus, queries and qrels/<split>.tsv"),
    output: Path = typer.Option(..., "--output", "-o", help="pairs.jsonl to write (inside DATA, polylate train "
                                "reads it)"),
    retriever: str = typer.Option("bm25", help="'bm25' or 'colbert' (exact MaxSim with --model)"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="ColBERT model whose MaxSim scores the "
                                          "positive and negatives (teacher_scores; any --model form)"),
    negatives: int = typer.Option(20, help="hard negatives kept per query"),
    depth: int = typer.Option(100, help="documents retrieved per query"),
    skip: int = typer.Option(0, help="drop this many top-ranked unjudged documents first (likely false negatives)"),
    split: str = typer.Option("train", help="qrels split"),
    dim: Optional[int] = typer.Option(None, "--dim", "-d", help="ColBERT dim for retrieval and teacher scores"),
    doc_maxlen: Optional[int] = typer.Option(None, "--doc-maxlen", help="document token limit for ColBERT "
                                             "retrieval and teacher scores (e.g. the one you train with)"),
    batch_size: int = typer.Option(32, "--batch-size", "-b"),
    overwrite: bool = typer.Option(False, help="replace an existing output file"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Mine hard negatives (and a teacher's scores) for training: writes pairs.jsonl."""
    from polylate.train.data import read_beir
    from polylate.train.mining import add_teacher_scores, mine_hard_negatives, write_pairs

    _check_at_least(("--negatives", negatives, 1), ("--depth", depth, 1), ("--skip", skip, 0))
    _check_doc_maxlen(doc_maxlen)
    _check_output_file(output, overwrite)
    try:
        corpus, queries, qrels = read_beir(data, split)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(f"{data}: {exc}")
    m = _load_model(model, device, dtype) if retriever == "colbert" else None
    same = teacher is not None and teacher == model and retriever == "colbert"
    # the teacher loads before mining: a bad --teacher fails before the work, not after
    scorer = _load_model(teacher, device, dtype, option="--teacher") if teacher is not None and not same else None
    start = time.perf_counter()
    try:
        rows = mine_hard_negatives(corpus, queries, qrels, retriever=retriever, model=m, negatives=negatives,
                                   depth=depth, skip=skip, dim=dim, doc_maxlen=doc_maxlen, batch_size=batch_size,
                                   teacher_scores=same, show_progress=sys.stderr.isatty())
        if scorer is not None:
            rows = add_teacher_scores(rows, corpus, scorer, dim=dim,
                                      doc_maxlen=doc_maxlen, batch_size=batch_size,
                                      show_progress=sys.stderr.isatty())
    except ValueError as exc:
        _fail(f"{data}: {exc}")
    try:
        write_pairs(rows, output, overwrite=overwrite)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    counts = [len(r["hard_negative_ids"]) for r in rows]
    bare = sum(c == 0 for c in counts)
    if bare:
        console.print(f"[yellow]{bare} of {len(rows)} pairs got no negative (fewer than --skip + 1 unjudged "
                      f"documents in the top --depth {depth}); raise --depth or lower --skip[/yellow]")
    console.print(f"mined {len(rows)} (query, positive) pairs, {np.mean(counts) if counts else 0:.1f} negatives each "
                  f"({retriever}{', teacher scores' if teacher else ''}) in {time.perf_counter() - start:.1f}s "
                  f"→ {output}", soft_wrap=True)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0: all interfaces; set API keys then)"),
    port: int = typer.Option(8000, help="TCP port"),
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    index_root: Path = typer.Option(Path("indexes"), "--index-root", help="folder holding the named indexes"),
    qdrant_url: Optional[str] = typer.Option(None, "--qdrant-url", help="keep the indexes as collections of this "
                                             "Qdrant server or cluster instead of folders under --index-root"),
    qdrant_path: Optional[Path] = typer.Option(None, "--qdrant-path", help="... or of an embedded (local mode) "
                                               "Qdrant in this folder"),
    qdrant_api_key: Optional[str] = typer.Option(None, "--qdrant-api-key", envvar="QDRANT_API_KEY",
                                                 help="the Qdrant server's API key (or $QDRANT_API_KEY)"),
    api_key: list[str] = typer.Option(None, "--api-key", help="accepted Bearer key (repeatable); "
                                      "default: $POLYLATE_API_KEYS (comma-separated)"),
    protect_reads: bool = typer.Option(False, help="require a key for searching and encoding too, not only writes"),
    max_batch: int = typer.Option(128, help="texts or documents per request"),
    max_text_chars: int = typer.Option(16_384, help="characters per text"),
    max_request_bytes: int = typer.Option(4 << 20, help="request body size"),
    max_request_tokens: int = typer.Option(65_536, help="tokens one request may have encoded (the encoder's "
                                           "work; it serves one request at a time)"),
    model_alias: list[str] = typer.Option(None, "--model-alias", help="extra name accepted in a request's "
                                          "'model' field, e.g. jina-colbert-v2 (repeatable)"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
    log_level: str = typer.Option("info", help="uvicorn log level"),
) -> None:
    """Serve the HTTP API (Jina-compatible /v1/multi-vector and /v1/rerank, indexes) and the search page."""
    try:
        from polylate.server.app import serve as run_server
        from polylate.server.settings import ServerSettings
    except ImportError as exc:
        _fail(f"the server needs its extra dependencies ({exc.name} is missing): pip install 'polylate[server]'")
    try:
        settings = ServerSettings.from_env(
            model=model, index_root=index_root, api_keys=tuple(api_key or ()), protect_reads=protect_reads,
            max_batch=max_batch, max_text_chars=max_text_chars, max_request_bytes=max_request_bytes,
            max_request_tokens=max_request_tokens,
            model_aliases=tuple(model_alias or ()), device=device,
            dtype=_dtype_name(dtype), qdrant_url=qdrant_url,
            qdrant_path=None if qdrant_path is None else str(qdrant_path), qdrant_api_key=qdrant_api_key)
        _check_device(device)
    except ValueError as exc:
        _fail(str(exc))
    if index_root.exists() and not index_root.is_dir():
        _fail(f"--index-root {index_root} is a file, not a folder")
    if protect_reads and not settings.api_keys:
        _fail("--protect-reads needs API keys (--api-key or $POLYLATE_API_KEYS)")
    if not settings.api_keys and host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/yellow] serving on {host} without API keys: anyone who can reach it "
                      "can write to the indexes")
    if qdrant_url or qdrant_path:  # before the model loads: an unreachable Qdrant is a one-line error at once
        _qdrant(qdrant_url, qdrant_path, qdrant_api_key).close()
        if index_root != Path("indexes"):
            console.print(f"[yellow]note:[/yellow] --index-root {escape(str(index_root))} is not used: the indexes "
                          "are Qdrant collections", soft_wrap=True)
    where = f"Qdrant {qdrant_url or qdrant_path}" if qdrant_url or qdrant_path else index_root.resolve()
    console.print(f"loading {model} …; indexes in {where}; "
                  f"auth: {'on' if settings.api_keys else 'off'}{' (reads too)' if protect_reads else ''}")
    try:
        run_server(settings, host=host, port=port, log_level=log_level)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    except Exception as exc:  # an unreachable Qdrant, a locked local-mode folder: one line
        if qdrant_url or qdrant_path:
            _fail(f"cannot open Qdrant at {qdrant_url or qdrant_path}: {exc}")
        raise


def _shortened(text: str, width: int) -> str:
    """``text`` within ``width`` characters, a cut one ending in "…" (not mid-word, unseen)."""
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut[width // 2:] else cut).rstrip(" ,;:") + "…"


@app.command()
def demo(
    model: str = typer.Option("default", "--model", "-m", help=MODEL_HELP),
    dim: Optional[int] = typer.Option(None, "--dim", "-d", help="default: the model's"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    dtype: Optional[str] = typer.Option(None, help=DTYPE_HELP),
) -> None:
    """Index a small multilingual sample and answer queries in several languages."""
    import tempfile

    from polylate.index.plaid import PlaidIndex
    from polylate.sample import SAMPLE_DOCUMENTS, SAMPLE_QUERIES

    m = _load_model(model, device, dtype)
    console.print(f"model: {m.name}  encoder: {m.encoder.config.num_layers} layers × "
                  f"{m.encoder.config.hidden_size}  heads: {m.head_dims}")
    docs = [d["text"] for d in SAMPLE_DOCUMENTS]
    start = time.perf_counter()
    doc_vectors = m.encode(docs, dim=dim, show_progress=sys.stderr.isatty())
    console.print(f"encoded {len(docs)} documents ({sum(len(v) for v in doc_vectors)} token vectors) "
                  f"in {time.perf_counter() - start:.2f}s")
    out = Console(soft_wrap=True)
    with tempfile.TemporaryDirectory(prefix="polylate-demo-") as tmp:
        index = PlaidIndex.build(Path(tmp) / "index", [d["id"] for d in SAMPLE_DOCUMENTS], doc_vectors,
                                 texts=docs, nbits=2)
        st = index.stats()
        console.print(f"indexed into {st['centroids']} centroids, {st['bytes_per_token']:.0f} bytes/token")
        langs = {d["id"]: d["lang"] for d in SAMPLE_DOCUMENTS}
        for q in SAMPLE_QUERIES:
            hits = index.search(m.encode(q["text"], is_query=True, dim=dim), k=3)
            table = Table(title=f"[{q['lang']}] {q['text']}", title_justify="left")
            for col, just in (("rank", "right"), ("score", "right"), ("lang", "left"), ("document", "left")):
                table.add_column(col, justify=just)
            for rank, (h, text) in enumerate(zip(hits, index.documents(h.id for h in hits)), 1):
                table.add_row(str(rank), f"{h.score:.2f}", langs[h.id], _shortened(text or "", 90))
            out.print(table)


def _reflowed(doc: str) -> str:
    """A docstring as help text: each paragraph one line, which rich wraps to the terminal (it
    keeps the source's line breaks, which would cut help lines mid-sentence)."""
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines())
                       for p in inspect.cleandoc(doc).split("\n\n"))


for _group in (app, index_app, qdrant_app):
    for _command in _group.registered_commands:
        if _command.help is None and _command.callback.__doc__:
            _command.help = _reflowed(_command.callback.__doc__)

if __name__ == "__main__":
    app()
