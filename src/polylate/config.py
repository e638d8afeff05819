"""ColBERT settings that travel with a checkpoint.

One dataclass holds everything that changes how text becomes token vectors, so a
saved model re-encodes exactly as it did when it was indexed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

MATRYOSHKA_DIMS = (128, 96, 64)
MAX_DOC_TOKENS = 8192
MAX_DOC_TOKENS_EXTENDED = 12288  # with rotary scaling (see EncoderConfig.rope_scaling)


def check_doc_maxlen(doc_maxlen) -> None:
    """The one rule for a document length limit, in a config or given per call."""
    if isinstance(doc_maxlen, bool) or not isinstance(doc_maxlen, int) and not hasattr(doc_maxlen, "__index__"):
        raise TypeError(f"doc_maxlen must be an integer, got {doc_maxlen!r}")
    if not 4 <= doc_maxlen <= MAX_DOC_TOKENS_EXTENDED:
        raise ValueError(f"doc_maxlen must be in [4, {MAX_DOC_TOKENS_EXTENDED}] tokens, got {doc_maxlen}"
                         + (" (split longer texts into passages)" if doc_maxlen > MAX_DOC_TOKENS_EXTENDED else ""))


@dataclass
class ColBERTConfig:
    """How queries and documents are tokenised and projected.

    Markers are given as token strings; the tokenizer resolves them to ids so that a
    checkpoint's own vocabulary decides (Jina: ``[QueryMarker]`` = 250002, Stanford:
    ``[unused0]`` = 1, PyLate: ``[Q]``). A marker may span several tokens (the bundled
    e5 model uses its native ``query:`` / ``passage:`` prefixes).
    """

    query_marker: str = "[QueryMarker]"
    doc_marker: str = "[DocumentMarker]"
    query_maxlen: int = 32
    doc_maxlen: int = 300
    dim: int = 128
    attend_to_mask_tokens: bool = True
    # pad queries with mask tokens up to query_maxlen (ColBERT's query augmentation); off:
    # a query has a vector per real token only — for encoders never trained with masks
    query_expansion: bool = True
    mask_punctuation: bool = True
    similarity: str = "cosine"
    nbits: int = 2
    skiplist_words: list[str] = field(default_factory=list)  # extra tokens dropped from docs
    # how punctuation and skiplist words become the token ids dropped from documents, as the
    # library a checkpoint comes from does it (so its scores are reproduced exactly):
    #   "pieces"  every vocabulary piece that is the word, bare or with a word-start marker
    #   "colbert" Stanford ColBERT (and Jina through it): the first id the word tokenises to
    #   "exact"   PyLate: the id of the word as one token (the unknown token's id if it is none)
    skiplist_rule: str = "pieces"
    # strip whitespace around each text before tokenising, as sentence-transformers (so PyLate)
    # does; with sentencepiece vocabularies a trailing space is otherwise a token of its own
    strip_text: bool = False
    # sizes a Matryoshka loss trained as truncations of a larger head (e.g. 16 of a 24-d head):
    # served and indexed like the model's own dim and the standard 128/96/64
    trained_dims: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.query_maxlen < 4:
            raise ValueError(f"query_maxlen must be at least 4, got {self.query_maxlen}")
        check_doc_maxlen(self.doc_maxlen)
        if self.skiplist_rule not in ("pieces", "colbert", "exact"):
            raise ValueError(f"skiplist_rule must be pieces, colbert or exact, got {self.skiplist_rule!r}")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in self.trained_dims):
            raise ValueError(f"trained_dims must be positive integers, got {self.trained_dims!r}")
        if self.similarity != "cosine":
            raise ValueError(f"only cosine similarity is supported, got {self.similarity!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ColBERTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ColBERTConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
