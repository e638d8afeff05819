"""Tiny random checkpoints written in each published layout, for loader tests.

Each writer mirrors the real repository's files (names, key names, config fields, token
ids relative to the vocabulary) at toy size; they use `transformers` to produce HF key
names where the real checkpoint came from `transformers` too.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

WORDS = ("hello world search engine late interaction retrieval query document token vector "
         "paris capital france berlin germany the of is a in what which").split()


def xlmr_tokenizer(extra: tuple[str, ...] = ("[QueryMarker]", "[DocumentMarker]")) -> Tokenizer:
    """A small sentencepiece-unigram vocabulary laid out like XLM-R (<s>=0, <pad>=1, </s>=2,
    <unk>=3, ..., <mask> last) with Jina's markers added after it."""
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -1.0) for w in WORDS]
    pieces += [(c, -5.0) for c in string.ascii_lowercase + string.ascii_uppercase + string.digits]
    pieces += [(c, -4.0) for c in string.punctuation] + [("▁" + c, -3.0) for c in ".,?!"]
    pieces += [("<mask>", 0.0)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")])
    tok.add_tokens([AddedToken(t, special=True) for t in extra])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tok


def bert_vocab() -> list[str]:
    vocab = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(string.punctuation) + list(string.ascii_lowercase) + list(string.digits)
    vocab += ["##" + c for c in string.ascii_lowercase + string.digits] + list(WORDS)
    # one line per token: "a" is a letter and a word, and a repeated line leaves BERT's vocab.txt
    # with a hole (PyLate then shrinks the embeddings below the largest id)
    return list(dict.fromkeys(vocab))


def _randomise(module: torch.nn.Module, seed: int, std: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "LayerNorm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def _tokenizer_configs(folder: Path, specials: dict[str, str], **extra) -> None:
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    (folder / "tokenizer_config.json").write_text(json.dumps({**specials, **extra}))


def write_jina(folder: Path, hidden=32, layers=2, heads=4, ff=64, dim=128, seed=0,
               dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """jinaai/jina-colbert-v2 layout: flash XLM-R keys, rotary, linear.weight [dim, hidden]."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = xlmr_tokenizer()
    vocab = tok.get_vocab_size(with_added_tokens=True)
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.2):
        return (scale * torch.randn(*shape, generator=g)).to(dtype)

    def ln():
        return (1 + 0.1 * torch.randn(hidden, generator=g)).to(dtype), rnd(hidden, scale=0.05)

    s = {
        "roberta.embeddings.word_embeddings.weight": rnd(vocab, hidden, scale=1.0),
        "roberta.embeddings.token_type_embeddings.weight": rnd(1, hidden),
        "roberta.pooler.dense.weight": rnd(hidden, hidden),
        "roberta.pooler.dense.bias": rnd(hidden),
        "linear.weight": rnd(dim, hidden),
    }
    s["roberta.emb_ln.weight"], s["roberta.emb_ln.bias"] = ln()
    for n in range(layers):
        p = f"roberta.encoder.layers.{n}."
        s[p + "mixer.Wqkv.weight"], s[p + "mixer.Wqkv.bias"] = rnd(3 * hidden, hidden), rnd(3 * hidden)
        s[p + "mixer.out_proj.weight"], s[p + "mixer.out_proj.bias"] = rnd(hidden, hidden), rnd(hidden)
        s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"] = rnd(ff, hidden), rnd(ff)
        s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"] = rnd(hidden, ff), rnd(hidden)
        s[p + "norm1.weight"], s[p + "norm1.bias"] = ln()
        s[p + "norm2.weight"], s[p + "norm2.bias"] = ln()
    save_file(s, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "_name_or_path": "jinaai/jina-colbert-v2",
        "architectures": ["HF_ColBERT"],
        "auto_map": {"AutoConfig": "jinaai/xlm-roberta-flash-implementation--configuration_xlm_roberta.XLMRobertaFlashConfig",
                     "AutoModel": "jinaai/xlm-roberta-flash-implementation--modeling_xlm_roberta.XLMRobertaModel"},
        "attention_probs_dropout_prob": 0.1, "bos_token_id": 0, "eos_token_id": 2,
        "classifier_dropout": None, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": ff,
        "layer_norm_eps": 1e-05, "max_position_embeddings": 8194, "model_type": "xlm-roberta",
        "num_attention_heads": heads, "num_hidden_layers": layers, "output_past": True,
        "pad_token_id": 1, "position_embedding_type": "rotary", "rotary_emb_base": 10000.0,
        "torch_dtype": "bfloat16", "type_vocab_size": 1, "use_cache": False, "use_flash_attn": True,
        "vocab_size": vocab,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    meta = {"query_token_id": "[QueryMarker]", "doc_token_id": "[DocumentMarker]",
            "query_token": "[QueryMarker]", "doc_token": "[DocumentMarker]",
            "query_maxlen": 32, "doc_maxlen": 8192, "dim": dim, "attend_to_mask_tokens": True,
            "mask_punctuation": True, "similarity": "cosine", "nbits": 2, "checkpoint": "jina-colbert-v2"}
    (folder / "artifact.metadata").write_text(json.dumps(meta, indent=4))
    tok.save(str(folder / "tokenizer.json"))
    _tokenizer_configs(folder, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                "sep_token": "</s>", "pad_token": "<pad>", "cls_token": "<s>",
                                "mask_token": "<mask>"}, model_max_length=8194,
                       tokenizer_class="XLMRobertaTokenizer")
    return s


def _hf_bert(hidden, layers, heads, ff, vocab, seed):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=ff, max_position_embeddings=512,
                     type_vocab_size=2, pad_token_id=0, hidden_act="gelu")
    model = BertModel(cfg, add_pooling_layer=True).eval()
    _randomise(model, seed)
    return cfg, model


def write_stanford(folder: Path, hidden=32, layers=2, heads=4, ff=64, dim=24, seed=1,
                   metadata: dict | None = None):
    """stanford-futuredata colbertv2.0 layout: HF_ColBERT = `bert.` + linear, vocab.txt,
    artifact.metadata, pytorch_model.bin. Returns (transformers BertModel, linear weight)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = bert_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    cfg, bert = _hf_bert(hidden, layers, heads, ff, len(vocab), seed)
    linear = 0.3 * torch.randn(dim, hidden, generator=torch.Generator().manual_seed(seed + 100))
    state = {"bert." + k: v for k, v in bert.state_dict().items()}
    state["linear.weight"] = linear
    torch.save(state, folder / "pytorch_model.bin")
    config = cfg.to_dict() | {"architectures": ["HF_ColBERT"], "model_type": "bert"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    meta = {"query_token_id": "[unused0]", "doc_token_id": "[unused1]", "query_token": "[Q]",
            "doc_token": "[D]", "ncells": None, "centroid_score_threshold": None,
            "ndocs": None, "index_path": None, "nbits": 2, "kmeans_niters": 20, "similarity": "cosine",
            "bsize": 8, "accumsteps": 1, "lr": 1e-05, "maxsteps": 400000, "checkpoint": "colbert-v2",
            "dim": dim, "query_maxlen": 32, "attend_to_mask_tokens": False, "interaction": "colbert",
            "doc_maxlen": 180, "mask_punctuation": True}
    meta.update(metadata or {})
    (folder / "artifact.metadata").write_text(json.dumps(meta, indent=4))
    _tokenizer_configs(folder, {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                                "cls_token": "[CLS]", "mask_token": "[MASK]"}, do_lower_case=True,
                       model_max_length=512, tokenizer_class="BertTokenizer")
    return bert, linear


def write_pylate(folder: Path, hidden=32, layers=2, heads=4, ff=64, dim=16, seed=2, query_expansion=True):
    """PyLate / sentence-transformers layout: modules.json, root Transformer (HF BertModel
    keys, tokenizer.json with added "[Q] "/"[D] "), 1_Dense with linear.weight."""
    from tokenizers.implementations import BertWordPieceTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab = bert_vocab()
    vocab_file.write_text("\n".join(vocab) + "\n")
    tok = BertWordPieceTokenizer(str(vocab_file), lowercase=True)._tokenizer
    tok.add_tokens(["[Q] ", "[D] "])
    tok.save(str(folder / "tokenizer.json"))
    n_vocab = tok.get_vocab_size(with_added_tokens=True)
    cfg, bert = _hf_bert(hidden, layers, heads, ff, n_vocab, seed)
    bert.save_pretrained(folder, safe_serialization=True)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ], indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 179, "do_lower_case": False}))
    st = {"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 32, "document_length": 180,
          "attend_to_expansion_tokens": False, "skiplist_words": list(string.punctuation),
          "do_query_expansion": query_expansion, "prompts": {}, "default_prompt_name": None,
          "similarity_fn_name": "MaxSim", "__version__": {"pylate": "1.1.7"}}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st, indent=2))
    dense = folder / "1_Dense"
    dense.mkdir()
    linear = 0.3 * torch.randn(dim, hidden, generator=torch.Generator().manual_seed(seed + 100))
    (dense / "config.json").write_text(json.dumps({"in_features": hidden, "out_features": dim, "bias": False,
                                                   "activation_function": "torch.nn.modules.linear.Identity"}))
    save_file({"linear.weight": linear}, str(dense / "model.safetensors"))
    _tokenizer_configs(folder, {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                                "cls_token": "[CLS]", "mask_token": "[MASK]"}, do_lower_case=True)
    return bert, linear, tok
