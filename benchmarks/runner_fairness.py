"""How long a search's query waits for the model while the server encodes many documents
(an add, a retrain), and what encoding documents a slice at a time costs the bulk work.

The server has one model and encodes one request at a time. At first an add's or a retrain
part's documents were one turn of the model, so a query waited for all of them; then they went
16 texts a turn; now a slice holds about ``ModelRunner.SLICE_TOKENS`` padded tokens, so the
wait no longer grows with the documents' length. Turns go in the order asked. The three are run
here side by side on the same documents: a thread encodes them in calls of 256 (as a retrain
does) while queries arrive one at a time; the table gives each query's wait-and-encode latency
and the bulk throughput. Every row runs under the same ticket lock (the old plain lock could
also let the bulk's next call take the model straight back).

    python benchmarks/runner_fairness.py [--docs 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import torch

from polylate import load_model
from polylate.server.runner import ModelRunner

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
QUERIES = ["glioma stem cells", "vitamin D and bone density", "antibiotic resistance in hospitals",
           "BRCA1 mutation breast cancer risk"]


def documents(n: int) -> list[str]:
    if (SCIFACT / "corpus.jsonl.gz").exists() or (SCIFACT / "corpus.jsonl").exists():
        from polylate.eval.beir import load_beir

        corpus = load_beir(SCIFACT, split="test").corpus
        return list(corpus.values())[:n]
    from polylate.sample import SAMPLE_DOCUMENTS

    return ([d["text"] for d in SAMPLE_DOCUMENTS] * (n // len(SAMPLE_DOCUMENTS) + 1))[:n]


def by_count(texts: list[str], n: int) -> list[list[int]]:
    """The previous slicing: ``n`` texts a turn, by length."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[s:s + n] for s in range(0, len(order), n)]


def run(runner: ModelRunner, docs: list[str], part: int = 256) -> tuple[list[float], float]:
    """(query latencies in s, bulk seconds) of one bulk encode with queries sent meanwhile."""
    done = threading.Event()
    bulk = {}

    def encode_all():
        start = time.perf_counter()
        for s in range(0, len(docs), part):
            runner.encode(docs[s:s + part], is_query=False, dim=128)
        bulk["seconds"] = time.perf_counter() - start
        done.set()

    worker = threading.Thread(target=encode_all)
    worker.start()
    latencies = []
    time.sleep(0.5)  # the bulk holds the model
    while not done.is_set():
        start = time.perf_counter()
        runner.encode([QUERIES[len(latencies) % len(QUERIES)]], is_query=True, dim=128)
        latencies.append(time.perf_counter() - start)
        done.wait(0.5)
    worker.join()
    return latencies, bulk["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model()
    docs = documents(args.docs)
    runner = ModelRunner(model)
    runner.encode(docs[:4], is_query=False, dim=128)  # warm-up
    budget = ModelRunner.SLICE_TOKENS
    rows = []
    for name, slicer in (("whole call", lambda texts, *a: [list(range(len(texts)))]),
                         ("16 texts a turn", lambda texts, *a: by_count(texts, 16)),
                         (f"{budget} tokens a turn (now)", runner._slices)):
        runner._slices = slicer
        latencies, seconds = run(runner, docs)
        rows.append((name, np.array(latencies), seconds))
    base = rows[0][2]
    print(f"{len(docs)} documents encoded in calls of 256, queries sent one at a time meanwhile "
          f"({args.threads} threads)")
    print(f"{'runner':<26}{'queries':>8}{'p50 s':>8}{'p95 s':>8}{'max s':>8}{'bulk s':>8}{'bulk vs whole':>16}")
    for name, lat, seconds in rows:
        print(f"{name:<26}{len(lat):>8}{np.median(lat):>8.2f}{np.percentile(lat, 95):>8.2f}{lat.max():>8.2f}"
              f"{seconds:>8.1f}{seconds / base:>15.2f}x")


if __name__ == "__main__":
    main()
