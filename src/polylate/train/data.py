"""Training data readers: BEIR-style folders (corpus / queries / qrels) and mined-negative pairs.

Layout (``shared/data/train/<name>/`` and ``shared/data/scifact/``): ``corpus.jsonl``
``{"_id","title","text"}``, ``queries.jsonl`` ``{"_id","text"}``, ``qrels/<split>.tsv``
(header, then ``query-id  corpus-id  score``) and optionally ``pairs.jsonl``
``{"query_id","query","pos_id","hard_negative_ids"}``. Every file may be gzipped
(``name.gz``); readers accept either.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from polylate.eval import beir


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str


@dataclass(frozen=True)
class Triplet:
    query: str
    positive: str
    negatives: list[str]
    teacher_scores: list[float] | None = None  # for [positive, *negatives], if a teacher gave them


def _find(path: Path) -> Path:
    """``path`` or ``path.gz``, whichever exists."""
    path = Path(path)
    found = path if path.suffix == ".gz" and path.is_file() else beir.find_file(path.parent, path.name)
    if found is None:
        raise FileNotFoundError(f"neither {path} nor {path.name}.gz exists in {path.parent}")
    return found


def _exists(path: Path) -> bool:
    return beir.find_file(path.parent, path.name) is not None


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Rows of a ``.jsonl(.gz)`` file; bad JSON is a ValueError naming ``file:line``."""
    yield from beir.read_jsonl(_find(Path(path)), require_id=False)


def read_corpus(folder: str | Path) -> dict[str, str]:
    return beir.read_corpus(_find(Path(folder) / "corpus.jsonl"))


def read_queries(folder: str | Path) -> dict[str, str]:
    return beir.read_queries(_find(Path(folder) / "queries.jsonl"))


def read_qrels(folder: str | Path, split: str = "train") -> dict[str, dict[str, int]]:
    return beir.read_qrels(_find(Path(folder) / "qrels" / f"{split}.tsv"))


def read_beir(folder: str | Path, split: str = "train"):
    """→ (corpus {id: text}, queries {id: text}, qrels {qid: {did: score}})."""
    return read_corpus(folder), read_queries(folder), read_qrels(folder, split)


def load_pairs(folder: str | Path, split: str = "train", limit: int | None = None,
               seed: int = 0) -> list[Pair]:
    """One :class:`Pair` per relevant (query, document) qrel (score > 0).

    ``limit`` keeps a seeded random subset of that many pairs.
    """
    corpus, queries, qrels = read_beir(folder, split)
    pairs = [Pair(queries[q], corpus[d]) for q, d in _judged_pairs(folder, split, corpus, queries, qrels)]
    return _subsample(pairs, limit, seed)


def _judged_pairs(folder, split, corpus, queries, qrels) -> list[tuple[str, str]]:
    """(query id, document id) of each relevant judgment whose texts exist; warns about the rest
    (qrels of another corpus would otherwise train on nothing without a word)."""
    rows = [(q, d) for q in sorted(qrels) for d, s in sorted(qrels[q].items()) if s > 0]
    kept = [(q, d) for q, d in rows if _text(queries.get(q)) and _text(corpus.get(d))]
    if len(kept) < len(rows):
        no_q = sum(not _text(queries.get(q)) for q, _ in rows)
        no_d = sum(not _text(corpus.get(d)) for _, d in rows)
        warnings.warn(f"{Path(folder) / 'qrels' / split}.tsv: skipped {len(rows) - len(kept)} of {len(rows)} relevant "
                      f"judgment(s): {no_q} with a query id not in the queries (or an empty query), {no_d} with a "
                      "document id not in the corpus (or an empty document)", stacklevel=3)
    return kept


def _text(value: str | None) -> bool:
    """A text worth training on: present and not blank (a blank one has only its markers)."""
    return bool(value and value.strip())


def load_triplets(folder: str | Path, split: str = "train", max_negatives: int = 1,
                  limit: int | None = None, seed: int = 0,
                  require_negatives: bool = False) -> list[Triplet]:
    """Triplets from ``pairs.jsonl(.gz)`` (mined hard negatives), else from the qrels.

    Up to ``max_negatives`` negatives per triplet, chosen with ``seed``; a pair file row may
    carry ``teacher_scores`` (for ``[pos, *all negatives]``), kept aligned with the choice.
    """
    folder = Path(folder)
    rng = random.Random(seed)
    corpus = read_corpus(folder)
    out: list[Triplet] = []
    if max_negatives < 0:
        raise ValueError(f"max_negatives must be >= 0, got {max_negatives}")
    dangling = empty = blank_pos = blank_negs = missing_negs = own_positive = repeated = 0
    seen = set()
    if _exists(folder / "pairs.jsonl"):
        for line, row in enumerate(read_jsonl(folder / "pairs.jsonl"), 1):
            where = f"{folder / 'pairs.jsonl'} row {line}"
            if not isinstance(row, dict) or "pos_id" not in row or not isinstance(row.get("query"), str):
                raise ValueError(f"{where}: needs a 'query' string and a 'pos_id'")
            pos = corpus.get(str(row["pos_id"]))
            if pos is None:
                dangling += 1
                continue
            if not row["query"].strip():
                empty += 1
                continue
            if not _text(pos):
                blank_pos += 1
                continue
            raw_negs = row.get("hard_negative_ids", [])
            if not isinstance(raw_negs, list) or not all(isinstance(n, (str, int)) and not isinstance(n, bool)
                                                         for n in raw_negs):
                raise ValueError(f"{where}: hard_negative_ids must be a list of ids")
            neg_ids = [str(n) for n in raw_negs]
            teacher = row.get("teacher_scores")
            _check_teacher(where, teacher, len(neg_ids))
            key = (row["query"], str(row["pos_id"]), tuple(neg_ids), None if teacher is None else tuple(map(repr, teacher)))
            repeated += key in seen  # kept (it weighs its pair more, as the file asks), but said
            seen.add(key)
            # drop negatives missing from the corpus, blank, or the positive itself, with their teacher scores
            kept = [i for i, n in enumerate(neg_ids) if _text(corpus.get(n)) and n != str(row["pos_id"])]
            missing_negs += sum(n not in corpus for n in neg_ids)
            blank_negs += sum(n in corpus and not _text(corpus[n]) for n in neg_ids)
            own_positive += sum(n == str(row["pos_id"]) for n in neg_ids)
            if require_negatives and not kept:
                continue
            idx, teacher = _choose(kept, teacher, rng, max_negatives)
            out.append(Triplet(row["query"], pos, [corpus[neg_ids[i]] for i in idx], teacher))
        problems = [f"skipped {dangling} row(s) whose pos_id is not in the corpus" if dangling else "",
                    f"skipped {empty} row(s) with an empty query" if empty else "",
                    f"skipped {blank_pos} row(s) whose positive document is empty" if blank_pos else "",
                    f"{repeated} row(s) repeat an earlier one (kept)" if repeated else "",
                    f"dropped {missing_negs} hard negative id(s) not in the corpus" if missing_negs else "",
                    f"dropped {blank_negs} empty hard negative document(s)" if blank_negs else "",
                    f"dropped {own_positive} hard negative(s) equal to the row's pos_id" if own_positive else ""]
        if any(problems):
            warnings.warn(f"{folder / 'pairs.jsonl'}: " + "; ".join(p for p in problems if p), stacklevel=2)
    else:
        queries, qrels = read_queries(folder), read_qrels(folder, split)
        if require_negatives:
            return []
        out = [Triplet(queries[q], corpus[d], []) for q, d in _judged_pairs(folder, split, corpus, queries, qrels)]
    return _subsample(out, limit, seed)


#: column names of a triplets file, as sentence-transformers' datasets name them too
_QUERY_KEYS, _POSITIVE_KEYS = ("query", "anchor"), ("positive", "pos")


def load_triplets_file(path: str | Path, max_negatives: int = 1, limit: int | None = None,
                       seed: int = 0) -> list[Triplet]:
    """Triplets from one ``.jsonl(.gz)`` file of texts (no corpus to look ids up in): rows
    ``{"query", "positive", "negatives": [...], "teacher_scores": [...]}`` — ``anchor`` for
    ``query``, ``negative`` (one text) for ``negatives`` as sentence-transformers' datasets
    name them; ``teacher_scores`` (optional) scores the positive, then each negative.

    Up to ``max_negatives`` negatives per triplet, chosen with ``seed``; blank texts are
    skipped, and they and repeated rows (kept) are counted in one warning."""
    path = Path(path)
    if max_negatives < 0:
        raise ValueError(f"max_negatives must be >= 0, got {max_negatives}")
    rng = random.Random(seed)
    out: list[Triplet] = []
    blank = blank_negs = repeated = 0
    seen = set()
    for line, row in beir._numbered_rows(path, require_id=False):
        where = f"{path}:{line}"
        query = next((row[k] for k in _QUERY_KEYS if isinstance(row, dict) and k in row), None)
        positive = next((row[k] for k in _POSITIVE_KEYS if isinstance(row, dict) and k in row), None)
        if not isinstance(query, str) or not isinstance(positive, str):
            raise ValueError(f"{where}: needs a 'query' (or 'anchor') string and a 'positive' string")
        negatives = row.get("negatives", [row["negative"]] if "negative" in row else [])
        if not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives):
            raise ValueError(f"{where}: 'negatives' must be a list of texts ('negative': one text)")
        teacher = row.get("teacher_scores")
        _check_teacher(where, teacher, len(negatives))
        if not (_text(query) and _text(positive)):
            blank += 1
            continue
        key = (query, positive, tuple(negatives), None if teacher is None else tuple(map(repr, teacher)))
        repeated += key in seen  # kept, as in pairs.jsonl
        seen.add(key)
        kept = [i for i, n in enumerate(negatives) if _text(n)]
        blank_negs += len(negatives) - len(kept)
        chosen, teacher = _choose(kept, teacher, rng, max_negatives)
        out.append(Triplet(query, positive, [negatives[i] for i in chosen], teacher))
    problems = [f"skipped {blank} row(s) with an empty query or positive" if blank else "",
                f"{repeated} row(s) repeat an earlier one (kept)" if repeated else "",
                f"dropped {blank_negs} empty negative(s)" if blank_negs else ""]
    if any(problems):
        warnings.warn(f"{path}: " + "; ".join(p for p in problems if p), stacklevel=2)
    if not out:
        raise ValueError(f"{path} holds no training rows")
    return _subsample(out, limit, seed)


def _check_teacher(where: str, teacher, n_negatives: int) -> None:
    if teacher is None:
        return
    if not isinstance(teacher, list) or len(teacher) != 1 + n_negatives:
        raise ValueError(f"{where}: teacher_scores must be a list of 1 + {n_negatives} numbers "
                         "(the positive, then each hard negative)")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in teacher):
        raise ValueError(f"{where}: teacher_scores must be finite numbers")


def _choose(kept: list[int], teacher, rng: random.Random, max_negatives: int):
    """Up to ``max_negatives`` of the usable negatives (their indices), with the teacher's scores
    of the positive and of those chosen, kept aligned."""
    idx = sorted(rng.sample(kept, min(max_negatives, len(kept))))
    if teacher is not None:
        teacher = [float(teacher[0])] + [float(teacher[1 + i]) for i in idx]
    return idx, teacher


def as_triplet(item: Pair | Triplet) -> Triplet:
    return item if isinstance(item, Triplet) else Triplet(item.query, item.positive, [])


def _subsample(items: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(items):
        return items
    rng = random.Random(seed)
    keep = sorted(rng.sample(range(len(items)), limit))
    return [items[i] for i in keep]


def batches(items: Sequence, batch_size: int, seed: int = 0, drop_last: bool = False,
            shuffle: bool = True) -> Iterator[list]:
    """Seeded shuffled batches of ``items`` (one pass)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = list(range(len(items)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        if drop_last and len(chunk) < batch_size:
            return
        yield [items[i] for i in chunk]
