"""On-disk layout of an index and its crash-safe commit.

    <index>/MANIFEST.json          the one source of truth: which files make the index
    <index>/codec-<n>/             centroids, bucket edges and values
    <index>/segments/<name>/       codes, residuals, doclens, inverted lists, ids, texts (immutable)
    <index>/segments/<name>/deleted-<gen>.npy   tombstones of that segment at generation gen
    <index>/LOCK                   held by the one writer

Every change writes new files only, fsyncs them, then atomically replaces MANIFEST.json
(write temp, fsync, rename, fsync directory). A crash at any point leaves the previous
manifest and every file it names intact; files no manifest names are swept on the next
write. Readers memory-map arrays, so a large index is never read whole.
"""

from __future__ import annotations

import array
import errno
import fcntl
import functools
import json
import operator
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "polylate-plaid"
# 2: texts as texts.bin + text_lengths.npy (1: texts.json, still read; an index is marked 2
# once a segment holds texts.bin)
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
TEXTS = "texts.bin"  # every document's text in UTF-8, one after another
TEXT_LENGTHS = "text_lengths.npy"  # int64 bytes of each document's text; -1: none stored
LEGACY_TEXTS = "texts.json"  # format 1: one JSON list
MANIFEST = "MANIFEST.json"
# settings of an index created through the server (dim, nbits, keep_vectors, model,
# trained_tokens); alone in a folder (no MANIFEST yet) it is an index created empty, which the
# first documents added build
SERVER_META = "SERVER.json"


class IndexStoreError(RuntimeError):
    """Problems with an index on disk (missing, foreign, locked, corrupt)."""


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Blocks:
    """An array written a block of rows at a time, never whole in memory (a merge of large
    segments): its shape and dtype, and an iterable of the row blocks that make it."""
    shape: tuple[int, ...]
    dtype: np.dtype
    blocks: Iterable[np.ndarray]


def save_array(path: Path, array: np.ndarray | Blocks) -> None:
    with open(path, "wb") as f:
        if isinstance(array, Blocks):
            _write_blocks(f, array, path)
        else:
            np.save(f, np.ascontiguousarray(array))
        f.flush()
        os.fsync(f.fileno())


def _write_blocks(f, array: Blocks, path: Path) -> None:
    """The .npy file ``np.save`` would write for the concatenated blocks."""
    dtype, shape = np.dtype(array.dtype), tuple(int(n) for n in array.shape)
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    rows = 0
    for block in array.blocks:
        block = np.ascontiguousarray(block, dtype=dtype)
        if block.shape[1:] != shape[1:]:
            raise ValueError(f"{path}: a block of shape {block.shape} in an array of shape {shape}")
        if block.size:  # (a view of zero bytes cannot be cast)
            f.write(memoryview(block).cast("B"))
        rows += len(block)
        block = None  # (not held while the next block is read)
    if rows != shape[0]:
        raise ValueError(f"{path}: {rows} rows written for an array of {shape[0]}")


def save_json(path: Path, obj, chunk: int = 4096) -> None:
    """``obj`` as JSON, synced; a list ``chunk`` items at a time (``json.dump`` builds the whole
    text's pieces first: ~65 bytes per id of a large segment)."""
    with open(path, "w", encoding="utf-8") as f:
        if isinstance(obj, list):
            f.write("[")
            for start in range(0, len(obj), chunk):
                f.write(("," if start else "") + json.dumps(obj[start:start + chunk], ensure_ascii=False)[1:-1])
            f.write("]")
        else:
            json.dump(obj, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())


def commit_manifest(root: Path, manifest: dict) -> None:
    """Atomically make `manifest` the index's state. An index any of whose segments holds
    format 2's texts.bin is marked format 2 (a format-1 reader would miss those texts); one
    without keeps its version, so a delete or an add without texts leaves it readable there."""
    if manifest.get("format_version") != FORMAT_VERSION and any(
            (root / "segments" / seg["name"] / TEXTS).exists() for seg in manifest.get("segments", ())):
        manifest["format_version"] = FORMAT_VERSION
    tmp = root / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
    save_json(tmp, manifest)
    os.replace(tmp, root / MANIFEST)
    fsync_path(root)


def read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.exists():
        if root.exists() and not root.is_dir():
            raise IndexStoreError(f"{root} is a file, not an index folder")
        raise IndexStoreError(f"no index at {root} ({MANIFEST} missing)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexStoreError(f"{path} is corrupt: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise IndexStoreError(f"{root} is not a polylate PLAID index (format {manifest.get('format')!r})")
    if manifest.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise IndexStoreError(
            f"{root} has index format version {manifest.get('format_version')!r}; this polylate "
            f"reads versions {', '.join(map(str, READABLE_FORMAT_VERSIONS))}. Rebuild the index with this version."
        )
    return manifest


class WriterLock:
    """Exclusive advisory lock: one writer per index, across processes."""

    def __init__(self, root: Path):
        self.path = root / "LOCK"
        self.fd: int | None = None

    def acquire(self, blocking: bool = False) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only mount, another user's index, ...
            raise IndexStoreError(f"index {self.path.parent} cannot be written: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(self.fd)
            self.fd = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexStoreError(f"index {self.path.parent} is being written by another process") from None
            raise

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def write_json(path: Path, obj: dict) -> None:
    """Written whole or not at all (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def empty_index_settings(root: Path) -> dict | None:
    """The recorded settings of an index created empty (by the server) that no documents have
    built yet; None when ``root`` holds a built index or none."""
    return None if (root / MANIFEST).exists() else read_server_meta(root)


def read_server_meta(root: Path) -> dict | None:
    """The settings a server-made index records beside its manifest (dim, nbits, model,
    trained tokens); None where there are none (an index the CLI built)."""
    path = root / SERVER_META
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        # a built index's manifest holds its settings; one not built yet has only these
        if not (root / MANIFEST).exists() and not (isinstance(meta.get("dim"), int)
                                                   and isinstance(meta.get("nbits"), int)):
            raise ValueError("no dim and nbits")
    except (OSError, ValueError) as exc:
        raise IndexStoreError(f"index {root} is damaged: {SERVER_META}: {exc}") from exc
    return meta


def check_writer(root: Path) -> None:
    """Fail now if the index at ``root`` cannot be written, or another process is writing it:
    before minutes of encoding, not after. (The write itself takes the lock again.)"""
    lock = WriterLock(root)
    lock.acquire()
    lock.release()


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


#: what a sweep renames a folder to before deleting it
_SWEPT = ".swept"


def _remove_folder(folder: Path) -> None:
    """Out of readers' sight in one rename, then deleted. A reader that opened the index before
    the commit finds each old folder whole or gone (FileNotFoundError, on which it re-reads the
    manifest), never half deleted: rmtree unlinks one file at a time, and a segment seen without
    its vectors.npy or texts.bin would read as damaged or as storing no texts."""
    if folder.name.startswith(".") and folder.name.endswith(_SWEPT):  # a killed sweep's
        shutil.rmtree(folder, ignore_errors=True)
        return
    gone = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}{_SWEPT}")
    try:
        folder.rename(gone)
    except FileNotFoundError:
        return
    except OSError:  # a file system that refuses the rename: delete in place, as before
        gone = folder
    shutil.rmtree(gone, ignore_errors=True)


def sweep(root: Path, manifest: dict) -> None:
    """Delete files and folders that the committed manifest does not name (crash leftovers,
    superseded tombstones, merged segments). Only a writer holding the lock calls this."""
    live_segments = {s["name"]: s for s in manifest["segments"]}
    seg_root = root / "segments"
    if seg_root.exists():
        for d in seg_root.iterdir():
            seg = live_segments.get(d.name)
            if seg is None:
                _remove_folder(d)
                continue
            for f in d.glob("deleted-*.npy"):
                if f.name != seg.get("deleted"):
                    f.unlink(missing_ok=True)
    for d in [*root.glob("codec-*"), *root.glob(f".codec-*{_SWEPT}")]:
        if d.name != manifest["codec"]:
            _remove_folder(d)
    for f in root.glob(f".{MANIFEST}.*.tmp"):
        f.unlink(missing_ok=True)


@dataclass
class SegmentArrays:
    """One immutable segment, memory-mapped."""

    name: str
    codes: np.ndarray  # [T] centroid id per token
    residuals: np.ndarray  # uint8 [T, bytes_per_token]
    doclens: np.ndarray  # int32 [n]
    offsets: np.ndarray  # int64 [n + 1], token start of each doc
    ivf_docs: np.ndarray  # int32 [P], local doc numbers grouped by centroid
    ivf_offsets: np.ndarray  # int64 [K + 1]
    ids: list[str]
    deleted: np.ndarray  # bool [n]
    vectors: np.ndarray | None  # float16 [T, dim] originals, when kept for exact re-ranking
    folder: Path
    _texts: Sequence[str | None] | None = None
    _no_texts: bool = False  # looked: none stored

    def texts(self) -> Sequence[str | None] | None:
        """Stored document texts (None when none were stored), each read from the mapped file
        when asked for (a format-1 segment's texts.json: read whole on first use)."""
        if self._texts is None and not self._no_texts:
            path = self.folder / LEGACY_TEXTS
            if (self.folder / TEXT_LENGTHS).exists() or (self.folder / TEXTS).exists():
                self._texts = SegmentTexts(self.folder, len(self.ids))
            elif path.exists():
                try:
                    texts = json.loads(path.read_text(encoding="utf-8"))
                except (ValueError, UnicodeDecodeError) as exc:
                    raise IndexStoreError(f"index segment {self.folder} is damaged: texts.json: {exc}") from None
                if not isinstance(texts, list) or len(texts) != len(self.ids):
                    raise IndexStoreError(f"index segment {self.folder} is damaged: texts.json does not hold "
                                          f"{len(self.ids)} texts")
                self._texts = texts
            elif not self.folder.exists():  # merged away by another writer: the caller re-reads
                raise FileNotFoundError(2, "segment swept by a later commit", str(self.folder))
            else:
                self._no_texts = True
        return self._texts

    def text_count(self, rows: np.ndarray) -> int:
        """How many of those documents have a stored text (format 2: without reading one)."""
        texts = self.texts()
        if isinstance(texts, SegmentTexts):
            return texts.stored(rows)
        return 0 if texts is None else sum(texts[i] is not None for i in rows)

    @property
    def num_docs(self) -> int:
        return len(self.ids)

    @functools.cached_property
    def num_live(self) -> int:  # cached: tombstones never change in place (a new file, a new object)
        return int(self.num_docs - self.deleted.sum())


class SegmentTexts(Sequence):
    """A segment's stored texts, each decoded from the mapped file when asked for: showing a
    hit's text, or merging segments, never reads every text of a large index into memory."""

    def __init__(self, folder: Path, count: int):
        self.folder = folder
        try:
            lengths = np.load(folder / TEXT_LENGTHS)
            size = (folder / TEXTS).stat().st_size
        except FileNotFoundError:
            if not folder.exists():  # merged away by another writer: the caller re-reads
                raise
            raise IndexStoreError(f"index segment {folder} is damaged: {TEXTS} or {TEXT_LENGTHS} is missing") from None
        except (OSError, ValueError) as exc:
            raise IndexStoreError(f"index segment {folder} is damaged: texts: {exc}") from None
        if lengths.shape != (count,) or lengths.dtype.kind != "i" or (len(lengths) and lengths.min() < -1):
            raise IndexStoreError(f"index segment {folder} is damaged: {TEXT_LENGTHS} holds {lengths.dtype} "
                                  f"{lengths.shape}, not one length per {count} documents")
        self._lengths = lengths
        self._starts = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(np.maximum(lengths, 0), out=self._starts[1:])
        if int(self._starts[-1]) != size:
            raise IndexStoreError(f"index segment {folder} is damaged: {TEXTS} holds {size} bytes, "
                                  f"{TEXT_LENGTHS} adds up to {int(self._starts[-1])}")
        self._data = np.memmap(folder / TEXTS, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._lengths)

    def stored(self, rows: np.ndarray) -> int:
        """How many of those documents have a text (without reading one)."""
        return int((self._lengths[rows] >= 0).sum())

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = operator.index(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"text {i} of {len(self)}")
        i %= len(self)
        if self._lengths[i] < 0:
            return None
        try:
            return self._data[self._starts[i]:self._starts[i + 1]].tobytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IndexStoreError(f"index segment {self.folder} is damaged: {TEXTS}: {exc}") from None


def write_texts(folder: Path, texts: Iterable[str | None]) -> int:
    """The texts, streamed to ``texts.bin``: a merge's texts never all in memory."""
    lengths = array.array("q")
    with open(folder / TEXTS, "wb") as f:
        for text in texts:
            if text is None:
                lengths.append(-1)
                continue
            data = text.encode("utf-8")
            f.write(data)
            lengths.append(len(data))
        f.flush()
        os.fsync(f.fileno())
    save_array(folder / TEXT_LENGTHS, np.frombuffer(lengths, dtype=np.int64))
    return len(lengths)


def write_segment(folder: Path, codes, residuals, doclens, ivf_docs, ivf_offsets, ids, vectors=None,
                  texts: Iterable[str | None] | None = None) -> None:
    folder.mkdir(parents=True)
    save_array(folder / "codes.npy", codes)
    save_array(folder / "residuals.npy", residuals)
    save_array(folder / "doclens.npy", doclens.astype(np.int32))
    save_array(folder / "ivf_docs.npy", ivf_docs if isinstance(ivf_docs, Blocks) else ivf_docs.astype(np.int32))
    save_array(folder / "ivf_offsets.npy", ivf_offsets.astype(np.int64))
    save_json(folder / "ids.json", list(ids))
    if vectors is not None:
        save_array(folder / "vectors.npy", vectors if isinstance(vectors, Blocks) else vectors.astype(np.float16))
    if texts is not None and write_texts(folder, texts) != len(ids):
        raise ValueError(f"{folder}: texts written for other than the {len(ids)} documents")
    fsync_path(folder)
    fsync_path(folder.parent)


def read_segment(root: Path, meta: dict) -> SegmentArrays:
    folder = root / "segments" / meta["name"]

    def load(name, mmap=True):
        # a plain ndarray view over the mapping: still paged in lazily, without np.memmap's
        # per-indexing Python overhead on the search path
        return np.asarray(np.load(folder / name, mmap_mode="r" if mmap else None))

    doclens = load("doclens.npy", mmap=False)
    offsets = np.zeros(len(doclens) + 1, dtype=np.int64)
    np.cumsum(doclens, out=offsets[1:])
    ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
    deleted = load(meta["deleted"], mmap=False) if meta.get("deleted") else np.zeros(len(ids), bool)
    vectors = load("vectors.npy") if (folder / "vectors.npy").exists() else None
    codes, residuals, ivf_docs = load("codes.npy"), load("residuals.npy"), load("ivf_docs.npy")
    ivf_offsets = load("ivf_offsets.npy", mmap=False)
    tokens = int(offsets[-1])
    checks = [  # cheap: shapes only, so a damaged segment is named at open, not mid-search
        (isinstance(ids, list) and len(ids) == len(doclens), f"ids.json holds {len(ids)} ids for {len(doclens)} documents"),
        (all(isinstance(i, str) for i in ids), "ids.json holds ids that are not strings"),
        (meta.get("docs") in (None, len(doclens)), f"{len(doclens)} documents, the manifest says {meta.get('docs')}"),
        (doclens.ndim == 1 and (doclens >= 0).all(), "doclens.npy holds negative lengths"),
        (codes.ndim == 1 and len(codes) == tokens, f"codes.npy holds {codes.shape} for {tokens} tokens"),
        (codes.dtype.kind in "iu", f"codes.npy holds {codes.dtype} values, not integers"),
        (ivf_docs.ndim == 1 and ivf_docs.dtype.kind in "iu", f"ivf_docs.npy holds {ivf_docs.dtype} "
         f"{ivf_docs.shape}, not a list of document numbers"),
        (residuals.ndim == 2 and len(residuals) == tokens, f"residuals.npy holds {residuals.shape} for {tokens} tokens"),
        (deleted.shape == (len(doclens),), f"tombstones hold {deleted.shape} for {len(doclens)} documents"),
        (ivf_offsets.ndim == 1 and len(ivf_offsets) >= 2 and int(ivf_offsets[0]) == 0
         and int(ivf_offsets[-1]) == len(ivf_docs) and (np.diff(ivf_offsets) >= 0).all(),
         "ivf_offsets.npy does not index ivf_docs.npy"),
        (vectors is None or (vectors.ndim == 2 and len(vectors) == tokens),
         f"vectors.npy holds {None if vectors is None else vectors.shape} for {tokens} tokens"),
    ]
    for ok, problem in checks:
        if not ok:
            raise IndexStoreError(f"index segment {folder} is damaged: {problem}")
    return SegmentArrays(meta["name"], codes, residuals, doclens, offsets, ivf_docs, ivf_offsets, ids, deleted,
                         vectors, folder)
