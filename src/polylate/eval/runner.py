"""Evaluate ColBERT (per Matryoshka dim) and BM25 on BEIR datasets; tables and plots.

Rows are plain dicts so they serialise as JSON and print as tables:
``{"dataset", "method", "dim", "ndcg@10", "recall@100", "mrr@10", "bytes_per_doc",
"tokens_per_doc", "queries", "docs", "seconds"}`` (``dim`` is an int, or ``"bm25"``).

``bytes_per_doc`` is the storage a document costs in the ranking structure:
exact search → float16 vectors, ``dim × 2`` bytes per token × average tokens per document;
PLAID (``use_index``) → per token a centroid code (2 bytes) + ``dim × nbits / 8`` bytes of
residual, plus the document's inverted-list postings (4 bytes per distinct centroid of its
tokens); the codec (fixed size) and the ids are left out, and ``index_bytes_per_doc`` (JSON
output) is every file of the index on disk per document;
BM25 → the sparse score matrix (4-byte score + 4-byte doc number per posting) per document.
``tokens_per_doc`` is ColBERT's token vectors per document, or BM25's terms (XLM-R pieces).
``seconds`` is wall time: ranking + evaluation, plus the shared encoding split over the dims.

Exact search keeps every token vector in memory (float16, plus a float32 copy while
scoring): fine up to ~10^5 documents of a few hundred tokens; beyond that use ``use_index``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from polylate.config import check_doc_maxlen
from polylate.eval.beir import Dataset, DatasetError, dataset_name, discover, load_beir, subsample
from polylate.eval.metrics import evaluate, scored_queries
from polylate.paths import file_in_the_way

__all__ = ["evaluate_bm25", "evaluate_colbert", "main_eval", "plot_quality_vs_storage", "report_table",
           "write_trec_run"]

METRICS = ("ndcg@10", "recall@100", "mrr@10")


def rank_exact(dim, doc_ids, doc_vecs, query_ids, query_vecs, k):
    """Exact MaxSim top-k per query → (run ``{qid: {docid: score}}``, None)."""
    from polylate.index.exact import ExactIndex

    index = ExactIndex(dim)
    index.add(doc_ids, doc_vecs)
    return {q: {h.id: h.score for h in index.search(v, k=k)} for q, v in zip(query_ids, query_vecs)}, None


def _rank_plaid(dim, doc_ids, doc_vecs, query_ids, query_vecs, k, nbits):
    from polylate.index.plaid import PlaidIndex

    with tempfile.TemporaryDirectory(prefix="polylate-eval-") as tmp:
        index = PlaidIndex.build(Path(tmp) / "index", doc_ids, doc_vecs, nbits=nbits)
        run = {q: {h.id: h.score for h in index.search(v, k=k)} for q, v in zip(query_ids, query_vecs)}
        code_bytes = np.dtype(index.codec.code_dtype).itemsize
        per_token = index.codec.bytes_per_token + code_bytes
        postings = sum(seg.ivf_docs.nbytes for seg in index.segments) / len(doc_ids)
        disk = index.stats()["bytes_on_disk"]
    return run, {"per_token": per_token, "postings_per_doc": postings, "disk": disk}


def evaluate_colbert(
    model,
    dataset: Dataset,
    dims: Sequence[int] = (128, 96, 64),
    k: int = 100,
    batch_size: int = 32,
    show_progress: bool = False,
    use_index: bool = False,
    nbits: int = 2,
    doc_maxlen: int | None = None,
    metrics: Sequence[str] = METRICS,
    runs_dir: str | Path | None = None,
) -> list[dict]:
    """Encode the corpus and queries once (every dim from the same encoder pass), rank every query with exact
    MaxSim (or a PLAID index built in a temp folder, with ``use_index``), one row per dim.
    ``runs_dir``: also write each ranking there as a TREC run file (:func:`write_trec_run`)."""
    if not dataset.queries or not dataset.corpus:
        raise ValueError(f"{dataset.name}: nothing to evaluate ({len(dataset.queries)} queries, "
                         f"{len(dataset.corpus)} documents)")
    dims = list(dict.fromkeys(int(d) for d in dims))
    doc_ids, doc_texts = list(dataset.corpus), list(dataset.corpus.values())
    query_ids, query_texts = list(dataset.queries), list(dataset.queries.values())
    start = time.perf_counter()
    # one encoder pass serves every dim: each costs only its projection
    docs = model.encode_dims(doc_texts, dims, is_query=False, batch_size=batch_size,
                             show_progress=show_progress, doc_maxlen=doc_maxlen, dtype=np.float16)
    queries = model.encode_dims(query_texts, dims, is_query=True, batch_size=batch_size,
                                show_progress=show_progress, dtype=np.float16)
    encode_s = (time.perf_counter() - start) / len(dims)
    tokens_per_doc = float(np.mean([v.shape[0] for v in docs[dims[0]]]))
    rows = {}
    for d in dims:
        start = time.perf_counter()
        dv, qv = docs.pop(d), queries.pop(d)
        if use_index:
            run, info = _rank_plaid(d, doc_ids, dv, query_ids, qv, k, nbits)
            method = f"plaid-{nbits}bit"
            bytes_per_doc = tokens_per_doc * info["per_token"] + info["postings_per_doc"]
        else:
            run, info = rank_exact(d, doc_ids, dv, query_ids, qv, k)
            method, bytes_per_doc = "exact", tokens_per_doc * d * 2
        del dv, qv
        scores = evaluate(run, dataset.qrels, metrics)
        if runs_dir is not None:
            write_trec_run(run, Path(runs_dir) / f"{_file_name(dataset.name)}.{method}.{d}.trec",
                           f"polylate-{method}-{d}")
        rows[d] = {
            "dataset": dataset.name, "method": method, "dim": d, **scores,
            "bytes_per_doc": bytes_per_doc, "tokens_per_doc": tokens_per_doc,
            "queries": scored_queries(dataset.qrels), "docs": len(doc_ids),
            "seconds": encode_s + time.perf_counter() - start,
        }
        if info is not None:
            rows[d]["index_bytes_per_doc"] = info["disk"] / len(doc_ids)
    return [rows[d] for d in dims]


def evaluate_bm25(dataset: Dataset, k: int = 100, tokenizer="xlmr",
                  metrics: Sequence[str] = METRICS, runs_dir: str | Path | None = None) -> list[dict]:
    """The BM25 row for a dataset (a one-element list, like ``evaluate_colbert``)."""
    from polylate.eval.bm25 import BM25Baseline

    start = time.perf_counter()
    bm25 = BM25Baseline(dataset.corpus, tokenizer=tokenizer)
    run = bm25.search(dataset.queries, k=k)
    scores = evaluate(run, dataset.qrels, metrics)
    if runs_dir is not None:
        write_trec_run(run, Path(runs_dir) / f"{_file_name(dataset.name)}.bm25.trec", "bm25")
    return [{
        "dataset": dataset.name, "method": "bm25", "dim": "bm25", **scores,
        "bytes_per_doc": bm25.index_bytes / len(bm25), "tokens_per_doc": bm25.num_tokens / len(bm25),
        "queries": scored_queries(dataset.qrels), "docs": len(dataset.corpus),
        "seconds": time.perf_counter() - start,
    }]


# -- output -----------------------------------------------------------------------------------

def _write_rows(rows: Sequence[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(list(rows), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _file_name(dataset: str) -> str:
    """A dataset name ("xquad_r/de→en") as one file-name part ("xquad_r_de-en")."""
    return "".join(c if c.isalnum() or c in "._-" else "-" if c == "→" else "_" for c in dataset)


def write_trec_run(run: dict[str, dict[str, float]], path: str | Path, tag: str) -> Path:
    """``qid Q0 docid rank score tag`` per line, best first (trec_eval's tie order), so the
    rankings can be re-scored or compared for significance (trec_eval, ranx) later."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(trec_lines(run, tag))
    return path


def trec_lines(run: dict[str, dict[str, float]], tag: str) -> Iterator[str]:
    """The lines of :func:`write_trec_run`."""
    from polylate.eval.metrics import _ranked

    for qid in sorted(run):
        for rank, doc in enumerate(_ranked(run[qid]), 1):
            # every digit (repr: the shortest that reads back): 6 decimals made ties that
            # trec_eval would break by doc id, away from the order the metrics were computed on
            yield f"{qid} Q0 {doc} {rank} {float(run[qid][doc])!r} {tag}\n"


_FIXED = ("dataset", "method", "dim")
_TAIL = ("bytes_per_doc", "tokens_per_doc", "queries", "docs", "seconds")


def _columns(rows: Sequence[dict]) -> list[str]:
    metric_cols = [c for r in rows for c in r if c not in _FIXED + _TAIL and c != "index_bytes_per_doc"]
    return list(_FIXED) + list(dict.fromkeys(metric_cols)) + [c for c in _TAIL if any(c in r for r in rows)]


def _fmt(col: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if col in ("bytes_per_doc", "tokens_per_doc"):
            return f"{value:,.0f}"
        if col == "seconds":
            return f"{value:.1f}"
        return f"{value:.4f}"
    return str(value)


def report_table(rows: Sequence[dict]) -> str:
    """Plain-text table, one line per row; numbers right-aligned."""
    if not rows:
        return "(no results)"
    cols = _columns(rows)
    cells = [[_fmt(c, r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    left = {"dataset", "method"}

    def line(values):
        return "  ".join(v.ljust(w) if c in left else v.rjust(w) for c, v, w in zip(cols, values, widths)).rstrip()

    out = [line(cols), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _rich_table(rows: Sequence[dict]):
    from rich.table import Table

    cols = _columns(rows)
    table = Table(title="retrieval quality vs storage", title_justify="left")
    for c in cols:
        table.add_column(c, justify="left" if c in ("dataset", "method") else "right")
    for r in rows:
        table.add_row(*(_fmt(c, r.get(c)) for c in cols))
    return table


def _bytes_label(value: float, _pos=None) -> str:
    for step, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= step:
            return f"{value / step:g}{unit}"
    return f"{value:g}"


def plot_quality_vs_storage(rows: Sequence[dict], path_png: str | Path, metric: str = "ndcg@10") -> Path:
    """One line per dataset: ``metric`` against bytes per document (log scale) over the ColBERT
    dims; BM25 rows are drawn as a dashed horizontal line in the dataset's colour."""
    try:
        import matplotlib
        from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install matplotlib "
                          "(or pip install 'polylate[eval]')") from exc
    if not rows:
        raise ValueError("no rows to plot")
    path_png = Path(path_png)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(datasets):
        colour = colours[i % len(colours)]
        for method in dict.fromkeys(r["method"] for r in rows if r["dataset"] == name and r["method"] != "bm25"):
            pts = sorted((r["bytes_per_doc"], r[metric], r["dim"]) for r in rows
                         if r["dataset"] == name and r["method"] == method)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            ax.plot(xs, ys, marker="o", color=colour, linestyle="-" if method == "exact" else ":",
                    label=f"{name} ({method})")
            for x, y, d in pts:
                ax.annotate(str(d), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for r in rows:
            if r["dataset"] == name and r["method"] == "bm25":
                ax.axhline(r[metric], color=colour, linestyle="--", linewidth=1, label=f"{name} (BM25)")
    ax.set_xscale("log")
    # labels at 1-2-5 steps, as "20k": the default labelled minor ticks overlapped ("3×10³4×10³")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(_bytes_label))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bytes per document")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs storage")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path_png, dpi=120)
    return path_png


# -- entry point for `polylate eval` ----------------------------------------------------------


def _resolve_datasets(paths: Iterable[str | Path], split: str) -> list[Path]:
    """Each path is a dataset folder, or a folder holding datasets (searched recursively)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.is_dir():
            raise DatasetError(f"{p} is not a folder")
        found = discover(p, split=split)
        if not found:
            splits = sorted({q.name.split(".")[0] for d in discover(p) for q in (d / "qrels").glob("*.tsv*")})
            raise DatasetError(f"no dataset with qrels/{split}.tsv (or .tsv.gz) under {p}"
                               + (f"; the splits there: {', '.join(splits)}" if splits else ""))
        out.extend(f for f in found if f.resolve() not in {g.resolve() for g in out})
    return out


def _unique_names(folders: Sequence[Path]) -> dict[Path, str]:
    """Each dataset's display name (``xquad_r/de``), lengthened with more of its path where
    two would read the same — rows and run files must not be confused or overwrite each other."""
    names = {f: dataset_name(f.resolve()) for f in folders}
    for f in folders:
        clash = [g for g in folders if _file_name(names[g]) == _file_name(names[f])]
        if len(clash) > 1:
            parts = {g: g.resolve().parts for g in clash}
            depth = 1
            while depth < max(len(p) for p in parts.values()) and \
                    len({_file_name("/".join(parts[g][-depth:])) for g in clash}) < len(clash):
                depth += 1
            for g in clash:
                names[g] = "/".join(parts[g][-depth:])
    return names


#: characters of corpus text the pre-check keeps for the evaluation to reuse (~0.5 GB of str)
KEEP_CHECKED_CHARS = 1 << 28


def _check_datasets(folders: Sequence[Path], split: str, keep: dict | None = None) -> None:
    """Read every dataset once before any model loads: a broken one late in the list must not
    cost the encoding of the ones before it. ``keep`` collects what was read (up to
    :data:`KEEP_CHECKED_CHARS`), so the evaluation does not parse it a second time."""
    kept = 0
    for folder in folders:
        dataset = load_beir(folder, split=split)
        if not any(r > 0 for rels in dataset.qrels.values() for r in rels.values()):
            raise DatasetError(f"{folder}: the {split} qrels hold no relevant (score > 0) judgment")
        size = sum(len(t) for t in dataset.corpus.values())
        if keep is not None and kept + size <= KEEP_CHECKED_CHARS:
            keep[folder] = dataset
            kept += size


def check_eval_args(paths, split: str = "test", metrics: Sequence[str] = METRICS, k: int = 100,
                    batch_size: int = 32, max_queries: int | None = None, max_docs: int | None = None,
                    use_index: bool = False, nbits: int = 2, bm25: bool = True, colbert: bool = True,
                    output_json: str | Path | None = None, plot: str | Path | None = None,
                    runs_dir: str | Path | None = None, doc_maxlen: int | None = None,
                    read_data: bool = False, keep: dict | None = None,
                    dims: Sequence[int] | None = None) -> list[Path]:
    """Everything about an eval that can be wrong before any model is loaded or any text
    encoded; returns the dataset folders. Raises ValueError / DatasetError naming the option.
    ``read_data``: also read every dataset (see :func:`_check_datasets`); ``keep``: a dict that
    collects them for :func:`main_eval`'s ``datasets``."""
    from polylate.eval.metrics import parse_metric
    from polylate.index.codec import check_codec_settings

    if not metrics:
        raise ValueError("no metrics given")
    for name in metrics:
        parse_metric(name)  # a typo fails before hours of encoding, not after
    for option, value in (("depth", k), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{option} must be positive, got {value}")
    for option, value in (("max_queries", max_queries), ("max_docs", max_docs)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be positive, got {value}")
    if use_index:  # a dim × nbits that packs into no whole byte, before anything is encoded
        for d in dims or (8,):
            check_codec_settings(int(d), nbits)
    if not bm25 and not colbert:
        raise ValueError("nothing to run: enable bm25 and/or colbert")
    if doc_maxlen is not None:
        check_doc_maxlen(doc_maxlen)
    for what, target in (("JSON output", output_json), ("plot", plot)):
        if target is not None and Path(target).is_dir():
            raise ValueError(f"{what} {target} is a folder; give a file name")
        blocker = None if target is None else file_in_the_way(Path(target).parent)
        if blocker:
            raise ValueError(f"{what} {target}: {blocker} is a file, not a folder")
    blocker = None if runs_dir is None else file_in_the_way(Path(runs_dir))
    if blocker:
        raise ValueError(f"runs folder {runs_dir}: {blocker} is a file, not a folder")
    if plot is not None:
        _check_plot_format(Path(plot))
    for what, folder in (("JSON output", output_json and Path(output_json).parent), ("plot", plot and Path(plot).parent),
                         ("runs folder", runs_dir and Path(runs_dir))):
        if folder:
            _check_writable(what, folder)
    found = _resolve_datasets([paths] if isinstance(paths, (str, Path)) else paths, split)
    if read_data:
        _check_datasets(found, split, keep)
    return found


def _check_plot_format(plot: Path) -> None:
    """The plot's file type is one matplotlib writes (known before the run, not after it)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("plot: plotting needs matplotlib: pip install matplotlib (or pip install "
                         "'polylate[eval]')") from None
    kinds = Figure().canvas.get_supported_filetypes()
    kind = plot.suffix.lower().lstrip(".")
    if kind not in kinds:
        raise ValueError(f"plot {plot}: {'.' + kind if kind else 'no file type'} is not an image type matplotlib "
                         f"writes; name it .png, .svg or .pdf (or {', '.join(sorted(set(kinds) - {'png', 'svg', 'pdf'}))})")


def _check_writable(what: str, folder: Path) -> None:
    """Make the folder and a file in it now: an eval that cannot write its outputs fails before
    hours of encoding, not after."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".polylate-write-check-"):
            pass
    except OSError as exc:
        raise ValueError(f"{what}: cannot write in {folder} ({exc.strerror or exc})") from None


def _log(line: str) -> None:
    """One progress line on stderr: a long eval whose output is redirected still says where it is."""
    print(line, file=sys.stderr, flush=True)


def main_eval(
    paths: str | Path | Sequence[str | Path],
    dims: Sequence[int] = (128, 96, 64),
    max_queries: int | None = None,
    max_docs: int | None = None,
    bm25: bool = True,
    colbert: bool = True,
    plot: str | Path | None = None,
    model=None,
    split: str = "test",
    seed: int = 0,
    k: int = 100,
    batch_size: int = 32,
    use_index: bool = False,
    nbits: int = 2,
    doc_maxlen: int | None = None,
    output_json: str | Path | None = None,
    metrics: Sequence[str] = METRICS,
    runs_dir: str | Path | None = None,
    show_progress: bool | None = None,
    rich: bool = True,
    file=None,
    datasets: dict | None = None,
) -> list[dict]:
    """Evaluate every dataset found under ``paths``; print the table; return the rows.

    ``paths``: dataset folders or roots holding them (e.g. ``../shared/data/xquad_r``).
    ``model``: a loaded ColBERT, a checkpoint path / hub id, or None for the bundled default
    (only loaded when ``colbert``). ``max_queries`` / ``max_docs`` subsample each dataset
    deterministically (``seed``), keeping the judged documents of the kept queries.
    ``output_json``: also write the rows there. ``rich=False`` prints the plain-text table.
    ``metrics``: the measures reported (:func:`polylate.eval.metrics.parse_metric` names); the
    plot uses the first. ``runs_dir``: write every ranking there as a TREC run file.
    ``datasets``: folders already read by :func:`check_eval_args` (its ``keep``), used instead
    of reading them again.
    """
    from polylate.eval.metrics import parse_metric

    metrics = list(dict.fromkeys(metrics))
    loads_model = colbert and (model is None or isinstance(model, (str, Path)))
    datasets = {} if datasets is None else datasets
    found = check_eval_args(paths, split, metrics, k, batch_size, max_queries, max_docs, use_index, nbits,
                            bm25, colbert, output_json, plot, runs_dir, doc_maxlen, read_data=loads_model,
                            keep=datasets, dims=dims if colbert else None)
    deepest = max((parse_metric(m)[1] or 0 for m in metrics), default=0)
    if deepest > k:  # recall@1000 over a 100-deep ranking would be silently wrong
        print(f"ranking {deepest} documents per query (not {k}): a metric cuts off at {deepest}", file=sys.stderr)
        k = deepest
    names = _unique_names(found)
    file = file or sys.stdout
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    if colbert and (model is None or isinstance(model, (str, Path))):
        from polylate import load_model

        model = load_model(None if model is None else str(model))
    if colbert:  # before any dataset runs; the sizes index build, rerank and the server take too
        unknown = [int(d) for d in dims if int(d) not in model.output_dims]
        if unknown:
            raise ValueError(f"dims {unknown} are not sizes the model makes, {model.output_dims} (a size trained as "
                             "a truncation, polylate train --dims, is recorded in the model and counts)")
    rows: list[dict] = []
    for n, folder in enumerate(found, 1):
        started, first = time.perf_counter(), len(rows)
        read = datasets.pop(folder, None)  # read once by the checks: not parsed again
        dataset = dataclasses.replace(read, name=names[folder]) if read else load_beir(folder, split=split,
                                                                                       name=names[folder])
        if max_queries is not None or max_docs is not None:
            dataset = subsample(dataset, max_queries=max_queries, max_docs=max_docs, seed=seed)
        _log(f"[{n}/{len(found)}] {dataset.name}: {len(dataset.queries)} queries, {len(dataset.corpus)} documents")
        if bm25:
            rows.extend(evaluate_bm25(dataset, k=k, metrics=metrics, runs_dir=runs_dir))
        if colbert:
            rows.extend(evaluate_colbert(model, dataset, dims=dims, k=k, batch_size=batch_size,
                                         show_progress=show_progress, use_index=use_index, nbits=nbits,
                                         doc_maxlen=doc_maxlen, metrics=metrics, runs_dir=runs_dir))
        scores = ", ".join(f"{r['dim']} {r[metrics[0]]:.4f}" for r in rows[first:])
        _log(f"[{n}/{len(found)}] {dataset.name}: {metrics[0]} {scores} ({time.perf_counter() - started:.0f} s)")
        if output_json is not None:  # after every dataset: a later failure keeps these rows
            _write_rows(rows, output_json)
    if rich:
        from rich.console import Console

        console = Console(file=file)
        if not console.is_terminal:  # piped or captured: don't squeeze the table into 80 columns
            console = Console(file=file, width=200)
        console.print(_rich_table(rows))
    else:
        print(report_table(rows), file=file)
    if plot is not None:
        plot_quality_vs_storage(rows, plot, metric=metrics[0])
    return rows
