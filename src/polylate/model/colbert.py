"""ColBERT = encoder → per-token linear projection → L2-normalised token vectors.

Matryoshka: a checkpoint may carry one head per output size (Jina publishes 128/96/64
as separate heads); a size without its own head uses the first ``d`` rows of the
smallest larger head, re-normalised — identical to truncating the vectors.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from polylate.config import MATRYOSHKA_DIMS, MAX_DOC_TOKENS_EXTENDED, ColBERTConfig, check_doc_maxlen
from polylate.model.encoder import Encoder, EncoderConfig
from polylate.scoring import check_top_n, maxsim_packed, pack, rerank as rerank_vectors
from polylate.text.tokenizer import ColBERTTokenizer, TokenBatch

NATIVE_CONFIG = "polylate.json"
NATIVE_FORMAT_VERSION = 1


class ColBERT(nn.Module):
    def __init__(
        self,
        encoder: Encoder,
        heads: dict[int, nn.Linear],
        tokenizer: ColBERTTokenizer,
        config: ColBERTConfig,
        name: str = "",
    ):
        super().__init__()
        if not heads:
            raise ValueError("a ColBERT model needs at least one projection head")
        bad = [d for d in heads if isinstance(d, bool) or not (isinstance(d, int) or str(d).isdigit())]
        if bad:
            raise ValueError(f"heads are keyed by their output dim, an integer; got {bad[0]!r}")
        heads = {int(d): head for d, head in heads.items()}  # (str keys too: what model.heads holds)
        for d, head in heads.items():
            if head.out_features != d or head.in_features != encoder.config.hidden_size:
                raise ValueError(
                    f"head for dim {d} has shape [{head.out_features}, {head.in_features}], "
                    f"expected [{d}, {encoder.config.hidden_size}]"
                )
        self.encoder = encoder
        self.heads = nn.ModuleDict({str(d): heads[d] for d in sorted(heads, reverse=True)})
        self.tokenizer = tokenizer
        self.config = config
        self.name = name
        if tokenizer.vocab_size > encoder.config.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the embedding table only "
                f"{encoder.config.vocab_size}"
            )
        if config.dim > self.max_dim:
            raise ValueError(f"the configured dim {config.dim} exceeds the largest head ({self.max_dim})")

    # -- shape facts -----------------------------------------------------------------------

    @property
    def head_dims(self) -> list[int]:
        return [int(d) for d in self.heads]

    @property
    def max_dim(self) -> int:
        return max(self.head_dims)

    @property
    def output_dims(self) -> list[int]:
        """The dims this model is served and indexed at: the Matryoshka ones it can make, its
        own, and those it was trained at (any dim up to ``max_dim`` can be computed, but only
        these were trained for)."""
        sizes = set(MATRYOSHKA_DIMS) | set(self.config.trained_dims)
        return sorted({d for d in sizes if d <= self.max_dim} | {self.config.dim}, reverse=True)

    @property
    def device(self) -> torch.device:
        return self.encoder.embeddings.word.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.embeddings.word.weight.dtype

    @property
    def max_doc_tokens(self) -> int:
        return self.encoder.config.max_tokens

    def source_head(self, dim: int) -> int:
        """The head that produces `dim`: its own, else the smallest larger one (truncated)."""
        if str(dim) in self.heads:
            return dim
        larger = [d for d in self.head_dims if d > dim]
        if dim < 1 or not larger:
            raise ValueError(f"dim must be in [1, {self.max_dim}], got {dim}")
        return min(larger)

    def _projection(self, dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        head = self.heads[str(self.source_head(dim))]
        return head.weight[:dim], None if head.bias is None else head.bias[:dim]

    def project(self, hidden: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        """Encoder states [.., H] → unit token vectors [.., dim]."""
        weight, bias = self._projection(self.config.dim if dim is None else dim)
        return F.normalize(F.linear(hidden.to(weight.dtype), weight, bias).float(), p=2, dim=-1)

    # -- forward ---------------------------------------------------------------------------

    def forward(self, input_ids, attention_mask, dim: int | None = None) -> torch.Tensor:
        """[B, L] ids → [B, L, dim] unit vectors (padding rows are meaningless)."""
        return self.project(self.encoder(input_ids, attention_mask), dim)

    def _run(self, batch: TokenBatch, dims: Sequence[int]) -> dict[int, list[torch.Tensor]]:
        """One encoder pass, projected by every requested head."""
        ids = torch.from_numpy(batch.input_ids).to(self.device)
        attention = torch.from_numpy(batch.attention_mask).to(self.device)
        hidden = self.encoder(ids, attention)
        keep = torch.from_numpy(batch.output_mask).to(self.device)
        lengths = keep.sum(dim=1).tolist()
        return {d: list(torch.split(self.project(hidden, d)[keep], lengths)) for d in dims}

    def encode(
        self,
        texts: str | Sequence[str],
        is_query: bool = False,
        dim: int | None = None,
        batch_size: int = 32,
        show_progress: bool = False,
        doc_maxlen: int | None = None,
        to_numpy: bool = True,
        dtype: torch.dtype | np.dtype = np.float32,
        warn_cut: bool = True,
    ):
        """Texts → one ``[n_tokens, dim]`` array each (queries: exactly ``query_maxlen``).

        Texts are sorted by token count and batched so a batch pads only to its own
        longest member; results come back in input order. A document longer than the
        encoder's window (``max_doc_tokens``) but within ``doc_maxlen`` is encoded in
        overlapping windows and comes back whole (``ColBERTTokenizer.doc_windows``); past
        ``doc_maxlen`` (default ``config.doc_maxlen``) it is cut there, as ColBERT does —
        split longer texts into passages first (a warning counts the documents cut, unless
        ``warn_cut`` is False: callers that cut on purpose). Queries (``is_query``) are cut at
        ``query_maxlen``. Token vectors are L2-normalised, so MaxSim is a sum of cosines.
        """
        dim = self.config.dim if dim is None else dim
        single = isinstance(texts, str)
        out = self.encode_dims(texts, [dim], is_query, batch_size, show_progress, doc_maxlen, to_numpy, dtype,
                               warn_cut)[dim]
        return out[0] if single else out

    @torch.inference_mode()
    def encode_dims(
        self,
        texts: str | Sequence[str],
        dims: Sequence[int],
        is_query: bool = False,
        batch_size: int = 32,
        show_progress: bool = False,
        doc_maxlen: int | None = None,
        to_numpy: bool = True,
        dtype: torch.dtype | np.dtype = np.float32,
        warn_cut: bool = True,
    ) -> dict[int, list]:
        """Texts at several Matryoshka dims from one encoder pass → ``{dim: [array per text]}``:
        each dim costs only its projection, so comparing 128/96/64 costs one encoding."""
        if (not (isinstance(texts, str) or hasattr(texts, "__iter__")) or isinstance(texts, (bytes, bytearray))
                or isinstance(texts, Mapping)):  # a dict would give its keys
            raise TypeError(f"texts must be a string or a sequence of strings, got {type(texts).__name__}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if isinstance(dims, (int, np.integer, str, bytes)) or not hasattr(dims, "__iter__"):
            raise TypeError(f"dims must be a sequence of integers, got {dims!r}")
        dims = list(dims.tolist() if isinstance(dims, np.ndarray) else dims)  # once: a generator is spent after
        if not dims:
            raise TypeError("dims must be a non-empty sequence of integers, got none")
        for name, value in [*(("dim", d) for d in dims), ("batch_size", batch_size)]:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an integer, got {value!r}")
        dims = list(dict.fromkeys(int(d) for d in dims))
        for d in dims:
            self._projection(d)  # validate early
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if doc_maxlen is not None:
            check_doc_maxlen(doc_maxlen)
            specials = int(doc_maxlen) - self.tokenizer.max_doc_content(int(doc_maxlen))
            if specials >= doc_maxlen:
                raise ValueError(f"doc_maxlen {doc_maxlen} leaves no room for text: <s>, the document marker "
                                 f"and </s> take {specials} tokens")
        dtype = _output_dtype(dtype, to_numpy)
        if is_query:
            sequences = self.tokenizer.sequences(texts, True)
            pieces = [(i, seq, 0, len(seq)) for i, seq in enumerate(sequences)]
        else:
            content = self.tokenizer.content_ids(texts)
            cut = self.tokenizer.count_cut(content, doc_maxlen) if warn_cut else 0
            if cut:  # as ColBERT does; said aloud, since the cut-off text can never be found
                warnings.warn(f"{cut} of {len(content)} document(s) are longer than doc_maxlen "
                              f"({doc_maxlen or self.config.doc_maxlen} tokens) and were cut there: "
                              "their text past it is not encoded; split long texts into passages "
                              f"(or raise doc_maxlen, up to {MAX_DOC_TOKENS_EXTENDED})",
                              stacklevel=_caller_stacklevel())
            pieces = [(i, *w) for i, c in enumerate(content)
                      for w in self.tokenizer.doc_windows(c, doc_maxlen, self.max_doc_tokens)]
        order = sorted(range(len(pieces)), key=lambda p: -len(pieces[p][1]))
        parts: dict[int, list[list]] = {d: [[] for _ in texts] for d in dims}
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for idx in _progress(batches, show_progress, "queries" if is_query else "documents"):
            batch = self.tokenizer.batch([pieces[p][1] for p in idx], is_query)
            for row, p in enumerate(idx):  # keep each window's own rows only
                _, _, lo, hi = pieces[p]
                batch.output_mask[row, :lo] = False
                batch.output_mask[row, hi:] = False
            for d, vectors in self._run(batch, dims).items():
                for p, vec in zip(idx, vectors):
                    parts[d][pieces[p][0]].append((p, vec))
        out: dict[int, list] = {}
        for d in dims:
            out[d] = []
            for found in parts[d]:  # windows of one document are consecutive pieces, in order
                found.sort(key=lambda pv: pv[0])
                vec = found[0][1] if len(found) == 1 else torch.cat([v for _, v in found])
                out[d].append(_convert(vec, to_numpy, dtype))
        return out

    def encode_queries(self, queries, **kwargs):
        return self.encode(queries, is_query=True, **kwargs)

    def encode_documents(self, documents, **kwargs):
        return self.encode(documents, is_query=False, **kwargs)

    # -- scoring ---------------------------------------------------------------------------

    def score(self, queries: Sequence[str], documents: Sequence[str], dim: int | None = None,
              doc_maxlen: int | None = None) -> torch.Tensor:
        """MaxSim of every query against every document → [n_queries, n_documents]
        (a single string counts as one query or one document). Documents are scored packed,
        never padded to the longest: one long document beside many short ones costs its own
        tokens, not their number times its length."""
        for name, value in (("queries", queries), ("documents", documents)):
            if not isinstance(value, str) and (not hasattr(value, "__iter__") or isinstance(value, (bytes, Mapping))):
                raise TypeError(f"{name} must be a string or a sequence of strings, got {type(value).__name__}")
        queries = [queries] if isinstance(queries, str) else list(queries)
        documents = [documents] if isinstance(documents, str) else list(documents)
        dim = self.config.dim if dim is None else dim
        q = self.encode(queries, is_query=True, dim=dim, to_numpy=False)
        d = self.encode(documents, is_query=False, dim=dim, doc_maxlen=doc_maxlen, to_numpy=False)
        if not q or not d:
            return torch.zeros(len(q), len(d))
        packed, lengths = pack([t.float().cpu() for t in d])
        return torch.stack([maxsim_packed(t.float().cpu(), packed, lengths) for t in q])

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
               dim: int | None = None, doc_maxlen: int | None = None) -> list[dict]:
        """Order documents for one query → [{index, score, document}], best first (ties keep
        the documents' order)."""
        if not isinstance(query, str):
            raise TypeError(f"rerank takes one query string, got {type(query).__name__}")
        documents = [documents] if isinstance(documents, str) else list(documents)
        check_top_n(top_n)  # before the encoding, not after
        q = self.encode(query, is_query=True, dim=dim, to_numpy=False)
        d = self.encode(documents, is_query=False, dim=dim, doc_maxlen=doc_maxlen, to_numpy=False)
        ranked = rerank_vectors(q.float().cpu(), [t.float().cpu() for t in d], top_n)
        return [{"index": i, "score": s, "document": documents[i]} for i, s in ranked]

    # -- persistence -----------------------------------------------------------------------

    def save(self, folder: str | Path, dtype: torch.dtype | None = None, config: ColBERTConfig | None = None,
             name: str | None = None) -> Path:
        """Write the native layout: polylate.json + model.safetensors + tokenizer.json, with the
        weights in ``dtype`` and ``config`` and ``name`` recorded (defaults: as they are; the
        model is unchanged)."""
        return replace_folder(folder, lambda tmp: self._write(tmp, dtype, config or self.config,
                                                              self.name if name is None else name))

    def _write(self, folder: Path, dtype: torch.dtype | None, config: ColBERTConfig, name: str) -> None:
        state = {k: (v if dtype is None else v.to(dtype)).detach().contiguous().cpu()
                 for k, v in self.state_dict().items()}
        write_safetensors(state, folder / "model.safetensors")
        self.tokenizer.tokenizer.save(str(folder / "tokenizer.json"))
        meta = {
            "format": "polylate",
            "format_version": NATIVE_FORMAT_VERSION,
            "name": name,
            "encoder": self.encoder.config.to_dict(),
            "colbert": config.to_dict(),
            "heads": self.head_dims,
            "head_bias": self.heads[str(self.max_dim)].bias is not None,
        }
        (folder / NATIVE_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")


def _caller_stacklevel() -> int:
    """``warnings.warn``'s stacklevel, from the function that calls this, of the first frame
    outside this module and torch (``encode`` reaches ``encode_dims`` through torch's
    inference-mode wrapper): the user's line, however the encoding was entered."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_code.co_filename == __file__ or f"{os.sep}torch{os.sep}" in frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level


def replace_folder(folder: str | Path, write) -> Path:
    """Run ``write(tmp)`` on a fresh folder beside ``folder``, then swap it in: a crash leaves
    the old folder or the new one, never a mix."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file, not a folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(mode=0o777)
    try:
        write(tmp)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # the new folder is in place: what an earlier write killed mid-way left beside it (a
    # model's size each, hidden, and nothing else would ever remove it) is obsolete now
    for stale in [*folder.parent.glob(f".{glob.escape(folder.name)}.tmp-*"),
                  *folder.parent.glob(f".{glob.escape(folder.name)}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def write_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict | None = None) -> None:
    """safetensors file written to a temporary name and renamed into place, readable per umask
    (safetensors itself creates files 0600, which a shared model folder cannot use)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        try:
            save_file(state, str(tmp), metadata={"format": "pt", **(metadata or {})})
        except Exception as exc:  # safetensors' own error type for a full disk, a vanished folder, ...
            if isinstance(exc, OSError):
                raise
            raise OSError(f"cannot write {path}: {' '.join(str(exc).split())}") from exc
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_colbert(
    encoder_config: EncoderConfig,
    tokenizer: ColBERTTokenizer,
    config: ColBERTConfig,
    head_dims: Sequence[int] = (128,),
    head_bias: bool = False,
    name: str = "",
) -> ColBERT:
    """An uninitialised model of the given shape (weights are loaded or trained next)."""
    encoder = Encoder(encoder_config)
    heads = {d: nn.Linear(encoder_config.hidden_size, d, bias=head_bias) for d in head_dims}
    return ColBERT(encoder, heads, tokenizer, config, name=name)


_TORCH_TO_NUMPY = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}


def _output_dtype(dtype, to_numpy: bool):
    """``dtype`` as the kind of array asked for: numpy (``to_numpy``) or torch; a numpy, torch
    or string spelling of float16/32/64 (and bfloat16 for torch) is accepted either way."""
    if to_numpy:
        if isinstance(dtype, torch.dtype):
            if dtype not in _TORCH_TO_NUMPY:
                raise TypeError(f"dtype {dtype} has no numpy equivalent; pass to_numpy=False for torch tensors"
                                if dtype.is_floating_point else f"dtype must be a float type, got {dtype}")
            return _TORCH_TO_NUMPY[dtype]
        if isinstance(dtype, str) and dtype in ("bfloat16", "bf16"):
            raise TypeError("numpy has no bfloat16; pass to_numpy=False for bfloat16 torch tensors")
        try:
            as_numpy = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be a float type, got {dtype!r}") from None
        if as_numpy.type not in _TORCH_TO_NUMPY.values():  # int8 gave zeros, "U10" strings
            raise TypeError(f"dtype must be a float type (float16, float32 or float64), got {dtype!r}")
        return as_numpy
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a float type, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype in ("bfloat16", "bf16"):
        return torch.bfloat16
    try:
        as_numpy = np.dtype(dtype).type
    except TypeError:
        raise TypeError(f"dtype must be a float type, got {dtype!r}") from None
    found = [t for t, n in _TORCH_TO_NUMPY.items() if n == as_numpy]
    if not found:
        raise TypeError(f"dtype must be a float type, got {dtype!r}")
    return found[0]


def _convert(vec: torch.Tensor, to_numpy: bool, dtype):
    if to_numpy:
        return vec.float().cpu().numpy().astype(dtype, copy=False)
    return vec.to(dtype) if isinstance(dtype, torch.dtype) else vec


def _progress(items, show: bool, what: str):
    if not show:
        return items
    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)  # never into the vectors or JSON a command writes to stdout
    return track(items, description=f"encoding {what}", transient=True, console=console,
                 disable=not console.is_terminal)
