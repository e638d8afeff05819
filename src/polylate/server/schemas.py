"""Request and response bodies. /v1/multi-vector and /v1/rerank mirror Jina AI's API (same
field names and shapes, so Jina clients work unchanged); the index endpoints are our own."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from polylate.server.embedding_types import EMBEDDING_TYPES

INDEX_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
IndexName = Annotated[str, Field(pattern=INDEX_NAME_PATTERN, description="letters, digits, '.', '_', '-'; "
                                 "starts with a letter or digit; at most 64 characters")]


class TextInput(BaseModel):
    """Jina's object form of an input (its TextDoc): ``{"text": ..., "id": ...}``. Other fields
    are kept (/v1/rerank returns a document object as it came); images are not served."""

    model_config = ConfigDict(extra="allow")
    text: str
    id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_documents_only(cls, value):
        if isinstance(value, dict):
            if "text" not in value and {"image", "url", "bytes"} & set(value):
                raise ValueError("image inputs are not served: this server encodes text ({\"text\": ...})")
            bad = _not_unicode(value)  # kept fields are sent back: they must be writable as UTF-8
            if bad is not None:
                raise ValueError(f"field {bad} is not valid Unicode text (a lone surrogate?)")
        return value


def _not_unicode(value, where: str = "") -> str | None:
    """Where in a JSON value a string cannot become UTF-8 (``""`` for the value itself), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and _not_unicode(key) is not None:
            return f"{where}[{ascii(key)}] (its name)"
        found = _not_unicode(item, f"{where}[{key!r}]" if where else repr(key))
        if found is not None:
            return found
    return None


# TextInput first: an object's own error (no text, an image) leads the 422, not "a valid string"
InputItem = Union[TextInput, str]
EmbeddingType = Literal[EMBEDDING_TYPES]  # the formats embedding_types writes, one list


def _text(item: InputItem) -> str:
    return item if isinstance(item, str) else item.text


# -- Jina-compatible -------------------------------------------------------------------------


def _null_is_default(model: type[BaseModel], data):
    """Jina's API takes an explicit ``null`` for an optional field as "the default"."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if not (v is None and model.model_fields.get(k) is not None
                                                      and not model.model_fields[k].is_required())}
    return data


def _not_blank(texts: list[str], what: str) -> None:
    """A blank text encodes to markers only, which match every query a little: refused, as
    index adds refuse it, rather than scored."""
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise ValueError(f"{what}[{blank[0]}] is blank" + (f" (and {len(blank) - 1} more)" if len(blank) > 1 else "")
                         + ": give each some text")


class MultiVectorRequest(BaseModel):
    model: str | None = Field(None, description="the served model's name, 'default', or a configured alias")
    input: list[InputItem] | TextInput | str = Field(..., description="a text, a {\"text\": ...} object, or a "
                                                     "list of them")
    input_type: Literal["query", "document"] = Field(
        "document", description="query: padded with [MASK] to query_maxlen vectors when the model expands "
                                "queries (Jina, ColBERT); document: one vector per non-punctuation token")
    dimensions: int | None = Field(None, strict=True, description="Matryoshka size: 128, 96 or 64 (the model's sizes)")
    embedding_type: EmbeddingType | list[EmbeddingType] = Field(
        "float", description="float, base64 (one little-endian float32 string per token), binary or ubinary "
                             "(signs packed 8 per byte, signed or unsigned), or a list of them (then "
                             "`embeddings` is an object keyed by type)")

    _nulls = model_validator(mode="before")(classmethod(_null_is_default))

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("input is empty: give at least one text")
        _not_blank([_text(x) for x in value] if isinstance(value, list) else [_text(value)], "input")
        return value

    @field_validator("embedding_type", mode="before")
    @classmethod
    def _known_types(cls, value):
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"embedding_type is an empty list: give at least one of {', '.join(EMBEDDING_TYPES)}")
        for v in values:
            if v not in EMBEDDING_TYPES:
                raise ValueError(f"embedding_type {v!r} is not supported; use {', '.join(EMBEDDING_TYPES)} "
                                 "or a list of them")
        if len(set(values)) != len(values):
            raise ValueError(f"embedding_type lists {values} with a repeat: name each type once")
        return value

    def texts(self) -> list[str]:
        return [_text(x) for x in self.input] if isinstance(self.input, list) else [_text(self.input)]


class MultiVectorItem(BaseModel):
    object: Literal["embeddings"] = "embeddings"
    index: int
    embeddings: list[list[float]] | list[str] | list[list[int]] | dict[EmbeddingType, list[list[float]] | list[str] | list[list[int]]]


class Usage(BaseModel):
    total_tokens: int


class MultiVectorResponse(BaseModel):
    model: str
    object: Literal["list"] = "list"
    data: list[MultiVectorItem]
    usage: Usage


class RerankRequest(BaseModel):
    model: str | None = None
    query: InputItem
    documents: list[InputItem] = Field(..., min_length=1)
    top_n: int | None = Field(None, ge=1, strict=True, description="return the best n (default: all)")
    return_documents: bool = Field(True, strict=True)

    _nulls = model_validator(mode="before")(classmethod(_null_is_default))

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value):
        if not _text(value).strip():
            raise ValueError("query is blank: a query needs some text to rank the documents by")
        return value

    @field_validator("documents")
    @classmethod
    def _documents_not_blank(cls, value):
        _not_blank([_text(x) for x in value], "documents")
        return value

    def query_text(self) -> str:
        return _text(self.query)

    def document_texts(self) -> list[str]:
        return [_text(x) for x in self.documents]

    def returned_document(self, index: int) -> dict:
        """What a result carries as ``document``: an object document with all its fields, as
        Jina does; a string document as ``{"text": ...}``."""
        doc = self.documents[index]
        return {"text": doc} if isinstance(doc, str) else doc.model_dump(exclude_unset=True)


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]
    usage: Usage


# -- indexes ---------------------------------------------------------------------------------


#: polylate's own request bodies refuse fields they do not know (a typo such as "top_k" for
#: "k" was answered as if absent); the Jina-compatible bodies stay lenient for Jina's clients
STRICT_FIELDS = ConfigDict(extra="forbid")


class Document(BaseModel):
    model_config = STRICT_FIELDS
    id: str = Field(..., min_length=1, max_length=512)
    text: str


class CreateIndexRequest(BaseModel):
    model_config = STRICT_FIELDS
    name: IndexName
    dim: int | None = Field(None, strict=True, description="128, 96 or 64 (default: the model's)")
    nbits: Literal[1, 2, 4] = Field(2, description="residual bits per dimension")
    keep_vectors: bool = Field(False, strict=True, description="also store float16 vectors for exact re-ranking")
    documents: list[Document] = Field(default_factory=list, description="optional first documents")


class AddDocumentsRequest(BaseModel):
    model_config = STRICT_FIELDS
    documents: list[Document] = Field(..., min_length=1)
    replace: bool = Field(False, strict=True, description="replace documents whose id is already indexed")


class DeleteDocumentsRequest(BaseModel):
    model_config = STRICT_FIELDS
    ids: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(..., min_length=1)
    missing_ok: bool = Field(False, strict=True, description="ignore ids that are not in the index")


class CompactRequest(BaseModel):
    model_config = STRICT_FIELDS
    retrain: bool = Field(False, strict=True, description="also refit the centroids to the whole collection (from "
                          "the kept vectors, else the stored texts re-encoded): for an index grown well past "
                          "what they were trained on. Searches go on meanwhile; writes to the index are refused (409) "
                          "until it finishes")


class SearchRequest(BaseModel):
    model_config = STRICT_FIELDS
    query: str = Field(..., min_length=1, pattern=r"\S", description="the query text (not blank)")
    k: int = Field(10, ge=1, le=1000, strict=True)
    filter_ids: list[str] | None = Field(None, description="only these documents may be returned")
    explain: bool = Field(False, strict=True, description="per hit: the document token each query token matched best")
    thorough: bool = Field(False, strict=True, description="probe wider and re-rank more candidates: recall ~0.99 against "
                           "exact MaxSim on an index that keeps its vectors, at ~10x the latency (on Qdrant: exact "
                           "MaxSim over every document instead of the pooled candidates)")


class TokenInfo(BaseModel):
    index: int
    piece: str
    start: int | None
    end: int | None
    kind: Literal["text", "expansion", "other"]


class Match(BaseModel):
    query_token: int
    doc_token: int
    piece: str
    start: int | None
    end: int | None
    score: float


class Explanation(BaseModel):
    score: float = Field(..., description="exact MaxSim on freshly encoded vectors (sum of match scores)")
    matches: list[Match]


class SearchHit(BaseModel):
    rank: int
    id: str
    score: float = Field(..., description="the index's MaxSim: exact on an index that keeps its vectors, else "
                         "over decompressed residuals (explain.score is exact, on the re-encoded text)")
    text: str | None
    explain: Explanation | None = None


class SearchResponse(BaseModel):
    index: str
    query: str
    took_ms: float
    hits: list[SearchHit]
    query_tokens: list[TokenInfo] | None = None
    query_truncated: bool = Field(False, description="the query is longer than the model reads (its query_maxlen "
                                  "tokens, marker included): only its beginning was searched")


class IndexStats(BaseModel):
    model_config = ConfigDict(extra="allow")  # (a create with documents adds "truncated", as an add does)
    name: str
    documents: int
    dim: int | None = Field(..., description="null only for a damaged index (see problem)")
    nbits: int | None = Field(..., description="null only for a damaged index (see problem)")
    built: bool
    searchable: bool = Field(True, description="false when this server cannot search it (built with another "
                             "model, at a dim the served model does not make, or damaged)")
    problem: str | None = Field(None, description="why it is not searchable")


class IndexList(BaseModel):
    indexes: list[IndexStats]


class WriteResult(BaseModel):
    index: str
    documents: int = Field(..., description="documents in the index after the change")
    added: int = 0
    deleted: int = 0
    replaced: int = Field(0, description="added documents that replaced one with the same id")
    retrained: bool = Field(False, description="the codec was trained on this collection (the first add to an "
                            "empty index, or a retrain once the collection grew)")
    truncated: int = Field(0, description="added documents longer than the index's doc_maxlen: their text past "
                           "it is not encoded, so it cannot be found (split long texts into passages)")


class ErrorResponse(BaseModel):
    detail: str = Field(..., description="what was wrong, in words")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    dims: list[int]
    default_dim: int
    query_maxlen: int
    doc_maxlen: int
    version: str
    auth: bool
