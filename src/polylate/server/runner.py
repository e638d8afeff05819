"""The served model: one encode at a time (the CPU's cores are better spent inside one
forward pass than split between several), names it answers to, sizes it can produce.

Many texts (an add's or a retrain's documents, a large embeddings request) are encoded a
slice of about ``SLICE_TOKENS`` tokens at a time, and turns go in the order they were asked
for: a search's query waits for one slice, not for a whole add."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
from fastapi import HTTPException

from polylate.model.colbert import ColBERT
from polylate.scoring import check_top_n, rerank as rerank_vectors
from polylate.server.explain import explain_match, token_info


class _Turns:
    """One holder at a time, in the order they asked (a plain lock lets the thread that just
    released it take it again, so an add's next slice could starve the queries waiting)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._next = 0  # the ticket the next caller gets
        self._serving = 0  # the ticket whose turn it is
        self._done: set[int] = set()  # tickets served, or whose holder stopped waiting

    @contextmanager
    def hold(self):
        with self._cond:
            ticket = self._next
            self._next += 1
            try:
                self._cond.wait_for(lambda: self._serving == ticket)
            except BaseException:  # (its turn may have come meanwhile: passed on)
                self._done.add(ticket)
                self._pass_on()
                raise
        try:
            yield
        finally:
            with self._cond:
                self._done.add(ticket)
                self._pass_on()

    def _pass_on(self) -> None:
        """The next waiting ticket's turn, past those done or abandoned (lock held)."""
        while self._serving in self._done:
            self._done.discard(self._serving)
            self._serving += 1
        self._cond.notify_all()


class ModelRunner:
    #: padded tokens encoded per turn of the model: a search's query waits for at most one
    #: such slice (a text longer than this is a slice of its own). By tokens, not texts, so
    #: the wait is as short behind long documents as behind short ones, and short texts go
    #: many to a turn.
    SLICE_TOKENS = 2048
    #: the budget on an accelerator, which needs larger batches to be busy and is ~10-50x faster
    #: than 2 CPU cores (not measured here: this project's CI machines have no GPU)
    SLICE_TOKENS_ACCELERATOR = 32768

    def __init__(self, model: ColBERT, name_or_path: str = "default", aliases: Sequence[str] = ()):
        self.model = model
        self.name = model.name or name_or_path
        self.name_or_path = name_or_path
        self.accepted_names = {self.name, "default", name_or_path, *aliases}
        self.dims = model.output_dims
        self.signatures: dict = {}  # identity.model_mismatch's cache: the model is fixed
        self._turns = _Turns()

    @property
    def default_dim(self) -> int:
        return self.model.config.dim

    def check_model(self, requested: str | None) -> None:
        if requested is not None and requested not in self.accepted_names:
            raise HTTPException(404, f"model {requested!r} is not served here; this server serves "
                                     f"{self.name!r} (also accepted: {sorted(self.accepted_names - {self.name})})")

    def answer_name(self, requested: str | None) -> str:
        """The model an answer names: the one the request asked for (an alias such as
        jina-colbert-v2, as Jina's API echoes it), else the served model's own name."""
        return requested if requested not in (None, "default") else self.name

    def check_dim(self, dim: int | None, field: str = "dimensions") -> int:
        if dim is None:
            return self.default_dim
        if dim not in self.dims:
            raise HTTPException(422, f"{field} must be one of {self.dims} for this model, got {dim}")
        return dim

    def encode(self, texts: list[str], is_query: bool, dim: int, doc_maxlen: int | None = None) -> list[np.ndarray]:
        """Documents are cut at doc_maxlen as the README says (no warning per request)."""
        out: list = [None] * len(texts)
        for rows in self._slices(texts, is_query, doc_maxlen):
            with self._turns.hold():
                vectors = self.model.encode([texts[i] for i in rows], is_query=is_query, dim=dim,
                                            doc_maxlen=doc_maxlen, warn_cut=False)
            for i, v in zip(rows, vectors):
                out[i] = v
        return out

    def _slices(self, texts: list[str], is_query: bool, doc_maxlen: int | None) -> list[list[int]]:
        """Positions of ``texts`` in turns of at most ``SLICE_TOKENS`` padded tokens: by token
        count, so a slice pads little (as encode's own batches do)."""
        if len(texts) <= 1:
            return [list(range(len(texts)))]
        lengths = [len(s) for s in self.model.tokenizer.sequences(texts, is_query, doc_maxlen)]
        budget = self.SLICE_TOKENS if self.model.device.type == "cpu" else self.SLICE_TOKENS_ACCELERATOR
        slices, current = [], []
        for i in sorted(range(len(texts)), key=lengths.__getitem__):
            if current and (len(current) + 1) * lengths[i] > budget:  # i is the longest yet
                slices.append(current)
                current = []
            current.append(i)
        return slices + [current]

    def count_tokens(self, texts: list[str], is_query: bool) -> int:
        """Tokens the model reads (with markers and special tokens; queries at full length)."""
        return sum(len(s) for s in self.model.tokenizer.sequences(texts, is_query))

    def query_cut(self, query: str) -> bool:
        """Whether the query is longer than the model reads (``query_maxlen`` tokens, with its
        marker): its tail is not searched, which a search answer says."""
        tok = self.model.tokenizer
        return tok.count_query_cut(tok.content_ids([query])) > 0

    def count_cut(self, texts: list[str], doc_maxlen: int | None = None) -> int:
        """Documents longer than ``doc_maxlen`` (default: the model's), whose text past it is
        not encoded: an add says how many, since no warning reaches an API client."""
        return self.model.tokenizer.count_cut(self.model.tokenizer.content_ids(texts), doc_maxlen)

    def rerank(self, query: str, documents: list[str], top_n: int | None) -> list[dict]:
        """``ColBERT.rerank``'s answer, with the documents encoded in slices as an add's are:
        a rerank of many long documents does not hold the model from searches meanwhile."""
        check_top_n(top_n)  # before the encoding
        q = self.encode([query], is_query=True, dim=self.default_dim)[0]
        docs = self.encode(documents, is_query=False, dim=self.default_dim)
        return [{"index": i, "score": s, "document": documents[i]} for i, s in rerank_vectors(q, docs, top_n)]

    def explain(self, query: str, query_vectors: np.ndarray, texts: list[str], dim: int,
                doc_maxlen: int | None = None) -> tuple[list[dict], list[dict]]:
        """(query tokens, one explanation per text); documents are re-encoded exactly, since an
        index keeps only compressed vectors."""
        tok = self.model.tokenizer
        docs = self.encode(texts, is_query=False, dim=dim, doc_maxlen=doc_maxlen) if texts else []
        out = [explain_match(query_vectors, d, tok.token_spans(t, False, doc_maxlen)) for t, d in zip(texts, docs)]
        return token_info(tok.token_spans(query, True), tok.mask_id), out
