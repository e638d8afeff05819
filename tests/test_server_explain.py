"""Token spans (tokenizer) and the query-token → document-token explanations built on them."""

from __future__ import annotations

import numpy as np
import pytest

from polylate import load_model
from tests.layouts import write_jina, write_pylate, write_stanford

TEXTS = ["Paris is the capital of France, on the Seine.", "hello world!", "", "  spaced   out  ",
         "富士山は日本で最も高い山です。", "naïve café — ünïcode 😀 emoji", "query token vector " * 40]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    write_jina(root / "jina")
    write_stanford(root / "stanford")
    write_pylate(root / "pylate")
    out = {name: load_model(root / name) for name in ("jina", "stanford", "pylate")}
    out["bundled"] = load_model()
    return out


@pytest.mark.parametrize("name", ["jina", "stanford", "pylate", "bundled"])
@pytest.mark.parametrize("is_query", [True, False])
def test_token_spans_align_with_encode_rows(models, name, is_query):
    model = models[name]
    tok = model.tokenizer
    vectors = model.encode(TEXTS, is_query=is_query, doc_maxlen=64)
    for text, vec in zip(TEXTS, vectors):
        spans = tok.token_spans(text, is_query, doc_maxlen=64)
        assert len(spans) == vec.shape[0], (text, [s.piece for s in spans])
        if is_query:
            assert [s.id for s in spans] == tok.query_ids(tok.content_ids([text])[0])
        for s in spans:
            assert s.piece == tok.tokenizer.id_to_token(s.id)
            if s.start is None:
                assert s.end is None
                continue
            surface = text[s.start : s.end]
            assert 0 <= s.start < s.end <= len(text) and surface == surface.strip()
    specials = {tok.cls_id, tok.sep_id, tok.mask_id, *tok.query_marker_ids, *tok.doc_marker_ids}
    spans = tok.token_spans(TEXTS[0], is_query)
    assert all(s.start is None for s in spans if s.id in specials)


def test_token_spans_cover_words(models):
    text = TEXTS[0]
    spans = models["bundled"].tokenizer.token_spans(text, is_query=False)
    words = [text[s.start : s.end] for s in spans if s.start is not None]
    assert words == ["Paris", "is", "the", "capital", "of", "France", "on", "the", "Seine"]  # punctuation dropped
    q = models["bundled"].tokenizer.token_spans("capital of France?", is_query=True)
    if models["bundled"].config.query_expansion:
        assert len(q) == 32 and [s.piece for s in q[-3:]] == ["<mask>"] * 3
    assert [models["bundled"].tokenizer.tokenizer.id_to_token(s.id) for s in q] == [s.piece for s in q]
    with pytest.raises(TypeError):
        models["bundled"].tokenizer.token_spans(5, is_query=True)


def test_explanation_adds_up_to_maxsim(models):
    from polylate.server.explain import explain_match
    from polylate.server.runner import ModelRunner

    model = models["bundled"]
    runner = ModelRunner(model)
    query = "What is the capital of France?"
    docs = [TEXTS[0], "Berlin ist die Hauptstadt Deutschlands."]
    q = model.encode(query, is_query=True)
    query_tokens, explained = runner.explain(query, q, docs, dim=128)
    exact = model.score([query], docs)[0].numpy()
    np.testing.assert_allclose([e["score"] for e in explained], exact, rtol=1e-5)
    assert len(query_tokens) == q.shape[0] and all(len(e["matches"]) == q.shape[0] for e in explained)
    best = {query[t["start"]:t["end"]]: explained[0]["matches"][t["index"]]
            for t in query_tokens if t["start"] is not None}
    assert docs[0][best["capital"]["start"]:best["capital"]["end"]] == "capital"
    assert docs[0][best["France"]["start"]:best["France"]["end"]] == "France"
    with pytest.raises(ValueError, match="spans"):
        explain_match(q, model.encode(docs[0]), [])


@pytest.mark.parametrize("name", ["jina", "bundled"])
def test_query_tokens_say_what_they_are(models, name):
    """The search page marks matches of [MASK] expansion apart from those of the marker or a
    prefix (e5's "query:"), which have no characters in the query either."""
    from polylate.server.explain import token_info

    tok = models[name].tokenizer
    info = token_info(tok.token_spans("capital of France?", True), tok.mask_id)
    kinds = [t["kind"] for t in info]
    assert all((k == "text") == (t["start"] is not None) for k, t in zip(kinds, info))
    assert kinds[0] == "other" and "text" in kinds  # <s>/[CLS]
    expands = models[name].config.query_expansion
    assert ("expansion" in kinds) == expands and kinds.count("expansion") == (
        sum(t["piece"] == tok.tokenizer.id_to_token(tok.mask_id) for t in info) if expands else 0)


def test_search_explain_over_http(models, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from polylate.sample import SAMPLE_DOCUMENTS
    from tests.server_fixtures import app_for

    model = models["bundled"]
    with TestClient(app_for(model, tmp_path)) as c:
        docs = [{"id": d["id"], "text": d["text"]} for d in SAMPLE_DOCUMENTS]
        assert c.post("/v1/indexes", json={"name": "ex", "documents": docs}).status_code == 201
        body = c.post("/v1/indexes/ex/search", json={"query": "capital of France", "k": 3, "explain": True}).json()
        assert len(body["query_tokens"]) == model.encode("capital of France", is_query=True).shape[0]
        top = body["hits"][0]
        assert top["id"] == "en-paris"
        assert abs(top["explain"]["score"] - top["score"]) < 0.05 * top["score"]  # index vs exact vectors
        marked = {top["text"][m["start"]:m["end"]] for m in top["explain"]["matches"] if m["start"] is not None}
        assert {"capital", "France"} <= marked
        plain = c.post("/v1/indexes/ex/search", json={"query": "capital of France", "k": 3}).json()
        assert plain["query_tokens"] is None and all(h["explain"] is None for h in plain["hits"])
