"""polylate: multilingual late-interaction (ColBERT) retrieval, after Jina-ColBERT-v2.

The names below are imported when first used (PEP 562), so ``import polylate.cli`` (and
``polylate --help``) does not pay for torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what type checkers and editors see; at run time, __getattr__ imports them
    from polylate.config import MATRYOSHKA_DIMS, ColBERTConfig
    from polylate.index.exact import ExactIndex
    from polylate.index.plaid import Hit, PlaidIndex, SearchSettings
    from polylate.model.checkpoints import CheckpointError, load_model
    from polylate.model.colbert import ColBERT
    from polylate.scoring import maxsim, maxsim_packed, rerank

    Index = PlaidIndex

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

__all__ = [
    "MATRYOSHKA_DIMS", "CheckpointError", "ColBERT", "ColBERTConfig", "ExactIndex", "Hit", "Index",
    "PlaidIndex", "SearchSettings", "load_model", "maxsim", "maxsim_packed", "rerank", "__version__",
]


def __getattr__(name: str):
    if name == "Index":  # the default on-disk index
        name_in_module, module = "PlaidIndex", _WHERE["PlaidIndex"]
    elif name in _WHERE:
        name_in_module, module = name, _WHERE[name]
    else:  # a submodule after a plain ``import polylate`` (polylate.index.plaid...): as before
        try:
            submodule = importlib.import_module(f"polylate.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"polylate.{name}":  # the submodule exists but needs something missing
                raise
            raise AttributeError(f"module 'polylate' has no attribute {name!r}") from None
        for where in sorted(set(_WHERE.values())):  # what ``import polylate`` used to load
            importlib.import_module(where)
        return submodule
    value = getattr(importlib.import_module(module), name_in_module)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE, "Index"])
