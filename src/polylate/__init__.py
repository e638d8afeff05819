"""polylate: multilingual late-interaction (ColBERT) retrieval, after Jina-ColBERT-v2."""

from polylate.config import MATRYOSHKA_DIMS, ColBERTConfig
from polylate.index.exact import ExactIndex
from polylate.index.plaid import Hit, PlaidIndex, SearchSettings
from polylate.model.checkpoints import CheckpointError, load_model
from polylate.model.colbert import ColBERT
from polylate.scoring import maxsim, maxsim_packed, rerank

Index = PlaidIndex  # the default on-disk index

__version__ = "0.1.0"

__all__ = [
    "MATRYOSHKA_DIMS",
    "CheckpointError",
    "ColBERT",
    "ColBERTConfig",
    "ExactIndex",
    "Hit",
    "Index",
    "PlaidIndex",
    "SearchSettings",
    "load_model",
    "maxsim",
    "maxsim_packed",
    "rerank",
    "__version__",
]
