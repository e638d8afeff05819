"""ColBERT's asymmetric tokenisation on top of a `tokenizers.Tokenizer`.

Queries: ``<s> [Q] content </s>`` padded with mask tokens to exactly ``query_maxlen``
(query augmentation). Documents: ``<s> [D] content </s>`` truncated at ``doc_maxlen``; one
longer than the encoder's window is cut into overlapping windows (:meth:`doc_windows`).
The wrapped tokenizer only splits text into content pieces; the special tokens, the
marker and the padding are placed here, so every published layout behaves the same.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers

from polylate.config import ColBERTConfig

_CLS_CANDIDATES = ("<s>", "[CLS]")
_SEP_CANDIDATES = ("</s>", "[SEP]")
_PAD_CANDIDATES = ("<pad>", "[PAD]")
_MASK_CANDIDATES = ("<mask>", "[MASK]")
_SPACE_MARKERS = ("▁", "Ġ")  # sentencepiece and byte-level BPE word-start markers


@dataclass
class TokenBatch:
    """Right-padded ids for one forward pass.

    ``attention_mask`` says which keys the encoder attends to; ``output_mask`` says which
    positions become token vectors (queries keep mask tokens, documents drop pad and
    punctuation).
    """

    input_ids: np.ndarray  # int64 [B, L]
    attention_mask: np.ndarray  # bool [B, L]
    output_mask: np.ndarray  # bool [B, L]

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass(frozen=True)
class TokenSpan:
    """Where one token vector comes from: its vocabulary piece and the characters of the
    text it covers (``start``/``end`` are None for special, marker and mask tokens)."""

    id: int
    piece: str
    start: int | None
    end: int | None


class ColBERTTokenizer:
    def __init__(self, tokenizer: tokenizers.Tokenizer, config: ColBERTConfig):
        self.tokenizer = tokenizer
        self.config = config
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.cls_id = self._special_id(_CLS_CANDIDATES, "start (<s>/[CLS])")
        self.sep_id = self._special_id(_SEP_CANDIDATES, "end (</s>/[SEP])")
        self.pad_id = self._special_id(_PAD_CANDIDATES, "padding (<pad>/[PAD])")
        self.mask_id = self._special_id(_MASK_CANDIDATES, "mask (<mask>/[MASK])")
        self.query_marker_ids = self._marker_ids(config.query_marker, "query")
        self.doc_marker_ids = self._marker_ids(config.doc_marker, "document")
        words = (list(string.punctuation) if config.mask_punctuation else []) + list(config.skiplist_words)
        self.skip_ids = {i for w in words for i in self._skip_ids(w, config.skiplist_rule)}
        # sized by the largest id, not the vocabulary size (a vocab.txt with a repeated line has ids past it)
        top = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=0)
        self._skip_table = np.zeros(max(top + 1, self.vocab_size), bool)
        self._skip_table[sorted(self.skip_ids)] = True
        if self.max_query_content < 1:
            raise ValueError(
                f"query_maxlen={config.query_maxlen} leaves no room for query text after "
                f"{len(self.query_marker_ids)} marker token(s)"
            )

    @classmethod
    def from_file(cls, path: str | Path, config: ColBERTConfig) -> ColBERTTokenizer:
        return cls(tokenizers.Tokenizer.from_file(str(path)), config)

    # -- vocabulary lookups -------------------------------------------------------------

    def _special_id(self, candidates: tuple[str, ...], what: str) -> int:
        for tok in candidates:
            idx = self.tokenizer.token_to_id(tok)
            if idx is not None:
                return idx
        raise ValueError(f"tokenizer has no {what} token (looked for {', '.join(candidates)})")

    def _marker_ids(self, marker: str, what: str) -> list[int]:
        for form in (marker, marker.strip()):  # PyLate's added token is "[Q] " with the space
            idx = self.tokenizer.token_to_id(form)
            if idx is not None:
                return [idx]
        if marker.strip().startswith("[") and marker.strip().endswith("]"):
            # "[QueryMarker]", "[unused0]", "[Q]": a token of the vocabulary, never text to split
            raise ValueError(f"{what} marker {marker!r} is not a token of this tokenizer's vocabulary")
        ids = self.tokenizer.encode(marker, add_special_tokens=False).ids
        if not ids:
            raise ValueError(f"{what} marker {marker!r} tokenises to nothing")
        return ids

    def _piece_ids(self, word: str) -> set[int]:
        ids = set()
        for piece in (word, *(m + word for m in _SPACE_MARKERS)):
            idx = self.tokenizer.token_to_id(piece)
            if idx is not None:
                ids.add(idx)
        return ids

    def _skip_ids(self, word: str, rule: str) -> set[int]:
        """The ids ``word`` removes from documents under ``rule`` (see ColBERTConfig.skiplist_rule)."""
        if rule == "colbert":  # colbert-ai: raw_tokenizer.encode(word, add_special_tokens=False)[0]
            ids = self.tokenizer.encode(word, add_special_tokens=False).ids
            return set(ids[:1])
        if rule == "exact":  # PyLate: tokenizer.convert_tokens_to_ids(word), the unknown id if none
            for token in (word, "<unk>", "[UNK]"):
                idx = self.tokenizer.token_to_id(token)
                if idx is not None:
                    return {idx}
            return set()
        return self._piece_ids(word)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def max_query_content(self) -> int:
        return self.config.query_maxlen - 2 - len(self.query_marker_ids)

    def max_doc_content(self, doc_maxlen: int | None = None) -> int:
        return (doc_maxlen or self.config.doc_maxlen) - 2 - len(self.doc_marker_ids)

    def count_cut(self, content: list[list[int]], doc_maxlen: int | None = None) -> int:
        """How many documents (content pieces, ``content_ids``) ``doc_maxlen`` cuts short."""
        room = self.max_doc_content(doc_maxlen)
        return sum(len(c) > room for c in content)

    def count_query_cut(self, content: list[list[int]]) -> int:
        """How many queries (``content_ids``) are longer than ``query_maxlen`` leaves room for:
        their tail is not encoded, so not searched."""
        return sum(len(c) > self.max_query_content for c in content)

    # -- encoding -------------------------------------------------------------------------

    def content_ids(self, texts: list[str]) -> list[list[int]]:
        """Content pieces of each text, without special tokens (parallel in Rust)."""
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text #{i} is {type(t).__name__}, expected str")
        if self.config.strip_text:
            texts = [t.strip() for t in texts]
        try:
            return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        except TypeError:  # tokenizers' message for a lone surrogate says nothing of the text
            _check_unicode(texts)
            raise

    def query_ids(self, content: list[int]) -> list[int]:
        ids = [self.cls_id, *self.query_marker_ids, *content[: self.max_query_content], self.sep_id]
        if not self.config.query_expansion:
            return ids
        return ids + [self.mask_id] * (self.config.query_maxlen - len(ids))

    def doc_ids(self, content: list[int], doc_maxlen: int | None = None) -> list[int]:
        body = content[: self.max_doc_content(doc_maxlen)]
        return [self.cls_id, *self.doc_marker_ids, *body, self.sep_id]

    def doc_windows(self, content: list[int], doc_maxlen: int | None, window: int) -> list[tuple[list[int], int, int]]:
        """A document as encoder inputs of at most ``window`` tokens: ``[(sequence, lo, hi)]``,
        where positions ``lo:hi`` of each sequence are the rows the document keeps.

        A document within the window is one sequence, kept whole. A longer one (up to
        ``doc_maxlen``) is cut into windows overlapping by a quarter, each ``<s> [D] part </s>``;
        every content piece is taken from the window where it sits farthest from an edge, the
        leading specials from the first window and ``</s>`` from the last. The kept rows are
        thus exactly the rows of the uncut sequence ``doc_ids(content, doc_maxlen)``, in order,
        each with context on both sides, instead of a document truncated at the window.
        """
        body = content[: self.max_doc_content(doc_maxlen)]
        width = self.max_doc_content(window)
        if width < 4:
            raise ValueError(f"an encoder window of {window} tokens leaves no room for content")
        if len(body) <= width:
            seq = self.doc_ids(body, doc_maxlen)
            return [(seq, 0, len(seq))]
        overlap = width // 4
        starts = [0]
        while starts[-1] + width < len(body):
            starts.append(starts[-1] + width - overlap)
        lead = 1 + len(self.doc_marker_ids)  # sequence position of a window's first piece
        # content piece i belongs to window j when bounds[j] <= i < bounds[j + 1]
        bounds = [0] + [s + overlap // 2 for s in starts[1:]] + [len(body)]
        out = []
        for j, start in enumerate(starts):
            part = body[start : start + width]
            seq = [self.cls_id, *self.doc_marker_ids, *part, self.sep_id]
            lo = 0 if j == 0 else lead + bounds[j] - start
            hi = len(seq) if j == len(starts) - 1 else lead + bounds[j + 1] - start
            out.append((seq, lo, hi))
        return out

    def sequences(self, texts: list[str], is_query: bool, doc_maxlen: int | None = None):
        content = self.content_ids(texts)
        if is_query:
            return [self.query_ids(c) for c in content]
        return [self.doc_ids(c, doc_maxlen) for c in content]

    def batch(self, sequences: list[list[int]], is_query: bool) -> TokenBatch:
        """Right-pad a group of sequences to its own longest member."""
        width = max(len(s) for s in sequences)
        ids = np.full((len(sequences), width), self.pad_id, dtype=np.int64)
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = seq
        real = np.arange(width)[None, :] < lengths[:, None]
        if is_query:
            attention = real.copy()
            if not self.config.attend_to_mask_tokens:
                attention &= ids != self.mask_id
            output = real
        else:
            attention = real
            output = real & ~self._skip_table[ids]
        return TokenBatch(ids, attention, output)

    def token_spans(self, text: str, is_query: bool, doc_maxlen: int | None = None) -> list[TokenSpan]:
        """One span per row that ``ColBERT.encode(text, ...)`` returns, in the same order, so a
        vector can be traced back to the words it stands for (e.g. to explain a MaxSim match).
        Spans leave out surrounding whitespace; a bare word-start marker has no span."""
        if not isinstance(text, str):
            raise TypeError(f"text is {type(text).__name__}, expected str")
        lead = len(text) - len(text.lstrip()) if self.config.strip_text else 0
        enc = self.tokenizer.encode(text.strip() if self.config.strip_text else text, add_special_tokens=False)
        if is_query:
            seq = self.query_ids(enc.ids)
            markers = self.query_marker_ids
        else:
            seq = self.doc_ids(enc.ids, doc_maxlen)
            markers = self.doc_marker_ids
        first = 1 + len(markers)  # sequence position of the first content piece
        limit = self.max_query_content if is_query else self.max_doc_content(doc_maxlen)
        n_content = min(len(enc.ids), limit)
        out = []
        for pos, tid in enumerate(seq):
            if not is_query and self._skip_table[tid]:
                continue  # batch() drops these from document vectors
            piece = self.tokenizer.id_to_token(tid) or ""
            start = end = None
            k = pos - first
            if 0 <= k < n_content and piece.strip("".join(_SPACE_MARKERS)):
                start, end = (o + lead for o in enc.offsets[k])
                while start < end and text[start].isspace():
                    start += 1
                while end > start and text[end - 1].isspace():
                    end -= 1
                if start == end:
                    start = end = None
            out.append(TokenSpan(tid, piece, start, end))
        return out

    def __call__(self, texts: list[str], is_query: bool) -> TokenBatch:
        return self.batch(self.sequences(texts, is_query), is_query)


def _check_unicode(texts: list[str]) -> None:
    """Lone surrogates (undecodable bytes passed through, e.g. a non-UTF-8 command line) named."""
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"text #{i} is not valid Unicode at character {exc.start} ({exc.reason}): "
                             "was it UTF-8?") from None
