"""The FastAPI application: ``create_app(settings)``.

Handlers stay on the event loop only to validate; encoding, searching and writing run in
worker threads (``anyio.to_thread``), so one slow encode never stalls health checks or the
search page.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import warnings
from pathlib import Path
from typing import Annotated

import anyio
import numpy as np
import torch
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from polylate import __version__
from polylate.model.colbert import ColBERT
from polylate.server.embedding_types import format_embeddings
from polylate.server.indexes import IndexRegistry, RegistryError
from polylate.server.limits import MAX_DELETE_IDS, BodySizeLimit, check_batch, check_texts
from polylate.server.runner import ModelRunner
from polylate.server.schemas import (
    INDEX_NAME_PATTERN,
    AddDocumentsRequest,
    CompactRequest,
    CreateIndexRequest,
    DeleteDocumentsRequest,
    ErrorResponse,
    Health,
    IndexList,
    IndexStats,
    MultiVectorRequest,
    MultiVectorResponse,
    RerankRequest,
    RerankResponse,
    SearchRequest,
    SearchResponse,
    WriteResult,
)
from polylate.server.security import ApiKeys
from polylate.server.settings import ServerSettings

STATIC = Path(__file__).with_name("static")
#: hits explained per search: each one is re-encoded, so explaining k=1000 would be slow
EXPLAIN_MAX_HITS = 20
IndexNameParam = Annotated[str, PathParam(pattern=INDEX_NAME_PATTERN, description="index name")]
_ERRORS = {
    401: "missing or invalid API key",
    404: "no such index, document or model",
    409: "conflicts with the index's state (exists already, ids present, other model, busy writer)",
    413: "request body, batch or text over the server's limits",
}


def errors(*codes: int) -> dict:
    """OpenAPI entries for the 4xx answers a route gives besides FastAPI's 422."""
    return {c: {"model": ErrorResponse, "description": _ERRORS[c]} for c in codes}


DESCRIPTION = """Multilingual late-interaction (ColBERT) retrieval.

* `/v1/embeddings` (Jina's current route for jina-colbert-v2), `/v1/multi-vector` (its earlier
  one) and `/v1/rerank` take the same requests as Jina AI's API.
* `/v1/indexes/...` manage named indexes and search them: PLAID folders on this server, or
  Qdrant collections when it runs with `--qdrant-url`.
* With API keys configured, write endpoints need `Authorization: Bearer <key>`
  (and every endpoint but `/health` and the search page when reads are protected).
"""


def _vectors_json(vectors: list[np.ndarray], model: str, tokens: int, embedding_type="float") -> bytes:
    """The multi-vector body, serialised directly: FastAPI's generic encoder would walk every
    float of a [n, 128] matrix through Python twice."""
    data = [{"object": "embeddings", "index": i, "embeddings": format_embeddings(v, embedding_type)}
            for i, v in enumerate(vectors)]
    body = {"model": model, "object": "list", "data": data, "usage": {"total_tokens": tokens}}
    return json.dumps(body, separators=(",", ":")).encode()


def _warm_up() -> None:
    from polylate.index.plaid import warm_up

    try:
        warm_up()
    except Exception as exc:  # only a head start: a search compiles what this did not
        warnings.warn(f"search kernels not compiled ahead: {exc}", stacklevel=1)


def create_app(settings: ServerSettings | None = None, model: ColBERT | None = None) -> FastAPI:
    """The server for `settings`; `model` skips loading ``settings.model`` (it must be that model)."""
    from fastapi_offline import FastAPIOffline

    settings = settings or ServerSettings.from_env()
    if model is None:
        from polylate.model.checkpoints import load_model

        model = load_model(settings.model, device=settings.device,
                           dtype=getattr(torch, settings.dtype) if settings.dtype else None)
    model.eval()
    runner = ModelRunner(model, settings.model, settings.model_aliases)
    registry = _registry(settings, runner)
    keys = ApiKeys(settings.api_keys, settings.protect_reads)
    read = [Depends(keys.read_dependency())]
    write = [Depends(keys.write_dependency())]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # the search kernels compile in the background while the first requests come in
        warming = threading.Thread(target=_warm_up, name="polylate-warm-up", daemon=True)
        if settings.warm_up and not (settings.qdrant_url or settings.qdrant_path):  # Qdrant searches itself
            warming.start()
        yield
        if warming.is_alive():  # its throwaway index is deleted when it ends
            await anyio.to_thread.run_sync(warming.join, 60)

    app = FastAPIOffline(title="polylate", version=__version__, description=DESCRIPTION,
                         static_url="/static-docs", lifespan=lifespan)
    app.state.settings, app.state.runner, app.state.registry = settings, runner, registry
    public = getattr(registry, "public", lambda message: message)  # messages without the server's paths
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)

    @app.exception_handler(RegistryError)
    async def _registry_error(request, exc: RegistryError):
        return JSONResponse({"detail": public(exc.message)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request, exc: RequestValidationError):
        # a JSON body sent as a form (curl -d's default type) reached the model as a string
        ctype = request.headers.get("content-type", "")
        media = ctype.split(";")[0].strip().lower()
        if media and media != "application/json" and not media.endswith("+json") and any(
                tuple(e.get("loc", ())) == ("body",) for e in exc.errors()):
            return JSONResponse({"detail": "the request body must be JSON, sent with Content-Type: application/json "
                                           f"(got {ctype[:100]!r})"}, status_code=415)
        # FastAPI's own handler echoes the bad input as UTF-8, which a lone surrogate ("\ud800"
        # in an id) cannot be: it failed with a 500 and a dropped connection. ASCII JSON escapes it.
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        # FastAPI answers a body it cannot parse with "There was an error parsing the body";
        # name the cause where it is known
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):
            return JSONResponse({"detail": f"the request body is not UTF-8 JSON: byte 0x{cause.object[cause.start]:02x} "
                                           f"at offset {cause.start} ({cause.reason})"}, status_code=400)
        if exc.status_code == 400 and isinstance(cause, RecursionError):
            return JSONResponse({"detail": "the request body's JSON is nested too deeply"}, status_code=400)
        return await http_exception_handler(request, exc)

    async def in_thread(fn, *args):
        return await anyio.to_thread.run_sync(lambda: fn(*args))

    def texts_ok(texts: list[str], what: str, is_query: bool = False, also: int = 0) -> int:
        """Count, size and token checks; ``also``: tokens the same request encodes elsewhere
        (rerank's query), so the limit holds for the request's total. Returns the tokens."""
        check_batch(len(texts), settings.max_batch, what)
        check_texts(texts, settings.max_text_chars, what, single=what == "query")
        # the encoder's work is tokens, not characters or texts: 128 texts of 16k characters
        # are ~10 minutes of a 2-core CPU, holding the model from every other request
        tokens = runner.count_tokens(texts, is_query) + also
        if tokens > settings.max_request_tokens:
            raise HTTPException(413, f"the request's texts come to {tokens} tokens; this server encodes at most "
                                     f"{settings.max_request_tokens} per request (max_request_tokens)")
        return tokens

    # -- health, page ------------------------------------------------------------------------

    @app.get("/health", response_model=Health, tags=["meta"])
    async def health() -> Health:
        cfg = model.config
        return Health(model=runner.name, dims=runner.dims, default_dim=runner.default_dim,
                      query_maxlen=cfg.query_maxlen, doc_maxlen=cfg.doc_maxlen, version=__version__,
                      auth=keys.enabled)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/index.html", include_in_schema=False)
    async def page_file(request: Request) -> RedirectResponse:
        """The page's relative links resolve from /, not from /static/ (where they 404); relative,
        so it holds behind a proxy's path prefix."""
        return RedirectResponse("../" + (f"?{request.url.query}" if request.url.query else ""))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- Jina-compatible ---------------------------------------------------------------------

    async def multi_vector(req: MultiVectorRequest) -> Response:
        runner.check_model(req.model)
        texts = req.texts()
        is_query = req.input_type == "query"
        tokens = texts_ok(texts, "input", is_query)
        dim = runner.check_dim(req.dimensions)

        def work() -> bytes:
            vectors = runner.encode(texts, is_query=is_query, dim=dim)
            return _vectors_json(vectors, runner.answer_name(req.model), tokens, req.embedding_type)

        return Response(await in_thread(work), media_type="application/json")

    for route, summary in (("/v1/embeddings", "Token vectors for queries or documents (Jina's route for "
                                              "jina-colbert-v2)"),
                           ("/v1/multi-vector", "Token vectors for queries or documents (Jina's earlier route)")):
        app.post(route, response_model=MultiVectorResponse, dependencies=read, tags=["encode"],
                 responses=errors(401, 404, 413), summary=summary)(multi_vector)

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_unset=True, dependencies=read,
              tags=["encode"],
              responses=errors(401, 404, 413),
              summary="Order documents by MaxSim against a query (Jina-compatible)")
    async def rerank(req: RerankRequest) -> RerankResponse:
        runner.check_model(req.model)
        query, docs = req.query_text(), req.document_texts()
        tokens = texts_ok(docs, "documents", also=texts_ok([query], "query", is_query=True))
        ranked = await in_thread(runner.rerank, query, docs, req.top_n)
        # a document left out (return_documents false) is unset, so the answer omits it as Jina's does
        results = [{"index": r["index"], "relevance_score": r["score"],
                    **({"document": req.returned_document(r["index"])} if req.return_documents else {})}
                   for r in ranked]
        return RerankResponse(model=runner.answer_name(req.model), results=results, usage={"total_tokens": tokens})

    # -- indexes -----------------------------------------------------------------------------

    @app.get("/v1/indexes", response_model=IndexList, dependencies=read, tags=["indexes"], responses=errors(401))
    async def list_indexes() -> IndexList:
        def work():
            out = []
            for name in registry.names():
                try:
                    out.append(registry.stats(name))
                except RegistryError as exc:
                    if exc.status == 404 or not getattr(registry, "lists_damaged", False):
                        continue  # dropped meanwhile, or (Qdrant) a collection that may be someone else's
                    # damaged (a corrupt manifest, a missing segment): listed, with what is wrong
                    out.append({"name": name, "documents": 0, "dim": None, "nbits": None, "built": False,
                                "searchable": False, "problem": public(exc.message)})
            return out

        return IndexList(indexes=await in_thread(work))

    @app.post("/v1/indexes", response_model=IndexStats, status_code=201, dependencies=write, tags=["indexes"],
              responses=errors(401, 409, 413),
              summary="Create an index (empty, or with its first documents)")
    async def create_index(req: CreateIndexRequest) -> dict:
        ids = [d.id for d in req.documents]
        texts = [d.text for d in req.documents]
        texts_ok(texts, "documents")
        stated = req.model_fields_set  # (None: not asked for, the backend's own storage)
        return await in_thread(registry.create, req.name, req.dim, req.nbits if "nbits" in stated else None,
                               req.keep_vectors if "keep_vectors" in stated else None, ids, texts)

    @app.get("/v1/indexes/{name}", response_model=IndexStats, dependencies=read, tags=["indexes"],
             responses=errors(401, 404, 409))
    async def index_stats(name: IndexNameParam) -> dict:
        return await in_thread(registry.stats, name)

    @app.delete("/v1/indexes/{name}", status_code=204, dependencies=write, tags=["indexes"],
                responses=errors(401, 404, 409),
                summary="Delete an index and all its files")
    async def drop_index(name: IndexNameParam) -> Response:
        await in_thread(registry.drop, name)
        return Response(status_code=204)

    @app.post("/v1/indexes/{name}/documents", response_model=WriteResult, dependencies=write, tags=["indexes"],
              responses=errors(401, 404, 409, 413),
              summary="Add (or replace) documents; one atomic commit")
    async def add_documents(name: IndexNameParam, req: AddDocumentsRequest) -> dict:
        texts = [d.text for d in req.documents]
        texts_ok(texts, "documents")
        return await in_thread(registry.add, name, [d.id for d in req.documents], texts, req.replace)

    @app.post("/v1/indexes/{name}/documents/delete", response_model=WriteResult, dependencies=write,
              responses=errors(401, 404, 409, 413),
              tags=["indexes"], summary="Delete documents by id; one atomic commit")
    async def delete_documents(name: IndexNameParam, req: DeleteDocumentsRequest) -> dict:
        check_batch(len(req.ids), max(settings.max_batch, MAX_DELETE_IDS), "ids", "max_batch, and at least "
                    f"{MAX_DELETE_IDS} ids")
        return await in_thread(registry.delete, name, req.ids, req.missing_ok)

    @app.post("/v1/indexes/{name}/compact", response_model=IndexStats, dependencies=write, tags=["indexes"],
              responses=errors(401, 404, 409),
              summary="Merge segments and drop deleted documents (retrain: also refit the centroids)")
    async def compact_index(name: IndexNameParam, req: CompactRequest | None = None) -> dict:
        return await in_thread(registry.compact, name, bool(req and req.retrain))

    @app.post("/v1/indexes/{name}/search", response_model=SearchResponse, dependencies=read, tags=["indexes"],
              responses=errors(401, 404, 409, 413),
              summary=f"Top-k documents for a text query (explain: the first {EXPLAIN_MAX_HITS} hits)")
    async def search(name: IndexNameParam, req: SearchRequest) -> dict:
        texts_ok([req.query], "query", is_query=True)

        def work():
            start = time.perf_counter()
            dim, doc_maxlen = registry.prepare_search(name)
            q = runner.encode([req.query], is_query=True, dim=dim)[0]
            found = registry.search(name, q, req.k, req.filter_ids, req.thorough)
            hits = [{"rank": r, "id": h.id, "score": round(h.score, 6), "text": t}
                    for r, (h, t) in enumerate(zip(found.hits, found.texts), 1)]
            query_tokens = None
            if req.explain:
                todo = [(h, h["text"]) for h in hits[:EXPLAIN_MAX_HITS] if h["text"] is not None]
                query_tokens, explained = runner.explain(req.query, q, [t for _, t in todo], dim, doc_maxlen)
                for (hit, _), why in zip(todo, explained):
                    hit["explain"] = why
            return {"index": name, "query": req.query, "took_ms": round(1000 * (time.perf_counter() - start), 2),
                    "hits": hits, "query_tokens": query_tokens, "query_truncated": runner.query_cut(req.query)}

        return await in_thread(work)

    return app


def _registry(settings: ServerSettings, runner: ModelRunner):
    """Indexes as folders under ``index_root``, or as collections of a Qdrant server."""
    if not (settings.qdrant_url or settings.qdrant_path):
        return IndexRegistry(settings.index_root, runner)
    from polylate.backends.qdrant import connect
    from polylate.server.qdrant_indexes import QdrantRegistry

    client = connect(settings.qdrant_url or None, path=settings.qdrant_path or None, api_key=settings.qdrant_api_key)
    return QdrantRegistry(client, runner, settings.qdrant_prefix, local=not settings.qdrant_url)


def serve(settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the server with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)

