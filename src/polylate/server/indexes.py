"""Named PLAID indexes under one root folder, safe to use from many request threads.

Each index has a readers-writer lock: searches run side by side, a write (create, add,
delete, compact, drop) runs alone. Readers never see a half-applied write: writers mutate
the shared ``PlaidIndex`` only under the write lock, and an index changed on disk by another
process is re-opened as a fresh object rather than refreshed in place.

An index created through the server may start empty (a codec cannot be trained on nothing):
``SERVER.json`` in its folder records the settings, and the first add builds it. Because a
codec trained on a handful of documents compresses a grown collection badly, an index the
server created is rebuilt (from its kept vectors, else its re-encoded stored texts) with a
retrained codec each time it has
doubled in tokens since the last training, until it has been trained on
``retrain_below_tokens`` tokens.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from polylate.model import identity
from polylate.model.identity import model_mismatch, model_record
from polylate.index.plaid import PlaidIndex, SearchSettings, id_problem
from polylate.index.storage import (MANIFEST, SERVER_META, IndexStoreError, WriterLock, read_manifest,
                                     read_server_meta)
from polylate.index.storage import write_json as _write_json
from polylate.server.runner import ModelRunner
from polylate.server.schemas import INDEX_NAME_PATTERN

RETRAIN_BELOW_TOKENS = PlaidIndex.AUTO_RETRAIN_BELOW_TOKENS
_NAME = re.compile(INDEX_NAME_PATTERN.strip("^$"))


class RegistryError(Exception):
    """A request the index layer refuses; carries the HTTP status and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class RWLock:
    """Many readers or one writer; a waiting writer holds off new readers (no starvation)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self, refuse: Callable[[], str | None] | None = None) -> Iterator[None]:
        """``refuse``: checked before waiting; a message from it is a 409 instead of a wait
        (a waiting writer would hold off every reader meanwhile)."""
        with self._cond:
            problem = refuse() if refuse is not None else None
            if problem:
                raise RegistryError(409, problem)
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class _Entry:
    lock: RWLock = field(default_factory=RWLock)
    index: PlaidIndex | None = None  # opened lazily; None also while created but empty
    retraining: bool = False  # a requested retrain runs under the read lock: writes are refused meanwhile

    def busy(self) -> str | None:
        return "the index is being retrained; retry when that finishes" if self.retraining else None

    def writing(self):
        """The write lock, refused (409) while a retrain runs rather than waited for."""
        return self.lock.write(refuse=self.busy)


@dataclass
class SearchResult:
    hits: list  # [Hit]
    texts: list[str | None]
    dim: int
    doc_maxlen: int | None


def check_documents(ids: list[str], texts: list[str]) -> None:
    """What PlaidIndex would reject anyway, caught before any encoding or writing."""
    seen: set[str] = set()
    dup = [i for i in ids if i in seen or seen.add(i)]
    if dup:
        raise RegistryError(422, f"duplicate document ids in one request: {sorted(set(dup))[:5]}")
    for i, (doc_id, text) in enumerate(zip(ids, texts)):
        if not doc_id.strip():
            raise RegistryError(422, f"documents[{i}].id is blank")
        if not text.strip():  # encoded as markers only, it would match every query a little
            raise RegistryError(422, f"documents[{i}].text is blank")
        problem = id_problem(doc_id)
        if problem:
            raise RegistryError(422, f"documents[{i}].id {problem}, got {doc_id!r}")


def check_served(runner: ModelRunner, name: str, model: dict, dim: int) -> None:
    """An index this server can search and add to: built by the served model (as far as it
    records one), at a dim that model makes. Either backend's indexes."""
    reason = model_mismatch(model, runner.model, runner.signatures, paths=False)  # folders by name
    if reason:
        raise RegistryError(409, f"index {name!r} cannot be searched or added to by the served model "
                                 f"{runner.name!r}: {reason}")
    if dim not in runner.dims:
        raise RegistryError(409, f"index {name!r} holds {dim}-d vectors; the served model makes {runner.dims}")


def _usable(check) -> dict:
    """``searchable`` / ``problem`` of an index, from the check its searches would run."""
    try:
        check()
    except RegistryError as exc:
        return {"searchable": False, "problem": exc.message}
    return {"searchable": True, "problem": None}


class IndexRegistry:
    def __init__(self, root: str | Path, runner: ModelRunner, retrain_below_tokens: int = RETRAIN_BELOW_TOKENS):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.runner = runner
        self.retrain_below_tokens = retrain_below_tokens
        self._entries: dict[str, _Entry] = {}
        self._guard = threading.Lock()

    # -- names and folders -------------------------------------------------------------------

    def folder(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RegistryError(422, f"invalid index name {name!r}: use letters, digits, '.', '_' and '-', "
                                     "starting with a letter or digit, at most 64 characters")
        path = self.root / name
        if path.resolve().parent != self.root.resolve():  # e.g. a symlink planted in the root
            raise RegistryError(422, f"index name {name!r} does not stay inside the index root")
        return path

    def _entry(self, name: str, must_exist: bool = True) -> _Entry:
        """The lock holder of an index; requests for names that were never indexes get a 404
        here, so random names cannot grow this table."""
        with self._guard:
            entry = self._entries.get(name)
            if entry is None:
                if must_exist and not self._exists(self.folder(name)):
                    raise RegistryError(404, f"no index named {name!r}")
                entry = self._entries[name] = _Entry()
            return entry

    @staticmethod
    def _exists(folder: Path) -> bool:
        return (folder / MANIFEST).exists() or (folder / SERVER_META).exists()

    @staticmethod
    def _meta(folder: Path) -> dict | None:
        try:
            return read_server_meta(folder)
        except IndexStoreError as exc:
            raise RegistryError(409, str(exc)) from exc

    #: a folder that cannot be opened is a damaged index of ours: listed, with its problem
    lists_damaged = True

    def public(self, message: str) -> str:
        """A message as a client sees it: index folders by their name, not the server's paths."""
        for root in {str(self.root), str(self.root.resolve())}:
            message = message.replace(root + os.sep, "")
        return message

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _NAME.fullmatch(p.name) and self._exists(p))

    # -- opening -----------------------------------------------------------------------------

    def _current(self, name: str, entry: _Entry) -> PlaidIndex | None:
        """The index as last committed (None: created, no documents yet). Call under a lock."""
        folder = self.folder(name)
        try:
            if not (folder / MANIFEST).exists():
                if (folder / SERVER_META).exists():
                    return None
                raise RegistryError(404, f"no index named {name!r}")
            idx = entry.index
            if idx is not None and idx.root == folder:
                disk = read_manifest(folder)
                if (disk["generation"], disk["codec"]) == (idx.manifest["generation"], idx.manifest["codec"]):
                    return idx
            idx = PlaidIndex.open(folder)  # a new object: readers of the old one are not disturbed
        except IndexStoreError as exc:
            raise RegistryError(409, f"index {name!r} cannot be opened: {exc}") from exc
        entry.index = idx
        return idx

    def _recorded(self, name: str, idx: PlaidIndex | None) -> dict:
        """dim, nbits, model record, doc_maxlen of an index, checked against the served model."""
        folder = self.folder(name)
        meta = self._meta(folder) or {}
        if idx is not None:
            model = idx.manifest.get("model") or {}
            rec = {"dim": idx.dim, "nbits": idx.codec.nbits, "keep_vectors": bool(idx.manifest.get("keep_vectors"))}
        else:
            model = meta.get("model") or {}
            rec = {"dim": meta["dim"], "nbits": meta["nbits"], "keep_vectors": meta.get("keep_vectors", False)}
        check_served(self.runner, name, model, rec["dim"])
        return {**rec, "model": model, "doc_maxlen": model.get("doc_maxlen"), "meta": meta}

    # -- writing -----------------------------------------------------------------------------

    def create(self, name: str, dim: int | None, nbits: int | None, keep_vectors: bool | None,
               ids: list[str], texts: list[str]) -> dict:
        """None: the default, 2-bit residuals without kept vectors."""
        nbits, keep_vectors = 2 if nbits is None else nbits, bool(keep_vectors)
        folder = self.folder(name)
        dim = self.runner.check_dim(dim, "dim")
        check_documents(ids, texts)
        entry = self._entry(name, must_exist=False)
        with entry.writing():
            if self._exists(folder):
                raise RegistryError(409, f"an index named {name!r} already exists")
            if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
                kind = "folder" if folder.is_dir() else "file"
                raise RegistryError(409, f"{name!r} is taken by a {kind} that is not an index")
            vectors = self.runner.encode(texts, is_query=False, dim=dim) if ids else []
            model = model_record(self.runner.model, self.runner.name_or_path, dim, None)
            meta = {"dim": dim, "nbits": nbits, "keep_vectors": keep_vectors, "model": model,
                    "created": time.time(), "trained_tokens": 0}
            folder.mkdir(parents=True, exist_ok=True)
            try:
                _write_json(folder / SERVER_META, meta)
                if ids:
                    self._build(entry, folder, meta, ids, vectors, texts)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)  # a create either happens whole or not at all
                entry.index = None
                raise
        return {**self.stats(name), "truncated": self.runner.count_cut(texts)}

    def _build(self, entry: _Entry, folder: Path, meta: dict, ids, vectors, texts) -> PlaidIndex:
        """An index's first build (over what a killed first build left, never over a committed one)."""
        try:
            idx = PlaidIndex.build(folder, ids, vectors, nbits=meta["nbits"], keep_vectors=bool(meta.get("keep_vectors")),
                                   texts=texts, model=meta.get("model"), over_interrupted=True)
        except IndexStoreError as exc:
            raise RegistryError(409, str(exc)) from exc
        except ValueError as exc:
            raise RegistryError(422, str(exc)) from exc
        self._built(entry, folder, meta, idx)
        return idx

    @staticmethod
    def _built(entry: _Entry, folder: Path, meta: dict, idx: PlaidIndex) -> None:
        """Serve a newly built codec and note in SERVER.json the tokens it was trained on."""
        meta["trained_tokens"] = idx.manifest["trained_tokens"]
        _write_json(folder / SERVER_META, meta)
        entry.index = idx

    def add(self, name: str, ids: list[str], texts: list[str], replace: bool = False) -> dict:
        check_documents(ids, texts)
        entry = self._entry(name)
        with entry.lock.read():
            idx = self._current(name, entry)
            rec = self._recorded(name, idx)
            self._refuse_present(idx, ids, replace)
        vectors = self._doc_encoder(rec)(texts)
        retrained = False
        with entry.writing():
            idx = self._current(name, entry)
            rec = self._recorded(name, idx)
            if vectors and vectors[0].shape[1] != rec["dim"]:
                raise RegistryError(409, f"index {name!r} changed while the documents were encoded; retry")
            folder = self.folder(name)
            replaced = 0
            if idx is None:  # the first documents of an empty index: the codec is trained on them
                self._build(entry, folder, rec["meta"], ids, vectors, texts)
                retrained = True
            else:
                self._refuse_present(idx, ids, replace)
                replaced = sum(i in idx for i in ids)
                try:
                    idx.add(ids, vectors, replace=replace, texts=texts)
                except IndexStoreError as exc:
                    raise RegistryError(409, str(exc)) from exc
                except ValueError as exc:
                    raise RegistryError(422, str(exc)) from exc
                retrained = self._maybe_retrain(entry, folder, idx, rec)
            documents = len(entry.index)
        return {"index": name, "documents": documents, "added": len(ids), "replaced": replaced,
                "retrained": retrained, "truncated": self.runner.count_cut(texts, rec["doc_maxlen"])}

    @staticmethod
    def _refuse_present(idx: PlaidIndex | None, ids: list[str], replace: bool) -> None:
        present = [] if idx is None or replace else [i for i in ids if i in idx]
        if present:
            raise RegistryError(409, f"{len(present)} id(s) already in the index, e.g. {present[:5]}; "
                                     "delete them first or send \"replace\": true")

    def _maybe_retrain(self, entry: _Entry, folder: Path, idx: PlaidIndex, rec: dict) -> bool:
        """Refit a small index's codec once it holds over twice the tokens it was trained on
        (from kept vectors, else re-encoded texts). The add is committed already: a retrain
        that cannot happen (another writer committed, nothing to retrain from) waits for a
        later add instead of failing this one."""
        meta = rec["meta"]
        # the manifest's count is the codec's own (a CLI retrain updates it); SERVER.json's for older indexes
        trained = idx.manifest.get("trained_tokens", meta.get("trained_tokens", 0))
        if not meta or trained >= self.retrain_below_tokens or idx.live_tokens() <= 2 * trained:
            return False
        try:
            new = idx.retrain(self._doc_encoder(rec))
        except (IndexStoreError, ValueError, OSError):
            return False
        self._built(entry, folder, meta, new)
        return True

    def delete(self, name: str, ids: list[str], missing_ok: bool = False) -> dict:
        entry = self._entry(name)
        with entry.writing():
            idx = self._current(name, entry)
            if idx is None:
                if not missing_ok:
                    raise RegistryError(404, f"{len(ids)} id(s) not in the index (it is empty), e.g. {ids[:5]}")
                return {"index": name, "documents": 0, "deleted": 0}
            try:
                n = idx.delete(ids, missing_ok=missing_ok)
            except KeyError as exc:
                raise RegistryError(404, str(exc.args[0])) from exc
            except IndexStoreError as exc:
                raise RegistryError(409, str(exc)) from exc
            return {"index": name, "documents": len(idx), "deleted": n}

    def compact(self, name: str, retrain: bool = False) -> dict:
        entry = self._entry(name)
        if retrain:
            self._retrain(name, entry)
            return self.stats(name)
        with entry.writing():
            idx = self._current(name, entry)
            if idx is not None:
                try:
                    idx.compact()
                except IndexStoreError as exc:
                    raise RegistryError(409, str(exc)) from exc
        return self.stats(name)

    def _retrain(self, name: str, entry: _Entry) -> None:
        """Refit the codec to the whole collection on request (an index past the automatic
        retrain's size). Under the read lock: searches go on over the old index, whose files
        stay readable until the rebuild commits; this server's writes to the index are refused
        meanwhile (a waiting writer would hold off its searches), and the encoding takes the
        model a batch at a time (other indexes' queries and embeddings interleave). One commit,
        refused if another process committed meanwhile."""
        with entry.writing():  # no write in flight; later ones are refused until the flag drops
            entry.retraining = True
        try:
            with entry.lock.read():
                idx = self._current(name, entry)
                if idx is None or not len(idx):
                    raise RegistryError(409, f"index {name!r} holds no documents to retrain on")
                rec = self._recorded(name, idx)
                try:
                    new = idx.retrain(self._doc_encoder(rec))
                except IndexStoreError as exc:
                    raise RegistryError(409, str(exc)) from exc
                except ValueError as exc:
                    raise RegistryError(422, str(exc)) from exc
            with entry.lock.write():
                folder = self.folder(name)
                try:
                    disk = read_manifest(folder)
                except IndexStoreError:
                    return  # (cannot happen while writes are refused; a drop by another process)
                if (disk["generation"], disk["codec"]) != (new.manifest["generation"], new.manifest["codec"]):
                    return  # another process committed since: the next read opens that
                meta = self._meta(folder)
                if meta:
                    self._built(entry, folder, meta, new)
                else:  # an index the CLI built: no SERVER.json to note the count in
                    entry.index = new
        finally:
            entry.retraining = False

    def _doc_encoder(self, rec: dict):
        """Documents' vectors as this index's writes make them (its dim and doc_maxlen); the
        runner takes the model a slice at a time, so a retrain's parts do not hold it for minutes."""
        return lambda texts: self.runner.encode(texts, is_query=False, dim=rec["dim"], doc_maxlen=rec["doc_maxlen"])

    def drop(self, name: str) -> None:
        folder = self.folder(name)
        entry = self._entry(name)
        with entry.writing():
            if not self._exists(folder):
                raise RegistryError(404, f"no index named {name!r}")
            try:
                with WriterLock(folder):  # not while another process writes it
                    shutil.rmtree(folder)
            except IndexStoreError as exc:
                raise RegistryError(409, str(exc)) from exc
            entry.index = None

    # -- reading -----------------------------------------------------------------------------

    def stats(self, name: str) -> dict:
        entry = self._entry(name)
        with entry.lock.read():
            idx = self._current(name, entry)
            meta = self._meta(self.folder(name)) or {}
            usable = _usable(lambda: self._recorded(name, idx))
            usable["problem"] = usable["problem"] and self.public(usable["problem"])
            if idx is None:
                return {"name": name, "documents": 0, "dim": meta["dim"], "nbits": meta["nbits"], "built": False,
                        "keeps_vectors": meta.get("keep_vectors", False),
                        "model": identity.shown(meta.get("model"), paths=False), **usable}
            return {"name": name, **idx.stats(), "model": identity.shown(idx.manifest.get("model"), paths=False),
                    "built": True, **usable}

    def prepare_search(self, name: str) -> tuple[int, int | None]:
        """(dim, doc_maxlen) to encode a query for this index with."""
        entry = self._entry(name)
        with entry.lock.read():
            rec = self._recorded(name, self._current(name, entry))
        return rec["dim"], rec["doc_maxlen"]

    def search(self, name: str, query_vectors, k: int, filter_ids: list[str] | None = None,
               thorough: bool = False) -> SearchResult:
        entry = self._entry(name)
        with entry.lock.read():
            idx = self._current(name, entry)
            rec = self._recorded(name, idx)
            if idx is None or len(idx) == 0:
                return SearchResult([], [], rec["dim"], rec["doc_maxlen"])
            if query_vectors.shape[-1] != idx.dim:
                raise RegistryError(409, f"index {name!r} changed while the query was encoded; retry")
            try:
                hits = idx.search(query_vectors, k=k, filter_ids=filter_ids,
                                  settings=SearchSettings.for_k(k, thorough=thorough))
                texts = idx.documents(h.id for h in hits)
            except ValueError as exc:
                raise RegistryError(422, str(exc)) from exc
            except IndexStoreError as exc:
                raise RegistryError(409, str(exc)) from exc
            return SearchResult(hits, texts, rec["dim"], rec["doc_maxlen"])
