"""polylate: multilingual late-interaction (ColBERT) retrieval, after Jina-ColBERT-v2.

The names below are imported when first used (PEP 562), so ``import polylate.cli`` (and
``polylate --help``) does not pay for torch."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_WHERE = {
    "MATRYOSHKA_DIMS": "polylate.config",
    "ColBERTConfig": "polylate.config",
    "ExactIndex": "polylate.index.exact",
    "Hit": "polylate.index.plaid",
    "PlaidIndex": "polylate.index.plaid",
    "SearchSettings": "polylate.index.plaid",
    "CheckpointError": "polylate.model.checkpoints",
    "load_model": "polylate.model.checkpoints",
    "ColBERT": "polylate.model.colbert",
    "maxsim": "polylate.scoring",
    "maxsim_packed": "polylate.scoring",
    "rerank": "polylate.scoring",
}

__all__ = sorted([*_WHERE, "Index", "__version__"])


def __getattr__(name: str):
    if name == "Index":  # the default on-disk index
        name_in_module, module = "PlaidIndex", _WHERE["PlaidIndex"]
    elif name in _WHERE:
        name_in_module, module = name, _WHERE[name]
    else:
        raise AttributeError(f"module 'polylate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name_in_module)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE, "Index"])
