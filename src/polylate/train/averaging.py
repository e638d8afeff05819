"""Weight-space interpolation between two checkpoints of one architecture (WiSE-FT).

Why: fine-tuning gains on the new data tend to cost some of what the starting model did well.
Averaging the weights, ``(1 − α)·start + α·tuned``, keeps most of the gain and much of the
start's robustness, without more training (Wortsman et al., "Robust fine-tuning of zero-shot
models", CVPR 2022). Our use: the bundled model's cross-lingual fine-tune
(``benchmarks/interpolate_weights.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def interpolate_states(start: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                       alpha: float) -> dict[str, torch.Tensor]:
    """``(1 − alpha)·start + alpha·tuned`` per tensor, in ``start``'s dtypes.

    Both must hold the same keys with the same shapes (a mismatch means two different
    architectures, which cannot be averaged); floating tensors are mixed in float32,
    integer ones (counters, ids) must be equal and are kept."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if start.keys() != tuned.keys():
        diff = sorted(set(start) ^ set(tuned))
        raise ValueError(f"the two states hold different weights, e.g. {diff[:3]}")
    out = {}
    for key, a in start.items():
        b = tuned[key]
        if a.shape != b.shape:
            raise ValueError(f"{key}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
        if not a.is_floating_point():
            if not torch.equal(a, b.to(a.dtype)):
                raise ValueError(f"{key}: non-float weights differ, cannot interpolate them")
            out[key] = a.clone()
            continue
        mixed = torch.lerp(a.detach().float(), b.detach().float().to(a.device), alpha)
        out[key] = mixed.to(a.dtype)
    return out


__all__ = ["interpolate_states"]
