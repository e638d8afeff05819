"""Bounded load test of `polylate serve` on loopback.

Starts the server (bundled default model) in a subprocess, builds an index from real text
(../shared/data/xquad_r/en paragraphs when present, else the bundled multilingual sample),
then sends a fixed number of requests per endpoint at a fixed concurrency and prints
p50/p95/max latency, throughput and errors. Exits 1 if any request failed.

    python benchmarks/serve_load.py                       # 200 search, 200 multi-vector, 100 rerank, c=4
    python benchmarks/serve_load.py --search 50 --encode 20 --rerank 10 --docs 60   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
XQUAD_EN = REPO.parent / "shared" / "data" / "xquad_r" / "en"
KEY = "load-test-key-0123"


def corpus(max_docs: int) -> tuple[list[dict], list[str], str]:
    """(documents, queries, source name)."""
    if XQUAD_EN.is_dir():
        from polylate.eval.beir import load_beir

        ds = load_beir(XQUAD_EN)
        docs = [{"id": i, "text": t} for i, t in list(ds.corpus.items())[:max_docs]]
        return docs, list(ds.queries.values()), "xquad_r/en"
    from polylate.sample import SAMPLE_DOCUMENTS, SAMPLE_QUERIES

    docs = [{"id": d["id"], "text": d["text"]} for d in SAMPLE_DOCUMENTS][:max_docs]
    return docs, [q["text"] for q in SAMPLE_QUERIES], "polylate sample"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, index_root: Path, model: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "polylate.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--model", model, "--index-root", str(index_root), "--log-level", "warning"]
    env = {**os.environ, "POLYLATE_API_KEYS": KEY}
    with open(log, "w") as sink:  # a file, not a pipe: a full pipe would stall the server
        return subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            res = httpx.get(url + "/health", timeout=2)
            if res.status_code == 200:
                return res.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not healthy after {timeout:.0f}s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def build_index(url: str, docs: list[dict], batch: int) -> float:
    auth = {"Authorization": f"Bearer {KEY}"}
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600, headers=auth) as c:
        res = c.post("/v1/indexes", json={"name": "load", "documents": docs[:batch]})
        res.raise_for_status()
        for i in range(batch, len(docs), batch):
            c.post("/v1/indexes/load/documents", json={"documents": docs[i : i + batch]}).raise_for_status()
    return time.perf_counter() - start


async def fire(url: str, requests: list[tuple[str, dict]], concurrency: int, deadline: float) -> dict:
    """Send each (path, body) once, at most `concurrency` in flight; stop early at the deadline."""
    latencies: list[float] = []
    errors: list[str] = []
    queue = list(requests)
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(path: str, body: dict) -> None:
            async with sem:
                if time.monotonic() > deadline:
                    errors.append("not sent: time limit reached")
                    return
                t0 = time.perf_counter()
                try:
                    res = await client.post(path, json=body)
                    ok = res.status_code == 200
                    if not ok:
                        errors.append(f"{res.status_code}: {res.text[:200]}")
                except httpx.HTTPError as exc:
                    ok = False
                    errors.append(f"{type(exc).__name__}: {exc}")
                if ok:
                    latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(one(p, b) for p, b in queue))
        wall = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "wall": wall, "n": len(queue)}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--search", type=int, default=200, help="search requests")
    p.add_argument("--encode", type=int, default=200, help="/v1/multi-vector requests")
    p.add_argument("--rerank", type=int, default=100, help="/v1/rerank requests")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--docs", type=int, default=240, help="documents to index")
    p.add_argument("--encode-batch", type=int, default=4, help="documents per multi-vector request")
    p.add_argument("--rerank-docs", type=int, default=10, help="documents per rerank request")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--model", default="default")
    p.add_argument("--max-seconds", type=float, default=900, help="stop sending after this long")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    docs, queries, source = corpus(args.docs)
    rng = random.Random(0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="polylate-load-") as tmp:
        log = Path(tmp) / "server.log"
        proc = start_server(port, Path(tmp) / "indexes", args.model, log)
        try:
            t0 = time.perf_counter()
            health = wait_healthy(url, proc, timeout=300, log=log)
            startup = time.perf_counter() - t0
            build = build_index(url, docs, batch=64)
            texts = [d["text"] for d in docs]
            plan = {
                "search": [("/v1/indexes/load/search", {"query": rng.choice(queries), "k": args.k})
                           for _ in range(args.search)],
                "multi-vector": [("/v1/multi-vector", {"model": "default", "input_type": "document",
                                                       "input": rng.sample(texts, min(args.encode_batch, len(texts)))})
                                 for _ in range(args.encode)],
                "rerank": [("/v1/rerank", {"model": "default", "query": rng.choice(queries),
                                           "documents": rng.sample(texts, min(args.rerank_docs, len(texts)))})
                           for _ in range(args.rerank)],
            }
            deadline = time.monotonic() + args.max_seconds
            results = {name: asyncio.run(fire(url, reqs, args.concurrency, deadline))
                       for name, reqs in plan.items() if reqs}
        finally:
            stop_server(proc)

    print(f"model: {health['model']}; corpus: {source}, {len(docs)} documents; server start {startup:.1f}s, "
          f"index build {build:.1f}s; concurrency {args.concurrency}; loopback")
    header = f"{'endpoint':<14}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'req/s':>8}"
    print(header)
    print("-" * len(header))
    rows = {}
    for name, r in results.items():
        lat = [x * 1000 for x in r["latencies"]]
        rows[name] = {"requests": r["n"], "errors": len(r["errors"]), "p50_ms": percentile(lat, 0.5),
                      "p95_ms": percentile(lat, 0.95), "max_ms": max(lat, default=float("nan")),
                      "req_per_s": len(lat) / r["wall"] if r["wall"] else 0.0}
        row = rows[name]
        print(f"{name:<14}{row['requests']:>9}{row['errors']:>8}{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}"
              f"{row['max_ms']:>9.1f}{row['req_per_s']:>8.1f}")
        for e in r["errors"][:3]:
            print(f"    error: {e}")
    if args.json:
        args.json.write_text(json.dumps({"source": source, "docs": len(docs), "concurrency": args.concurrency,
                                         "startup_s": startup, "build_s": build, "endpoints": rows}, indent=2))
    total_errors = sum(r["errors"] for r in rows.values())
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
