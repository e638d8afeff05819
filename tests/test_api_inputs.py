"""The Python API's arguments as a library user passes them: wrong kinds are named, and
spellings the CLI accepts (bf16) or numpy gives (np.int64, np.float16) work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import polylate
from polylate import load_model
from polylate.index.plaid import PlaidIndex
from tests.layouts import write_jina


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jina") / "tiny"
    write_jina(folder, dtype=torch.float32)
    return load_model(folder)


def test_one_string_is_never_read_as_ids(tmp_path):
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(15)]
    vectors = [rng.standard_normal((3, 16)).astype(np.float32) for _ in ids]
    vectors = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in vectors]
    idx = PlaidIndex.build(tmp_path / "idx", ids, vectors, texts=[f"doc {i}" for i in ids])
    for call in (lambda: idx.delete("12"), lambda: idx.documents("34")):
        with pytest.raises(TypeError, match="not one string"):
            call()
    assert len(idx) == 15 and idx.delete(["12"]) == 1 and idx.documents(["3"]) == ["doc 3"]


def test_score_shapes_and_argument_kinds(model):
    assert model.score(["q1", "q2"], []).shape == (2, 0)
    assert model.score([], ["d"]).shape == (0, 1)
    for bad in (None, {"a": 1}):
        with pytest.raises(TypeError, match="queries must be a string or a sequence"):
            model.score(bad, ["d"])
    with pytest.raises(TypeError, match="texts must be a string or a sequence"):
        model.encode({"a": 1})


def test_encode_output_dtypes(model):
    assert model.encode("hi", dtype=torch.float16).dtype == np.float16
    assert model.encode("hi", dtype="float16").dtype == np.float16
    with pytest.raises(TypeError, match="no numpy equivalent"):
        model.encode("hi", dtype=torch.bfloat16)
    assert model.encode("hi", to_numpy=False, dtype=np.float16).dtype == torch.float16
    assert model.encode("hi", to_numpy=False, dtype="bf16").dtype == torch.bfloat16
    with pytest.raises(TypeError, match="dtype must be a float type"):
        model.encode("hi", to_numpy=False, dtype="nonsense")


def test_doc_maxlen_must_be_an_integer(model):
    for bad in ("10", 10.5, True):
        with pytest.raises(TypeError, match="doc_maxlen must be an integer"):
            model.encode("a b c", doc_maxlen=bad)


def test_load_model_arguments(tmp_path, model):
    folder = tmp_path / "tiny"
    write_jina(folder)
    assert load_model(folder, dtype="bf16").dtype == torch.bfloat16
    with pytest.raises(TypeError, match="dtype must be a torch dtype or one of"):
        load_model(folder, dtype="int8")
    with pytest.raises(TypeError, match="name_or_path must be"):
        load_model(5)


def test_rerank_arguments(model):
    q = model.encode("hello", is_query=True)
    docs = [model.encode("a"), model.encode("hello world")]
    with pytest.raises(ValueError, match=r"query must have shape \[tokens, dim\]"):
        polylate.rerank(q[0], docs)
    with pytest.raises(ValueError, match="top_n must be a positive integer"):
        polylate.rerank(q, [], top_n=-1)
    assert len(polylate.rerank(q, docs, top_n=np.int64(1))) == 1
    assert len(model.rerank("q", ["a", "b"], top_n=np.int64(1))) == 1


def test_export_dim_must_be_an_integer(model, tmp_path):
    from polylate.model.export import ExportError, export_model

    with pytest.raises(ExportError, match="dim must be an integer"):
        export_model(model, tmp_path / "x", "jina", dim="64")
