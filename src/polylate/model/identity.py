"""Which model made a set of stored vectors, recorded beside them (index manifests, Qdrant
collection metadata), so vectors of another model are never mixed in or searched with.

A model's name is not enough: it is a folder name for most layouts and changes when the folder
moves, and a retrained head keeps it. The record holds a signature instead: a few weights
sampled from the embeddings, the last layer and the head, compared with a tolerance that
survives loading in bf16/fp16 or on another device.
"""

from __future__ import annotations

import math

_SAMPLES = 16  # per tensor


def signature(model) -> list[float]:
    import torch

    picks = (model.encoder.embeddings.word.weight, model.encoder.layers[-1].fc2.weight,
             model.heads[str(model.max_dim)].weight)
    out: list[float] = []
    for weight in picks:
        flat = weight.detach().flatten()
        at = torch.tensor([i * (flat.numel() - 1) // (_SAMPLES - 1) for i in range(_SAMPLES)], device=flat.device)
        out += [round(float(v), 5) for v in flat[at].float().cpu()]
    return out


def model_record(model, name_or_path: str, dim: int, doc_maxlen: int | None) -> dict:
    """What a store records about the model that encodes its vectors."""
    return {"name_or_path": name_or_path, "name": model.name, "dim": dim, "doc_maxlen": doc_maxlen,
            "signature": signature(model)}


def model_mismatch(recorded: dict | None, model) -> str | None:
    """Why ``model`` is not the one ``recorded`` (None: it is, or the record cannot tell).
    Records from before signatures are compared by name."""
    recorded = recorded or {}
    theirs = recorded.get("signature")
    if theirs:
        ours = signature(model)
        same = len(ours) == len(theirs) and all(
            math.isclose(a, b, rel_tol=0.02, abs_tol=2e-3) for a, b in zip(ours, theirs))
        if same:
            return None
        return (f"its weights are not those of the model the vectors were made with "
                f"({recorded.get('name') or recorded.get('name_or_path')!r})")
    if recorded.get("name") and model.name and recorded["name"] != model.name:
        return f"it is {model.name!r}, the vectors were made with {recorded['name']!r}"
    return None
