"""Writers for the published checkpoint layouts: a polylate model (trained here, or loaded from
any layout) saved so that PyLate, Stanford ColBERT (colbert-ai) or Jina's code load it and
produce the same token vectors.

The inverse of ``model/checkpoints.py`` and sharing its key tables. A target layout that
cannot express one of the model's settings (a marker of several tokens, queries without
mask expansion, a punctuation rule its library applies differently) is named before anything
is written; settings that only change some vectors can be accepted with ``allow_changes``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from polylate.model.checkpoints import (
    EMBEDDING_NAMES,
    HF_EMBEDDING_NORM,
    HF_LAYER_NAMES,
    HF_POSITIONS,
    HF_QKV,
    JINA_EMBEDDING_NORM,
    JINA_LAYER_NAMES,
)
from polylate.model.colbert import ColBERT, replace_folder, write_safetensors
from polylate.paths import file_in_the_way

LAYOUTS = ("polylate", "pylate", "stanford", "jina")
_HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}


class ExportError(ValueError):
    """The model cannot be written in the asked layout; says what stands in the way."""


def export_model(
    model: ColBERT,
    folder: str | Path,
    layout: str = "polylate",
    dim: int | None = None,
    dtype: torch.dtype | None = None,
    allow_changes: bool = False,
) -> list[str]:
    """Write ``model`` at ``dim`` (default: its own) into ``folder`` in ``layout``, replacing
    the folder whole. Returns the accepted differences (empty: the target library encodes
    exactly as this model does)."""
    if layout not in LAYOUTS:
        raise ExportError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    dim = model.config.dim if dim is None else dim
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise ExportError(f"dim must be an integer, got {dim!r}")
    if not 1 <= dim <= model.max_dim:
        raise ExportError(f"dim must be in [1, {model.max_dim}], got {dim}")
    check_output_folder(Path(folder))
    if layout == "polylate":
        return _export_native(model, Path(folder), dim, dtype)
    blockers, changes = check_layout(model, layout, dim)
    if blockers:
        raise ExportError(f"the {layout} layout cannot hold this model: " + "; ".join(blockers))
    if changes and not allow_changes:
        raise ExportError(f"in the {layout} layout this model would encode differently: "
                          + "; ".join(changes) + " (allow_changes / --allow-changes accepts that)")
    writer = {"pylate": _write_pylate, "stanford": _write_stanford, "jina": _write_jina}[layout]
    replace_folder(folder, lambda tmp: writer(model, tmp, dim, dtype))
    return changes


def check_output_folder(folder: Path) -> None:
    """The output folder is replaced whole: only a model checkpoint or an empty folder may be."""
    blocker = file_in_the_way(folder)
    if blocker:
        raise ExportError(f"{blocker} is a file, not a folder" if blocker != folder
                          else f"{folder} is a file; the output is a folder")
    if folder.is_dir() and any(folder.iterdir()):
        from polylate.model.checkpoints import CheckpointError, detect_layout

        try:
            detect_layout(folder)
        except (CheckpointError, OSError):
            raise ExportError(f"{folder} holds files that are not a model checkpoint; the output folder is "
                              "replaced whole, so give a new or empty folder") from None


def check_layout(model: ColBERT, layout: str, dim: int | None = None) -> tuple[list[str], list[str]]:
    """(what makes ``layout`` impossible, what it would encode differently) for ``model``
    written at ``dim`` (default: its own)."""
    tok, cfg, enc = model.tokenizer, model.config, model.encoder.config
    blockers, changes = [], []
    for what, ids, marker in (("query", tok.query_marker_ids, cfg.query_marker),
                              ("document", tok.doc_marker_ids, cfg.doc_marker)):
        if len(ids) != 1:
            blockers.append(f"its {what} marker {marker!r} is {len(ids)} tokens and {_library(layout)} "
                            "inserts one marker token")
    rotary = enc.position == "rotary"
    if layout == "jina" and not rotary:
        blockers.append("its encoder has learned absolute positions; the jina layout is for rotary "
                        "encoders (use stanford or pylate)")
    if layout in ("stanford", "pylate"):
        if rotary:
            blockers.append(f"its encoder uses rotary positions, which {_library(layout)} runs only "
                            "through Jina's remote code (use the jina layout)")
        elif enc.position_offset not in (0, _xlmr_offset(model)):
            blockers.append(f"its positions start at {enc.position_offset}; HF BERT starts at 0 and "
                            f"XLM-R at pad id + 1 = {_xlmr_offset(model)}")
    if layout == "pylate" and not cfg.query_expansion:
        changes.append("PyLate before 1.3 ignores do_query_expansion and pads queries with mask tokens "
                       "(1.3 and later honour it; this model does not expand queries)")
    strips = layout == "pylate"
    if cfg.strip_text != strips and _whitespace_is_tokenised(model):
        changes.append(f"{_library(layout)} {'strips' if strips else 'keeps'} whitespace around each "
                       f"text (this model {'keeps' if strips else 'strips'} it: a trailing space is a "
                       "token of its own in this vocabulary)")
    if cfg.doc_maxlen > model.max_doc_tokens:
        changes.append(f"documents are cut at {model.max_doc_tokens} tokens, the encoder's positions "
                       f"(this model encodes up to {cfg.doc_maxlen} in overlapping windows)")
    if layout in ("stanford", "jina"):
        _, bias = model._projection(model.config.dim if dim is None else dim)
        if bias is not None and bool(bias.detach().abs().max() > 0):
            blockers.append("its projection head has a bias, which HF_ColBERT's linear layer lacks")
        if not cfg.query_expansion:
            changes.append("queries are padded with mask tokens to query_maxlen (colbert-ai always "
                           "expands them; this model does not)")
        colbert_skip = _skip_ids_under(model, "colbert")
        if colbert_skip != tok.skip_ids:
            changes.append(f"documents drop {_describe(model, colbert_skip ^ tok.skip_ids)} differently "
                           "(colbert-ai drops the first token of each punctuation character)")
    return blockers, changes


def _library(layout: str) -> str:
    return {"pylate": "PyLate", "stanford": "colbert-ai", "jina": "colbert-ai"}[layout]


def _xlmr_offset(model: ColBERT) -> int:
    return model.tokenizer.pad_id + 1


def _skip_ids_under(model: ColBERT, rule: str) -> set[int]:
    """The ids colbert-ai's ``mask_punctuation`` drops from this model's documents."""
    if not model.tokenizer.skip_ids:  # exported as mask_punctuation false: nothing dropped
        return set()
    import string

    return {i for w in string.punctuation for i in model.tokenizer._skip_ids(w, rule)}


def _whitespace_is_tokenised(model: ColBERT) -> bool:
    encode = model.tokenizer.tokenizer.encode
    plain = encode("a", add_special_tokens=False).ids
    return any(encode(t, add_special_tokens=False).ids != plain for t in ("a ", " a", "a\n"))


def _doc_maxlen(model: ColBERT) -> int:
    """Peers truncate documents instead of windowing them: no longer than the positions allow."""
    return min(model.config.doc_maxlen, model.max_doc_tokens)


def _describe(model: ColBERT, ids: set[int]) -> str:
    shown = [repr(model.tokenizer.tokenizer.id_to_token(i)) for i in sorted(ids)[:6]]
    return f"{len(ids)} token(s) ({', '.join(shown)}{', ...' if len(ids) > 6 else ''})"


# -- weights --------------------------------------------------------------------------------


def _encoder_state(model: ColBERT, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    return {k: _tensor(v, dtype) for k, v in model.encoder.state_dict().items()}


def _tensor(v: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    v = v.detach().cpu()
    return (v if dtype is None else v.to(dtype)).contiguous().clone()


def _head(model: ColBERT, dim: int, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    weight, bias = model._projection(dim)
    out = {"linear.weight": _tensor(weight, dtype)}
    if bias is not None and bool(bias.detach().abs().max() > 0):
        out["linear.bias"] = _tensor(bias, dtype)
    return out


def hf_state(native: dict[str, torch.Tensor], num_layers: int, prefix: str = "") -> dict[str, torch.Tensor]:
    """Native encoder keys → HF BertModel / XLMRobertaModel keys under ``prefix``."""
    out = {published: native[f"embeddings.{n}"] for n, published in EMBEDDING_NAMES.items()}
    for part in ("weight", "bias"):
        out[f"{HF_EMBEDDING_NORM}.{part}"] = native[f"embeddings.norm.{part}"]
    out[HF_POSITIONS] = native["embeddings.position.weight"]
    for n in range(num_layers):
        p, o = f"encoder.layer.{n}.", f"layers.{n}."
        for part in ("weight", "bias"):
            for name, chunk in zip(HF_QKV, native[o + f"attn.qkv.{part}"].chunk(3)):
                out[p + f"attention.self.{name}.{part}"] = chunk.contiguous()
            for n_part, hf in HF_LAYER_NAMES.items():
                out[p + f"{hf}.{part}"] = native[o + f"{n_part}.{part}"]
    return {prefix + k: v for k, v in out.items()}


def unused_pooler(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Zero weights for BertModel's pooler, which ColBERT never reads (nor keeps): without them
    transformers loads the folder with a "newly initialized ... you should train" report that
    reads like a broken export. Zero, so nothing random is written."""
    norm = state[f"{prefix}{HF_EMBEDDING_NORM}.weight"]
    hidden = norm.shape[0]
    return {f"{prefix}pooler.dense.weight": norm.new_zeros(hidden, hidden),
            f"{prefix}pooler.dense.bias": norm.new_zeros(hidden)}


def jina_state(native: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Native encoder keys → Jina's flash XLM-R keys (``roberta.`` prefix)."""
    out = {published: native[f"embeddings.{n}"] for n, published in EMBEDDING_NAMES.items()}
    for part in ("weight", "bias"):
        out[f"{JINA_EMBEDDING_NORM}.{part}"] = native[f"embeddings.norm.{part}"]
    for n in range(num_layers):
        for n_part, jina in JINA_LAYER_NAMES.items():
            for part in ("weight", "bias"):
                out[f"encoder.layers.{n}.{jina}.{part}"] = native[f"layers.{n}.{n_part}.{part}"]
    return {"roberta." + k: v for k, v in out.items()}


# -- configs --------------------------------------------------------------------------------


def _model_type(model: ColBERT) -> str:
    enc = model.encoder.config
    if enc.position == "rotary" or enc.position_offset == _xlmr_offset(model) != 0:
        return "xlm-roberta"
    return "bert"


def _hf_config(model: ColBERT, dtype: torch.dtype | None, architectures: list[str]) -> dict:
    enc = model.encoder.config
    return {
        "architectures": architectures,
        "model_type": _model_type(model),
        "vocab_size": enc.vocab_size,
        "hidden_size": enc.hidden_size,
        "num_hidden_layers": enc.num_layers,
        "num_attention_heads": enc.num_heads,
        "intermediate_size": enc.intermediate_size,
        "hidden_act": _HF_ACT[enc.activation],
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": enc.max_positions,
        "type_vocab_size": enc.type_vocab_size,
        "initializer_range": 0.02,
        "layer_norm_eps": enc.layer_norm_eps,
        "pad_token_id": model.tokenizer.pad_id,
        "bos_token_id": model.tokenizer.cls_id,
        "eos_token_id": model.tokenizer.sep_id,
        "position_embedding_type": "rotary" if enc.position == "rotary" else "absolute",
        "torch_dtype": str(dtype or model.dtype).removeprefix("torch."),
        "transformers_version": _transformers_version(),
    }


#: the transformers release whose BertConfig/XLMRobertaConfig fields these configs follow,
#: written where transformers is not installed
CONFIG_TRANSFORMERS_VERSION = "4.57.1"


def _transformers_version() -> str:
    """transformers 5.x warns that a local tokenizer without ``transformers_version`` in its
    config.json may have Mistral's "incorrect regex pattern" ("will lead to incorrect
    tokenization"), which an export never has; save_pretrained writes the field, and so do we."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return CONFIG_TRANSFORMERS_VERSION


def _colbert_metadata(model: ColBERT, dim: int) -> dict:
    """colbert-ai's ``artifact.metadata`` fields that change encoding (its ColBERTConfig)."""
    tok, cfg = model.tokenizer, model.config
    query_marker, doc_marker = _markers(model)
    return {
        "query_token_id": query_marker,
        "doc_token_id": doc_marker,
        "query_token": query_marker,
        "doc_token": doc_marker,
        "query_maxlen": cfg.query_maxlen,
        "doc_maxlen": _doc_maxlen(model),
        "dim": dim,
        "attend_to_mask_tokens": cfg.attend_to_mask_tokens,
        "mask_punctuation": bool(tok.skip_ids),
        "similarity": "cosine",
        "nbits": cfg.nbits,
        "interaction": "colbert",
        "checkpoint": model.name or None,
    }


def _write_tokenizer(model: ColBERT, folder: Path, **extra) -> None:
    """tokenizer.json plus the configs ``AutoTokenizer`` needs to name its special tokens."""
    tok = model.tokenizer
    _tokenizer_with_marker_tokens(model).save(str(folder / "tokenizer.json"))
    name = tok.tokenizer.id_to_token
    specials = {"cls_token": name(tok.cls_id), "sep_token": name(tok.sep_id), "pad_token": name(tok.pad_id),
                "mask_token": name(tok.mask_id)}
    for unk in ("<unk>", "[UNK]"):
        if tok.tokenizer.token_to_id(unk) is not None:
            specials["unk_token"] = unk
    if _model_type(model) == "xlm-roberta":
        specials |= {"bos_token": specials["cls_token"], "eos_token": specials["sep_token"]}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, ensure_ascii=False) + "\n")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.max_doc_tokens,
              **specials, **extra}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def _markers(model: ColBERT) -> tuple[str, str]:
    """The query and document marker as token strings the target library looks up: the
    configured spelling where it is the token (an added token's stored form may differ, e.g.
    lower-cased by a normaliser), else the vocabulary's."""
    tok, cfg = model.tokenizer, model.config
    out = []
    for marker, ids in ((cfg.query_marker, tok.query_marker_ids), (cfg.doc_marker, tok.doc_marker_ids)):
        found = [m for m in (marker, marker.strip()) if tok.tokenizer.token_to_id(m) == ids[0]]
        out.append(found[0] if found else tok.tokenizer.id_to_token(ids[0]))
    return out[0], out[1]


def _tokenizer_with_marker_tokens(model: ColBERT):
    """The tokenizer with each marker registered as a special token (same id). PyLate adds its
    markers to the tokenizer as whole tokens on loading: a marker that is an ordinary piece
    (``▁D``) would then be cut out of words in text ("Davis" → ``▁D`` ``avis``); as a special,
    unnormalised token it matches only its own literal spelling."""
    from tokenizers import AddedToken, Tokenizer

    tok = model.tokenizer.tokenizer
    copy = Tokenizer.from_str(tok.to_str())
    added = tok.get_added_tokens_decoder()
    markers = [m for m, i in zip(_markers(model), (model.tokenizer.query_marker_ids[0],
                                                    model.tokenizer.doc_marker_ids[0])) if i not in added]
    if markers:
        copy.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in markers])
    return copy


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# -- layouts --------------------------------------------------------------------------------


def _export_native(model: ColBERT, folder: Path, dim: int, dtype) -> list[str]:
    """Every head kept (Matryoshka); ``dim`` becomes the model's default."""
    model.save(folder, dtype=dtype, config=dataclasses.replace(model.config, dim=dim))
    return []


def _write_stanford(model: ColBERT, folder: Path, dim: int, dtype) -> None:
    """stanford-futuredata HF_ColBERT: ``bert.``/``roberta.`` encoder + ``linear.weight``."""
    prefix = "roberta." if _model_type(model) == "xlm-roberta" else "bert."
    state = hf_state(_encoder_state(model, dtype), model.encoder.config.num_layers, prefix)
    write_safetensors(state | unused_pooler(state, prefix) | _head(model, dim, dtype), folder / "model.safetensors")
    _write_json(folder / "config.json", _hf_config(model, dtype, ["HF_ColBERT"]))
    _write_json(folder / "artifact.metadata", _colbert_metadata(model, dim))
    _write_tokenizer(model, folder)


def _write_jina(model: ColBERT, folder: Path, dim: int, dtype) -> None:
    """jinaai/jina-colbert-v2: flash XLM-R keys, rotary config with Jina's remote-code map."""
    state = jina_state(_encoder_state(model, dtype), model.encoder.config.num_layers)
    write_safetensors(state | _head(model, dim, dtype), folder / "model.safetensors")
    config = _hf_config(model, dtype, ["HF_ColBERT"]) | {
        "auto_map": {
            "AutoConfig": "jinaai/xlm-roberta-flash-implementation--configuration_xlm_roberta.XLMRobertaFlashConfig",
            "AutoModel": "jinaai/xlm-roberta-flash-implementation--modeling_xlm_roberta.XLMRobertaModel",
        },
        "rotary_emb_base": model.encoder.config.rope_base,
        "use_flash_attn": True,
    }
    _write_json(folder / "config.json", config)
    _write_json(folder / "artifact.metadata", _colbert_metadata(model, dim))
    _write_tokenizer(model, folder)


def _write_pylate(model: ColBERT, folder: Path, dim: int, dtype) -> None:
    """PyLate / sentence-transformers: the encoder as the root Transformer module, the head as
    ``1_Dense``; markers, lengths, expansion and the document skiplist in its config."""
    tok, cfg = model.tokenizer, model.config
    name = tok.tokenizer.id_to_token
    arch = "XLMRobertaModel" if _model_type(model) == "xlm-roberta" else "BertModel"
    state = hf_state(_encoder_state(model, dtype), model.encoder.config.num_layers)
    write_safetensors(state | unused_pooler(state), folder / "model.safetensors")
    _write_json(folder / "config.json", _hf_config(model, dtype, [arch]))
    _write_tokenizer(model, folder)
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ])
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": _doc_maxlen(model) - 1, "do_lower_case": False})
    # PyLate looks each skiplist word up as one token, so the exact pieces this model drops are
    # listed; an empty list would mean string.punctuation to it, so "none" is the pad token
    skip = [name(i) for i in sorted(tok.skip_ids)] or [name(tok.pad_id)]
    query_marker, doc_marker = _markers(model)
    _write_json(folder / "config_sentence_transformers.json", {
        "query_prefix": query_marker,
        "document_prefix": doc_marker,
        "query_length": cfg.query_maxlen,
        "document_length": _doc_maxlen(model),
        "attend_to_expansion_tokens": cfg.attend_to_mask_tokens,
        "do_query_expansion": cfg.query_expansion,
        "skiplist_words": skip,
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "MaxSim",
    })
    dense = folder / "1_Dense"
    dense.mkdir()
    head = _head(model, dim, dtype)
    _write_json(dense / "config.json", {"in_features": model.encoder.config.hidden_size, "out_features": dim,
                                        "bias": "linear.bias" in head,
                                        "activation_function": "torch.nn.modules.linear.Identity"})
    write_safetensors(head, dense / "model.safetensors")
