"""Train a ColBERT model's projection head(s) — and optionally its top encoder layers.

With the encoder frozen (the default) the expensive part, the encoder's token hidden states,
is computed once per distinct text and cached (:class:`HiddenCache`); every epoch then only
runs the per-token linear head, so many epochs are cheap even on a CPU.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from polylate.config import check_doc_maxlen
from polylate.model.colbert import write_safetensors
from polylate.model.identity import fine_tuned_name, first_base
from polylate.train.data import Pair, Triplet, as_triplet, batches
from polylate.train.losses import infonce, kl_distillation, matryoshka, maxsim_scores


class HiddenCache:
    """Frozen-encoder states per distinct (text, is_query): output-token rows + mean pool.

    ``tokens[key]``: ``[n_out, H]`` hidden states of the positions that become ColBERT vectors
    (stored in ``dtype``, default float16). ``pooled[key]``: L2-normalised mean of the hidden
    states over attended positions (e5's sentence embedding, used as a dense teacher).
    ``lower[key]`` (with ``lower_layers=n``): the output of the first ``n`` encoder layers at
    every position, with the attention and output masks — training the layers above re-runs
    only those. ``pooled_from``: another encoder with the same lower layers (e.g. the base
    model before its top layers were fine-tuned) whose upper layers make ``pooled``.
    """

    def __init__(self, model, doc_maxlen: int | None = None, batch_size: int = 32,
                 dtype: torch.dtype = torch.float16, keep_tokens: bool = True,
                 lower_layers: int | None = None, pooled_from=None):
        self.model = model
        self.doc_maxlen = training_doc_maxlen(model, doc_maxlen)
        self.batch_size = batch_size
        self.dtype = dtype
        self.keep_tokens = keep_tokens
        self.lower_layers = lower_layers
        if pooled_from is not None and lower_layers is None:
            raise ValueError("pooled_from needs lower_layers: it continues from the cached lower states")
        self.pooled_from = pooled_from
        self.tokens: dict[tuple[str, bool], torch.Tensor] = {}
        self.pooled: dict[tuple[str, bool], torch.Tensor] = {}
        self.lower: dict[tuple[str, bool], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self.pooled)

    @torch.no_grad()  # not inference_mode: the encoder's rotary tables it fills are reused in training
    def add(self, texts: Iterable[str], is_query: bool, show_progress: bool = False) -> None:
        todo = sorted({t for t in texts if (t, is_query) not in self.pooled})
        if not todo:
            return
        start = time.perf_counter()
        tok = self.model.tokenizer
        seqs = tok.sequences(todo, is_query, None if is_query else self.doc_maxlen)
        order = sorted(range(len(todo)), key=lambda i: -len(seqs[i]))
        device = self.model.device
        groups = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for n, idx in enumerate(groups):
            batch = tok.batch([seqs[i] for i in idx], is_query)
            ids = torch.from_numpy(batch.input_ids).to(device)
            attn = torch.from_numpy(batch.attention_mask).to(device)
            if self.lower_layers is None:
                hidden = self.model.encoder(ids, attn).float()
                pooled = _mean_pool(hidden, attn)
            else:
                low = self.model.encoder(ids, attn, stop=self.lower_layers)
                hidden, pooled = self._upper(low, attn)
            keep = torch.from_numpy(batch.output_mask)
            for row, i in enumerate(idx):
                key = (todo[i], is_query)
                self.pooled[key] = pooled[row].clone()
                if self.keep_tokens:
                    self.tokens[key] = hidden[row][keep[row].to(device)].to(self.dtype).cpu().clone()
                if self.lower_layers is not None:
                    length = len(seqs[i])
                    self.lower[key] = (low[row, :length].to(self.dtype).cpu().clone(),
                                       attn[row, :length].bool().cpu(), keep[row, :length].clone())
            if show_progress and (n + 1) % 20 == 0:
                print(f"  cached {(n + 1) * self.batch_size}/{len(todo)} "
                      f"{'queries' if is_query else 'documents'} "
                      f"({time.perf_counter() - start:.0f}s)", flush=True)
        self.seconds += time.perf_counter() - start

    def _upper(self, low: torch.Tensor, attn: torch.Tensor):
        """Lower-layer states → (final hidden states float32, pooled: through ``pooled_from``'s
        upper layers when given, else the same)."""
        hidden = self.model.encoder.resume(low, attn, self.lower_layers).float()
        if self.pooled_from is None:
            return hidden, _mean_pool(hidden, attn)
        return hidden, _mean_pool(self.pooled_from.resume(low, attn, self.lower_layers).float(), attn)

    def padded(self, texts: Sequence[str], is_query: bool, device=None):
        """→ (hidden [n, L, H] float32, mask [n, L] bool) for cached texts."""
        rows = [self.tokens[(t, is_query)] for t in texts]
        hidden = _pad(rows, torch.float32, (rows[0].shape[-1] if rows else 1,))
        mask = _pad([torch.ones(r.shape[0], dtype=torch.bool) for r in rows], torch.bool, ())
        return hidden.to(device), mask.to(device)

    @torch.no_grad()
    def refresh_from_lower(self) -> None:
        """Recompute ``tokens`` and ``pooled`` from the cached lower-layer states with the
        encoder's current upper layers (after training them), without re-running the rest
        (``pooled`` keeps coming from ``pooled_from`` when that is given)."""
        if self.lower_layers is None:
            raise ValueError("this cache holds no lower-layer states (lower_layers=None)")
        start = time.perf_counter()
        keys = sorted(self.lower, key=lambda k: self.lower[k][0].shape[0])
        device = self.model.device
        for s in range(0, len(keys), self.batch_size):
            group = keys[s : s + self.batch_size]
            for is_query in (True, False):
                texts = [t for t, q in group if q == is_query]
                if not texts:
                    continue
                low, attn, keep = self.padded_lower(texts, is_query, device)
                hidden, pooled = self._upper(low.to(self.model.dtype), attn)
                for row, t in enumerate(texts):
                    self.pooled[(t, is_query)] = pooled[row].clone()
                    if self.keep_tokens:
                        self.tokens[(t, is_query)] = hidden[row][keep[row]].to(self.dtype).cpu().clone()
        self.seconds += time.perf_counter() - start

    def padded_lower(self, texts: Sequence[str], is_query: bool, device=None):
        """→ (lower-layer states [n, L, H] float32, attention [n, L], output mask [n, L])."""
        states, attn, keep = zip(*(self.lower[(t, is_query)] for t in texts))
        return (_pad(states, torch.float32, states[0].shape[1:]).to(device),
                _pad(attn, torch.bool, ()).to(device), _pad(keep, torch.bool, ()).to(device))

    def pooled_matrix(self, texts: Sequence[str], is_query: bool) -> torch.Tensor:
        return torch.stack([self.pooled[(t, is_query)] for t in texts])


def training_doc_maxlen(model, doc_maxlen: int | None) -> int:
    """Training truncates documents at the encoder's window (no windowing: a training step
    sees each document in one pass)."""
    return min(doc_maxlen or model.config.doc_maxlen, model.max_doc_tokens)


def _mean_pool(hidden: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean over attended positions (e5's sentence embedding), on the CPU."""
    a = attn.to(hidden.dtype)[..., None]
    return F.normalize((hidden * a).sum(1) / a.sum(1).clamp_min(1), dim=-1).cpu()


def _pad(rows: Sequence[torch.Tensor], dtype: torch.dtype, tail: tuple) -> torch.Tensor:
    """Right-pad rows [n_i, *tail] with zeros into [len(rows), max n_i, *tail]."""
    out = torch.zeros(len(rows), max((r.shape[0] for r in rows), default=0), *tail, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def project(model, hidden: torch.Tensor, dim: int) -> torch.Tensor:
    """Hidden states [.., H] → unit ColBERT vectors [.., dim] through the model's head(s)."""
    return model.project(hidden, dim)


def save_heads(model, path: str | Path, dims: Sequence[int] | None = None,
               encoder_layers: Sequence[int] | None = None) -> Path:
    """Write just the projection head(s) as ``heads.<dim>.weight`` (+ ``.bias``) float32, and
    the given (trained) encoder layers as ``encoder.layers.<i>.*`` float16 — a small file
    that turns the bundled base encoder into the trained model (``model.bundled.load_bundled``).
    ``encoder_layers=None``: every layer that differs from the base encoder's
    (``layers_over_base``), so the heads load onto the states they were trained on; a model
    that is not the bundled encoder is refused (save it whole). The metadata's ``base``
    names the model it was first trained over, so a loader can refuse to put it on another;
    its ``name``, the trained model's (``fine_tuned_name``, after the file)."""
    from polylate.model.bundled import BUNDLED_NAME, layers_over_base

    path = Path(path)
    name = getattr(model, "name", "") or ""
    base = first_base(name)
    if encoder_layers is None:
        encoder_layers = layers_over_base(model)
        if encoder_layers is None:
            raise ValueError(f"{name or 'this model'} is not the bundled encoder with other "
                             "heads or layers (its embeddings, shapes or settings differ): a heads file cannot "
                             "stand for it; save it whole (model.save)")
        if not base.startswith(BUNDLED_NAME):  # the bundled encoder by its weights, whatever its name says
            base = BUNDLED_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for d in dims or model.head_dims:
        head = model.heads[str(d)]
        state[f"heads.{d}.weight"] = head.weight.detach().float().cpu().contiguous()
        if head.bias is not None:
            state[f"heads.{d}.bias"] = head.bias.detach().float().cpu().contiguous()
    for i in sorted(set(encoder_layers)):
        for key, value in model.encoder.layers[i].state_dict().items():
            state[f"encoder.layers.{i}.{key}"] = value.detach().half().cpu().contiguous()
    metadata = {"base": base, "name": fine_tuned_name(name, path.name.removesuffix(".safetensors"))}
    if model.config.trained_dims:  # sizes trained as truncations: served like the heads' own
        metadata["trained_dims"] = ",".join(map(str, model.config.trained_dims))
    write_safetensors(state, path, metadata=metadata)
    return path


TRAINER_STATE = "trainer_state.pt"
RUN_SIGNATURE = "run_signature.json"  # the saving run's signature, readable without the optimizer state


def checkpoint_signature(checkpoint: Path) -> dict | None:
    """The signature of the run that saved ``checkpoint`` (None when unreadable)."""
    try:
        return json.loads((checkpoint / RUN_SIGNATURE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    try:  # checkpoints written before run_signature.json existed
        return torch.load(checkpoint / TRAINER_STATE, map_location="cpu", weights_only=True)["signature"]
    except Exception:
        return None


class Trainer:
    """Contrastive (+ optional distillation) training of a :class:`~polylate.model.colbert.ColBERT`.

    Each batch scores every query against all positives and hard negatives in the batch
    (in-batch negatives); a document that is a known positive of a query (other than the
    one being scored) is masked out. The loss is InfoNCE (+ ``distill_weight`` × KL to a
    teacher) summed over the Matryoshka ``dims``.

    ``train_encoder_layers=0`` freezes the whole encoder: hidden states are cached once.
    ``n > 0`` also trains the top ``n`` encoder layers: the frozen layers below run once per
    text and their output is cached (``cache_lower_layers``, default), so a step costs only
    the ``n`` trained layers. ``cache_lower_layers=False`` re-runs the whole encoder every step
    (frozen or not) and keeps no token states: memory stays flat however large the data, the
    choice for big collections on a GPU (the cache holds every text's states in memory).
    ``encoder_lr`` (default ``lr``): the trained encoder layers' peak learning rate — pretrained
    layers usually want one far below a fresh head's. ``precision="bfloat16"`` computes the
    encoder and scores under bf16 autocast (the GPU path at full scale; also ~3× faster on CPUs
    with bf16 support) while weights and optimizer state stay float32.

    Teachers: ``teacher="items"`` uses :attr:`Triplet.teacher_scores` (own documents only);
    ``teacher="mean_pool"`` uses the cosine of the frozen encoder's mean-pooled states for
    every (query, document) in the batch — e5's own dense similarity.
    """

    def __init__(self, model, train_items: Sequence[Pair | Triplet], lr: float = 1e-3,
                 epochs: int = 1, batch_size: int = 32, warmup_ratio: float = 0.1,
                 grad_accum: int = 1, dims: Sequence[int] = (128, 96, 64),
                 train_encoder_layers: int = 0, checkpoint_dir: str | Path | None = None,
                 seed: int = 0, *, dim_weights: Sequence[float] | None = None,
                 temperature: float = 1.0, distill_weight: float = 0.0,
                 teacher: str = "items", teacher_temperature: float | None = None,
                 doc_maxlen: int | None = None, weight_decay: float = 0.01,
                 checkpoint_every: int | None = None, cache: HiddenCache | None = None,
                 encode_batch_size: int = 32, log_every: int = 0, show_progress: bool = False,
                 cache_lower_layers: bool = True, encoder_lr: float | None = None,
                 precision: str = "float32", keep_checkpoints: int | None = None,
                 resume_from: str | Path | None = None):
        if not train_items:
            raise ValueError("no training items")
        if grad_accum < 1 or batch_size < 1 or epochs < 1:
            raise ValueError("grad_accum, batch_size and epochs must be positive")
        for name, value in (("lr", lr), ("temperature", temperature), ("encoder_lr", encoder_lr),
                            ("teacher_temperature", teacher_temperature)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not (math.isfinite(distill_weight) and distill_weight >= 0):
            raise ValueError(f"distill_weight must be >= 0, got {distill_weight}")
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
        self.precision = precision
        if precision == "bfloat16" and next(model.parameters()).device.type == "cpu":
            from polylate.model.checkpoints import warn_if_bf16_is_emulated

            warn_if_bf16_is_emulated()
        if teacher not in ("items", "mean_pool"):
            raise ValueError(f"teacher must be 'items' or 'mean_pool', got {teacher!r}")
        n_layers = len(model.encoder.layers)
        if not 0 <= train_encoder_layers <= n_layers:
            raise ValueError(f"train_encoder_layers must be in [0, {n_layers}]")
        self.model = model
        self.items = [as_triplet(x) for x in train_items]
        if min(batch_size, len(self.items)) == 1 and not any(t.negatives for t in self.items):
            # the positive is the only candidate: every loss term is exactly 0
            raise ValueError(f"each batch holds one item ({len(self.items)} item(s), batch size {batch_size}) and no "
                             "item has hard negatives: there is nothing to contrast the positive with, so training "
                             "would change nothing; use more items per batch or give hard negatives")
        if teacher == "items" and distill_weight > 0:
            unscored = sum(t.teacher_scores is None for t in self.items)
            if unscored:
                raise ValueError(f"teacher='items' distils from each item's teacher_scores; {unscored} of "
                                 f"{len(self.items)} items have none")
            uneven = next((t for t in self.items if len(t.teacher_scores) != 1 + len(t.negatives)), None)
            if uneven is not None:
                raise ValueError(f"teacher_scores must score the positive and each negative: "
                                 f"{len(uneven.teacher_scores)} for 1 + {len(uneven.negatives)} documents")
        self.lr, self.encoder_lr, self.epochs, self.batch_size = lr, encoder_lr, epochs, batch_size
        self.warmup_ratio, self.grad_accum = warmup_ratio, grad_accum
        self.dims = tuple(int(d) for d in dims)
        if not self.dims or len(set(self.dims)) != len(self.dims):
            raise ValueError(f"dims must be distinct and at least one, got {list(self.dims)}")
        for d in self.dims:
            model._projection(d)  # validate
        # sizes trained as truncations travel with the model, so it is served and indexed at them
        extra = set(self.dims) - set(model.output_dims)
        if extra:
            model.config.trained_dims = sorted(set(model.config.trained_dims) | extra, reverse=True)
        self.dim_weights = tuple(dim_weights) if dim_weights is not None else (1.0,) * len(self.dims)
        if len(self.dim_weights) != len(self.dims) or not all(math.isfinite(w) and w >= 0 for w in self.dim_weights) \
                or not sum(self.dim_weights) > 0:
            raise ValueError(f"dim_weights must be one weight >= 0 per dim, not all 0, got {list(self.dim_weights)}")
        if doc_maxlen is not None:
            check_doc_maxlen(doc_maxlen)
        self.train_encoder_layers = train_encoder_layers
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.checkpoint_every = checkpoint_every
        if keep_checkpoints is not None and (isinstance(keep_checkpoints, bool) or keep_checkpoints < 1):
            raise ValueError(f"keep_checkpoints must be a positive number, got {keep_checkpoints!r}")
        self.keep_checkpoints = keep_checkpoints
        self._written: list[Path] = []  # this run's checkpoints, oldest first (for keep_checkpoints)
        self._dir_checked = False  # check_checkpoint_dir ran, or a resume made the folder this run's
        self.seed = seed
        self.temperature = temperature
        self.distill_weight = distill_weight
        self.teacher = teacher
        self.teacher_temperature = teacher_temperature
        self.doc_maxlen = training_doc_maxlen(model, doc_maxlen)
        self.show_progress = show_progress
        self.log_every = log_every
        self.history: list[dict] = []
        self.step = 0
        self._epoch, self._micro = 0, 0  # where the loop is: epoch, micro-batches done in it
        self._epoch_losses: list[float] = []  # the current epoch's micro-batch losses so far

        # which parameters train
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.heads.parameters():
            p.requires_grad_(True)
        if train_encoder_layers:
            for layer in model.encoder.layers[n_layers - train_encoder_layers:]:
                for p in layer.parameters():
                    p.requires_grad_(True)
        groups = []
        for params, group_lr in ((list(model.heads.parameters()), lr),
                                 ([p for p in model.encoder.parameters() if p.requires_grad], encoder_lr or lr)):
            for decayed in (True, False):
                chosen = [p for p in params if (p.dim() >= 2) == decayed]
                if chosen:
                    groups.append({"params": chosen, "lr": group_lr,
                                   "weight_decay": weight_decay if decayed else 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=lr)
        per_epoch = math.ceil(math.ceil(len(self.items) / batch_size) / grad_accum)
        self.total_steps = per_epoch * epochs
        warmup = int(round(warmup_ratio * self.total_steps))

        def schedule(step: int) -> float:
            if warmup and step < warmup:
                return (step + 1) / warmup
            return max(0.0, (self.total_steps - step) / max(1, self.total_steps - warmup))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

        self.positives: dict[str, set[str]] = {}
        for t in self.items:
            self.positives.setdefault(t.query, set()).add(t.positive)

        # the checkpoints are checked before the cache is filled (minutes on a large set), so a
        # wrong --resume or another run's checkpoint_dir is refused at once
        resumed = self._resumable_state(resume_from) if resume_from is not None else None
        if resumed is None and self.checkpoint_dir is not None:
            self.check_checkpoint_dir()

        self.cache = cache
        frozen = train_encoder_layers == 0
        lower = n_layers - train_encoder_layers if train_encoder_layers and cache_lower_layers else None
        if cache is not None and lower is not None and cache.lower_layers != lower:
            raise ValueError(f"the given cache holds lower_layers={cache.lower_layers}, "
                             f"training {train_encoder_layers} layer(s) needs {lower}")
        self._lower = lower  # train from cached lower-layer states (None: frozen, or re-run all)
        self._cached_tokens = frozen and cache_lower_layers  # frozen: the final states, cached once
        # texts must be in the cache before their batch is scored (hidden states or teacher)
        self._reads_cache = (self._cached_tokens or lower is not None
                             or teacher == "mean_pool" and distill_weight > 0)
        if self._reads_cache:
            if self.cache is None:
                self.cache = HiddenCache(model, doc_maxlen, encode_batch_size, keep_tokens=self._cached_tokens,
                                         lower_layers=lower)
            self.model.eval()
            with self._autocast():
                self.cache.add([t.query for t in self.items], True, show_progress)
                self.cache.add([d for t in self.items for d in (t.positive, *t.negatives)], False,
                               show_progress)

        # one head serves every dim → Matryoshka truncation of a single projection
        top = model.source_head(max(self.dims))
        self._nested = all(model.source_head(d) == top for d in self.dims)
        self._loss = matryoshka(self._batch_loss, self.dims, self.dim_weights) if self._nested else None
        if resumed is not None:
            self._restore(resumed)

    def _autocast(self):
        """bf16 compute where asked (weights, gradients and optimizer state stay float32)."""
        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.model.device.type, dtype=torch.bfloat16)

    # -- one batch -------------------------------------------------------------------------

    def _batch_loss(self, Q, Qmask, D, Dmask, labels, mask, teacher, teacher_mask):
        scores = maxsim_scores(Q, Qmask, D, Dmask)
        loss = infonce(scores, labels, self.temperature, mask)
        if teacher is not None and self.distill_weight > 0:
            loss = loss + self.distill_weight * kl_distillation(
                scores, teacher, self.temperature, self.teacher_temperature, teacher_mask)
        return loss

    def _hidden(self, texts: list[str], is_query: bool):
        if self._cached_tokens:
            return self.cache.padded(texts, is_query, self.model.device)
        if self._lower is not None:
            low, attn, keep = self.cache.padded_lower(texts, is_query, self.model.device)
            return self.model.encoder.resume(low, attn, self._lower), keep
        tok = self.model.tokenizer
        batch = tok.batch(tok.sequences(texts, is_query, None if is_query else self.doc_maxlen), is_query)
        ids = torch.from_numpy(batch.input_ids).to(self.model.device)
        attn = torch.from_numpy(batch.attention_mask).to(self.model.device)
        with torch.set_grad_enabled(self.train_encoder_layers > 0 and torch.is_grad_enabled()):
            hidden = self.model.encoder(ids, attn)
        return hidden, torch.from_numpy(batch.output_mask).to(self.model.device)

    def batch_loss(self, batch: list[Triplet]) -> tuple[torch.Tensor, dict[int, float]]:
        queries = [t.query for t in batch]
        docs: list[str] = []
        where: dict[str, int] = {}
        for t in batch:
            for d in (t.positive, *t.negatives):
                if d not in where:
                    where[d] = len(docs)
                    docs.append(d)
        device = self.model.device
        label_list = [where[t.positive] for t in batch]
        labels = torch.tensor(label_list, device=device)
        mask = torch.zeros(len(batch), len(docs), dtype=torch.bool, device=device)
        for i, t in enumerate(batch):
            for d in self.positives.get(t.query, ()):
                j = where.get(d)
                if j is not None and j != label_list[i]:
                    mask[i, j] = True
        teacher = teacher_mask = None
        if self.distill_weight > 0:
            if self.teacher == "mean_pool":
                teacher = (self.cache.pooled_matrix(queries, True)
                           @ self.cache.pooled_matrix(docs, False).T).to(device)
                teacher_mask = mask
            elif all(t.teacher_scores is not None for t in batch):
                teacher = torch.zeros(len(batch), len(docs), device=device)
                teacher_mask = torch.ones_like(mask)
                for i, t in enumerate(batch):
                    for d, s in zip((t.positive, *t.negatives), t.teacher_scores):
                        teacher[i, where[d]] = s
                        teacher_mask[i, where[d]] = False
        qh, qm = self._hidden(queries, True)
        dh, dm = self._hidden(docs, False)
        if self._nested:
            top = max(self.dims)
            total, parts = self._loss(project(self.model, qh, top), qm, project(self.model, dh, top), dm,
                                      labels, mask, teacher, teacher_mask)
        else:
            total, parts = qh.new_zeros(()), {}
            for d, w in zip(self.dims, self.dim_weights):
                parts[d] = self._batch_loss(project(self.model, qh, d), qm, project(self.model, dh, d),
                                            dm, labels, mask, teacher, teacher_mask)
                total = total + w * parts[d]
        return total, {d: float(v.detach()) for d, v in parts.items()}

    # -- the loop --------------------------------------------------------------------------

    def train(self) -> list[dict]:
        """Run the remaining epochs (all of them, or the rest after :meth:`resume`)."""
        if not self._dir_checked:
            self.check_checkpoint_dir()
        if self.step == 0:
            torch.manual_seed(self.seed)
        self.model.train(self.train_encoder_layers > 0)
        start = time.perf_counter()
        while self._epoch < self.epochs:
            epoch = self._epoch
            epoch_losses = self._epoch_losses
            self.optimizer.zero_grad(set_to_none=True)
            pending = []
            for n, batch in enumerate(batches(self.items, self.batch_size, seed=self.seed + epoch)):
                if n < self._micro:
                    continue  # done before the checkpoint this run resumed from
                with self._autocast():
                    loss, parts = self.batch_loss(batch)
                value = float(loss.detach())  # one device sync per micro-batch, reused below
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"the loss is {value} at epoch {epoch + 1}, micro-batch {n + 1}: training "
                        "diverged (lower the learning rate, raise the temperature); nothing was saved")
                (loss / self.grad_accum).backward()
                epoch_losses.append(value)
                pending.append((value, parts))
                if len(pending) == self.grad_accum:
                    self._micro = n + 1
                    self._optimizer_step(epoch, pending)
                    pending = []
            if pending:  # a last, shorter accumulation: its gradient is the mean over what it has
                for group in self.optimizer.param_groups:
                    for param in group["params"]:
                        if param.grad is not None:
                            param.grad.mul_(self.grad_accum / len(pending))
                self._micro = n + 1
                self._optimizer_step(epoch, pending)
            self._epoch, self._micro, self._epoch_losses = epoch + 1, 0, []
            mean = sum(epoch_losses) / max(1, len(epoch_losses))
            self.history.append({"epoch": epoch, "step": self.step, "epoch_loss": mean,
                                 "seconds": time.perf_counter() - start})
            if self.show_progress:
                print(f"  epoch {epoch + 1}/{self.epochs}: mean loss {mean:.4f} "
                      f"({time.perf_counter() - start:.0f}s)", flush=True)
            if self.checkpoint_dir is not None:
                self.checkpoint(f"epoch-{epoch + 1}")
        self.model.eval()
        return self.history

    def _optimizer_step(self, epoch: int, micro: list[tuple[float, dict[int, float]]]) -> None:
        """One update from the accumulated ``micro``-batches (loss, per-dim losses); logs, checkpoints."""
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        # unit-normalised outputs keep the loss finite even when the weights are not: check them
        finite = torch.stack([p.isfinite().all() for g in self.optimizer.param_groups for p in g["params"]])
        if not bool(finite.all()):  # one device sync per step, not one per parameter
            raise FloatingPointError(f"the trained weights are not finite after optimizer step {self.step}: "
                                     "training diverged (lower the learning rate); nothing was saved")
        loss = sum(x for x, _ in micro) / len(micro)
        parts = {d: sum(p[d] for _, p in micro) / len(micro) for d in micro[0][1]}
        rec = {"epoch": epoch, "step": self.step, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
               **{f"loss_{d}": v for d, v in parts.items()}}
        self.history.append(rec)
        if self.log_every and self.step % self.log_every == 0:
            print(f"  step {self.step}/{self.total_steps} loss {loss:.4f} lr {rec['lr']:.2e}", flush=True)
        if self.checkpoint_every and self.step % self.checkpoint_every == 0:
            self.checkpoint(f"step-{self.step}")

    # -- checkpoints -----------------------------------------------------------------------

    @functools.cached_property
    def _run_signature(self) -> dict:
        """What a resumed run must share with the one that saved: data, batching, schedule, and
        the frozen weights (a checkpoint over another base model would silently mix the two).
        Computed once: none of it changes during a run, and it reads every frozen weight."""
        data = hashlib.sha256()
        for t in self.items:
            data.update(repr((t.query, t.positive, t.negatives, t.teacher_scores)).encode())
        frozen = hashlib.sha256()
        for name, param in sorted(self.model.named_parameters()):
            if not param.requires_grad:
                frozen.update(f"{name}:{tuple(param.shape)}:{float(param.detach().double().sum()):.6e}".encode())
        return {"items": data.hexdigest(), "frozen": frozen.hexdigest(), "batch_size": self.batch_size,
                "grad_accum": self.grad_accum, "epochs": self.epochs, "dims": list(self.dims),
                "train_encoder_layers": self.train_encoder_layers, "seed": self.seed,
                # the objective and schedule: a resumed run with another lr or loss is another run
                "lr": self.lr, "encoder_lr": self.encoder_lr, "warmup_ratio": self.warmup_ratio,
                "temperature": self.temperature, "teacher": self.teacher,
                "teacher_temperature": self.teacher_temperature, "distill_weight": self.distill_weight,
                "dim_weights": list(self.dim_weights), "doc_maxlen": self.doc_maxlen, "precision": self.precision}

    def checkpoint(self, name: str) -> Path | None:
        """Save the model (the full native layout) plus ``trainer_state.pt`` (optimizer, schedule,
        position, RNG) under ``checkpoint_dir / name``, atomically: a crash mid-write leaves the
        previous checkpoints as they were and no half-written one."""
        if self.checkpoint_dir is None:
            return None
        final = self.checkpoint_dir / name
        partial = self.checkpoint_dir / f".{name}.partial"
        # what a run killed mid-write left (this partial, and the model's own temp folders beside
        # it): each is a whole model's size, and nothing else would ever remove it
        for stale in self.checkpoint_dir.glob(".*.partial*"):
            shutil.rmtree(stale, ignore_errors=True)
        # named for the checkpoint (folder/step): a trained model, not the one the run began from
        self.model.save(partial, name=fine_tuned_name(self.model.name, f"{self.checkpoint_dir.resolve().name}/{name}"))
        (partial / RUN_SIGNATURE).write_text(json.dumps(self._run_signature, sort_keys=True), encoding="utf-8")
        torch.save({"format": 1, "signature": self._run_signature, "step": self.step, "epoch": self._epoch,
                    "micro": self._micro, "epoch_losses": self._epoch_losses, "history": self.history,
                    "trained": {k: v.detach().cpu() for k, v in self.model.named_parameters() if v.requires_grad},
                    "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "rng": torch.get_rng_state()}, partial / TRAINER_STATE)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        self._written = [p for p in self._written if p != final] + [final]
        if self.keep_checkpoints is not None:
            self._prune_checkpoints()
        return final

    @property
    def written_checkpoints(self) -> list[Path]:
        """This run's checkpoints still on disk, oldest first."""
        return [p for p in self._written if p.exists()]

    def _checkpoints(self) -> list[Path]:
        """The checkpoints in ``checkpoint_dir`` (folders holding a trainer state)."""
        if self.checkpoint_dir is None or not self.checkpoint_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoint_dir.iterdir()
                      if not p.name.startswith(".") and (p / TRAINER_STATE).is_file())

    def _differs(self, saved: dict) -> list[str]:
        """What differs between this run and the one that saved ``saved`` (its signature);
        keys older checkpoints lack pass."""
        mine = self._run_signature
        return [k for k in mine if saved.get(k, mine[k]) != mine[k]]

    def _is_mine(self, checkpoint: Path) -> bool:
        """Whether this run (same data, model and options) saved ``checkpoint``."""
        saved = checkpoint_signature(checkpoint)
        return isinstance(saved, dict) and not self._differs(saved)

    def check_checkpoint_dir(self) -> None:
        """A new run refuses a checkpoint folder holding another run's checkpoints: writing
        ``epoch-1`` over theirs, or pruning them, would destroy a run that may be resumed."""
        foreign = [p.name for p in self._checkpoints() if not self._is_mine(p)]
        if foreign:
            raise ValueError(f"checkpoint_dir {self.checkpoint_dir} holds {len(foreign)} checkpoint(s) of another "
                             f"run ({', '.join(foreign[:4])}{', ...' if len(foreign) > 4 else ''}): resume that run "
                             "(resume), or give this one its own checkpoint_dir")
        self._dir_checked = True

    def _prune_checkpoints(self) -> None:
        """Delete all but the ``keep_checkpoints`` most recent of this run's checkpoints (each is
        a whole model, ~0.5 GB for e5-small): a long run with --checkpoint-every fills no disk.
        The ones written now come last in the order they were written (mtimes can tie), earlier
        ones of the same run (before a resume) before them; other runs' are never touched."""
        older = [p for p in self._checkpoints() if p not in self._written and self._is_mine(p)]
        older.sort(key=lambda p: (p / TRAINER_STATE).stat().st_mtime_ns)
        ordered = older + self._written
        for old in ordered[:-self.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        self._written = [p for p in self._written if p.exists()]

    def resume(self, checkpoint: str | Path) -> None:
        """Continue the run saved in ``checkpoint`` (a folder :meth:`checkpoint` wrote): trained
        weights, optimizer and schedule state, step and place in the epoch. The data, batching,
        dims and frozen weights must be the same as when it was saved (``resume_from=`` does the
        same, checking the checkpoint before the cache is filled)."""
        self._restore(self._resumable_state(checkpoint))

    def _resumable_state(self, checkpoint: str | Path) -> dict:
        """The trainer state saved in ``checkpoint``, once it is known to be this run's."""
        path = Path(checkpoint) / TRAINER_STATE
        if not path.is_file():
            raise ValueError(f"{checkpoint} is not a training checkpoint (no {TRAINER_STATE}); "
                             "start a new run from it as the model instead")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or foreign file; torch's own advice (weights_only=False) does not apply
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ValueError(f"{path} cannot be read ({type(exc).__name__}: {reason}); "
                             "it is not a whole trainer state") from None
        differ = self._differs(state["signature"])
        if differ:
            raise ValueError(f"{checkpoint} was saved by a different run ({', '.join(differ)} differ); "
                             "resume with the same data, model and training options")
        return state

    def _restore(self, state: dict) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state["trained"].items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self._epoch, self._micro = state["step"], state["epoch"], state["micro"]
        self.history = list(state["history"])
        self._epoch_losses = list(state["epoch_losses"])
        torch.set_rng_state(state["rng"])
        self._dir_checked = True

    def evaluate_loss(self, items: Sequence[Pair | Triplet], batch_size: int | None = None) -> float:
        """Mean batch loss on ``items`` without updating (texts must be cacheable)."""
        items = [as_triplet(x) for x in items]
        with self._autocast():
            if self._reads_cache:
                self.cache.add([t.query for t in items], True)
                self.cache.add([d for t in items for d in (t.positive, *t.negatives)], False)
        with torch.no_grad(), self._autocast():
            losses = [float(self.batch_loss(b)[0])
                      for b in batches(items, batch_size or self.batch_size, shuffle=False)]
        return sum(losses) / max(1, len(losses))


__all__ = ["Trainer", "HiddenCache", "project", "save_heads"]
