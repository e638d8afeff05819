"""An independent reference of Jina's XLM-R flash encoder, written straight from its spec.

Deliberately different from polylate.model.encoder: it reads the published key names
directly, rotates with complex numbers instead of the half-split trick, and computes
attention with explicit softmax — so agreement means both follow the spec.
"""

from __future__ import annotations

import math

import torch


def rotary_complex(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """x [L, heads, d]: pair (i, i + d/2) as a complex number, rotate by pos·base^(-2i/d)."""
    length, _, d = x.shape
    half = d // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    freqs = base ** (-torch.arange(half, dtype=torch.float64) * 2 / d)
    angle = torch.arange(length, dtype=torch.float64)[:, None] * freqs[None, :]
    z = z * torch.polar(torch.ones_like(angle), angle)[:, None, :]
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def jina_reference(state: dict, ids: list[int], heads: int, eps: float = 1e-5) -> torch.Tensor:
    """One unpadded sequence → final hidden states [L, H] (float64 for a tight reference)."""
    s = {k: v.double() for k, v in state.items()}
    x = s["roberta.embeddings.word_embeddings.weight"][torch.tensor(ids)]
    x = x + s["roberta.embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, s["roberta.emb_ln.weight"], s["roberta.emb_ln.bias"], eps)
    hidden = x.shape[-1]
    d = hidden // heads
    n = 0
    while f"roberta.encoder.layers.{n}.norm1.weight" in s:
        p = f"roberta.encoder.layers.{n}."
        qkv = x @ s[p + "mixer.Wqkv.weight"].T + s[p + "mixer.Wqkv.bias"]
        q, k, v = (qkv[:, i * hidden : (i + 1) * hidden].reshape(-1, heads, d) for i in range(3))
        q, k = rotary_complex(q), rotary_complex(k)
        att = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(d)
        att = torch.softmax(att, dim=-1)
        ctx = torch.einsum("hij,jhd->ihd", att, v).reshape(-1, hidden)
        a = ctx @ s[p + "mixer.out_proj.weight"].T + s[p + "mixer.out_proj.bias"]
        x = layer_norm(x + a, s[p + "norm1.weight"], s[p + "norm1.bias"], eps)
        h = x @ s[p + "mlp.fc1.weight"].T + s[p + "mlp.fc1.bias"]
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
        h = h @ s[p + "mlp.fc2.weight"].T + s[p + "mlp.fc2.bias"]
        x = layer_norm(x + h, s[p + "norm2.weight"], s[p + "norm2.bias"], eps)
        n += 1
    return x


def colbert_vectors(hidden: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(hidden @ linear.double().T, dim=-1)
