"""Readers for published ColBERT checkpoint layouts → one native ColBERT model.

Layouts understood (detected from the files, never from the folder name):
- native polylate: ``polylate.json`` + ``model.safetensors`` + ``tokenizer.json``
- Jina-ColBERT-v2: ``roberta.{embeddings,emb_ln,encoder.layers.N.{mixer.Wqkv,...}}`` +
  ``linear.weight``, rotary positions, markers ``[QueryMarker]`` / ``[DocumentMarker]``
- Stanford ColBERT ``HF_ColBERT``: a HF BERT / XLM-R (``bert.`` / ``roberta.`` prefix) +
  ``linear.weight``, settings in ``artifact.metadata``
- PyLate / sentence-transformers: ``modules.json`` → Transformer folder + ``Dense`` heads,
  settings in ``config_sentence_transformers.json``
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import string
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from polylate.config import ColBERTConfig
from polylate.model.colbert import NATIVE_CONFIG, NATIVE_FORMAT_VERSION, ColBERT
from polylate.model.encoder import Encoder, EncoderConfig
from polylate.text.tokenizer import ColBERTTokenizer


class CheckpointError(ValueError):
    """A folder or hub id that cannot be turned into a ColBERT model; says why."""


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")
_JINA_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")


# -- entry point ----------------------------------------------------------------------------


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> ColBERT:
    """Load any supported checkpoint; ``None`` gives the bundled offline default, and a
    ``.safetensors`` heads file (``polylate train --heads-only``) the bundled encoder with it."""
    from polylate.model.bundled import load_bundled

    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a folder, a hub id or None, got {type(name_or_path).__name__}")
    dtype = _torch_dtype(dtype)
    path = None if name_or_path is None else Path(name_or_path).expanduser()
    if name_or_path is None or str(name_or_path) == "default":
        model = load_bundled()
    elif path.is_file() and path.suffix == ".safetensors":
        with _as_checkpoint_error(path):
            model = load_bundled(head_file=path)
    else:
        folder = resolve(name_or_path)
        with _as_checkpoint_error(folder):
            model = load_folder(folder)
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    if dtype == torch.bfloat16 and next(model.parameters()).device.type == "cpu":
        warn_if_bf16_is_emulated()
    return model


def cpu_lacks_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this is an x86 CPU without bf16 instructions (AVX512-BF16, AMX), where torch
    emulates bfloat16 and runs it slower than float32 (an AVX2 EPYC: ~3x slower). Only what
    Linux's /proc/cpuinfo (or ``cpuinfo``, its text) tells; elsewhere, False."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    return flags is not None and not ({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def warn_if_bf16_is_emulated(stacklevel: int = 3) -> None:
    if cpu_lacks_bf16():
        warnings.warn("this CPU has no bf16 instructions (AVX512-BF16 or AMX): torch emulates bfloat16 here, "
                      "slower than float32 (about 3x on an AVX2 CPU); use float32 on it", stacklevel=stacklevel)


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def _torch_dtype(dtype) -> torch.dtype | None:
    """A torch dtype, or its name as the CLI's --dtype takes it ("bf16")."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise TypeError(f"dtype must be a torch dtype or one of {', '.join(_DTYPES)}, got {dtype!r}")


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is, or a hub id downloaded into the hub cache."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; a checkpoint is a folder (or a .safetensors "
                                  "heads file over the bundled model)")
        return path
    name = str(name_or_path)
    if not _HUB_ID.match(name):
        raise CheckpointError(f"no checkpoint folder at {path} (and {name!r} is not a hub id)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, etag_timeout=10))
    except Exception as exc:  # offline, unknown repo, gated, ...
        raise CheckpointError(
            f"could not fetch {name!r} from the Hugging Face hub ({type(exc).__name__}: {' '.join(str(exc).split())}). "
            "If this machine is offline, download the repository elsewhere and pass its local "
            "folder path instead."
        ) from exc


def detect_layout(folder: Path) -> str:
    if (folder / NATIVE_CONFIG).exists():
        return "polylate"
    if (folder / "modules.json").exists():
        return "sentence-transformers"
    keys = set(read_weights(folder, keys_only=True))
    if any(k.startswith("roberta.encoder.layers.") and ".mixer.Wqkv." in k for k in keys):
        return "jina"
    if "linear.weight" in keys and any(_HF_LAYER.match(_strip_prefix(k)) for k in keys):
        return "stanford"
    if any(_HF_LAYER.match(_strip_prefix(k)) for k in keys):
        return "hf-encoder"
    raise CheckpointError(f"{folder}: weights match no known layout (first keys: {sorted(keys)[:5]})")


@contextlib.contextmanager
def _as_checkpoint_error(where: Path):
    """Whatever a malformed checkpoint makes the loaders trip on (a tensor of the wrong shape,
    a missing config field, a truncated weights file) is a CheckpointError naming it."""
    try:
        yield
    except (CheckpointError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 — safetensors, tokenizers and torch raise their own types
        what = f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        # whole, on one line: torch puts the tensor and both shapes after a first line ending in ':'
        raise CheckpointError(" ".join(f"{where} cannot be loaded: {what}".split())[:600]) from exc


def load_folder(folder: Path) -> ColBERT:
    layout = detect_layout(folder)
    loader = {
        "polylate": _load_native,
        "jina": _load_hf_colbert,
        "stanford": _load_hf_colbert,
        "sentence-transformers": _load_sentence_transformers,
    }.get(layout)
    if loader is None:
        raise CheckpointError(
            f"{folder} holds a plain {layout} encoder without a ColBERT projection head; "
            "train one (polylate train) or load a ColBERT checkpoint"
        )
    try:
        model = loader(folder)
    except CheckpointError as exc:
        if str(folder) in str(exc):
            raise
        raise CheckpointError(f"{folder}: {exc}") from exc  # every refusal names the folder it read
    model.name = model.name or folder.name
    return model


# -- weights --------------------------------------------------------------------------------


def read_weights(folder: Path, keys_only: bool = False) -> dict[str, torch.Tensor] | list[str]:
    """safetensors (single or sharded) or a PyTorch pickle, loaded without code execution."""
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").exists():
        files = [folder / "model.safetensors"]
    elif index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / s for s in shards]
    elif (folder / "pytorch_model.bin").exists():
        files = [folder / "pytorch_model.bin"]
    else:
        raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin")
    if keys_only and files[0].suffix == ".safetensors":
        from safetensors import safe_open

        keys: list[str] = []
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                keys.extend(h.keys())
        return keys
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            state.update(load_file(str(f)))
        else:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
    return list(state) if keys_only else state


def _strip_prefix(key: str) -> str:
    for prefix in ("bert.", "roberta."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _take(state: dict, key: str) -> torch.Tensor:
    try:
        return state.pop(key)
    except KeyError:
        raise CheckpointError(f"checkpoint lacks weight {key!r}") from None


# native encoder key part ↔ published key part; the writers (model/export.py) use the same tables
HF_LAYER_NAMES = {"attn.out": "attention.output.dense", "norm1": "attention.output.LayerNorm",
                  "fc1": "intermediate.dense", "fc2": "output.dense", "norm2": "output.LayerNorm"}
HF_QKV = ("query", "key", "value")  # three HF linears, one native attn.qkv (concatenated in this order)
JINA_LAYER_NAMES = {"attn.qkv": "mixer.Wqkv", "attn.out": "mixer.out_proj", "norm1": "norm1",
                    "fc1": "mlp.fc1", "fc2": "mlp.fc2", "norm2": "norm2"}
EMBEDDING_NAMES = {"word.weight": "embeddings.word_embeddings.weight",
                   "token_type.weight": "embeddings.token_type_embeddings.weight"}
HF_EMBEDDING_NORM, JINA_EMBEDDING_NORM = "embeddings.LayerNorm", "emb_ln"
HF_POSITIONS = "embeddings.position_embeddings.weight"


def hf_encoder_state(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """HF BertModel / XLMRobertaModel keys (any of bert./roberta./no prefix) → native keys."""
    s = {
        _strip_prefix(k).replace("LayerNorm.gamma", "LayerNorm.weight").replace(
            "LayerNorm.beta", "LayerNorm.bias"
        ): v
        for k, v in state.items()
    }
    out = _embedding_state(s, HF_EMBEDDING_NORM)
    if HF_POSITIONS in s:
        out["embeddings.position.weight"] = s.pop(HF_POSITIONS)
    for n in range(num_layers):
        p, o = f"encoder.layer.{n}.", f"layers.{n}."
        for part in ("weight", "bias"):
            out[o + f"attn.qkv.{part}"] = torch.cat([_take(s, p + f"attention.self.{x}.{part}") for x in HF_QKV])
            for native, hf in HF_LAYER_NAMES.items():
                out[o + f"{native}.{part}"] = _take(s, p + f"{hf}.{part}")
    return out


def jina_encoder_state(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Jina flash XLM-R keys (roberta.emb_ln, encoder.layers.N.mixer.Wqkv, ...) → native. Without
    the ``roberta.`` prefix too: the bare encoder, as sentence-transformers (PyLate) saves it."""
    prefixed = any(k.startswith("roberta.") for k in state)
    s = {k[len("roberta."):] if prefixed else k: v for k, v in state.items()
         if k.startswith("roberta.") or not prefixed}
    out = _embedding_state(s, JINA_EMBEDDING_NORM)
    for n in range(num_layers):
        for native, jina in JINA_LAYER_NAMES.items():
            for part in ("weight", "bias"):
                out[f"layers.{n}.{native}.{part}"] = _take(s, f"encoder.layers.{n}.{jina}.{part}")
    return out


def _embedding_state(s: dict[str, torch.Tensor], norm: str) -> dict[str, torch.Tensor]:
    out = {f"embeddings.{native}": _take(s, published) for native, published in EMBEDDING_NAMES.items()}
    for part in ("weight", "bias"):
        out[f"embeddings.norm.{part}"] = _take(s, f"{norm}.{part}")
    return out


def _num_layers(keys, pattern: re.Pattern) -> int:
    found = {int(m.group(1)) for k in keys if (m := pattern.match(_strip_prefix(k)))}
    if not found:
        raise CheckpointError("checkpoint has no encoder layers")
    return max(found) + 1


# -- configs --------------------------------------------------------------------------------


_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def encoder_config_from_hf(hf: dict, vocab_size: int, rotary: bool, source: str = "config.json") -> EncoderConfig:
    """HF config.json → EncoderConfig; vocab size comes from the weights (may be resized)."""
    model_type = hf.get("model_type", "bert")
    act = hf.get("hidden_act", "gelu")
    if act not in _ACT:
        raise CheckpointError(f"unsupported hidden_act {act!r}")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if key not in hf:
            raise CheckpointError(f"{source} lacks {key}")
    common = dict(
        vocab_size=vocab_size,
        hidden_size=_integer(hf, "hidden_size", None, source),
        num_layers=_integer(hf, "num_hidden_layers", None, source),
        num_heads=_integer(hf, "num_attention_heads", None, source),
        intermediate_size=_integer(hf, "intermediate_size", None, source),
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        max_positions=_integer(hf, "max_position_embeddings", 512, source),
        type_vocab_size=_integer(hf, "type_vocab_size", 2, source),
        activation=_ACT[act],
    )
    if rotary:
        # inputs past max_position_embeddings (8194) use dynamic NTK scaling up to 1.5× (12288)
        return EncoderConfig(position="rotary", rope_base=float(hf.get("rotary_emb_base", 10000.0)),
                             **common)
    offset = hf.get("pad_token_id", 1) + 1 if model_type in ("xlm-roberta", "roberta") else 0
    return EncoderConfig(position="absolute", position_offset=offset, **common)


def _read_json(path: Path, kind: type = dict):
    """A JSON file of the checkpoint (empty when absent); a malformed one is named."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return kind()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, kind):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, expected "
                              f"{'an object' if kind is dict else 'a list'}")
    return data


def _integer(fields: dict, key: str, default, source: str) -> int:
    value = fields.get(key)
    value = default if value is None else value  # null in a published config: the default
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{source}: {key} must be an integer, got {value!r}")
    return value


def colbert_config_from_metadata(meta: dict, tokenizer_vocab: dict, dim: int,
                                 source: str = "artifact.metadata", unknown_marker_as_unk: bool = False) -> ColBERTConfig:
    """Stanford/Jina ``artifact.metadata`` → ColBERTConfig (defaults: Stanford's).
    ``unknown_marker_as_unk`` (Stanford checkpoints): a marker the vocabulary lacks is its unknown
    token, as colbert-ai's tokenizer makes it; otherwise it is refused when the model loads."""
    jina = "[QueryMarker]" in tokenizer_vocab
    default_q, default_d = ("[QueryMarker]", "[DocumentMarker]") if jina else ("[unused0]", "[unused1]")

    unk = next((t for t in ("<unk>", "[UNK]") if t in tokenizer_vocab), None)
    as_unk = []

    def marker(value, default):
        if isinstance(value, int):
            inverse = {i: t for t, i in tokenizer_vocab.items()}
            return inverse.get(value, default)
        value = value or default
        if unknown_marker_as_unk and value not in tokenizer_vocab and unk is not None:
            # colbert-ai's default "[unused0]" over an XLM-R vocabulary: its tokenizer turns the
            # marker into the unknown token, and the model was trained with that
            as_unk.append(value)
            return unk
        return value

    query_marker, doc_marker = marker(meta.get("query_token_id"), default_q), marker(meta.get("doc_token_id"), default_d)
    if as_unk:
        warnings.warn(f"{source}: marker(s) {', '.join(map(repr, as_unk))} not in the tokenizer's vocabulary "
                      f"are encoded as {unk!r}, as colbert-ai does", stacklevel=4)
    return ColBERTConfig(
        query_marker=query_marker,
        doc_marker=doc_marker,
        query_maxlen=_integer(meta, "query_maxlen", 32, source),
        doc_maxlen=_integer(meta, "doc_maxlen", 300 if jina else 220, source),  # colbert-ai's DocSettings: 220
        dim=dim,
        attend_to_mask_tokens=bool(meta.get("attend_to_mask_tokens", jina)),
        mask_punctuation=bool(meta.get("mask_punctuation", True)),
        similarity=meta.get("similarity", "cosine"),
        nbits=_integer(meta, "nbits", 2, source),
        skiplist_rule="colbert",
    )


# -- tokenizers -----------------------------------------------------------------------------


def load_tokenizer_file(folder: Path):
    """tokenizer.json, or a BERT vocab.txt (Stanford checkpoints predate tokenizer.json)."""
    import tokenizers

    if (folder / "tokenizer.json").exists():
        try:
            return tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # noqa: BLE001 — tokenizers raises a bare Exception
            raise CheckpointError(f"{folder / 'tokenizer.json'} is not a readable tokenizer: {exc}") from exc
    if (folder / "vocab.txt").exists():
        from tokenizers.implementations import BertWordPieceTokenizer

        cfg = _read_json(folder / "tokenizer_config.json")
        wp = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=cfg.get("do_lower_case", True))
        return wp._tokenizer
    raise CheckpointError(f"{folder}: no tokenizer.json or vocab.txt")


# -- loaders --------------------------------------------------------------------------------


def assemble(encoder_config, encoder_state, heads_state: dict[int, dict], tokenizer, config, name=""):
    encoder = Encoder(encoder_config)
    missing, unexpected = encoder.load_state_dict(encoder_state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"encoder weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    heads = {}
    for d, hs in heads_state.items():
        head = nn.Linear(encoder_config.hidden_size, d, bias="bias" in hs)
        head.load_state_dict(hs)
        heads[d] = head
    model = ColBERT(encoder, heads, ColBERTTokenizer(tokenizer, config), config, name=name)
    return model.float()


def _linear_heads(weight: torch.Tensor, bias: torch.Tensor | None = None) -> dict[int, dict]:
    hs = {"weight": weight}
    if bias is not None:
        hs["bias"] = bias
    return {weight.shape[0]: hs}


def _load_hf_colbert(folder: Path) -> ColBERT:
    """Jina-ColBERT-v2 and Stanford HF_ColBERT: HF config + encoder + ``linear.weight``."""
    state = read_weights(folder)
    if "linear.weight" not in state:
        raise CheckpointError(f"{folder}: no ColBERT projection head (no weight 'linear.weight' beside the encoder's)")
    heads = _linear_heads(_take(state, "linear.weight"), state.pop("linear.bias", None))
    enc_cfg, enc_state = hf_encoder(folder, state)
    tok = load_tokenizer_file(folder)
    meta = _read_json(folder / "artifact.metadata")
    dim = next(iter(heads))
    if meta.get("dim") not in (None, dim):
        # colbert-ai refuses it too (its Linear(hidden, dim) does not fit the weight)
        raise CheckpointError(f"{folder / 'artifact.metadata'} says dim {meta['dim']!r}, but linear.weight "
                              f"projects to {dim}")
    config = colbert_config_from_metadata(meta, tok.get_vocab(with_added_tokens=True), dim,
                                          str(folder / "artifact.metadata"),
                                          unknown_marker_as_unk=enc_cfg.position == "absolute")
    return assemble(enc_cfg, enc_state, heads, tok, config)


def hf_encoder(folder: Path, state: dict[str, torch.Tensor] | None = None):
    """A HF encoder folder (BERT, XLM-R or Jina's flash XLM-R) → (EncoderConfig, native state)."""
    state = read_weights(folder) if state is None else state
    hf = _read_json(folder / "config.json")
    if not hf:
        raise CheckpointError(f"{folder}: config.json missing")
    rotary = any(".mixer.Wqkv." in k for k in state)
    if rotary:
        n = _num_layers(state, _JINA_LAYER)
        enc_state = jina_encoder_state(state, n)
    else:
        n = _num_layers(state, _HF_LAYER)
        enc_state = hf_encoder_state(state, n)
    vocab = enc_state["embeddings.word.weight"].shape[0]
    if hf.get("num_hidden_layers", n) != n:
        raise CheckpointError(f"config says {hf['num_hidden_layers']} layers, weights have {n}")
    rotary = rotary or hf.get("position_embedding_type") == "rotary"
    return encoder_config_from_hf(hf, vocab, rotary=rotary, source=str(folder / "config.json")), enc_state


def _load_sentence_transformers(folder: Path) -> ColBERT:
    """PyLate: modules.json → Transformer (HF folder) then Dense layer(s) with no activation."""
    modules = _read_json(folder / "modules.json", list)
    transformer = [m for m in modules if m["type"].endswith("Transformer")]
    dense = [m for m in modules if m["type"].endswith("Dense")]
    if len(transformer) != 1 or not dense:
        raise CheckpointError(f"{folder}/modules.json: expected one Transformer and Dense module(s)")
    tdir = folder / transformer[0].get("path", "")
    enc_cfg, enc_state = hf_encoder(tdir)
    # compose the Dense chain into one affine map (identity activations only)
    weight, bias = None, None
    for m in dense:
        ddir = folder / m["path"]
        if not ddir.is_dir():
            raise CheckpointError(f"{ddir}: the Dense module folder that modules.json names does not exist")
        dcfg = _read_json(ddir / "config.json")
        act = dcfg.get("activation_function", "torch.nn.modules.linear.Identity")
        if not act.endswith("Identity"):
            raise CheckpointError(f"{ddir}: Dense activation {act} is not supported (identity only)")
        ds = read_weights(ddir)
        w, b = _take(ds, "linear.weight"), ds.get("linear.bias")
        for key, size in (("out_features", w.shape[0]), ("in_features", w.shape[1])):
            if dcfg.get(key) not in (None, size):
                raise CheckpointError(f"{ddir / 'config.json'}: {key} is {dcfg[key]!r} but linear.weight has "
                                      f"shape {list(w.shape)}")
        # (w, b) ∘ (W, c): x ↦ w(Wx + c) + b
        carried = None if bias is None else w @ bias
        bias = b if carried is None else carried if b is None else carried + b
        weight = w if weight is None else w @ weight
    st = _read_json(folder / "config_sentence_transformers.json")
    tok = load_tokenizer_file(tdir)
    config = ColBERTConfig(
        query_marker=st.get("query_prefix", "[Q] "),
        doc_marker=st.get("document_prefix", "[D] "),
        query_maxlen=_integer(st, "query_length", 32, str(folder / "config_sentence_transformers.json")),
        doc_maxlen=_integer(st, "document_length", 180, str(folder / "config_sentence_transformers.json")),
        dim=weight.shape[0],
        attend_to_mask_tokens=bool(st.get("attend_to_expansion_tokens", False)),
        query_expansion=bool(st.get("do_query_expansion", True)),
        mask_punctuation=False,
        # PyLate's default skiplist is string.punctuation, each looked up as one token
        skiplist_words=list(st["skiplist_words"] if st.get("skiplist_words") is not None else string.punctuation),
        skiplist_rule="exact",
        strip_text=True,  # sentence-transformers' Transformer.tokenize strips each text
    )
    return assemble(enc_cfg, enc_state, _linear_heads(weight, bias), tok, config)


def _load_native(folder: Path) -> ColBERT:
    meta = _read_json(folder / NATIVE_CONFIG)
    if meta.get("format") != "polylate" or meta.get("format_version") != NATIVE_FORMAT_VERSION:
        raise CheckpointError(
            f"{folder}: unsupported polylate format {meta.get('format')!r} version "
            f"{meta.get('format_version')!r} (this polylate reads version {NATIVE_FORMAT_VERSION})"
        )
    state = read_weights(folder)
    enc_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    heads: dict[int, dict] = {}
    for k, v in state.items():
        if k.startswith("heads."):
            _, d, part = k.split(".")
            heads.setdefault(int(d), {})[part] = v
    tok = load_tokenizer_file(folder)
    return assemble(EncoderConfig(**meta["encoder"]), enc_state, heads, tok,
                     ColBERTConfig.from_dict(meta["colbert"]), name=meta.get("name", ""))
