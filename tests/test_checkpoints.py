"""Loading tiny random checkpoints written in each published layout, checked end to end
against independent computations (the rotary reference, `transformers`)."""

from __future__ import annotations

import json
import re

import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from polylate import CheckpointError, load_model
from polylate.model.checkpoints import detect_layout
from polylate.model.colbert import ColBERT
from tests.layouts import write_jina, write_pylate, write_stanford, xlmr_tokenizer
from tests.reference import colbert_vectors, jina_reference

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def jina_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jina") / "jina-colbert-v2"
    state = write_jina(folder)
    return folder, state


def _content(model: ColBERT, text: str) -> list[int]:
    return model.tokenizer.content_ids([text])[0]


def test_jina_layout_tokens_and_settings(jina_folder):
    folder, _ = jina_folder
    assert detect_layout(folder) == "jina"
    model = load_model(folder)
    tok = model.tokenizer
    vocab = tok.vocab_size
    assert (tok.query_marker_ids, tok.doc_marker_ids, tok.mask_id) == ([vocab - 2], [vocab - 1], vocab - 3)
    assert (tok.cls_id, tok.sep_id, tok.pad_id) == (0, 2, 1)
    assert model.encoder.config.position == "rotary" and model.encoder.config.rope_base == 10000.0
    assert model.config.attend_to_mask_tokens and model.config.query_maxlen == 32
    assert model.config.doc_maxlen == 8192 and model.head_dims == [128]
    q = tok.sequences(["hello world"], is_query=True)[0]
    content = _content(model, "hello world")
    assert q[:2] == [0, vocab - 2] and q[2 : 2 + len(content)] == content
    assert q[2 + len(content)] == 2 and set(q[3 + len(content):]) == {vocab - 3} and len(q) == 32
    d = tok.sequences(["hello world"], is_query=False)[0]
    assert d == [0, vocab - 1, *content, 2]


def test_jina_vectors_match_reference(jina_folder):
    folder, state = jina_folder
    model = load_model(folder)
    linear = state["linear.weight"]
    query = "what is the capital of france?"
    ids = model.tokenizer.sequences([query], is_query=True)[0]
    ref = colbert_vectors(jina_reference(state, ids, heads=4), linear)
    got = model.encode(query, is_query=True)
    assert got.shape == (32, 128)
    assert np.abs(got - ref.numpy()).max() < 1e-4

    doc = "Paris is the capital of France, hello world."
    ids = model.tokenizer.sequences([doc], is_query=False)[0]
    ref = colbert_vectors(jina_reference(state, ids, heads=4), linear)
    keep = [i for i, t in enumerate(ids) if t not in model.tokenizer.skip_ids]
    assert len(keep) < len(ids)  # punctuation really dropped
    got = model.encode(doc, is_query=False)
    assert np.abs(got - ref[keep].numpy()).max() < 1e-4

    # Matryoshka by truncation: first 64 rows of the head, re-normalised
    got64 = model.encode(doc, is_query=False, dim=64)
    ref64 = colbert_vectors(jina_reference(state, ids, heads=4), linear[:64])
    assert got64.shape[1] == 64 and np.abs(got64 - ref64[keep].numpy()).max() < 1e-4


def test_batching_and_order_do_not_change_vectors(jina_folder):
    model = load_model(jina_folder[0])
    docs = ["hello", "paris is the capital of france " * 5, "berlin", "search engine token vector"]
    batched = model.encode(docs, batch_size=3)
    for doc, vec in zip(docs, batched):
        assert np.abs(model.encode(doc) - vec).max() < 1e-5


def _hf_colbert(bert, linear, ids, attention):
    with torch.no_grad():
        hidden = bert(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attention])).last_hidden_state[0]
    return torch.nn.functional.normalize(hidden @ linear.T, dim=-1).numpy()


def test_stanford_layout(tmp_path):
    folder = tmp_path / "colbertv2.0"
    bert, linear = write_stanford(folder)
    assert detect_layout(folder) == "stanford"
    model = load_model(folder)
    tok = model.tokenizer
    assert (tok.cls_id, tok.sep_id, tok.mask_id, tok.query_marker_ids, tok.doc_marker_ids) == (4, 5, 6, [1], [2])
    assert model.config.doc_maxlen == 180 and not model.config.attend_to_mask_tokens
    query = "Which city is the capital of Germany?"
    ids = tok.sequences([query], is_query=True)[0]
    assert ids[:2] == [4, 1] and ids[-1] == 6 and len(ids) == 32
    attention = [int(t != 6) for t in ids]  # mask tokens are not attended (attend_to_mask_tokens=False)
    expected = _hf_colbert(bert, linear, ids, attention)
    assert np.abs(model.encode(query, is_query=True) - expected).max() < 1e-4

    doc = "Berlin is the capital of Germany."
    ids = tok.sequences([doc], is_query=False)[0]
    expected = _hf_colbert(bert, linear, ids, [1] * len(ids))
    keep = [i for i, t in enumerate(ids) if t not in tok.skip_ids]
    assert np.abs(model.encode(doc) - expected[keep]).max() < 1e-4


def test_pylate_layout(tmp_path):
    folder = tmp_path / "pylate-colbert"
    bert, linear, hf_tok = write_pylate(folder)
    assert detect_layout(folder) == "sentence-transformers"
    model = load_model(folder)
    q_id, d_id = hf_tok.token_to_id("[Q] "), hf_tok.token_to_id("[D] ")
    assert model.tokenizer.query_marker_ids == [q_id] and model.tokenizer.doc_marker_ids == [d_id]
    assert model.head_dims == [16] and model.config.doc_maxlen == 180 and model.config.strip_text
    query = "hello world"
    ids = model.tokenizer.sequences([query], is_query=True)[0]
    mask_id = model.tokenizer.mask_id
    expected = _hf_colbert(bert, linear, ids, [int(t != mask_id) for t in ids])
    assert np.abs(model.encode(query, is_query=True) - expected).max() < 1e-4
    doc = "search, engine!"
    ids = model.tokenizer.sequences([doc], is_query=False)[0]
    expected = _hf_colbert(bert, linear, ids, [1] * len(ids))
    keep = [i for i, t in enumerate(ids) if t not in model.tokenizer.skip_ids]
    assert len(keep) == len(ids) - 2
    assert np.abs(model.encode(doc) - expected[keep]).max() < 1e-4


def test_stanford_xlmr_checkpoint_with_colbert_ai_default_markers(tmp_path):
    """colbert-ai over XLM-R writes its default markers "[unused0]"/"[unused1]", which that
    vocabulary lacks: its tokenizer encodes them as <unk>, so the model was trained with <unk>."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from tests.layouts import _randomise

    folder = tmp_path / "colbert-xlmr"
    folder.mkdir()
    tok = xlmr_tokenizer(extra=())
    tok.save(str(folder / "tokenizer.json"))
    cfg = XLMRobertaConfig(vocab_size=tok.get_vocab_size(with_added_tokens=True), hidden_size=32,
                           num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=130, type_vocab_size=1, pad_token_id=1)
    xlmr = XLMRobertaModel(cfg, add_pooling_layer=False).eval()
    _randomise(xlmr, 5)
    linear = 0.3 * torch.randn(24, 32, generator=torch.Generator().manual_seed(6))
    save_file({**{"roberta." + k: v.contiguous() for k, v in xlmr.state_dict().items()}, "linear.weight": linear},
              str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg.to_dict() | {"architectures": ["HF_ColBERT"]}))
    meta = {"query_token_id": "[unused0]", "doc_token_id": "[unused1]", "dim": 24, "query_maxlen": 32,
            "doc_maxlen": 180, "attend_to_mask_tokens": False, "mask_punctuation": True}
    (folder / "artifact.metadata").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"'\[unused0\]', '\[unused1\]' not in the tokenizer's vocabulary .*'<unk>'"):
        model = load_model(folder)
    tok_ = model.tokenizer
    assert tok_.query_marker_ids == tok_.doc_marker_ids == [tok.token_to_id("<unk>")]
    ids = tok_.sequences(["paris capital"], is_query=False)[0]
    assert ids[:2] == [0, tok.token_to_id("<unk>")]
    with torch.no_grad():
        hidden = xlmr(input_ids=torch.tensor([ids])).last_hidden_state[0]
    expected = torch.nn.functional.normalize(hidden @ linear.T, dim=-1).numpy()
    assert np.abs(model.encode("paris capital") - expected).max() < 1e-4
    meta["dim"] = 128  # colbert-ai refuses this one: its Linear does not fit the weight
    (folder / "artifact.metadata").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="says dim 128, but linear.weight projects to 24"):
        load_model(folder)


def test_pylate_save_of_jina_colbert(tmp_path):
    """PyLate (sentence-transformers) loading jina-colbert-v2 with trust_remote_code saves the
    bare flash XLM-R: Jina's keys without the "roberta." prefix, and the head in 1_Dense."""
    jina = tmp_path / "jina"
    state = write_jina(jina, dtype=torch.float32)
    folder = tmp_path / "pylate-jina"
    folder.mkdir()
    save_file({k[len("roberta."):]: v for k, v in state.items() if k.startswith("roberta.")},
              str(folder / "model.safetensors"))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((jina / name).read_bytes())
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({
        "query_prefix": "[QueryMarker]", "document_prefix": "[DocumentMarker]", "query_length": 32,
        "document_length": 8192, "attend_to_expansion_tokens": True, "skiplist_words": []}))
    (folder / "1_Dense").mkdir()
    (folder / "1_Dense" / "config.json").write_text(json.dumps({"in_features": 32, "out_features": 128,
                                                                "bias": False}))
    save_file({"linear.weight": state["linear.weight"]}, str(folder / "1_Dense" / "model.safetensors"))
    ours, theirs = load_model(folder), load_model(jina)
    assert ours.encoder.config.position == "rotary"
    for text, is_query in (("what is the capital of france", True), ("paris is the capital of france", False)):
        assert np.abs(ours.encode(text, is_query=is_query) - theirs.encode(text, is_query=is_query)).max() < 1e-5
    import shutil

    shutil.rmtree(folder / "1_Dense")
    with pytest.raises(CheckpointError, match="1_Dense: the Dense module folder that modules.json names does not"):
        load_model(folder)
    (jina / "model.safetensors").write_bytes(b"")
    save_file({k: v for k, v in state.items() if k != "linear.weight"}, str(jina / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"{jina}: no ColBERT projection head"):
        load_model(jina)


def test_pylate_dense_config_must_match_its_weights(tmp_path):
    import json

    folder = tmp_path / "pylate-colbert"
    write_pylate(folder)
    cfg = json.loads((folder / "1_Dense" / "config.json").read_text())
    (folder / "1_Dense" / "config.json").write_text(json.dumps({**cfg, "out_features": 99}))
    with pytest.raises(CheckpointError, match=r"out_features is 99 but linear.weight has shape \[16, 32\]"):
        load_model(folder)


def test_pylate_without_query_expansion(tmp_path):
    folder = tmp_path / "pylate-colbert"
    bert, linear, _ = write_pylate(folder, query_expansion=False)
    model = load_model(folder)
    assert model.config.query_expansion is False
    ids = model.tokenizer.sequences(["hello world"], is_query=True)[0]
    assert model.tokenizer.mask_id not in ids and len(ids) < 32
    expected = _hf_colbert(bert, linear, ids, [1] * len(ids))
    assert np.abs(model.encode("hello world", is_query=True) - expected).max() < 1e-4


def test_native_round_trip_with_matryoshka_heads(jina_folder, tmp_path):
    model = load_model(jina_folder[0])
    g = torch.Generator().manual_seed(9)
    head64 = nn.Linear(model.encoder.config.hidden_size, 64, bias=False)
    with torch.no_grad():
        head64.weight.copy_(torch.randn(64, model.encoder.config.hidden_size, generator=g))
    model.heads["64"] = head64
    doc = "late interaction retrieval"
    own64 = model.encode(doc, dim=64)
    truncated = model.encode(doc, dim=96)
    # leftovers of saves killed mid-way (each a model's size, hidden) go once a save succeeds
    for stale in (".native.tmp-0123abcd", ".native.old-89abcdef", ".native-other.tmp-00000000"):
        (tmp_path / stale).mkdir()
    model.save(tmp_path / "native")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".native-other.tmp-00000000", "native"]
    again = load_model(tmp_path / "native")
    assert sorted(again.head_dims) == [64, 128]
    assert np.array_equal(again.encode(doc, dim=64), own64)
    assert np.array_equal(again.encode(doc, dim=96), truncated)
    assert np.abs(again.encode(doc, dim=64) - model.encode(doc, dim=128)[:, :64]).max() > 0.01
    # a model built from another's parts: its heads as model.heads holds them (keyed "128") will do
    from polylate.model.colbert import ColBERT

    rebuilt = ColBERT(again.encoder, dict(again.heads), again.tokenizer, again.config, again.name)
    assert rebuilt.head_dims == [128, 64] and np.array_equal(rebuilt.encode(doc, dim=64), own64)
    with pytest.raises(ValueError, match="keyed by their output dim, an integer; got 'big'"):
        ColBERT(again.encoder, {"big": head64}, again.tokenizer, again.config)


def test_bad_inputs(tmp_path, jina_folder):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        load_model(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="Hugging Face hub"):
        load_model("jinaai/definitely-not-cached-model")
    (tmp_path / "junk").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(tmp_path / "junk")
    model = load_model(jina_folder[0])
    with pytest.raises(ValueError, match="dim must be"):
        model.encode("x", dim=256)
    with pytest.raises(TypeError, match="text #1"):
        model.encode(["ok", None])
    for bad in (0, 12289, 10**9):  # past 12288 it was taken per call, unbounded (the config refused it)
        with pytest.raises(ValueError, match=r"doc_maxlen must be in \[4, 12288\]"):
            model.encode("x", doc_maxlen=bad)
    for bad in (6.0, "300", True):
        with pytest.raises(TypeError, match="doc_maxlen must be an integer"):
            model.encode("x", doc_maxlen=bad)
    for dtype, to_numpy in ((np.int8, True), ("U10", True), (bool, True), (torch.int8, False), (torch.int8, True)):
        with pytest.raises(TypeError, match="dtype must be a float type"):  # int8 gave zeros, "U10" strings
            model.encode("x", dtype=dtype, to_numpy=to_numpy)


def test_a_model_pickles_for_spawned_workers(jina_folder):
    import pickle

    model = load_model(jina_folder[0])
    again = pickle.loads(pickle.dumps(model))
    assert np.array_equal(again.encode("hello world", is_query=True), model.encode("hello world", is_query=True))


def test_punctuation_dropped_as_each_reference_library_does(jina_folder, tmp_path):
    """Stanford ColBERT (and Jina through it) skips the first id each punctuation symbol
    tokenises to; PyLate the id of each symbol as one token; both computed here with
    transformers' tokenizers, independently of polylate."""
    import string

    from transformers import PreTrainedTokenizerFast

    jina = load_model(jina_folder[0])
    hf = PreTrainedTokenizerFast(tokenizer_file=str(jina_folder[0] / "tokenizer.json"))
    stanford_rule = {hf.encode(s, add_special_tokens=False)[0] for s in string.punctuation}
    assert jina.tokenizer.skip_ids == stanford_rule
    assert hf.convert_tokens_to_ids(",") not in jina.tokenizer.skip_ids  # a bare "," piece is kept, as there
    folder = tmp_path / "pylate-colbert"
    write_pylate(folder)
    pylate = load_model(folder)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    assert pylate.tokenizer.skip_ids == {hf.convert_tokens_to_ids(s) for s in string.punctuation}
    # the document vectors follow: "hello , world ." keeps exactly the non-skipped tokens
    ids = jina.tokenizer.sequences(["hello, world."], is_query=False)[0]
    assert len(jina.encode("hello, world.")) == sum(i not in stanford_rule for i in ids)


@pytest.mark.parametrize("damage, names", [
    ("truncated weights", "model.safetensors|cannot be loaded"),
    ("wrong head shape", r"size mismatch for weight.*\[128, 7\].*\[128, 32\]"),
    ("hidden size", r"size mismatch for embeddings\.word\.weight"),
    ("bad tokenizer", r"tokenizer\.json is not a readable tokenizer"),
    ("config field", "config.json lacks hidden_size"),
    ("string field", "config.json: hidden_size must be an integer, got '32'"),
    ("config list", r"config\.json holds a JSON list, expected an object"),
    ("metadata field", "artifact.metadata: query_maxlen must be an integer, got 'abc'"),
    ("unknown marker", r"\[NoSuchMarker\]"),
])
def test_malformed_checkpoints_are_checkpoint_errors(tmp_path, damage, names):
    """Each on one line that names the file, the field or the tensor and its shapes."""
    import json

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "jina"
    write_jina(folder, dtype=torch.float32)
    weights = folder / "model.safetensors"

    def edit(name, change):
        data = json.loads((folder / name).read_text())
        data = change(data) or data
        (folder / name).write_text(json.dumps(data))

    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "wrong head shape":
        state = load_file(str(weights))
        state["linear.weight"] = torch.zeros(128, 7)
        save_file(state, str(weights))
    elif damage == "hidden size":
        edit("config.json", lambda c: c.update(hidden_size=48))
    elif damage == "bad tokenizer":
        (folder / "tokenizer.json").write_text("{not json")
    elif damage == "config field":
        edit("config.json", lambda c: c.pop("hidden_size") and None)
    elif damage == "string field":
        edit("config.json", lambda c: c.update(hidden_size="32"))
    elif damage == "config list":
        edit("config.json", lambda c: [c])
    elif damage == "metadata field":
        edit("artifact.metadata", lambda m: m.update(query_maxlen="abc"))
    else:
        edit("artifact.metadata", lambda m: m.update(query_token_id="[NoSuchMarker]"))
    with pytest.raises(CheckpointError, match=str(folder)) as caught:
        load_model(folder)
    message = str(caught.value)
    assert "\n" not in message and re.search(names, message), message


def test_score_and_rerank_inputs():
    model = load_model()
    one = model.score("berlin", "berlin is in germany")
    assert one.shape == (1, 1)
    assert model.score([], ["x"]).shape == (0, 1)
    five = model.rerank("q", ["same"] * 5)
    assert [r["index"] for r in five] == [0, 1, 2, 3, 4]  # ties keep the documents' order
    for bad in (dict(top_n=0), dict(top_n=1.5), dict(top_n=True)):
        with pytest.raises(ValueError, match="top_n"):
            model.rerank("q", ["a"], **bad)
    with pytest.raises(TypeError, match="one query string"):
        model.rerank(["q"], ["a"])
    for bad in (dict(dim=96.0), dict(dim="64"), dict(dim=True), dict(batch_size=None)):
        with pytest.raises(TypeError, match="must be an integer"):
            model.encode("x", **bad)
    for bad in (5, b"hi"):
        with pytest.raises(TypeError, match="texts must be"):
            model.encode(bad)


def test_score_without_query_expansion(tmp_path):
    folder = tmp_path / "pylate-colbert"
    write_pylate(folder, query_expansion=False)
    model = load_model(folder)
    scores = model.score(["hello", "hello world search engine"], ["hello world", "late interaction"])
    assert scores.shape == (2, 2)
    for i, q in enumerate(["hello", "hello world search engine"]):
        assert torch.allclose(scores[i], model.score([q], ["hello world", "late interaction"])[0], atol=1e-5)


def test_strip_text_as_sentence_transformers_does():
    """PyLate's texts go through sentence-transformers, which strips them; with a sentencepiece
    vocabulary a trailing space is a token of its own otherwise."""
    from polylate.config import ColBERTConfig
    from polylate.text.tokenizer import ColBERTTokenizer
    from tests.layouts import xlmr_tokenizer

    keep = ColBERTTokenizer(xlmr_tokenizer(), ColBERTConfig())
    strip = ColBERTTokenizer(xlmr_tokenizer(), ColBERTConfig(strip_text=True))
    text = "  hello world \n"
    assert keep.content_ids([text]) != keep.content_ids(["hello world"])
    assert strip.content_ids([text]) == strip.content_ids(["hello world"])
    spans = [(s.start, s.end) for s in strip.token_spans(text, is_query=False) if s.start is not None]
    assert [text[a:b] for a, b in spans] == ["hello", "world"]


def test_documents_past_doc_maxlen_are_cut_aloud(jina_folder):
    """Text past doc_maxlen is never encoded, so it can never be found: say how many documents
    lost some, as the CLI's skipped-rows note does (it was silent)."""
    import warnings

    model = load_model(jina_folder[0])
    specials = 2 + len(model.tokenizer.doc_marker_ids)
    short, long = "alpha beta", " ".join(["alpha beta gamma delta"] * 10)
    limit = max(4, len(_content(model, short)) + specials)  # the short one just fits
    with pytest.warns(UserWarning, match=rf"1 of 2 document\(s\) are longer than doc_maxlen \({limit} tokens\)"):
        cut = model.encode([short, long], doc_maxlen=limit)
    assert len(cut[1]) <= limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.encode([short, long])  # within the model's own doc_maxlen: no warning
    with pytest.raises(ValueError, match="leaves no room for text"):  # bundled e5: "passage:" is 2 tokens
        load_model().encode(short, doc_maxlen=4)
    # score and rerank take the same per-call limit
    with pytest.warns(UserWarning, match="cut there"):
        ranked = model.rerank("alpha", [short, long], doc_maxlen=limit)
    with pytest.warns(UserWarning, match="cut there"):
        scores = model.score("alpha", [short, long], doc_maxlen=limit)
    assert [r["score"] for r in sorted(ranked, key=lambda r: r["index"])] == pytest.approx(scores[0].tolist(), abs=1e-5)


def test_score_packs_documents_of_any_length():
    """score() equals each document's own MaxSim, however unequal the lengths in one call."""
    model = load_model()
    docs = ["berlin", "berlin is the capital of germany " * 40, "paris is in france", ""]
    scores = model.score(["capital of germany", "france"], docs)
    for qi, query in enumerate(["capital of germany", "france"]):
        q = model.encode(query, is_query=True)
        for di, doc in enumerate(docs):
            d = model.encode(doc)
            assert float(scores[qi, di]) == pytest.approx(float((q @ d.T).max(1).sum()), abs=1e-4)


def test_bf16_on_a_cpu_that_emulates_it_is_warned_about(monkeypatch):
    from polylate.model import checkpoints

    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    assert checkpoints.cpu_lacks_bf16(avx2)
    assert not checkpoints.cpu_lacks_bf16(avx2.replace("avx2", "avx2 avx512f avx512_bf16"))
    assert not checkpoints.cpu_lacks_bf16(avx2.replace("fma", "amx_bf16 amx_tile"))
    assert not checkpoints.cpu_lacks_bf16("Features\t: fp asimd bf16\n")  # not x86: cannot tell, no warning
    monkeypatch.setattr(checkpoints, "cpu_lacks_bf16", lambda: True)
    with pytest.warns(UserWarning, match="no bf16 instructions"):
        load_model(dtype="bf16")
    monkeypatch.setattr(checkpoints, "cpu_lacks_bf16", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(dtype="bf16")
