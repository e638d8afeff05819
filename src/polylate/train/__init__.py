"""Training ColBERT projection heads (and optionally top encoder layers).

``data``: readers for BEIR-style training folders and files of texts → :class:`Pair` / :class:`Triplet` lists.
``losses``: differentiable MaxSim, InfoNCE, KL distillation, Matryoshka wrapper.
``trainer``: :class:`Trainer` (AdamW, warmup/decay, grad accumulation, cached frozen encoder).
``parallel``: cross-lingual translation → English pairs from installed gettext catalogs.
``averaging``: weight-space interpolation between a start and a fine-tuned model (WiSE-FT).
``mining``: hard negatives (BM25 or ColBERT) and teacher scores for a folder → ``pairs.jsonl``.
"""

from polylate.train.averaging import interpolate_states
from polylate.train.data import Pair, Triplet, batches, load_pairs, load_triplets, load_triplets_file, read_beir
from polylate.train.parallel import load_gettext_pairs
from polylate.train.losses import infonce, kl_distillation, matryoshka, maxsim_scores
from polylate.train.mining import add_teacher_scores, mine_hard_negatives, write_pairs
from polylate.train.trainer import Trainer

__all__ = [
    "Pair", "Triplet", "add_teacher_scores", "batches", "interpolate_states", "load_gettext_pairs", "load_pairs",
    "load_triplets", "load_triplets_file", "mine_hard_negatives", "read_beir", "write_pairs",
    "infonce", "kl_distillation", "matryoshka", "maxsim_scores", "Trainer",
]
