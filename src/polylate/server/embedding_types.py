"""How one text's token vectors are written in a multi-vector answer (Jina's ``embedding_type``).

Jina's API accepts ``float``, ``base64``, ``binary`` and ``ubinary``, or a list of them. Each
format is applied to every token vector of one input's ``[n_tokens, dim]`` matrix, as Jina's
single-vector embeddings apply it to their one vector:

* ``float``: ``[[x, ...], ...]``, one list per token.
* ``base64``: one string per token, its vector as little-endian float32, as Jina's API
  (``MultiEmbeddingData.embeddings``: "each is a list of floats or base64 string"); a client
  gets a token back with ``np.frombuffer(base64.b64decode(s), "<f4")``: exact, and about half
  the JSON of ``float``.
* ``ubinary``: per token, the signs packed 8 per byte (``np.packbits(v > 0)``, the first
  coordinate in the high bit), as unsigned bytes: ``dim / 8`` integers per token, 1/32 of
  float32 storage, for Hamming-distance candidate search.
* ``binary``: the same bytes minus 128, as signed bytes (sentence-transformers'
  ``quantize_embeddings`` convention, which Jina's binary embeddings follow).

With a list, ``embeddings`` is an object holding each requested format under its name.
"""

from __future__ import annotations

import base64

import numpy as np

EMBEDDING_TYPES = ("float", "base64", "binary", "ubinary")


def format_vectors(vectors: np.ndarray, embedding_type: str):
    """``[n, dim]`` unit vectors → their JSON value in ``embedding_type``."""
    if embedding_type == "float":
        # rounded in float64 to 7 decimals (float32 precision): each number prints short
        return np.round(vectors.astype(np.float64), 7).tolist()
    if embedding_type == "base64":
        rows = np.ascontiguousarray(vectors, dtype="<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in rows]
    packed = np.packbits(vectors > 0, axis=-1)
    if embedding_type == "ubinary":
        return packed.tolist()
    if embedding_type == "binary":
        return (packed.astype(np.int16) - 128).tolist()
    raise ValueError(f"embedding_type must be one of {', '.join(EMBEDDING_TYPES)}, got {embedding_type!r}")


def format_embeddings(vectors: np.ndarray, embedding_type: str | list[str]):
    """One input's ``embeddings`` value: one format, or an object of several (a list)."""
    if isinstance(embedding_type, str):
        return format_vectors(vectors, embedding_type)
    return {t: format_vectors(vectors, t) for t in embedding_type}
