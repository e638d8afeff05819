"""Which model made a set of stored vectors, recorded beside them (index manifests, Qdrant
collection metadata), so vectors of another model are never mixed in or searched with.

A model's name is not enough: it is a folder name for most layouts and changes when the folder
moves, and a retrained head keeps it. The record holds a signature instead: a few values
sampled from every encoder tensor and from the projection to the stored dim, compared with a
tolerance that survives loading in bf16/fp16, on another device or from another layout.
Weights do not say how text becomes tokens (markers, query expansion, punctuation dropped
from documents, the vocabulary), so the record also holds a probe: the first components of
the vectors the model makes of a fixed query and document, compared token by token.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

_PER_TENSOR = 8
_FINE_TUNED = re.compile(r".* \(fine-tuned from (.+)\)")


def first_base(name: str) -> str:
    """The model a name says it was first fine-tuned from (the name itself when it says none)."""
    earlier = _FINE_TUNED.fullmatch(name or "")
    return earlier.group(1) if earlier else (name or "")


def fine_tuned_name(base_name: str, saved_as: str) -> str:
    """A trained model's name: where it was saved (a folder's or file's name) and the model it
    was first fine-tuned from, so /health, answers and index records say which model it is."""
    base = first_base(base_name)
    return f"{saved_as} (fine-tuned from {base})" if base else saved_as


def signature(model, dim: int) -> list[float]:
    """Values that change when any weight behind ``dim``-d vectors does (raises ValueError when
    the model makes no such vectors)."""
    import torch

    weight, bias = model._projection(dim)
    tensors = [t for _, t in sorted(model.encoder.state_dict().items())] + [weight] + ([bias] if bias is not None else [])
    out: list[float] = []
    for tensor in tensors:
        flat = tensor.detach().flatten()
        n = flat.numel()
        at = torch.tensor([i * (n - 1) // (_PER_TENSOR - 1) for i in range(_PER_TENSOR)], device=flat.device)
        out += [float(f"{float(v):.7g}") for v in flat[at].float().cpu()]
    return out


_PROBE_QUERY = "Paris river?"  # short: room for expansion in any vocabulary
_PROBE_DOCUMENT = "The Seine, in Paris (777 km)."
_PROBE_COMPONENTS = 16
#: least cosine, token by token, between two probes of one model (bf16 loads and other devices
#: stay above 0.999; another marker, expansion or punctuation rule changes the token count or
#: drops far below)
_PROBE_MIN_COSINE = 0.98


def probe(model, dim: int) -> dict:
    """The first components of the ``dim``-d vectors ``model`` makes of a fixed query and
    document: what its weights cannot tell (how text becomes tokens)."""
    def rows(vectors) -> list[list[float]]:
        return [[float(f"{float(x):.4g}") for x in row[:_PROBE_COMPONENTS]] for row in vectors]

    return {"query": rows(model.encode(_PROBE_QUERY, is_query=True, dim=dim)),
            "document": rows(model.encode(_PROBE_DOCUMENT, dim=dim))}


def _same_probe(a: dict, b: dict) -> bool:
    import numpy as np

    for side in ("query", "document"):
        x, y = np.asarray(a.get(side), dtype=np.float64), np.asarray(b.get(side), dtype=np.float64)
        if x.shape != y.shape or x.ndim != 2:
            return False
        cos = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-12)
        if len(cos) and cos.min() < _PROBE_MIN_COSINE:
            return False
    return True


_TEXT_DIFFERS = ("the same weights, but it makes other tokens of the same text (its query or document marker, "
                 "query expansion, the punctuation it drops or its vocabulary differ)")


def model_record(model, name_or_path: str, dim: int, doc_maxlen: int | None) -> dict:
    """What a store records about the model that encodes its vectors (a folder as its absolute
    path: the store is used from other working directories)."""
    local = Path(name_or_path).expanduser()
    if name_or_path != "default" and local.exists():
        name_or_path = str(local.resolve())
    return {"name_or_path": name_or_path, "name": model.name, "dim": dim, "doc_maxlen": doc_maxlen,
            "signature": signature(model, dim), "probe": probe(model, dim)}


def shown(record: dict | None, paths: bool = True) -> dict | None:
    """A model record as stats show it: without the signature (a thousand numbers that mean
    nothing to a reader, and most of the size of an index listing); ``paths=False`` (a
    server's clients): a model folder by its name, not where it lies on the server."""
    if record is None:
        return None
    out = {k: v for k, v in record.items() if k not in ("signature", "probe")}
    if "name_or_path" in out:
        out["name_or_path"] = _where(out["name_or_path"], paths)
    return out


def _where(name_or_path, paths: bool):
    """A recorded ``name_or_path`` as shown: ``paths=False`` turns a folder into its name."""
    if not paths and isinstance(name_or_path, str) and Path(name_or_path).is_absolute():
        return Path(name_or_path).name
    return name_or_path


def _close(a, b) -> bool:
    """Two signatures of one model (through bf16/fp16 loads and other layouts of it)."""
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=0.01, abs_tol=1e-6) for x, y in zip(a, b))


def records_mismatch(theirs: dict | None, ours: dict | None) -> str | None:
    """Why vectors recorded as made by ``ours`` cannot join those made by ``theirs`` (None: the
    same model, or records too old to tell apart by more than their names)."""
    theirs, ours = theirs or {}, ours or {}
    a, b = theirs.get("signature"), ours.get("signature")
    if a and b and theirs.get("dim") == ours.get("dim") and len(a) == len(b):
        if _close(a, b):
            if theirs.get("probe") and ours.get("probe") and not _same_probe(theirs["probe"], ours["probe"]):
                return f"they were made by a model with {_TEXT_DIFFERS}"
            return None
        same = theirs.get("name") == ours.get("name")
        return (f"{'both are named' if same else 'they are'} {theirs.get('name')!r}"
                + ("" if same else f" and {ours.get('name')!r}") + ", with different weights")
    if theirs.get("name") != ours.get("name"):
        return f"they hold vectors of {theirs.get('name')!r}, these are of {ours.get('name')!r}"
    return None


def model_mismatch(recorded: dict | None, model, cache: dict | None = None, paths: bool = True) -> str | None:
    """Why ``model`` is not the one ``recorded`` (None: it is, or the record cannot tell).
    Records from before signatures (or of another signature format) are compared by name.
    ``cache``: signatures and probes of a model that does not change (a server's), kept
    across calls (each takes a few ms). ``paths``: as in ``shown``."""
    recorded = recorded or {}
    made_by = recorded.get("name") or _where(recorded.get("name_or_path"), paths)
    theirs, dim = recorded.get("signature"), recorded.get("dim")
    if theirs and isinstance(dim, int):
        try:
            ours = _cached(cache, dim, lambda: signature(model, dim))
        except ValueError:
            return f"it makes no {dim}-d vectors (its sizes: {model.output_dims})"
        if len(ours) == len(theirs):
            if _close(ours, theirs):
                return _probe_mismatch(recorded, model, cache, dim)
            where = _where(recorded.get("name_or_path"), paths)
            made = repr(made_by) + (f" (loaded from {where})" if where and where != made_by else "")
            return f"its weights differ from those of the model that made them, {made}"
    if recorded.get("name") and model.name and recorded["name"] != model.name:
        return f"it is {model.name!r}, the vectors were made with {recorded['name']!r}"
    return None


def _probe_mismatch(recorded: dict, model, cache: dict | None, dim: int) -> str | None:
    """``model_mismatch`` for a model with the recorded weights: does it tokenise alike?"""
    theirs = recorded.get("probe")
    if not isinstance(theirs, dict):  # recorded before probes
        return None
    ours = _cached(cache, ("probe", dim), lambda: probe(model, dim))
    return None if _same_probe(ours, theirs) else f"it has {_TEXT_DIFFERS} from the model that made the vectors"


def _cached(cache: dict | None, key, compute):
    """``cache[key]``, computed (and kept, given a cache) the first time."""
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]
