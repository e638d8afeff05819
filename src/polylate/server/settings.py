"""Server settings: one dataclass, filled from CLI options or ``POLYLATE_*`` environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_API_KEYS = "POLYLATE_API_KEYS"


def parse_keys(value: str | None) -> tuple[str, ...]:
    """Comma- or whitespace-separated keys; empty entries dropped."""
    if not value:
        return ()
    return tuple(k for k in value.replace(",", " ").split() if k)


@dataclass
class ServerSettings:
    model: str = "default"  # checkpoint folder, hub id or "default" (bundled)
    index_root: Path = Path("indexes")  # indexes live here, one folder per name
    api_keys: tuple[str, ...] = ()  # Bearer keys; none configured → no auth
    protect_reads: bool = False  # with keys: also require one for search/encode/rerank
    max_batch: int = 128  # texts (or documents) per request
    max_text_chars: int = 16_384  # characters per text, query or document
    max_request_bytes: int = 4 << 20  # request body size
    max_request_tokens: int = 65_536  # tokens one request may have encoded (texts, with markers)
    model_aliases: tuple[str, ...] = field(default_factory=tuple)  # extra accepted `model` names
    device: str | None = None
    dtype: str | None = None  # encoder precision: float32, bfloat16 or float16 (None: as loaded)
    # indexes as Qdrant collections instead of folders under index_root: a server or cluster,
    # or Qdrant's embedded local mode in a folder (":memory:" for tests)
    qdrant_url: str | None = None
    qdrant_path: str | None = None
    qdrant_api_key: str | None = None
    qdrant_prefix: str = "polylate-"  # collection name = prefix + index name
    warm_up: bool = True  # compile the search kernels in the background at start-up

    def __post_init__(self) -> None:
        self.index_root = Path(self.index_root)
        self.api_keys = tuple(self.api_keys)
        self.model_aliases = tuple(self.model_aliases)
        for name in ("max_batch", "max_text_chars", "max_request_bytes", "max_request_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.qdrant_url and self.qdrant_path:
            raise ValueError("give a Qdrant URL or a local-mode path, not both")
        if any(len(k) < 8 for k in self.api_keys):
            raise ValueError("API keys must be at least 8 characters long")

    @classmethod
    def from_env(cls, **overrides) -> ServerSettings:
        """Settings with API keys from ``POLYLATE_API_KEYS`` unless given explicitly."""
        if not overrides.get("api_keys"):
            overrides["api_keys"] = parse_keys(os.environ.get(ENV_API_KEYS))
        return cls(**overrides)
