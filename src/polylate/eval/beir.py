"""BEIR-layout datasets: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

Every file may also be gzipped (``corpus.jsonl.gz``, ``qrels/test.tsv.gz``). Qrels carry a
header line (``query-id  corpus-id  score``), as BEIR writes them; a first line whose score
column is not an integer is treated as that header.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Dataset", "DatasetError", "dataset_name", "discover", "doc_text", "find_file", "load_beir", "subsample"]


class DatasetError(ValueError):
    """A dataset folder that cannot be read; the message names the file and why."""


@dataclass
class Dataset:
    name: str
    corpus: dict[str, str]  # doc id → "title text" (just text when the title is empty)
    queries: dict[str, str]  # query id → text; only queries judged in the split
    qrels: dict[str, dict[str, int]]  # query id → {doc id: relevance}
    split: str = "test"
    path: Path | None = None
    extra: dict = field(default_factory=dict)  # e.g. subsampling parameters

    def __repr__(self) -> str:
        pairs = sum(len(v) for v in self.qrels.values())
        return (f"Dataset({self.name!r}, split={self.split!r}, docs={len(self.corpus)}, "
                f"queries={len(self.queries)}, qrels={pairs})")


# -- files --------------------------------------------------------------------------------


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (plain first)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _require(folder: Path, name: str, what: str) -> Path:
    path = find_file(folder, name)
    if path is None:
        raise DatasetError(f"{folder}: no {what} file ({name} or {name}.gz)")
    return path


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line), decoded line by line so that bytes that are not UTF-8 are a
    :class:`DatasetError` naming the exact line; a broken gzip stream names the file."""
    n = 0
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            for n, raw in enumerate(f, 1):
                try:
                    yield n, raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise DatasetError(f"{path}:{n}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: not a readable gzip file ({exc}), after line {n}") from None
    except IsADirectoryError:
        raise DatasetError(f"{path} is a folder, not a file") from None


def read_jsonl(path: Path, require_id: bool = True) -> Iterator[dict]:
    """JSON objects, one per non-blank line; a bad line is a :class:`DatasetError` naming
    ``file:line`` (every corpus and query row needs an ``_id``)."""
    for n, row in _numbered_rows(path, require_id):
        yield row


def _numbered_rows(path: Path, require_id: bool = True) -> Iterator[tuple[int, dict]]:
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{n}: not valid JSON ({exc})") from None
        if not isinstance(row, dict) or (require_id and "_id" not in row):
            raise DatasetError(f"{path}:{n}: expected an object" + (" with an '_id' field" if require_id else ""))
        if require_id and (row["_id"] is None or isinstance(row["_id"], (dict, list, bool))
                           or not str(row["_id"]).strip()):
            raise DatasetError(f"{path}:{n}: '_id' must be a non-empty string or number, got {row['_id']!r}")
        yield n, row


def _field(path: Path, n: int, row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DatasetError(f"{path}:{n}: '{key}' must be a string, got {type(value).__name__}")
    return value.strip()


def doc_text(path: Path, n: int, row: dict) -> str:
    """A corpus row as one string: ``title text`` (BEIR convention), or whichever of the two
    it has (a title without text gave "title ", one token more)."""
    title, text = _field(path, n, row, "title"), _field(path, n, row, "text")
    return f"{title} {text}" if title and text else title or text


def _by_id(path: Path, text_of) -> dict[str, str]:
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for n, row in _numbered_rows(path):
        key, text = str(row["_id"]), text_of(path, n, row)
        if key in out:
            if out[key] != text:
                raise DatasetError(f"{path}:{n}: id {key!r} again (first at line {first[key]}) with another text")
            continue  # an exact repeat changes nothing
        out[key], first[key] = text, n
    return out


def read_corpus(path: Path) -> dict[str, str]:
    return _by_id(path, doc_text)


def read_queries(path: Path) -> dict[str, str]:
    return _by_id(path, lambda path, n, row: _field(path, n, row, "text"))


_QID_HEADERS = {"query-id", "query_id", "qid", "query", "topic", "query-id:"}
_SCORE_HEADERS = {"score", "relevance", "rel", "label", "judgment"}


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Three columns (``query-id corpus-id score``, BEIR) or four (``query-id iteration
    corpus-id score``, TREC); one (query, document) judged twice with different scores is an error."""
    qrels: dict[str, dict[str, int]] = {}
    for n, line in _lines(path):
        row = next(csv.reader([line.rstrip("\r\n")], delimiter="\t", quoting=csv.QUOTE_NONE), [])
        if len(row) == 1 and " " in row[0].strip():  # TREC files are often space-separated
            row = row[0].split()
        if not row or not "".join(row).strip():
            continue
        if len(row) not in (3, 4):
            raise DatasetError(f"{path}:{n}: expected 'query-id<TAB>corpus-id<TAB>score' (or TREC's four "
                               f"columns), got {len(row)}: {line.strip()[:120]!r}")
        qid, did, score = row[0], row[2] if len(row) == 4 else row[1], row[-1]
        try:
            value = float(score)
        except ValueError:
            if n == 1 and (qid.strip().lower() in _QID_HEADERS or score.strip().lower() in _SCORE_HEADERS):
                continue  # the header line
            raise DatasetError(f"{path}:{n}: score {score!r} is not a number") from None
        if not math.isfinite(value) or value != int(value):
            raise DatasetError(f"{path}:{n}: score {score!r} is not a whole number (relevance grades are integers)")
        rel = int(value)
        judged = qrels.setdefault(qid, {})
        if judged.get(did, rel) != rel:
            raise DatasetError(f"{path}:{n}: query {qid!r}, document {did!r} judged {judged[did]} earlier "
                               f"and {rel} here")
        judged[did] = rel
    return qrels


# -- datasets -----------------------------------------------------------------------------


def dataset_name(folder: Path) -> str:
    """The folder's name, prefixed with its parent's (``xquad_r/de``, ``tatoeba/jpn-eng``) when
    the parent groups several datasets (sibling folders that are datasets too)."""
    siblings = [p for p in folder.parent.iterdir() if p != folder and p.is_dir()] if folder.parent != folder else []
    if folder.parent.name and any(_is_dataset(p) for p in siblings):
        return f"{folder.parent.name}/{folder.name}"
    return folder.name


def load_beir(folder: str | Path, split: str = "test", name: str | None = None,
              queries_from: str | Path | None = None) -> Dataset:
    """Read a BEIR folder. Queries without a judgment in ``split`` are dropped; judged
    queries/documents missing from the files are an error (a broken dataset, not a choice).

    ``queries_from``: take ``queries.jsonl`` from another folder with the same query ids —
    cross-lingual pairs of parallel sets, e.g. ``load_beir("xquad_r/en", queries_from="xquad_r/de")``
    (German questions, English paragraphs; named ``xquad_r/de→en``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"dataset folder {folder} does not exist")
    corpus_path = _require(folder, "corpus.jsonl", "corpus")
    if queries_from is not None:
        queries_from = Path(queries_from)
        if not queries_from.is_dir():
            raise DatasetError(f"queries folder {queries_from} does not exist")
        queries_path = _require(queries_from, "queries.jsonl", "queries")
        if name is None:
            name = f"{dataset_name(queries_from.resolve())}\u2192{folder.resolve().name}"
    else:
        queries_path = _require(folder, "queries.jsonl", "queries")
    qrels_path = find_file(folder / "qrels", f"{split}.tsv")
    if qrels_path is None:
        have = sorted(p.name for p in (folder / "qrels").glob("*.tsv*")) if (folder / "qrels").is_dir() else []
        raise DatasetError(f"{folder}: no qrels for split {split!r} (qrels/{split}.tsv or qrels/{split}.tsv.gz)"
                           + (f"; found {', '.join(have)}" if have else ""))
    corpus = read_corpus(corpus_path)
    all_queries = read_queries(queries_path)
    qrels = read_qrels(qrels_path)
    missing_q = [q for q in qrels if q not in all_queries]
    if missing_q:
        raise DatasetError(f"{qrels_path}: {len(missing_q)} judged query id(s) not in {queries_path.name}, "
                           f"e.g. {missing_q[:3]}")
    if not corpus:
        raise DatasetError(f"{corpus_path}: the corpus holds no documents")
    missing_d = sorted({d for rels in qrels.values() for d in rels if d not in corpus})
    if missing_d:
        raise DatasetError(f"{qrels_path}: {len(missing_d)} judged document id(s) not in {corpus_path.name}, "
                           f"e.g. {missing_d[:3]}")
    queries = {q: t for q, t in all_queries.items() if q in qrels}
    blank = [q for q, t in queries.items() if not t]
    if blank:
        raise DatasetError(f"{queries_path}: {len(blank)} judged quer(y/ies) with no text, e.g. {blank[:3]}")
    return Dataset(name=name or dataset_name(folder.resolve()), corpus=corpus, queries=queries, qrels=qrels,
                   split=split, path=folder)


def _is_dataset(folder: Path, split: str | None = None) -> bool:
    if find_file(folder, "corpus.jsonl") is None or find_file(folder, "queries.jsonl") is None:
        return False
    qrels = folder / "qrels"
    if split is not None:
        return find_file(qrels, f"{split}.tsv") is not None
    return qrels.is_dir() and (any(qrels.glob("*.tsv")) or any(qrels.glob("*.tsv.gz")))


def discover(root: str | Path, split: str | None = None) -> list[Path]:
    """Dataset folders (corpus + queries + qrels) at or below ``root``, sorted by path.
    With ``split``, only those that have qrels for that split."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist")
    found = []
    for corpus in root.rglob("corpus.jsonl*"):
        if corpus.name not in ("corpus.jsonl", "corpus.jsonl.gz"):
            continue
        folder = corpus.parent
        if _is_dataset(folder, split) and folder not in found:
            found.append(folder)
    return sorted(found)


# -- subsampling ---------------------------------------------------------------------------


def subsample(dataset: Dataset, max_queries: int | None = None, max_docs: int | None = None,
              seed: int = 0) -> Dataset:
    """A smaller, deterministic copy: ``max_queries`` random queries; every document judged
    relevant for a kept query, then random other documents up to ``max_docs`` (the relevant
    ones are always kept, even if they alone exceed it). Distractor documents judged for
    dropped queries are as likely as any other to be kept."""
    rng = random.Random(seed)
    qids = sorted(dataset.queries)
    if max_queries is not None and max_queries < len(qids):
        qids = sorted(rng.sample(qids, max_queries))
    keep_q = set(qids)
    qrels = {q: dict(dataset.qrels[q]) for q in qids}
    doc_ids = list(dataset.corpus)
    if max_docs is not None and max_docs < len(doc_ids):
        needed = {d for q in qids for d, rel in dataset.qrels[q].items() if d in dataset.corpus}
        others = sorted(d for d in doc_ids if d not in needed)
        extra = rng.sample(others, max(0, min(len(others), max_docs - len(needed))))
        keep_d = needed | set(extra)
        doc_ids = [d for d in doc_ids if d in keep_d]  # corpus order preserved
    corpus = {d: dataset.corpus[d] for d in doc_ids}
    return Dataset(
        name=dataset.name, corpus=corpus,
        queries={q: t for q, t in dataset.queries.items() if q in keep_q},
        qrels=qrels, split=dataset.split, path=dataset.path,
        extra={**dataset.extra, "subsample": {"max_queries": max_queries, "max_docs": max_docs, "seed": seed}},
    )
