"""polylate: multilingual late-interaction (ColBERT) retrieval, after Jina-ColBERT-v2."""

from polylate.config import MATRYOSHKA_DIMS, ColBERTConfig
from polylate.model.checkpoints import CheckpointError, load_model
from polylate.model.colbert import ColBERT
from polylate.scoring import maxsim, maxsim_packed, rerank

__version__ = "0.1.0"

__all__ = [
    "MATRYOSHKA_DIMS",
    "CheckpointError",
    "ColBERT",
    "ColBERTConfig",
    "load_model",
    "maxsim",
    "maxsim_packed",
    "rerank",
    "__version__",
]
