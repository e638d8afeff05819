"""ColBERT collections in Qdrant, for collections that outgrow one machine.

Qdrant shards and replicates a collection over a cluster and scores multi-vectors with
MaxSim natively, so polylate's token vectors go in as they are: one point per document,
its ``[n_tokens, dim]`` vectors as a ``colbert`` multi-vector (float16, no HNSW graph: a
graph over token vectors costs far more than it saves), and optionally their normalised
mean as a ``pooled`` dense vector with an HNSW graph. A search is then either exact MaxSim
over the collection, or — with ``prefetch=N`` — HNSW on the pooled vector for N candidates,
re-ranked by exact MaxSim on their token vectors inside Qdrant (two-stage retrieval, the
engine's own ``prefetch`` query, one round trip).

The same code talks to a cluster (``url=``), a single server, or Qdrant's embedded local
mode (``path=`` on disk, or ``":memory:"``), which is what the tests run on.

Document ids are strings, as everywhere in polylate; Qdrant wants integers or UUIDs, so a
point's id is the UUID5 of the document id and the document id itself is a payload field
(indexed, for ``filter_ids``).
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from polylate.index.plaid import Hit, _checked_docs, validate_query
from polylate.model import identity

__all__ = ["QdrantIndex", "connect"]

COLBERT = "colbert"
POOLED = "pooled"
DOC_ID = "doc_id"
TEXT = "text"
_NAMESPACE = uuid.UUID("6b1f3d0e-6f1c-5a57-9d1e-706f6c796c61")  # fixed: point ids must not change between runs


def _models():
    try:
        from qdrant_client import models
    except ImportError as exc:
        raise ImportError("the Qdrant backend needs qdrant-client: pip install 'polylate[qdrant]'") from exc
    return models


def connect(url: str | None = None, *, path: str | None = None, api_key: str | None = None, **kwargs):
    """A ``QdrantClient``: a server or cluster at ``url``, else embedded local mode at ``path``
    (a folder; ``":memory:"`` for a throwaway one). The client connects lazily, so this asks for
    the collections once: an unreachable server, a wrong key or a locked folder fails here."""
    _models()
    from qdrant_client import QdrantClient

    if (url is None) == (path is None):
        raise ValueError("give exactly one of url (a Qdrant server or cluster) or path (local mode)")
    if url is not None:
        client = QdrantClient(url=url, api_key=api_key, **kwargs)
    elif path == ":memory:":
        client = QdrantClient(location=":memory:", **kwargs)
    else:
        client = QdrantClient(path=path, **kwargs)
    try:
        client.get_collections()
    except BaseException:
        client.close()
        raise
    return client


def point_id(doc_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, doc_id))


#: token floats per upsert request: ~10 MB of JSON, well under a Qdrant server's 32 MB request limit
#: however long the documents are (a request of 64 documents of 8k tokens would be ~700 MB)
MAX_FLOATS_PER_REQUEST = 1 << 20


def _batches(lengths: Sequence[int], max_docs: int, max_tokens: int) -> list[list[int]]:
    """Consecutive document numbers, at most ``max_docs`` and ``max_tokens`` tokens a batch
    (a longer document goes alone)."""
    out: list[list[int]] = [[]]
    tokens = 0
    for i, n in enumerate(lengths):
        if out[-1] and (len(out[-1]) >= max_docs or tokens + n > max_tokens):
            out.append([])
            tokens = 0
        out[-1].append(i)
        tokens += n
    return [b for b in out if b]


@contextlib.contextmanager
def _local_mode_quiet():
    """Local mode searches exactly and says the re-scoring asked of a quantized collection has
    no effect there; true, and nothing to act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Local mode performs exact", UserWarning)
        yield


def _pooled(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.astype(np.float32).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


class QdrantIndex:
    """A polylate collection in Qdrant, with :class:`~polylate.index.plaid.PlaidIndex`'s verbs:
    ``add`` / ``delete`` / ``search`` / ``documents``, string ids, MaxSim scores."""

    def __init__(self, client, collection: str):
        """Open an existing collection (see :meth:`create`); its layout is checked here."""
        self.client, self.collection = client, collection
        if not client.collection_exists(collection):
            raise KeyError(f"Qdrant has no collection {collection!r}")
        config = client.get_collection(collection).config
        vectors = config.params.vectors
        colbert = vectors.get(COLBERT) if isinstance(vectors, dict) else None
        if colbert is None or colbert.multivector_config is None:
            raise ValueError(f"collection {collection!r} is not a polylate collection: it has no "
                             f"{COLBERT!r} multi-vector")
        self.dim = int(colbert.size)
        self.pooled = POOLED in vectors
        self.quantized = colbert.quantization_config is not None
        #: the model that encoded the documents, as recorded at creation (queries must use it too)
        self.model: dict | None = ((getattr(config, "metadata", None) or {}).get("polylate") or {}).get("model")

    @classmethod
    def create(cls, client, collection: str, dim: int = 128, *, pooled: bool = True, on_disk: bool = True,
               shards: int | None = None, replication_factor: int | None = None,
               scalar_quantization: bool = False, exist_ok: bool = False,
               model: dict | None = None) -> QdrantIndex:
        """A new collection for ``dim``-d token vectors. ``shards`` / ``replication_factor`` spread
        it over a cluster; ``on_disk`` keeps token vectors memory-mapped rather than in RAM;
        ``scalar_quantization`` adds int8 copies of the token vectors, kept in RAM, that MaxSim
        scores first; searches ask Qdrant to re-score the top documents with the float16
        originals, so the scores returned are exact.
        ``model``: recorded with the collection (``{"name_or_path", "name", "dim", "doc_maxlen"}``,
        as ``PlaidIndex`` records it) so searches encode queries with the same model."""
        models = _models()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if client.collection_exists(collection):
            if not exist_ok:
                raise FileExistsError(f"Qdrant already has a collection {collection!r}")
            index = cls(client, collection)
            if index.dim != dim:
                raise ValueError(f"collection {collection!r} holds {index.dim}-d vectors, not {dim}-d")
            return index
        quantization = None
        if scalar_quantization:
            quantization = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
                type=models.ScalarType.INT8, always_ram=True))
        vectors = {COLBERT: models.VectorParams(
            size=dim, distance=models.Distance.DOT, datatype=models.Datatype.FLOAT16, on_disk=on_disk,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            hnsw_config=models.HnswConfigDiff(m=0), quantization_config=quantization)}
        if pooled:
            vectors[POOLED] = models.VectorParams(size=dim, distance=models.Distance.COSINE, on_disk=on_disk)
        extra = {"metadata": {"polylate": {"model": model}}} if model is not None else {}
        client.create_collection(collection, vectors_config=vectors, shard_number=shards,
                                 replication_factor=replication_factor, **extra)
        with warnings.catch_warnings():  # local mode says payload indexes do nothing there; a server uses it
            warnings.filterwarnings("ignore", "Payload indexes have no effect", UserWarning)
            client.create_payload_index(collection, DOC_ID, models.PayloadSchemaType.KEYWORD)
        return cls(client, collection)

    # -- contents ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.client.count(self.collection, exact=True).count

    def stats(self) -> dict:
        info = self.client.get_collection(self.collection)
        params = info.config.params
        return {"collection": self.collection, "documents": len(self), "dim": self.dim, "pooled": self.pooled,
                "shards": params.shard_number, "replication_factor": params.replication_factor,
                "status": str(getattr(info.status, "value", info.status)), "model": identity.shown(self.model)}

    def __contains__(self, doc_id: str) -> bool:
        return bool(self.client.retrieve(self.collection, [point_id(doc_id)], with_payload=False))

    def _retrieve(self, ids: Sequence[str], chunk: int = 1024, **what) -> Iterator:
        """The stored points of ``ids`` (absent ones skipped), a request per ``chunk`` ids."""
        for start in range(0, len(ids), chunk):
            yield from self.client.retrieve(self.collection, [point_id(i) for i in ids[start:start + chunk]], **what)

    def present(self, ids: Sequence[str]) -> list[str]:
        """Which of ``ids`` are stored (in their order)."""
        found = {p.payload[DOC_ID] for p in self._retrieve(ids, with_payload=[DOC_ID])}
        return [i for i in ids if i in found]

    def documents(self, ids: Sequence[str]) -> list[str | None]:
        """The stored texts of ``ids`` (None for a document added without one or not present)."""
        ids = list(ids)
        texts = {p.payload[DOC_ID]: p.payload.get(TEXT) for p in self._retrieve(ids, with_payload=True)}
        return [texts.get(i) for i in ids]

    # -- writing -----------------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors: Sequence[np.ndarray], texts: Sequence[str] | None = None,
            replace: bool = False, batch_size: int = 64) -> int:
        """Upsert documents; returns how many replaced one already stored. Everything is checked
        before anything is written; each batch is durable in Qdrant's write-ahead log when its
        request returns (``wait=True``). A large add takes several requests: if one fails, the
        batches already written are undone (new documents deleted, replaced ones restored from
        copies read first) before the error is raised, so the call changes all or nothing as long
        as Qdrant can still be reached."""
        models = _models()
        ids, vectors = _checked_docs(ids, vectors, self.dim)
        if texts is not None:  # None for a document without one (e.g. imported from an index)
            texts = list(texts)
            if len(texts) != len(ids) or not all(t is None or isinstance(t, str) for t in texts):
                raise ValueError(f"texts must be one string (or None) per document ({len(ids)})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        present = self.present(ids)
        if present and not replace:
            raise ValueError(f"{len(present)} id(s) already in the collection, e.g. {present[:5]}; "
                             "delete them first or pass replace=True")
        batches = _batches([len(v) for v in vectors], batch_size, MAX_FLOATS_PER_REQUEST // self.dim)
        # what a failed multi-request add must put back: the points it is about to overwrite
        saved = self._points(present) if len(batches) > 1 and present else []
        written: list[str] = []
        try:
            for batch in batches:
                points = []
                for i in batch:
                    v = vectors[i].astype(np.float32)
                    named = {COLBERT: v.tolist()}
                    if self.pooled:
                        named[POOLED] = _pooled(v).tolist()
                    payload = {DOC_ID: ids[i]}
                    if texts is not None and texts[i] is not None:
                        payload[TEXT] = texts[i]
                    points.append(models.PointStruct(id=point_id(ids[i]), vector=named, payload=payload))
                self.client.upsert(self.collection, points, wait=True)
                written.extend(ids[i] for i in batch)
        except BaseException:
            if written:
                self._undo(written, set(present), saved)
            raise
        return len(present)

    def _points(self, ids: Sequence[str]) -> list:
        """Stored points with vectors and payload, as they would be written back."""
        models = _models()
        return [models.PointStruct(id=r.id, vector=r.vector, payload=r.payload)
                for r in self._retrieve(ids, 256, with_payload=True, with_vectors=True)]

    def _undo(self, written: list[str], present: set[str], saved: list) -> None:
        """Take back a partly written add: delete what was new, restore what was replaced."""
        models = _models()
        new = [point_id(i) for i in written if i not in present]
        if new:
            self.client.delete(self.collection, models.PointIdsList(points=new), wait=True)
        for start in range(0, len(saved), 16):
            self.client.upsert(self.collection, saved[start:start + 16], wait=True)

    def delete(self, ids: Iterable[str], missing_ok: bool = False) -> int:
        """Delete documents by id (one request); returns how many were deleted."""
        models = _models()
        if isinstance(ids, (str, bytes)):
            raise TypeError("ids must be a collection of ids, not one string")
        ids = list(dict.fromkeys(ids))
        present = self.present(ids)
        missing = sorted(set(ids).difference(present))
        if missing and not missing_ok:
            raise KeyError(f"{len(missing)} id(s) not in the collection, e.g. {missing[:5]}")
        if present:
            self.client.delete(self.collection, models.PointIdsList(points=[point_id(i) for i in present]), wait=True)
        return len(present)

    # -- search ------------------------------------------------------------------------------

    def _request(self, query, k: int, filter_ids, prefetch: int | None):
        models = _models()
        q = validate_query(query, self.dim, k, filter_ids)
        flt = None
        if filter_ids is not None:
            flt = models.Filter(must=[models.FieldCondition(key=DOC_ID, match=models.MatchAny(any=list(filter_ids)))])
        stage1 = None
        if prefetch is not None:
            if not self.pooled:
                raise ValueError(f"collection {self.collection!r} has no pooled vectors to prefetch with "
                                 "(created with pooled=False)")
            if prefetch < k:
                raise ValueError(f"prefetch ({prefetch}) must be at least k ({k})")
            stage1 = models.Prefetch(query=_pooled(q).tolist(), using=POOLED, limit=prefetch, filter=flt)
        exact = models.SearchParams(quantization=models.QuantizationSearchParams(rescore=True)) \
            if self.quantized else None
        return dict(query=q.tolist(), using=COLBERT, limit=k, query_filter=flt, prefetch=stage1,
                    search_params=exact, with_payload=[DOC_ID])

    def search(self, query, k: int = 10, filter_ids: Iterable[str] | None = None,
               prefetch: int | None = None) -> list[Hit]:
        """Top-k documents for one query's token vectors ``[Lq, dim]``, best first, by MaxSim.
        ``prefetch=N``: re-rank only the N nearest documents by pooled vector (HNSW) instead of
        scoring every document; ``filter_ids``: only these documents."""
        with _local_mode_quiet():
            found = self.client.query_points(self.collection, **self._request(query, k, filter_ids, prefetch))
        return [Hit(p.payload[DOC_ID], float(p.score)) for p in found.points]

    def search_batch(self, queries: Sequence, k: int = 10, prefetch: int | None = None) -> list[list[Hit]]:
        """:meth:`search` for many queries in one round trip."""
        models = _models()
        renamed = {"query_filter": "filter", "search_params": "params"}  # QueryRequest's own names
        requests = [models.QueryRequest(**{renamed.get(key, key): value
                                           for key, value in self._request(q, k, None, prefetch).items()})
                    for q in queries]
        if not requests:
            return []
        with _local_mode_quiet():
            answers = self.client.query_batch_points(self.collection, requests)
        return [[Hit(p.payload[DOC_ID], float(p.score)) for p in a.points] for a in answers]
