"""The server's named indexes kept as Qdrant collections (``serve --qdrant-url``), so the same
HTTP API and search page front a collection sharded over a cluster.

Same verbs and answers as :class:`~polylate.server.indexes.IndexRegistry`; what differs is
where the guarantees come from. Qdrant orders and persists writes itself (its write-ahead
log, ``wait=True``), so there are no folder locks; there is no codec to train or retrain
(vectors are stored as float16: ``nbits`` is 16, ``retrained`` always false) and nothing to
compact (Qdrant's optimizer merges segments in the background). Index ``name`` is the
collection ``<prefix><name>``: the server sees only its own collections in a shared cluster.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext

from polylate.model import identity
from polylate.model.identity import model_record
from polylate.server.indexes import _NAME, RegistryError, SearchResult, _usable, check_documents, check_served
from polylate.server.runner import ModelRunner

#: candidates the pooled HNSW stage hands to exact MaxSim in a default (not thorough) search:
#: benchmarks/qdrant_backend.py measured 99.5% of the exact top 10 at 300
PREFETCH = 300


class QdrantRegistry:
    def __init__(self, client, runner: ModelRunner, prefix: str = "polylate-", local: bool = False):
        self.client, self.runner, self.prefix = client, runner, prefix
        # the embedded local mode is not made for concurrent requests; a server cluster is
        self._lock = threading.Lock() if local else nullcontext()

    @contextmanager
    def _serial(self):
        """One Qdrant conversation: serialised in local mode, and whatever goes wrong inside that
        is not already a RegistryError (a refused connection, a timeout, a node answering 5xx)
        becomes a 503 that names Qdrant, not a bare 500."""
        with self._lock:
            try:
                yield
            except RegistryError:
                raise
            except Exception as exc:
                raise RegistryError(503, f"Qdrant could not be used: {type(exc).__name__}: {exc}") from exc

    def _collection(self, name: str) -> str:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RegistryError(422, f"invalid index name {name!r}: use letters, digits, '.', '_' and '-', "
                                     "starting with a letter or digit, at most 64 characters")
        return self.prefix + name

    def _open(self, name: str):
        from polylate.backends.qdrant import QdrantIndex

        try:
            return QdrantIndex(self.client, self._collection(name))
        except KeyError:
            raise RegistryError(404, f"no index named {name!r}") from None
        except ValueError as exc:
            raise RegistryError(409, f"index {name!r}: {exc}") from exc

    def _recorded(self, name: str, idx) -> dict:
        """The model record of a collection, checked against the served model."""
        if not idx.model:  # made without polylate's record (the Python API's model=None)
            raise RegistryError(409, f"index {name!r} does not record the model that encoded it, so this server "
                                     f"cannot tell it is {self.runner.name!r}; re-create it through the server or "
                                     "polylate qdrant add")
        check_served(self.runner, name, idx.model, idx.dim)
        return idx.model

    def names(self) -> list[str]:
        with self._serial():
            found = [c.name for c in self.client.get_collections().collections]
        return sorted(c[len(self.prefix):] for c in found
                      if c.startswith(self.prefix) and _NAME.fullmatch(c[len(self.prefix):]))

    # -- writing -----------------------------------------------------------------------------

    def create(self, name: str, dim: int | None, nbits: int | None, keep_vectors: bool | None,
               ids: list[str], texts: list[str]) -> dict:
        """Qdrant keeps float16 vectors: ``nbits`` (None: not asked for) and ``keep_vectors``
        false are refused, so a caller asking for 2-bit storage is told, not ignored."""
        from polylate.backends.qdrant import QdrantIndex

        if nbits is not None or keep_vectors is False:
            raise RegistryError(422, "indexes on Qdrant store float16 vectors: omit " + (
                "nbits" if nbits is not None else "keep_vectors false") + " (it applies to PLAID indexes)")

        collection = self._collection(name)
        dim = self.runner.check_dim(dim, "dim")
        check_documents(ids, texts)
        with self._serial():
            if self.client.collection_exists(collection):  # before the encoding, not after
                raise RegistryError(409, f"an index named {name!r} already exists")
        vectors = self.runner.encode(texts, is_query=False, dim=dim) if ids else []
        model = model_record(self.runner.model, self.runner.name_or_path, dim, None)
        with self._serial():
            if self.client.collection_exists(collection):
                raise RegistryError(409, f"an index named {name!r} already exists")
            try:
                idx = QdrantIndex.create(self.client, collection, dim, model=model)
            except Exception as exc:
                if self.client.collection_exists(collection):  # another server made it since the check
                    raise RegistryError(409, f"an index named {name!r} already exists") from exc
                raise  # Qdrant itself failed: a 503 from _serial
            try:
                if ids:
                    idx.add(ids, vectors, texts=texts)
            except BaseException:
                self.client.delete_collection(collection)  # a create happens whole or not at all
                raise
        return {**self.stats(name), "truncated": self.runner.count_cut(texts)}

    def add(self, name: str, ids: list[str], texts: list[str], replace: bool = False) -> dict:
        check_documents(ids, texts)
        with self._serial():
            idx = self._open(name)
            model = self._recorded(name, idx)
            present = idx.present(ids)
        if present and not replace:
            raise RegistryError(409, f"{len(present)} id(s) already in the index, e.g. {present[:5]}; "
                                     "delete them first or send \"replace\": true")
        vectors = self.runner.encode(texts, is_query=False, dim=idx.dim, doc_maxlen=model.get("doc_maxlen"))
        with self._serial():
            if not self.client.collection_exists(idx.collection):  # dropped while the texts were encoded
                raise RegistryError(404, f"no index named {name!r}")
            try:
                replaced = idx.add(ids, vectors, texts=texts, replace=replace)
            except ValueError as exc:  # written, or re-created, by another client meanwhile
                raise RegistryError(409, f"index {name!r} changed while the documents were encoded: {exc}") from exc
            documents = len(idx)
        return {"index": name, "documents": documents, "added": len(ids), "replaced": replaced,
                "retrained": False, "truncated": self.runner.count_cut(texts, model.get("doc_maxlen"))}

    def delete(self, name: str, ids: list[str], missing_ok: bool = False) -> dict:
        with self._serial():
            idx = self._open(name)
            try:
                n = idx.delete(ids, missing_ok=missing_ok)
            except KeyError as exc:
                raise RegistryError(404, str(exc.args[0])) from exc
            return {"index": name, "documents": len(idx), "deleted": n}

    def compact(self, name: str, retrain: bool = False) -> dict:
        if retrain:
            raise RegistryError(422, f"index {name!r} is a Qdrant collection: its vectors are kept as float16, "
                                     "with no centroids to retrain")
        return self.stats(name)  # Qdrant's optimizer merges segments and drops deletions itself

    def drop(self, name: str) -> None:
        collection = self._collection(name)
        with self._serial():
            if not self.client.collection_exists(collection):
                raise RegistryError(404, f"no index named {name!r}")
            self._open(name)  # only polylate collections
            self.client.delete_collection(collection)

    # -- reading -----------------------------------------------------------------------------

    def stats(self, name: str) -> dict:
        with self._serial():
            idx = self._open(name)
            s = idx.stats()
        return {"name": name, "documents": s["documents"], "dim": s["dim"], "nbits": 16, "built": True,
                "keeps_vectors": True, "model": identity.shown(idx.model, paths=False), "backend": "qdrant", "collection": s["collection"],
                "shards": s["shards"], "replication_factor": s["replication_factor"],
                **_usable(lambda: self._recorded(name, idx))}

    def prepare_search(self, name: str) -> tuple[int, int | None]:
        with self._serial():
            idx = self._open(name)
            model = self._recorded(name, idx)
        return idx.dim, model.get("doc_maxlen")

    def search(self, name: str, query_vectors, k: int, filter_ids: list[str] | None = None,
               thorough: bool = False) -> SearchResult:
        with self._serial():
            idx = self._open(name)
            model = self._recorded(name, idx)
            if query_vectors.shape[-1] != idx.dim:
                raise RegistryError(409, f"index {name!r} changed while the query was encoded; retry")
            # exact MaxSim over every document when asked, or when that is as cheap as the first stage
            few = self.client.count(idx.collection, exact=False).count <= max(PREFETCH, 4 * k)
            prefetch = None if thorough or few or not idx.pooled else max(PREFETCH, 4 * k)
            try:
                hits = idx.search(query_vectors, k=k, filter_ids=filter_ids, prefetch=prefetch)
            except (ValueError, TypeError) as exc:
                raise RegistryError(422, str(exc)) from exc
            texts = idx.documents([h.id for h in hits])
        return SearchResult(hits, texts, idx.dim, model.get("doc_maxlen"))
