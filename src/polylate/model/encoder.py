"""One post-LayerNorm transformer encoder for BERT, XLM-RoBERTa and Jina's XLM-R variant.

The three differ only in position handling: a learned table (BERT from 0, XLM-R from
``pad_id + 1``) or rotary embeddings applied to Q and K (Jina: base 10000,
non-interleaved half split over the whole head, positions from 0 at ``<s>``). Attention
goes through ``scaled_dot_product_attention`` so CUDA runs the flash kernel; a batch with
no padding passes no mask at all, which keeps flash eligible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EncoderConfig:
    vocab_size: int
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    layer_norm_eps: float = 1e-5
    position: str = "rotary"  # "rotary" | "absolute"
    max_positions: int = 8194
    position_offset: int = 0  # absolute only: first position id (XLM-R: pad_id + 1)
    type_vocab_size: int = 1
    rope_base: float = 10000.0
    rope_scaling: float = 1.5  # rotary: inputs up to this × max_positions (dynamic NTK scaling)
    activation: str = "gelu"  # exact erf GELU; "gelu_tanh" for the tanh approximation

    def __post_init__(self) -> None:
        if self.position not in ("rotary", "absolute"):
            raise ValueError(f"position must be 'rotary' or 'absolute', got {self.position!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"unsupported activation {self.activation!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_tokens(self) -> int:
        """Longest input the position scheme supports."""
        if self.position == "absolute":
            return self.max_positions - self.position_offset
        return int(self.max_positions * self.rope_scaling)

    def to_dict(self) -> dict:
        return asdict(self)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


# module-level functions, not lambdas: a model must pickle (spawned worker processes)
_ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": _gelu_tanh}


class RotaryEmbedding(nn.Module):
    """cos/sin tables for GPT-NeoX style (half-split) rotary embeddings.

    Inputs up to the trained length use the trained base exactly. Longer inputs (up to
    ``max_scaling`` × trained length) get dynamic NTK-aware scaling: the base is raised so
    the lowest frequencies still span the whole input, without touching short inputs.
    """

    def __init__(self, head_dim: int, base: float, trained_length: int, max_scaling: float = 1.0):
        super().__init__()
        self.head_dim, self.base = head_dim, base
        self.trained_length, self.max_scaling = trained_length, max_scaling
        self._cache: tuple[int, torch.device, torch.Tensor, torch.Tensor] | None = None

    def _tables(self, size: int, base: float, device: torch.device):
        exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim
        freqs = torch.outer(torch.arange(size, dtype=torch.float64), 1.0 / base**exponent)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(device, torch.float32), emb.sin().to(device, torch.float32)

    def _scaled_base(self, length: int) -> float:
        factor = length / self.trained_length
        if factor > self.max_scaling + 1e-9:
            raise ValueError(f"{length} tokens exceed the rotary limit of "
                             f"{int(self.trained_length * self.max_scaling)}")
        return self.base * factor ** (self.head_dim / (self.head_dim - 2))

    def per_row(self, lengths: list[int], length: int, device: torch.device):
        """Tables [B, 1, L, head_dim] where each row is scaled for its own length: a short text
        padded beside a long one must get the same vectors as when encoded alone."""
        tables = {}
        for n in set(lengths):
            base = self._scaled_base(n) if n > self.trained_length else self.base
            tables[n] = self._tables(length, base, device)
        cos = torch.stack([tables[n][0] for n in lengths])[:, None]
        sin = torch.stack([tables[n][1] for n in lengths])[:, None]
        return cos, sin

    def forward(self, length: int, device: torch.device):
        """float32 tables (bf16 angles would drift at long positions)."""
        if length > self.trained_length:
            return self._tables(length, self._scaled_base(length), device)
        c = self._cache
        if c is None or c[0] < length or c[1] != device:
            size = min(self.trained_length, max(length, 512 if c is None else c[0]))
            c = (size, device, *self._tables(size, self.base, device))
            self._cache = c
        return c[2][:length], c[3][:length]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, L, head_dim]; rotate pairs (i, i + head_dim/2) in float32."""
    xf = x.float()
    half = x.shape[-1] // 2
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x, mask, rotary):
        b, length, hidden = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.num_heads, hidden // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, L, head_dim]
        if rotary is not None:
            cos, sin = rotary
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(ctx.transpose(1, 2).reshape(b, length, hidden))


class Layer(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.act = _ACTIVATIONS[config.activation]

    def forward(self, x, mask, rotary):
        x = self.norm1(x + self.attn(x, mask, rotary))
        return self.norm2(x + self.fc2(self.act(self.fc1(x))))


class Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = (
            nn.Embedding(config.max_positions, config.hidden_size)
            if config.position == "absolute"
            else None
        )
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.word(input_ids) + self.token_type.weight[0]
        if self.position is not None:
            length = input_ids.shape[1]
            start = self.config.position_offset
            x = x + self.position.weight[start : start + length]
        return self.norm(x)


class Encoder(nn.Module):
    """Token ids (right padded) → contextual hidden states [B, L, H]."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_layers))
        self.rotary = (
            RotaryEmbedding(config.head_dim, config.rope_base, config.max_positions, config.rope_scaling)
            if config.position == "rotary"
            else None
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                stop: int | None = None):
        """``stop``: run only the first ``stop`` layers (what :meth:`resume` continues from)."""
        length = input_ids.shape[1]
        if length > self.config.max_tokens:
            raise ValueError(
                f"input of {length} tokens exceeds the encoder's limit of {self.config.max_tokens}"
            )
        return self.resume(self.embeddings(input_ids), attention_mask, 0, stop)

    def resume(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None,
               start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run layers ``[start, stop)`` on hidden states [B, L, H]: lets training cache the
        frozen lower layers' output once and re-run only the layers it trains."""
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            # [B, 1, 1, L] boolean key mask; rows of padding still attend somewhere (no NaN)
            mask = attention_mask.bool()[:, None, None, :]
        rotary = None
        if self.rotary is not None:
            length = hidden.shape[1]
            if attention_mask is not None and length > self.rotary.trained_length:
                # past the trained length the scaling depends on the length: each row its own
                rotary = self.rotary.per_row(attention_mask.sum(1).tolist(), length, hidden.device)
            else:
                rotary = self.rotary(length, hidden.device)
        x = hidden
        for layer in self.layers[start:stop]:
            x = layer(x, mask, rotary)
        return x

    def init_weights(self, std: float = 0.02, generator: torch.Generator | None = None) -> None:
        """BERT-style initialisation for models built from scratch (tests, training)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            else:
                with torch.no_grad():
                    p.normal_(0.0, std, generator=generator)

