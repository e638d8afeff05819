"""PLAID-style compressed late-interaction index: build, add, delete, search.

Search: query tokens probe their nearest centroids' inverted lists → approximate scores from
the postings alone (pruned: cells no query token likes count 0) keep ``ndocs`` → centroid
interaction over every token of those keeps ``ndocs/4`` → those are scored with MaxSim on
their decompressed vectors, or, when the index keeps the original float16 vectors, on those
(read in place; as fast as decompressing), so the final scores and order are exact MaxSim.
Each cut is taken over all segments together, so segmentation does not change answers.

Documents carry the caller's string ids. Adding writes new immutable segments; deleting
writes new tombstones; both become visible in one atomic manifest commit (storage.py).
"""

from __future__ import annotations

import math
import os
import re
import time
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from polylate.arguments import is_positive_int
from polylate.index.codec import ResidualCodec, check_codec_settings
from polylate.index.storage import (
    FORMAT,
    MANIFEST,
    SERVER_META,
    FORMAT_VERSION,
    Blocks,
    IndexStoreError,
    SegmentArrays,
    WriterLock,
    commit_manifest,
    new_name,
    read_manifest,
    read_segment,
    save_array,
    sweep,
    write_segment,
)
from polylate.index import kernels
from polylate.model import identity


_NO_FILTER = np.zeros(0, dtype=bool)


class Hit(NamedTuple):
    id: str
    score: float


@dataclass(frozen=True)
class SearchSettings:
    ncells: int  # centroids probed per query token
    centroid_score_threshold: float  # pruning threshold of stage 2
    ndocs: int  # documents kept after stage 2 (ndocs/4 after stage 3)

    def __post_init__(self):
        for name in ("ncells", "ndocs"):
            value = getattr(self, name)
            if not is_positive_int(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        t = self.centroid_score_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float, np.floating, np.integer)) or not math.isfinite(t):
            raise ValueError(f"centroid_score_threshold must be a finite number, got {t!r}")

    @classmethod
    def for_k(cls, k: int, thorough: bool = False) -> SearchSettings:
        """Defaults by k, tuned on 120k multilingual sentences (benchmarks/index_vs_colbert.py).

        Fast (default): stage 2 is cheap here (inverted lists only), so it keeps more than
        PLAID's 256. Thorough: probes 12 cells per query token without pruning and scores
        ~6k candidates at stage 4; on an index that keeps its original vectors that is
        recall@10 0.99 against exact MaxSim at ~10x the fast latency (without them the 2-bit
        residuals reorder near-ties and cap it near 0.8)."""
        if not is_positive_int(k):
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if thorough:
            return cls(12, 0.0, 24576) if k <= 10 else cls(16, 0.0, max(32768, 256 * k))
        if k <= 10:
            return cls(2, 0.4, 1024)
        if k <= 100:
            return cls(4, 0.4, 2048)
        return cls(8, 0.35, max(8 * k, 4096))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate arange(s, s + n) for each (s, n) without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return shift + np.arange(total, dtype=np.int64)


def _id_list(ids, name: str) -> list:
    """A collection of ids as a list; one string would be read as its characters ("12" → "1", "2")."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name} must be a collection of ids, not one string (wrap it: [{ids!r}])")
    return list(ids)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def id_problem(doc_id, stored: bool = False) -> str | None:
    """Why ``doc_id`` cannot be a document id, or None. Control characters are refused in new
    ids: an id with a newline or tab cannot be written to an ids file (one per line) or a TREC
    run. ``stored``: an id already in the index (a retrain rewrites it), which older versions
    let in and which must not make its index unrebuildable."""
    if not isinstance(doc_id, str) or not doc_id:
        return "must be a non-empty string"
    if not _utf8(doc_id):
        return "is not valid Unicode text (a lone surrogate?)"
    if not stored and any(unicodedata.category(c) == "Cc" for c in doc_id):
        return "holds a control character (newline, tab, ...)"
    return None


def _validate_docs(ids: Sequence[str], vectors: Sequence[np.ndarray], dim: int, stored: bool = False) -> None:
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids but {len(vectors)} documents")
    for i, doc_id in enumerate(ids):
        problem = id_problem(doc_id, stored)
        if problem:
            raise ValueError(f"document #{i}: id {problem}, got {doc_id!r}")
    if len(set(ids)) != len(ids):
        seen, dup = set(), []
        for i in ids:
            (dup.append(i) if i in seen else seen.add(i))
        raise ValueError(f"duplicate ids in one call: {dup[:5]}")
    for doc_id, v in zip(ids, vectors):
        if v.dtype.kind not in "fiu":
            raise ValueError(f"document {doc_id!r}: vectors must be numbers, got an array of {v.dtype}")
        if v.ndim != 2 or v.shape[1] != dim:
            raise ValueError(f"document {doc_id!r}: expected vectors of shape [n, {dim}], got {list(v.shape)}")
        if v.shape[0] == 0:
            raise ValueError(f"document {doc_id!r} has no token vectors")
        if not np.isfinite(v).all():
            raise ValueError(f"document {doc_id!r} has NaN or infinite values")


def _checked_docs(ids, vectors, dim: int, stored: bool = False) -> tuple[list[str], list[np.ndarray]]:
    """A write's documents as an id list and arrays, checked (``_validate_docs``): what every
    store's add runs before it touches anything."""
    ids, vectors = _id_list(ids, "ids"), [np.asarray(v) for v in vectors]
    _validate_docs(ids, vectors, dim, stored)
    return ids, vectors


def _warn_unnormalised(ids: Sequence[str], vectors: Sequence[np.ndarray]) -> None:
    """PLAID's centroids, residuals and decompression assume unit-norm token vectors (what the
    models output): a longer vector scores as if it were that many matches, and sinks or
    floats a document above better ones. Stored as given, but said out loud."""
    off = [i for i, v in zip(ids, vectors)
           if not np.allclose(np.linalg.norm(v.astype(np.float32, copy=False), axis=1), 1.0, atol=2e-2)]
    if off:
        warnings.warn(f"{len(off)} document(s) have token vectors that are not unit length (e.g. {off[:3]}); "
                      "PLAID indexes L2-normalised vectors, as ColBERT models output them", stacklevel=3)


def validate_query(query, dim: int, k: int, filter_ids=None) -> np.ndarray:
    """A search's arguments checked, the query as a contiguous float32 ``[tokens, dim]`` array."""
    if isinstance(query, torch.Tensor):
        query = query.detach().float().cpu().numpy()
    q = np.ascontiguousarray(query, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != dim or q.shape[0] == 0:
        raise ValueError(f"query must have shape [tokens, {dim}] with tokens >= 1, got {list(q.shape)}")
    if not np.isfinite(q).all():
        raise ValueError("query has NaN or infinite values")
    if isinstance(filter_ids, (str, bytes)):
        raise TypeError("filter_ids must be a collection of ids, not one string")
    if not is_positive_int(k):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return q


#: segments up to this many tokens have their centroid codes range-checked at open (a few ms),
#: so damage is named before any search; larger ones when compaction reads them (every open of
#: a huge index would read them all). Search itself refuses an out-of-range code it meets.
_CODES_CHECKED_AT_OPEN = 1 << 24


def _check_consistent(root: Path, manifest: dict, codec: ResidualCodec, segments) -> None:
    """The codec against the manifest and the segments (each segment checks itself)."""
    problem = None
    if codec.dim != manifest["dim"] or codec.cutoffs.shape[0] != codec.dim or codec.weights.shape[0] != codec.dim:
        problem = f"the codec is {codec.dim}-d, the manifest says {manifest['dim']}"
    for seg in segments:
        if len(seg.ivf_offsets) != codec.num_centroids + 1:
            problem = f"segment {seg.name} has inverted lists for {len(seg.ivf_offsets) - 1} centroids, " \
                      f"the codec {codec.num_centroids}"
        elif seg.residuals.shape[1] != codec.bytes_per_token:
            problem = f"segment {seg.name} stores {seg.residuals.shape[1]} residual bytes per token, " \
                      f"the codec {codec.bytes_per_token}"
        elif manifest.get("keep_vectors") and seg.vectors is None:
            problem = f"segment {seg.name} has lost its vectors.npy (the index keeps vectors)"
        elif len(seg.codes) <= _CODES_CHECKED_AT_OPEN and len(seg.codes) and \
                int(seg.codes.max()) >= codec.num_centroids:
            problem = f"segment {seg.name} has centroid codes past the codec's {codec.num_centroids}"
    if problem:
        raise IndexStoreError(f"index {root} is damaged: {problem}")


def _state(manifest: dict) -> tuple:
    """What tells two commits apart: the codec too, since a rebuild in place is a new index
    whatever its generation."""
    return manifest["generation"], manifest["codec"]


def _writable(manifest: dict) -> dict:
    """A copy of a committed manifest that a writer may edit without touching the original."""
    return {**manifest, "segments": [dict(s) for s in manifest["segments"]]}


def _live_texts(segments, lives) -> Iterator[str | None]:
    """The texts of the live documents ``lives`` of each segment, in order, one at a time."""
    for seg, live in zip(segments, lives):
        texts = seg.texts()
        for i in live:
            yield texts[i] if texts is not None else None


def _check_texts(texts, ids):
    if texts is None:
        return None
    texts = list(texts)
    if len(texts) != len(ids):
        raise ValueError(f"{len(texts)} texts for {len(ids)} documents")
    bad = next((i for i, t in enumerate(texts) if t is not None and not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(f"document {ids[bad]!r}: text must be a string, got {type(texts[bad]).__name__}")
    bad = next((i for i, t in enumerate(texts) if t is not None and not _utf8(t)), None)
    if bad is not None:
        raise ValueError(f"document {ids[bad]!r}: text is not valid Unicode (a lone surrogate?)")
    return texts


#: token vectors the codec's k-means trains on by default (whole documents, drawn at random);
#: the centroid count follows from it (ColBERTv2's rule). benchmarks/centroid_count.py: a
#: collection four times larger than the sample loses recall against one sampled whole
DEFAULT_SAMPLE_TOKENS = 1 << 18

#: manifests without ``sample_tokens`` recorded the codec's sample (at most about this many
#: tokens) as ``trained_tokens``, not the collection it was drawn from
_OLD_SAMPLE_CAP = 1 << 18

_OURS = re.compile(r"(codec|seg)-[0-9a-f]{12}")


#: written by a first build before anything else and removed once it has committed: a folder
#: holding it and no manifest is what a killed first build left, and nothing else is
BUILDING = "BUILDING"


def interrupted_build(root: Path) -> bool:
    """Whether ``root`` holds no index but only what first builds of ours wrote before they
    were killed (their marker, codec and segment folders named as ``new_name`` names them,
    the lock, the settings of an index the server created empty, temporary files). A folder
    without the marker may be a committed index that lost its manifest: not ours to replace."""
    if (root / MANIFEST).exists() or not (root / BUILDING).is_file():
        return False
    for p in root.iterdir():
        if p.name in ("LOCK", SERVER_META, BUILDING) or (p.name.startswith(".") and p.name.endswith(".tmp")):
            continue
        if p.name == "segments" and p.is_dir():
            if not all(_OURS.fullmatch(s.name) and s.name.startswith("seg-") for s in p.iterdir()):
                return False
        elif not (_OURS.fullmatch(p.name) and p.name.startswith("codec-") and p.is_dir()):
            return False
    return True


def _disk_bytes(root: Path) -> int:
    """Bytes of the files under ``root``; what another writer sweeps away meanwhile (files,
    whole segment folders) is skipped, not an error."""
    total = 0
    for folder, _, files in os.walk(root, onerror=lambda exc: None):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


def build_parts(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Document numbers ``0..n-1`` as a build in parts takes them (``PlaidIndex.build``'s
    ``more``): a random first part of ``size`` (the codec's sample, a fair one of the whole; all
    of a collection that fits), then the rest in order, ``size`` at a time."""
    first = np.arange(n) if n <= size else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    rest = np.setdiff1d(np.arange(n), first)
    return first, [rest[i : i + size] for i in range(0, len(rest), size)]


def _top_per_segment(scored: list[tuple[int, np.ndarray, np.ndarray]], keep: int, bases: np.ndarray):
    """``(segment number, documents in ascending order)`` of the ``keep`` best-scored over all
    the ``(segment number, documents, scores)`` given: one cut for the whole index, ties going
    to the earlier document (``bases``: each segment's first document in index order)."""
    if not scored:
        return []
    key = np.concatenate([bases[si] + docs for si, docs, _ in scored])
    chosen = kernels.top_indices(np.concatenate([scores for _, _, scores in scored]), keep, key)
    bounds = np.cumsum([0] + [len(docs) for _, docs, _ in scored])
    out = []
    for (si, docs, _), lo, hi in zip(scored, bounds[:-1], bounds[1:]):
        mine = chosen[(chosen >= lo) & (chosen < hi)] - lo
        if len(mine):
            out.append((si, np.sort(docs[mine])))
    return out


def build_ivf(codes: np.ndarray, doclens: np.ndarray, num_centroids: int):
    """Inverted lists: for each centroid, the local doc numbers having a token there (each
    once, ascending). In place where numpy allows: a merge of a large index holds this."""
    n = len(doclens)
    pairs = np.repeat(np.arange(n, dtype=np.int64), doclens)  # each token's document ...
    key = codes.astype(np.int64)
    key *= n
    pairs += key  # ... and its centroid, as one sortable key
    del key
    pairs.sort()
    if len(pairs):
        keep = np.empty(len(pairs), dtype=bool)
        keep[0] = True
        np.not_equal(pairs[1:], pairs[:-1], out=keep[1:])
        pairs = pairs[keep]
    docs = (pairs % n).astype(np.int32)
    counts = np.bincount(pairs // n, minlength=num_centroids)
    offsets = np.zeros(num_centroids + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return docs, offsets


def _centroid_ranges(offsets: np.ndarray, block: int) -> Iterator[tuple[int, int]]:
    """Consecutive centroid ranges ``[c0, c1)`` each holding about ``block`` postings (one
    centroid at least) of the inverted lists with those ``offsets``."""
    c0, num_centroids = 0, len(offsets) - 1
    while c0 < num_centroids:
        c1 = min(num_centroids, max(c0 + 1, int(np.searchsorted(offsets, offsets[c0] + block, side="right")) - 1))
        yield c0, c1
        c0 = c1


def _posting_docs(seg, c0: int, c1: int) -> np.ndarray:
    """The documents of centroids ``[c0, c1)``'s postings in ``seg``, bound-checked."""
    docs = np.asarray(seg.ivf_docs[seg.ivf_offsets[c0]:seg.ivf_offsets[c1]])
    if len(docs) and (int(docs.min()) < 0 or int(docs.max()) >= seg.num_docs):
        raise IndexStoreError(f"index segment {seg.folder} is damaged: ivf_docs.npy names documents past its "
                              f"{seg.num_docs}")
    return docs


def merge_ivf(segments, num_centroids: int, block: int) -> tuple[Blocks, np.ndarray]:
    """The inverted lists of ``segments`` merged (their live documents renumbered in order), as
    ``build_ivf`` would build them from the merged codes, but from the segments' own lists: a
    centroid's documents are each segment's, in segment order, so already unique and ascending.
    Written ``block`` live postings at a time (each segment's deleted postings among them are
    read too, and dropped): a merge never holds the codes or a sort."""
    for seg in segments:
        if len(seg.ivf_offsets) != num_centroids + 1:
            raise IndexStoreError(f"index segment {seg.folder} is damaged: its inverted lists are for "
                                  f"{len(seg.ivf_offsets) - 1} centroids, the codec has {num_centroids}")
    counts = np.zeros(num_centroids, dtype=np.int64)  # live postings per centroid
    for seg in segments:
        for c0, c1 in _centroid_ranges(seg.ivf_offsets, block):
            alive = np.zeros(int(seg.ivf_offsets[c1] - seg.ivf_offsets[c0]) + 1, dtype=np.int64)
            np.cumsum(~seg.deleted[_posting_docs(seg, c0, c1)], out=alive[1:])
            bounds = seg.ivf_offsets[c0:c1 + 1] - seg.ivf_offsets[c0]
            counts[c0:c1] += alive[bounds[1:]] - alive[bounds[:-1]]
    offsets = np.zeros(num_centroids + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    # a live document's number in the merged segment (deleted ones: never looked up)
    numbers, base = [], 0
    for seg in segments:
        numbers.append(base + np.cumsum(~seg.deleted, dtype=np.int64) - 1)
        base += seg.num_live

    def blocks():
        for c0, c1 in _centroid_ranges(offsets, block):
            centroids, docs = [], []
            for seg, number in zip(segments, numbers):
                d = _posting_docs(seg, c0, c1)
                keep = ~seg.deleted[d]
                centroids.append(np.repeat(np.arange(c0, c1), np.diff(seg.ivf_offsets[c0:c1 + 1]))[keep])
                docs.append(number[d[keep]])
            order = np.argsort(np.concatenate(centroids), kind="stable")  # by centroid, segments in order
            yield np.concatenate(docs)[order]

    return Blocks((int(offsets[-1]),), np.dtype(np.int32), blocks()), offsets


class PlaidIndex:
    """Open with ``PlaidIndex.open(path)``; create with ``PlaidIndex.build(...)``."""

    def __init__(self, root: Path, manifest: dict):
        self.root = Path(root)
        self._load(manifest)

    # -- opening -------------------------------------------------------------------------

    def _load(self, manifest: dict) -> None:
        for attempt in range(3):  # a writer may sweep files between our manifest read and open
            try:
                codec = ResidualCodec.load(self.root / manifest["codec"], manifest["nbits"])
                segments = [read_segment(self.root, s) for s in manifest["segments"]]
                _check_consistent(self.root, manifest, codec, segments)
                break
            except FileNotFoundError as exc:
                if attempt == 2:
                    raise IndexStoreError(f"index {self.root} is damaged: {exc.filename or exc} is missing") from exc
                manifest = read_manifest(self.root)
            except IndexStoreError:
                # what looks damaged may be a segment swept while it was read: damage only if
                # the manifest still names it
                fresh = read_manifest(self.root)
                if attempt == 2 or _state(fresh) == _state(manifest):
                    raise
                manifest = fresh
            except (KeyError, ValueError, TypeError, IndexError, EOFError, OSError) as exc:
                raise IndexStoreError(f"index {self.root} is damaged: {type(exc).__name__}: {exc}") from exc
        locator = {doc_id: (si, li) for si, seg in enumerate(segments)
                   for li, doc_id in enumerate(seg.ids) if not seg.deleted[li]}
        self.manifest, self.codec, self.segments, self._locator = manifest, codec, segments, locator
        # what a search reads, swapped in one assignment: a search in another thread while
        # this object reloads (after a write) sees the old state or the new, never a mix
        self._view = (codec, segments, locator)

    @classmethod
    def open(cls, root: str | Path) -> PlaidIndex:
        return cls(Path(root), read_manifest(Path(root)))

    def refresh(self) -> None:
        """Pick up commits made by another process since this one opened."""
        manifest = read_manifest(self.root)
        if self._changed(manifest):
            self._load(manifest)

    def _changed(self, manifest: dict) -> bool:
        return _state(manifest) != _state(self.manifest)

    # -- facts -----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.manifest["dim"]

    def __len__(self) -> int:
        return len(self._locator)

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._locator

    @property
    def ids(self) -> list[str]:
        return list(self._locator)

    #: fresh reads of the texts after other writers swept the segments being read
    READ_RETRIES = 5

    #: an outgrown codec this small is retrained after an add by the CLI and the server (cheap);
    #: a larger one on request (``polylate index compact --retrain``)
    AUTO_RETRAIN_BELOW_TOKENS = 1 << 16

    def live_tokens(self) -> int:
        return sum(int(np.diff(s.offsets)[~s.deleted].sum()) for s in self.segments)

    def outgrown(self, factor: float = 2.0) -> bool:
        """The codec was fit to a collection of fewer than 1/``factor`` of the tokens the index
        now holds (an index built small and grown by adds): its centroids no longer fit, and
        recall drops until it is retrained. Unknown (False) for indexes from before the count
        was kept."""
        trained = self.manifest.get("trained_tokens")
        if "sample_tokens" not in self.manifest and (trained or 0) >= _OLD_SAMPLE_CAP:
            return False  # written before the count meant the collection: it is the capped sample's
        return bool(trained) and self.live_tokens() > factor * trained

    def stats(self) -> dict:
        stored = sum(int(s.offsets[-1]) for s in self.segments)  # deleted documents' too, until compaction
        tokens = self.live_tokens()
        disk = _disk_bytes(self.root)
        return {
            "documents": len(self),
            "deleted_pending_compaction": sum(int(s.deleted.sum()) for s in self.segments),
            "tokens": tokens,
            "tokens_stored": stored,
            "segments": len(self.segments),
            "dim": self.dim,
            "nbits": self.codec.nbits,
            "centroids": self.codec.num_centroids,
            "keeps_vectors": bool(self.manifest.get("keep_vectors")),
            "bytes_on_disk": disk,
            "bytes_per_token": disk / stored if stored else None,  # none stored: no per-token size
            "generation": self.manifest["generation"],
            "trained_tokens": self.manifest.get("trained_tokens"),
            "model": identity.shown(self.manifest.get("model")),
        }

    # -- building ------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        root: str | Path,
        ids: Sequence[str],
        vectors: Sequence[np.ndarray],
        nbits: int = 2,
        num_centroids: int | None = None,
        keep_vectors: bool = False,
        texts: Sequence[str] | None = None,
        model: dict | None = None,
        overwrite: bool = False,
        replaces: tuple[int, str] | None = None,
        over_interrupted: bool = False,
        kmeans_niter: int = 10,
        sample_tokens: int = DEFAULT_SAMPLE_TOKENS,
        seed: int = 1234,
        more: Iterable[tuple[Sequence[str], Sequence[np.ndarray], Sequence[str] | None]] | None = None,
    ) -> PlaidIndex:
        """Train the codec on a sample of the vectors and write the first segment.

        ``more``: further ``(ids, vectors, texts)`` parts of the collection (say, encoded one
        part at a time by a generator), each written as a segment before the one commit, so a
        collection larger than memory is built atomically; the codec is trained on the first
        part only, which should then be a random sample of the whole.

        ``replaces=(generation, codec)``: overwrite only the index in exactly that state
        (IndexStoreError otherwise), so a rebuild cannot drop another process's commits.
        ``over_interrupted``: build over what a killed first build left, if that is all the
        folder holds (``overwrite`` allows it too), but never over a committed index."""
        ids = _id_list(ids, "ids")
        root = Path(root)
        vectors = [np.asarray(v) for v in vectors]  # a list of arrays, or one [docs, tokens, dim] array
        if not vectors:
            raise ValueError("cannot build an index from zero documents")
        dim = int(vectors[0].shape[-1]) if vectors[0].ndim else 0
        stored = replaces is not None  # a rebuild of this index (retrain): its ids are already in it
        _validate_docs(ids, vectors, dim, stored)
        check_codec_settings(dim, nbits, num_centroids)  # before any folder is made
        if not is_positive_int(sample_tokens):
            raise ValueError(f"sample_tokens must be a positive integer, got {sample_tokens!r}")
        _warn_unnormalised(ids, vectors)
        if (root / MANIFEST).exists() and not overwrite:
            raise IndexStoreError(f"an index already exists at {root}; overwrite it explicitly to replace it")
        if root.exists() and not root.is_dir():
            raise IndexStoreError(f"{root} is a file")
        if root.is_dir() and not (root / MANIFEST).exists():
            clash = sorted(p.name for p in root.iterdir() if p.name == "segments" or p.name.startswith("codec-"))
            # a build sweeps these names: never someone else's files; a build of ours killed
            # before its first commit left only its own, which may be replaced when asked
            leftovers = bool(clash) and interrupted_build(root)
            if clash and not ((overwrite or over_interrupted) and leftovers):
                raise IndexStoreError(f"{root} is not an index but holds {', '.join(clash)}, which a build "
                                      "would replace; choose an empty or new folder" + (
                                          " (or, since they are what an interrupted build left, overwrite "
                                          "them)" if leftovers else ""))
        root.mkdir(parents=True, exist_ok=True)
        with WriterLock(root):
            first = not (root / MANIFEST).exists()
            if not overwrite and not first:  # another build committed since the check above
                raise IndexStoreError(f"an index was built at {root} meanwhile; not replaced")
            if first:
                (root / BUILDING).touch()
            # a rebuild in place continues the generation count, so open handles see a change
            generation, old = 0, None
            if (root / MANIFEST).exists():
                try:
                    old = read_manifest(root)
                    generation = int(old["generation"]) + 1
                except (IndexStoreError, KeyError, ValueError, TypeError):
                    old = None
            if replaces is not None and (old is None or _state(old) != tuple(replaces)):
                raise IndexStoreError(f"index {root} changed since it was read; not rebuilt")
            rng = np.random.default_rng(seed)
            total = sum(v.shape[0] for v in vectors)
            if total > sample_tokens:  # sample whole documents, like ColBERTv2
                order = rng.permutation(len(vectors))
                lens = np.array([vectors[i].shape[0] for i in order])
                take = order[: int(np.searchsorted(np.cumsum(lens), sample_tokens)) + 1]
                sample = np.concatenate([vectors[i] for i in take])
            else:
                sample = np.concatenate(vectors)
            codec = ResidualCodec.train(sample.astype(np.float32), nbits=nbits,
                                        num_centroids=num_centroids, niter=kmeans_niter, seed=seed)
            codec_name = new_name("codec")
            (root / codec_name).mkdir()
            codec.save(root / codec_name)
            manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "generation": generation,
                "dim": dim, "nbits": nbits, "codec": codec_name, "segments": [],
                "keep_vectors": keep_vectors, "model": model or {}, "created": time.time(),
                # the collection the codec was fit to (its sample is capped): what outgrown() compares
                "trained_tokens": int(total), "sample_tokens": int(sample.shape[0]),
            }
            index = cls.__new__(cls)
            index.root, index.manifest, index.codec, index.segments, index._locator = root, manifest, codec, [], {}
            index._append_segment(list(ids), vectors, manifest, _check_texts(texts, ids))
            seen = set(ids)
            for part_ids, part_vectors, part_texts in more or ():
                part_ids, part_vectors = _checked_docs(part_ids, part_vectors, dim, stored)
                again = seen.intersection(part_ids)
                if again:
                    raise ValueError(f"{len(again)} id(s) given twice, e.g. {sorted(again)[:5]}")
                seen.update(part_ids)
                _warn_unnormalised(part_ids, part_vectors)
                index._append_segment(part_ids, part_vectors, manifest, _check_texts(part_texts, part_ids))
                manifest["trained_tokens"] += sum(v.shape[0] for v in part_vectors)
            commit_manifest(root, manifest)
            sweep(root, manifest)
            (root / BUILDING).unlink(missing_ok=True)
        return cls.open(root)

    def retrain(self, encode: Callable[[list[str]], Sequence[np.ndarray]] | None = None) -> PlaidIndex:
        """Refit the codec to the whole collection (an index grown well past what its centroids
        were trained on) and rewrite it (one segment per ``RETRAIN_PART_DOCS`` documents), from
        the kept vectors or, for an index without them, ``encode(texts)`` of its stored texts,
        a part per call. One commit, refused
        (IndexStoreError) if another writer committed since this object last read the index:
        the rebuild would drop that writer's changes."""
        state = _state(self.manifest)
        segments = self.segments  # the old segments stay until the new index commits: read from them
        lives = [np.flatnonzero(~seg.deleted) for seg in segments]
        ids = [seg.ids[r] for seg, live in zip(segments, lives) for r in live]
        if not ids:
            raise IndexStoreError(f"index {self.root} holds no documents to retrain on")
        stored = sum(seg.text_count(live) for seg, live in zip(segments, lives))  # counted, not read
        kept = all(seg.vectors is not None for seg, live in zip(segments, lives) if len(live))
        starts = np.cumsum([0] + [len(live) for live in lives])  # row r: the r-th live document

        def located(rows: Sequence[int]) -> Iterator[tuple[SegmentArrays, int]]:
            for r in rows:
                si = int(np.searchsorted(starts, r, side="right")) - 1
                yield segments[si], int(lives[si][r - starts[si]])

        def texts_of(rows: Sequence[int]) -> list[str | None]:
            out = []
            for seg, row in located(rows):
                seg_texts = seg.texts()
                out.append(seg_texts[row] if seg_texts is not None else None)
            return out

        if not kept:
            if stored < len(ids):
                raise IndexStoreError(f"index {self.root} keeps neither vectors (keep_vectors) nor all its "
                                      "texts: nothing to retrain from")
            if encode is None:
                raise ValueError(f"index {self.root} keeps no vectors: retraining re-encodes its texts, "
                                 "so it needs the model (encode)")

        has_texts = stored > 0

        def part(rows: Sequence[int]):
            """``(ids, vectors, texts)`` of those documents: the kept originals, else their texts
            encoded (each text read once, for the encoder and the new segment)."""
            texts = texts_of(rows) if has_texts else None
            if kept:
                vectors = [np.asarray(seg.vectors[seg.offsets[row]:seg.offsets[row + 1]]) for seg, row in located(rows)]
            else:
                vectors = list(encode(texts))
                if len(vectors) != len(rows) or any(np.shape(v)[-1] != self.dim for v in vectors):
                    raise ValueError(f"encode gave {len(vectors)} documents' vectors for {len(rows)} texts, or "
                                     f"not of the index's dim {self.dim}")
            return [ids[r] for r in rows], vectors, texts

        # a part at a time, as a large build: memory bounded by RETRAIN_PART_DOCS documents' vectors;
        # the codec from a random part (all of a smaller index), one commit at the end
        first, rest = build_parts(len(ids), self.RETRAIN_PART_DOCS)
        first_ids, first_vectors, first_texts = part(first)
        return PlaidIndex.build(self.root, first_ids, first_vectors, nbits=self.codec.nbits,
                                keep_vectors=bool(self.manifest.get("keep_vectors")), texts=first_texts,
                                model=self.manifest.get("model"), overwrite=True, replaces=state,
                                more=(part(rows) for rows in rest),
                                # a sample no smaller than the one the index was built with
                                sample_tokens=max(DEFAULT_SAMPLE_TOKENS, int(self.manifest.get("sample_tokens", 0))))

    #: documents whose vectors a retrain holds at a time (an index past it is rebuilt part by part)
    RETRAIN_PART_DOCS = 50_000

    def _append_segment(self, ids: list[str], vectors: list[np.ndarray], manifest: dict, texts=None) -> None:
        flat = np.concatenate(vectors).astype(np.float32)
        doclens = np.array([v.shape[0] for v in vectors], dtype=np.int32)
        codes, residuals = self.codec.compress(flat)
        ivf_docs, ivf_offsets = build_ivf(codes, doclens, self.codec.num_centroids)
        name = new_name("seg")
        write_segment(self.root / "segments" / name, codes, residuals, doclens, ivf_docs, ivf_offsets,
                      ids, flat if manifest.get("keep_vectors") else None, texts)
        manifest["segments"].append({"name": name, "docs": len(ids), "tokens": int(doclens.sum()),
                                     "deleted": None})

    # -- writing ---------------------------------------------------------------------------

    def _begin(self) -> tuple[WriterLock, dict]:
        lock = WriterLock(self.root)
        lock.acquire()
        try:
            manifest = read_manifest(self.root)
            if self._changed(manifest):
                self._load(manifest)
            return lock, _writable(manifest)
        except BaseException:
            lock.release()
            raise

    def _commit(self, manifest: dict) -> None:
        manifest["generation"] += 1
        commit_manifest(self.root, manifest)
        sweep(self.root, manifest)
        try:
            self._load(manifest)
        except IndexStoreError as exc:
            raise IndexStoreError(f"the change was committed (generation {manifest['generation']}), but "
                                  f"the index cannot be re-read: {exc}") from exc

    #: more segments than this after an add → merge the smallest (search cost grows per segment)
    MAX_SEGMENTS = 32
    #: what one such merge may rewrite (compressed tokens, and kept vectors): an add's own cost
    MERGE_MAX_BYTES = 1 << 30

    def add(self, ids: Sequence[str], vectors: Sequence[np.ndarray], replace: bool = False,
            commit_every: int = 10_000, progress=None, texts: Sequence[str] | None = None) -> None:
        """Append documents; every ``commit_every`` documents are one atomic commit.

        An id already in the index is an error unless ``replace`` (then the old version is
        deleted in the same commit as the new one is added). When adds have left more than
        ``MAX_SEGMENTS`` segments, the smallest are merged afterwards (also an atomic commit;
        at most ``MERGE_MAX_BYTES`` of them at once, so a large index is never read whole).
        """
        ids, vectors = _checked_docs(ids, vectors, self.dim)
        texts = _check_texts(texts, ids)
        if not is_positive_int(commit_every):
            raise ValueError(f"commit_every must be a positive number of documents, got {commit_every!r}")
        lock, manifest = self._begin()
        try:
            present = [i for i in ids if i in self._locator]
            if present and not replace:
                raise ValueError(f"{len(present)} id(s) already in the index, e.g. {present[:5]}; "
                                 "delete them first or replace them")
            _warn_unnormalised(ids, vectors)  # (only for an add that goes ahead)
            for start in range(0, len(ids), commit_every):
                chunk_ids = ids[start : start + commit_every]
                self._tombstone([i for i in chunk_ids if i in self._locator], manifest)
                self._append_segment(chunk_ids, vectors[start : start + commit_every], manifest,
                                     None if texts is None else texts[start : start + commit_every])
                self._commit(manifest)
                manifest = _writable(self.manifest)
                if progress is not None:
                    progress(len(chunk_ids))
            merge = self._merge_choice() if len(self.segments) > self.MAX_SEGMENTS else []
            if merge:  # under the same lock: no writer in between
                try:
                    self._compact(manifest, merge)
                except (OSError, IndexStoreError) as exc:  # the documents are committed: the merge waits
                    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                    warnings.warn(f"the documents were added, but merging the index's {len(self.segments)} "
                                  f"segments failed: {reason}", stacklevel=2)
        finally:
            lock.release()

    def _tombstone(self, ids: list[str], manifest: dict) -> None:
        by_segment: dict[int, list[int]] = {}
        for doc_id in ids:
            si, li = self._locator[doc_id]
            by_segment.setdefault(si, []).append(li)
        for si, locals_ in by_segment.items():
            seg = self.segments[si]
            deleted = seg.deleted.copy()
            deleted[locals_] = True
            meta = manifest["segments"][si]
            assert meta["name"] == seg.name
            name = f"deleted-{manifest['generation'] + 1}.npy"
            save_array(self.root / "segments" / seg.name / name, deleted)
            meta["deleted"] = name

    def delete(self, ids: Iterable[str], missing_ok: bool = False) -> int:
        """Remove documents by id in one commit; unknown ids are an error unless missing_ok."""
        ids = list(dict.fromkeys(_id_list(ids, "ids")))
        lock, manifest = self._begin()
        try:
            unknown = [i for i in ids if i not in self._locator]
            if unknown and not missing_ok:
                raise KeyError(f"{len(unknown)} id(s) not in the index, e.g. {unknown[:5]}")
            known = [i for i in ids if i in self._locator]
            if known:
                self._tombstone(known, manifest)
                self._commit(manifest)
            return len(known)
        finally:
            lock.release()

    def compact(self) -> None:
        """Rewrite all segments into one, dropping deleted documents (codes are reused)."""
        lock, manifest = self._begin()
        try:
            self._compact(manifest)
        finally:
            lock.release()

    def _merge_choice(self) -> list[int]:
        """The segments an add's merge takes: the smallest, as many as fit in
        ``MERGE_MAX_BYTES`` together, enough to bring the count to half of ``MAX_SEGMENTS``
        if they fit. Large segments (a build's parts) stay as they are: an add does not rewrite
        the whole index (a 1M-document index with kept vectors: ~25 GB)."""
        per_token = self.codec.bytes_per_token + np.dtype(self.codec.code_dtype).itemsize + (
            2 * self.dim if self.manifest.get("keep_vectors") else 0)
        size = {si: int(seg.doclens[~seg.deleted].sum()) * per_token for si, seg in enumerate(self.segments)}
        wanted = len(self.segments) - self.MAX_SEGMENTS // 2 + 1
        chosen, total = [], 0
        for si in sorted(size, key=lambda si: (size[si], si)):
            if len(chosen) == wanted or total + size[si] > self.MERGE_MAX_BYTES:
                break
            chosen.append(si)
            total += size[si]
        return sorted(chosen) if len(chosen) >= 2 else []

    def _compact(self, manifest: dict, which: Sequence[int] | None = None) -> None:
        """Merge segments ``which`` (default: all) into one, dropping deleted documents; the
        merged segment takes the place of the first of them. The caller holds the writer lock.
        Codes, residuals, kept vectors and the inverted lists go from the mapped segments to the
        new files a block at a time, texts one by one: memory holds the merged documents' ids
        and lengths, not the index."""
        which = list(range(len(self.segments))) if which is None else sorted(which)
        for si in which:
            assert manifest["segments"][si]["name"] == self.segments[si].name
        chosen = [self.segments[si] for si in which]
        lives = [np.flatnonzero(~seg.deleted) for seg in chosen]
        ids = [seg.ids[i] for seg, live in zip(chosen, lives) for i in live]
        merged = []
        if ids:
            doclens = np.concatenate([seg.doclens[live] for seg, live in zip(chosen, lives)])
            tokens = int(doclens.sum())
            ivf_docs, ivf_offsets = merge_ivf(chosen, self.codec.num_centroids, self.MERGE_BLOCK_TOKENS)
            codes = self._merged_rows(chosen, lives, "codes", tokens)
            residuals = self._merged_rows(chosen, lives, "residuals", tokens)
            kept = all(seg.vectors is not None for seg in chosen)
            name = new_name("seg")
            write_segment(self.root / "segments" / name, codes, residuals, doclens, ivf_docs, ivf_offsets, ids,
                          self._merged_rows(chosen, lives, "vectors", tokens) if kept else None,
                          _live_texts(chosen, lives) if any(seg.text_count(live) for seg, live in zip(chosen, lives))
                          else None)
            merged = [{"name": name, "docs": len(ids), "tokens": tokens, "deleted": None}]
        if which:
            segments, first = manifest["segments"], which[0]
            manifest["segments"] = (segments[:first] + merged
                                    + [m for si, m in enumerate(segments) if si > first and si not in which])
        self._commit(manifest)

    def _live_tokens(self, segments, lives) -> Iterator[tuple[SegmentArrays, np.ndarray]]:
        """``(segment, token rows)`` of the live documents ``lives`` of each segment, about
        ``MERGE_BLOCK_TOKENS`` rows at a time (the rows of a whole segment would cost 8 bytes a token)."""
        for seg, live in zip(segments, lives):
            lengths = seg.doclens[live].astype(np.int64)
            ends = np.cumsum(lengths)
            cuts = np.searchsorted(ends, np.arange(self.MERGE_BLOCK_TOKENS, int(ends[-1]) if len(ends) else 0,
                                                   self.MERGE_BLOCK_TOKENS), side="right")
            for lo, hi in zip([0, *cuts], [*cuts, len(live)]):
                if hi > lo:
                    yield seg, _ranges(seg.offsets[live[lo:hi]], lengths[lo:hi])

    #: token rows (and postings) a merge copies at a time
    MERGE_BLOCK_TOKENS = 1 << 16

    def _merged_rows(self, segments, lives, field: str, total: int) -> Blocks:
        """The live tokens' rows of one per-token array (``codes``, ``residuals`` or ``vectors``) of
        ``segments``, in order, as blocks read from the mapped files."""
        first = getattr(segments[0], field)

        def blocks():
            for seg, tok in self._live_tokens(segments, lives):
                rows = getattr(seg, field)
                for s in range(0, len(tok), self.MERGE_BLOCK_TOKENS):
                    block = rows[tok[s : s + self.MERGE_BLOCK_TOKENS]]
                    # (segments too large to check at every open are checked here)
                    if field == "codes" and len(block) and int(block.max()) >= self.codec.num_centroids:
                        raise IndexStoreError(f"index segment {seg.folder} is damaged: it has centroid codes "
                                              f"past the codec's {self.codec.num_centroids}")
                    yield block
                    del block  # (not held while the next block is read)

        return Blocks((total, *first.shape[1:]), first.dtype, blocks())

    def export(self, batch_size: int = 1024) -> Iterator[tuple[list[str], list[str | None], list[np.ndarray] | None]]:
        """Every live document as ``(ids, texts, vectors)`` batches: the kept float16 originals,
        or ``None`` for an index built without ``keep_vectors`` (its residuals are lossy: re-encode
        the texts instead). For moving a collection elsewhere, e.g. a Qdrant cluster."""
        for seg in self.segments:
            live = np.flatnonzero(~seg.deleted)
            texts = seg.texts()
            for start in range(0, len(live), batch_size):
                rows = live[start:start + batch_size]
                vectors = None
                if seg.vectors is not None:
                    vectors = [np.asarray(seg.vectors[seg.offsets[r]:seg.offsets[r] + seg.doclens[r]]) for r in rows]
                yield ([seg.ids[r] for r in rows], [texts[r] if texts else None for r in rows], vectors)

    def documents(self, ids: Iterable[str]) -> list[str | None]:
        """Stored texts of documents (None where no text was stored or the id is unknown)."""
        ids = _id_list(ids, "ids")
        index = self
        for _ in range(self.READ_RETRIES):
            try:
                return index._documents(ids)
            except FileNotFoundError:
                # another writer compacted the segments away: read its state through a fresh
                # object (not a refresh in place: other threads may be searching this one),
                # which a further commit may sweep in turn before its texts are read
                index = PlaidIndex.open(self.root)
        raise IndexStoreError(f"index {self.root} was rewritten by other writers during each of "
                              f"{self.READ_RETRIES} reads of its texts; retry")

    def _documents(self, ids: list[str]) -> list[str | None]:
        out = []
        for doc_id in ids:
            loc = self._locator.get(doc_id)
            texts = self.segments[loc[0]].texts() if loc else None
            out.append(texts[loc[1]] if texts else None)
        return out

    # -- searching -------------------------------------------------------------------------

    @staticmethod
    def _filter_masks(filter_ids: Iterable[str] | None, segments, locator) -> list[np.ndarray | None]:
        """Per segment, the documents ``filter_ids`` lets through (None: all), live ones only:
        the locator holds no deleted document."""
        if filter_ids is None:
            return [None] * len(segments)
        masks = [np.zeros(s.num_docs, dtype=bool) for s in segments]
        for doc_id in filter_ids:
            loc = locator.get(doc_id)
            if loc is not None:
                masks[loc[0]][loc[1]] = True
        return masks

    def search(self, query: np.ndarray | torch.Tensor, k: int = 10, filter_ids: Iterable[str] | None = None,
               settings: SearchSettings | None = None) -> list[Hit]:
        """Top-k documents for one query's token vectors [Lq, dim], best first."""
        # numpy + compiled loops (no torch) on the per-query path: torch's OpenMP workers spin
        # between its small ops and starve the loops that follow (8x slower on 2 cores)
        q = validate_query(query, self.dim, k, filter_ids)
        if settings is not None and not isinstance(settings, SearchSettings):
            raise TypeError(f"settings must be a SearchSettings, got {type(settings).__name__}")
        settings = settings or SearchSettings.for_k(k)
        with kernels.parallel_section():
            codec, segments, locator = self._view  # one consistent state for the whole search
            scores = codec.centroid_scores_t(q)  # [K, Lq]
            cells = kernels.probe_cells(scores, min(settings.ncells, codec.num_centroids))
            # stage-2 table: the probed cells only, pruned (cells no query token likes count 0)
            cell_scores = scores[cells]  # [cells, Lq]
            cell_scores *= cell_scores.max(axis=1, keepdims=True) >= settings.centroid_score_threshold
            masks = self._filter_masks(filter_ids, segments, locator)
            hits = self._search_segments(codec, segments, q, scores, cells, cell_scores, masks, k, settings)
        hits.sort(key=lambda h: -h[0])
        return [Hit(doc_id, score) for score, doc_id in hits[:k]]

    def _search_segments(self, codec, segments, q, centroid_scores, cells, cell_scores, masks, k, settings):
        """Stages 2-4 with each stage's cut taken over all segments together, so an index in
        many segments (adds, a build in parts) costs and answers as one segment would (cut per
        segment, stages 3 and 4 ran once per segment: 16 segments were 6x one segment's latency)."""
        keep = max(k, settings.ndocs // 4)
        bases = np.cumsum([0] + [seg.num_docs for seg in segments])
        live = [seg.num_live if allowed is None else int(allowed.sum()) for seg, allowed in zip(segments, masks)]
        probed = []  # (segment number, docs, stage-2 scores)
        if sum(live) > keep:
            for si, (seg, allowed) in enumerate(zip(segments, masks)):
                if live[si]:
                    docs, approx = self._guarded(seg, kernels.ivf_interaction, seg.ivf_docs, seg.ivf_offsets,
                                                 cells, cell_scores, seg.deleted,
                                                 _NO_FILTER if allowed is None else allowed, allowed is not None)
                    probed.append((si, docs, approx))
        if sum(len(docs) for _, docs, _ in probed) >= k:
            # stage 2: interaction through the probed inverted lists only (no token reads)
            pool = dict(_top_per_segment(probed, max(settings.ndocs, k), bases))  # segment → candidates
        else:
            # no more documents (in the index, or let through by the filter) than stage 4 would
            # score anyway, or the probed lists hold fewer than k of them (a narrow filter, a
            # small index with few documents per cell): take every live (allowed) one
            pool = {si: np.flatnonzero(~seg.deleted if allowed is None else allowed)
                    for si, (seg, allowed) in enumerate(zip(segments, masks))}
        if sum(len(cand) for cand in pool.values()) > keep:
            # stage 3: centroid interaction over every token of the survivors
            approx = [(si, cand, self._centroid_interaction(segments[si], cand, centroid_scores))
                      for si, cand in pool.items() if len(cand)]
            pool = dict(_top_per_segment(approx, keep, bases))
        hits = []
        for si, cand in pool.items():  # stage 4: MaxSim of the survivors
            if len(cand):
                hits.extend(self._guarded(segments[si], self._score, codec, segments[si], q, cand, k))
        return hits

    def _centroid_interaction(self, seg, cand, centroid_scores):
        scores = self._guarded(seg, kernels.centroid_interaction, seg.codes, seg.offsets, cand, centroid_scores)
        if np.isnan(scores).any():
            raise self._damaged(seg)
        return scores

    def _guarded(self, seg, kernel, *args):
        """A kernel's out-of-range read of ``seg`` as the index damage it is."""
        try:
            return kernel(*args)
        except IndexError as e:
            if str(e) != kernels.DAMAGED:
                raise
            raise self._damaged(seg) from None

    def _damaged(self, seg) -> IndexStoreError:
        return IndexStoreError(f"index {self.root} is damaged: segment {seg.name} has {kernels.DAMAGED}")

    def _score(self, codec, seg, q, cand, k):
        if len(cand) == 0:
            return []
        if seg.vectors is not None:  # stage 4: exact MaxSim on the kept originals
            scores = kernels.half_maxsim(seg.vectors.view(np.uint16), seg.offsets, cand,
                                         kernels.HALF_TO_FLOAT, q)
        else:  # stage 4: MaxSim on decompressed vectors
            scores = kernels.decompressed_maxsim(seg.codes, seg.residuals, seg.offsets, cand,
                                                 codec.centroids, codec.lut, q)
            if np.isnan(scores).any():
                raise self._damaged(seg)
        top = kernels.top_indices(scores, k)
        return [(float(scores[i]), seg.ids[cand[i]]) for i in top]


def warm_up() -> None:
    """Compile the search kernels now (numba compiles on first use and caches the machine code
    on disk: on a fresh install the first search waited ~15 s for it), by searching a tiny
    throwaway index built the way real ones are, so the compiled signatures are the real ones."""
    import tempfile

    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((n, 32)).astype(np.float32) for n in (5, 7, 9)]
    docs = [d / np.linalg.norm(d, axis=1, keepdims=True) for d in docs]
    with tempfile.TemporaryDirectory(prefix="polylate-warm-") as tmp:
        for keep in (False, True):
            index = PlaidIndex.build(Path(tmp) / f"w{int(keep)}", ["a", "b", "c"], docs, keep_vectors=keep)
            index.search(docs[0], k=2)
            index.search(docs[1], k=2, filter_ids=["b"])
