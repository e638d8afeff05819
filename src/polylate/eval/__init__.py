"""Evaluation on BEIR-layout datasets: loading, metrics (trec_eval), a BM25 baseline, and
ColBERT quality per Matryoshka dim against storage per document.

    from polylate.eval import load_beir, subsample, evaluate_colbert, evaluate_bm25, report_table
    ds = subsample(load_beir("../shared/data/xquad_r/en"), max_queries=100, max_docs=240)
    rows = evaluate_bm25(ds) + evaluate_colbert(polylate.load_model(), ds)
    print(report_table(rows))

Heavy optional dependencies (bm25s, pytrec_eval, matplotlib) are imported only when used.
"""

from polylate.eval.bm25 import BM25Baseline
from polylate.eval.beir import Dataset, DatasetError, discover, load_beir, subsample
from polylate.eval.metrics import DEFAULT_METRICS, evaluate
from polylate.eval.runner import (
    evaluate_bm25,
    evaluate_colbert,
    main_eval,
    plot_quality_vs_storage,
    report_table,
)


__all__ = [
    "BM25Baseline",
    "DEFAULT_METRICS",
    "Dataset",
    "DatasetError",
    "discover",
    "evaluate",
    "evaluate_bm25",
    "evaluate_colbert",
    "load_beir",
    "main_eval",
    "plot_quality_vs_storage",
    "report_table",
    "subsample",
]
