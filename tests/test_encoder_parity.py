"""Numerical parity of polylate's encoder with `transformers` and with the rotary spec."""

from __future__ import annotations

import pytest
import torch

from polylate.model.checkpoints import encoder_config_from_hf, hf_encoder_state, jina_encoder_state
from polylate.model.encoder import Encoder, EncoderConfig, apply_rotary
from tests.layouts import _randomise, write_jina
from tests.reference import jina_reference, rotary_complex

transformers = pytest.importorskip("transformers")
TOL = 1e-4


def _batch(vocab: int, lengths: list[int], seed: int, first: int = 0, pad: int = 0):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(first, vocab, (n,), generator=g)
        mask[i, :n] = 1
    return ids, mask


def _ours_from_hf(hf_model, model_type: str) -> Encoder:
    cfg = hf_model.config.to_dict()
    cfg["model_type"] = model_type
    enc_cfg = encoder_config_from_hf(cfg, hf_model.config.vocab_size, rotary=False)
    enc = Encoder(enc_cfg)
    enc.load_state_dict(hf_encoder_state(dict(hf_model.state_dict()), enc_cfg.num_layers))
    return enc.eval()


def _compare(ours: Encoder, hf_model, ids, mask):
    with torch.no_grad():
        ref = hf_model(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask.bool())
    keep = mask.bool()
    diff = (ref[keep] - got[keep]).abs().max().item()
    assert diff < TOL, f"max abs diff {diff:.2e}"
    return diff


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_bert_parity(act):
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                                  intermediate_size=96, max_position_embeddings=64, type_vocab_size=2,
                                  hidden_act=act, attn_implementation="eager")
    hf = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    _randomise(hf, seed=3)
    ids, mask = _batch(120, [17, 5, 30, 1], seed=4)
    _compare(_ours_from_hf(hf, "bert"), hf, ids, mask)


def test_xlm_roberta_parity():
    cfg = transformers.XLMRobertaConfig(vocab_size=130, hidden_size=48, num_hidden_layers=2,
                                        num_attention_heads=6, intermediate_size=64,
                                        max_position_embeddings=40, type_vocab_size=1, pad_token_id=1,
                                        layer_norm_eps=1e-5, attn_implementation="eager")
    hf = transformers.XLMRobertaModel(cfg, add_pooling_layer=False).eval()
    _randomise(hf, seed=5)
    # ids ≥ 2 for real tokens so HF's position ids (derived from != pad) match right padding
    ids, mask = _batch(130, [38, 9, 21], seed=6, first=2, pad=1)
    ours = _ours_from_hf(hf, "xlm-roberta")
    assert ours.config.position_offset == 2
    _compare(ours, hf, ids, mask)


def test_xlm_roberta_rejects_too_long():
    enc = Encoder(EncoderConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2,
                                intermediate_size=8, position="absolute", max_positions=12,
                                position_offset=2))
    with pytest.raises(ValueError, match="exceeds"):
        enc(torch.zeros(1, 11, dtype=torch.long))


def test_rotary_matches_complex_rotation():
    x = torch.randn(1, 3, 50, 16, dtype=torch.float64)
    from polylate.model.encoder import RotaryEmbedding

    cos, sin = RotaryEmbedding(16, 10000.0, trained_length=8194)(50, x.device)
    ours = apply_rotary(x, cos.double(), sin.double())
    ref = rotary_complex(x[0].transpose(0, 1)).transpose(0, 1)[None]
    assert torch.allclose(ours, ref, atol=1e-6)


def test_jina_encoder_matches_reference(tmp_path):
    state = write_jina(tmp_path / "jina", hidden=64, layers=3, heads=4, ff=128, dtype=torch.float32)
    hf_like = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 128,
               "layer_norm_eps": 1e-5, "max_position_embeddings": 8194, "type_vocab_size": 1,
               "hidden_act": "gelu", "rotary_emb_base": 10000.0, "model_type": "xlm-roberta"}
    vocab = state["roberta.embeddings.word_embeddings.weight"].shape[0]
    enc = Encoder(encoder_config_from_hf(hf_like, vocab, rotary=True)).eval()
    enc.load_state_dict(jina_encoder_state(dict(state), 3))
    lengths = [40, 7, 23]
    ids, mask = _batch(vocab, lengths, seed=7, pad=1)
    with torch.no_grad():
        got = enc(ids, mask.bool())
    worst = 0.0
    for i, n in enumerate(lengths):
        ref = jina_reference(state, ids[i, :n].tolist(), heads=4)
        worst = max(worst, (ref - got[i, :n].double()).abs().max().item())
    assert worst < TOL, f"max abs diff {worst:.2e}"


def test_padding_does_not_change_real_tokens():
    cfg = EncoderConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    enc = Encoder(cfg).eval()
    enc.init_weights(std=0.2, generator=torch.Generator().manual_seed(0))
    ids, mask = _batch(50, [12, 30], seed=8, pad=1)
    with torch.no_grad():
        batched = enc(ids, mask.bool())
        alone = enc(ids[:1, :12])
    assert (batched[0, :12] - alone[0]).abs().max() < 1e-5


def test_rotary_extension_keeps_short_inputs_and_allows_longer():
    cfg = EncoderConfig(vocab_size=50, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=32,
                        max_positions=16, rope_scaling=1.5)
    enc = Encoder(cfg).eval()
    enc.init_weights(std=0.2, generator=torch.Generator().manual_seed(1))
    assert cfg.max_tokens == 24
    ids = torch.randint(0, 50, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        short = enc(ids[:, :16])
        enc(ids[:, :10])  # a shorter call in between must not disturb the cache
        again = enc(ids[:, :16])
        longer = enc(ids)  # 24 tokens: scaled base
        with pytest.raises(ValueError, match="exceeds"):
            enc(torch.zeros(1, 25, dtype=torch.long))
    assert torch.equal(short, again)
    assert longer.shape == (1, 24, 32) and torch.isfinite(longer).all()


def test_rotary_scaling_depends_on_each_rows_own_length():
    """Past the trained length the rotary base is scaled for the sequence's length; a short
    row padded beside a long one must get exactly its vectors when encoded alone."""
    cfg = EncoderConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=32,
                        max_positions=16, rope_scaling=1.5)
    enc = Encoder(cfg).eval()
    enc.init_weights(std=0.2, generator=torch.Generator().manual_seed(3))
    ids, mask = _batch(50, [22, 10, 19], seed=9, pad=1)
    with torch.no_grad():
        batched = enc(ids, mask.bool())
        for row, n in enumerate([22, 10, 19]):
            alone = enc(ids[row : row + 1, :n])
            assert (batched[row, :n] - alone[0]).abs().max() < 1e-5, row
