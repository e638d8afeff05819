"""HTTP API on a tiny random model: Jina-compatible encode/rerank, auth, limits, bad input."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tests.server_fixtures import KEY, app_for, tiny_model  # noqa: E402

DOCS = ["hello world", "search engine late interaction retrieval", "paris capital france",
        "berlin germany capital", "what is a query token vector"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def client(model, tmp_path_factory):
    with TestClient(app_for(model, tmp_path_factory.mktemp("indexes"))) as c:
        yield c


def _detail(res) -> str:
    return json.dumps(res.json()["detail"])


# -- health and OpenAPI ---------------------------------------------------------------------


def test_health_and_openapi(client, model):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == model.name
    assert h["dims"] == [128, 96, 64] and h["default_dim"] == 128 and h["auth"] is False
    spec = client.get("/openapi.json").json()
    assert {"/v1/multi-vector", "/v1/rerank", "/v1/indexes", "/v1/indexes/{name}/search"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
    assert "swagger-ui" in client.get("/docs").text and "cdn" not in client.get("/docs").text.lower()


# -- /v1/multi-vector -----------------------------------------------------------------------


@pytest.mark.parametrize("dim", [128, 96, 64])
def test_multi_vector_documents_match_encode(client, model, dim):
    res = client.post("/v1/multi-vector", json={"model": model.name, "input_type": "document",
                                                 "dimensions": dim, "embedding_type": "float", "input": DOCS})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["object"] == "list" and body["model"] == model.name
    expected = model.encode(DOCS, dim=dim)
    assert [d["index"] for d in body["data"]] == list(range(len(DOCS)))
    for item, ref in zip(body["data"], expected):
        got = np.array(item["embeddings"])
        assert item["object"] == "embeddings" and got.shape == ref.shape == (ref.shape[0], dim)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
        np.testing.assert_allclose(got, ref, atol=1e-6)
    assert body["usage"]["total_tokens"] == sum(len(s) for s in model.tokenizer.sequences(DOCS, False))


def test_multi_vector_queries_have_32_vectors(client, model):
    res = client.post("/v1/multi-vector", json={"input": [{"text": "paris"}, "what is the capital of france"],
                                                 "input_type": "query"})
    assert res.status_code == 200, res.text
    data = res.json()["data"]
    assert [np.array(d["embeddings"]).shape for d in data] == [(32, 128), (32, 128)]
    ref = model.encode("paris", is_query=True)
    np.testing.assert_allclose(np.array(data[0]["embeddings"]), ref, atol=1e-6)
    single = client.post("/v1/multi-vector", json={"input": "paris", "input_type": "query"}).json()
    assert single["data"][0]["embeddings"] == data[0]["embeddings"]
    assert res.json()["usage"]["total_tokens"] == 64


def test_multi_vector_embedding_types_carry_the_float_vectors(client, model):
    """base64: one string per token, as Jina's MultiEmbeddingData, decoding to its float32
    vector; binary/ubinary are its signs packed 8 per byte."""
    texts = ["Where is the Eiffel tower?", DOCS[0]]
    res = client.post("/v1/multi-vector", json={"input": texts, "dimensions": 96,
                                                 "embedding_type": ["float", "base64", "binary", "ubinary"]})
    assert res.status_code == 200, res.text
    refs = model.encode(texts, dim=96)
    for item, ref in zip(res.json()["data"], refs):
        emb = item["embeddings"]
        assert set(emb) == {"float", "base64", "binary", "ubinary"}
        np.testing.assert_allclose(np.array(emb["float"]), ref, atol=1e-6)
        assert len(emb["base64"]) == ref.shape[0]
        decoded = np.stack([np.frombuffer(base64.b64decode(token), "<f4") for token in emb["base64"]])
        np.testing.assert_array_equal(decoded, ref.astype(np.float32))
        ubin = np.array(emb["ubinary"])
        assert ubin.shape == (ref.shape[0], 12) and ubin.min() >= 0 and ubin.max() <= 255
        np.testing.assert_array_equal(np.unpackbits(ubin.astype(np.uint8), axis=1).astype(bool), ref > 0)
        np.testing.assert_array_equal(np.array(emb["binary"]), ubin - 128)
    one = client.post("/v1/multi-vector", json={"input": texts, "dimensions": 96, "embedding_type": "base64"})
    assert [d["embeddings"] for d in one.json()["data"]] == [d["embeddings"]["base64"] for d in res.json()["data"]]


def test_jina_request_forms_and_its_embeddings_route(client, model):
    """What Jina's API takes: /v1/embeddings (its current route for jina-colbert-v2) as
    /v1/multi-vector, one {"text": ...} object as input, and null for an optional field."""
    body = {"model": None, "input": {"text": "Where is the Eiffel tower?"}, "input_type": None,
            "embedding_type": None, "dimensions": None}
    for route in ("/v1/embeddings", "/v1/multi-vector"):
        res = client.post(route, json=body)
        assert res.status_code == 200, res.text
        got = np.array(res.json()["data"][0]["embeddings"])
        np.testing.assert_allclose(got, model.encode("Where is the Eiffel tower?"), atol=1e-6)
    res = client.post("/v1/rerank", json={"query": "tower", "documents": ["a", "b"], "return_documents": None,
                                          "top_n": None})
    assert res.status_code == 200 and all("document" in r for r in res.json()["results"])


@pytest.mark.parametrize("body, field, words", [
    ({"input": ["x"], "dimensions": 100}, "dimensions", "must be one of [128, 96, 64]"),
    ({"input": ["x"], "input_type": "passage"}, "input_type", "'query' or 'document'"),
    ({"input": []}, "input", "input is empty"),
    ({"input": [5]}, "input", "valid string"),
    ({"input": [{"image": "x.png"}]}, "input", "image inputs are not served"),
    ({"input": [{"id": "a"}]}, "input", "text"),
    ({"input": ["x"], "embedding_type": "int8"}, "embedding_type", "'int8' is not supported"),
    ({"input": ["x"], "embedding_type": []}, "embedding_type", "empty list"),
    ({"input": ["x"], "embedding_type": ["float", "float"]}, "embedding_type", "repeat"),
    ({"inputs": ["x"]}, "input", "Field required"),
    ({"input": ["x"], "dimensions": True}, "dimensions", "valid integer"),
    ({"input": ["x", " ", ""]}, "input", "input[1] is blank (and 1 more)"),
    ({"input": {"text": "\n"}}, "input", "input[0] is blank"),
])
def test_multi_vector_bad_input_is_422_naming_the_problem(client, body, field, words):
    res = client.post("/v1/multi-vector", json=body)
    assert res.status_code == 422, res.text
    assert field in _detail(res) and words in _detail(res)


def test_bad_json_and_unknown_model(client):
    res = client.post("/v1/multi-vector", content=b'{"input": ["x"', headers={"content-type": "application/json"})
    assert res.status_code == 422 and "JSON" in _detail(res)
    res = client.post("/v1/multi-vector", content=b'{"input": ["\\ud800 lone surrogate"]}',
                      headers={"content-type": "application/json"})
    assert res.status_code == 422 and "not valid Unicode" in _detail(res)
    # bytes that are not UTF-8, and JSON nested past the parser's depth: named, not "an error parsing the body"
    res = client.post("/v1/multi-vector", content=b'{"input": "\xff\xfe"}', headers={"content-type": "application/json"})
    assert res.status_code == 400 and "not UTF-8 JSON: byte 0xff at offset 11" in _detail(res), res.text
    res = client.post("/v1/multi-vector", content=b"[" * 100_000 + b"]" * 100_000,
                      headers={"content-type": "application/json"})
    assert res.status_code in (400, 422) and "error parsing the body" not in _detail(res), res.text
    res = client.post("/v1/multi-vector", json={"model": "jina-colbert-v3", "input": ["x"]})
    assert res.status_code == 404 and "not served here" in _detail(res)
    # JSON sent as a form (curl -d without -H): the content type named, not "a valid dictionary"
    res = client.post("/v1/multi-vector", content=b'{"input": ["x"]}',
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert res.status_code == 415 and "Content-Type: application/json" in _detail(res), res.text
    for ctype in ("application/json; charset=utf-8", "application/vnd.api+json"):
        assert client.post("/v1/multi-vector", content=b'{"input": ["x"]}', headers={"content-type": ctype}).status_code == 200


def test_start_up_compiles_the_search_kernels_and_cleans_up(model, tmp_path, monkeypatch):
    import tempfile

    from polylate.index import plaid

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    calls = []
    warm_up = plaid.warm_up
    monkeypatch.setattr(plaid, "warm_up", lambda: calls.append(1) or warm_up())
    with TestClient(app_for(model, tmp_path / "indexes", warm_up=True)) as c:
        assert c.get("/health").status_code == 200
    assert calls == [1] and list((tmp_path / "tmp").iterdir()) == []  # joined at shutdown: nothing left


def test_model_alias(model, tmp_path):
    with TestClient(app_for(model, tmp_path, model_aliases=("jina-colbert-v2",))) as c:
        res = c.post("/v1/multi-vector", json={"model": "jina-colbert-v2", "input": ["x"]})
        assert res.status_code == 200 and res.json()["model"] == "jina-colbert-v2"  # echoed, as Jina does
        assert c.post("/v1/multi-vector", json={"input": ["x"]}).json()["model"] == model.name


# -- /v1/rerank ------------------------------------------------------------------------------


def test_rerank_matches_model_rerank(client, model, monkeypatch):
    """The same answer as ColBERT.rerank, with the documents encoded a slice at a time (a
    search waits for one slice, not for a whole rerank of many documents)."""
    query = "capital of france"
    runner, calls, encode = client.app.state.registry.runner, [], model.encode
    monkeypatch.setattr(runner, "SLICE_TOKENS", 16)
    monkeypatch.setattr(model, "encode", lambda texts, **kw: calls.append(len(texts)) or encode(texts, **kw))
    res = client.post("/v1/rerank", json={"model": model.name, "query": query, "documents": DOCS})
    monkeypatch.undo()
    assert sum(calls) == 1 + len(DOCS) and len(calls) > 2, calls
    assert res.status_code == 200, res.text
    body = res.json()
    ref = model.rerank(query, DOCS)
    assert [r["index"] for r in body["results"]] == [r["index"] for r in ref]
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], [r["score"] for r in ref], rtol=1e-5)
    assert [r["document"]["text"] for r in body["results"]] == [DOCS[r["index"]] for r in ref]
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert body["usage"]["total_tokens"] > 32


def test_rerank_top_n_and_objects(client, model):
    docs = [{"text": t} for t in DOCS]
    body = client.post("/v1/rerank", json={"query": {"text": "germany"}, "documents": docs, "top_n": 2,
                                           "return_documents": False}).json()
    ref = model.rerank("germany", DOCS, top_n=2)
    assert [r["index"] for r in body["results"]] == [r["index"] for r in ref]
    assert all("document" not in r for r in body["results"])  # omitted, as Jina does
    assert len(client.post("/v1/rerank", json={"query": "x", "documents": DOCS, "top_n": 99}).json()["results"]) == 5
    # Jina's TextDoc: an id and any other fields (a page url, nulls) come back with the document
    docs = [{"text": t, "id": f"doc-{i}", "meta": {"n": i, "none": None}, "url": f"https://example.org/{i}",
             "extra": None} for i, t in enumerate(DOCS)]
    body = client.post("/v1/rerank", json={"query": "germany", "documents": [DOCS[0], *docs[1:]]}).json()
    for r in body["results"]:
        assert r["document"] == ({"text": DOCS[0]} if r["index"] == 0 else docs[r["index"]])
    res = client.post("/v1/rerank", json={"query": "x", "documents": [{"image": "a.png"}]})
    assert res.status_code == 422 and "image inputs are not served" in res.json()["detail"][0]["msg"]
    # kept fields are sent back, so one that cannot be written as UTF-8 is refused up front, by name
    for doc, name in (({"text": "a", "id": "\ud800"}, "'id'"), ({"text": "a", "m": {"k": ["\udc00"]}}, "'m'['k'][0]"),
                      ({"text": "a", "\ud800": 1}, "(its name)"), ({"text": "\ud800"}, "'text'")):
        res = client.post("/v1/rerank", content=json.dumps({"query": "q", "documents": [doc]}),
                          headers={"content-type": "application/json"})
        assert res.status_code == 422 and f"{name} is not valid Unicode" in _detail(res), res.text
    for bad in ({"query": "x", "documents": []}, {"query": "x", "documents": DOCS, "top_n": 0},
                {"query": 3, "documents": DOCS}, {"documents": DOCS}, {"query": "x", "documents": DOCS, "top_n": "2"},
                {"query": "x", "documents": DOCS, "return_documents": "yes"}, {"query": " ", "documents": DOCS},
                {"query": {"text": ""}, "documents": DOCS}):
        assert client.post("/v1/rerank", json=bad).status_code == 422
    # a blank document is markers only, which would score above real ones: refused, by position
    res = client.post("/v1/rerank", json={"query": "bananas", "documents": ["Bananas are yellow.", {"text": " "}]})
    assert res.status_code == 422 and "documents[1] is blank" in _detail(res)


# -- auth ------------------------------------------------------------------------------------


def test_api_keys_protect_writes(model, tmp_path):
    with TestClient(app_for(model, tmp_path, api_keys=(KEY,))) as c:
        create = {"name": "secured"}
        res = c.post("/v1/indexes", json=create)
        assert res.status_code == 401 and res.headers["www-authenticate"].startswith("Bearer")
        res = c.post("/v1/indexes", json=create, headers={"Authorization": "Bearer wrong-key-123"})
        assert res.status_code == 401 and "invalid_token" in res.headers["www-authenticate"]
        res = c.post("/v1/indexes", json=create, headers={"Authorization": f"Basic {KEY}"})
        assert res.status_code == 401
        assert c.post("/v1/indexes", json=create, headers={"Authorization": f"Bearer {KEY}"}).status_code == 201
        assert c.delete("/v1/indexes/secured").status_code == 401
        # reads stay open unless protect_reads
        assert c.post("/v1/multi-vector", json={"input": ["x"]}).status_code == 200
        assert c.get("/v1/indexes/secured").status_code == 200
        assert c.get("/health").json()["auth"] is True


def test_protect_reads(model, tmp_path):
    with TestClient(app_for(model, tmp_path, api_keys=(KEY, "second-key-456"), protect_reads=True)) as c:
        assert c.post("/v1/multi-vector", json={"input": ["x"]}).status_code == 401
        assert c.post("/v1/rerank", json={"query": "x", "documents": ["y"]}).status_code == 401
        assert c.get("/v1/indexes").status_code == 401
        ok = c.post("/v1/multi-vector", json={"input": ["x"]}, headers={"Authorization": "Bearer second-key-456"})
        assert ok.status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200
        moved = c.get("/static/index.html?index=a&q=b", follow_redirects=False)  # its links resolve from /
        assert moved.status_code == 307 and moved.headers["location"] == "../?index=a&q=b"
        assert c.get("/static/index.html").url.path == "/" and c.get("/static/app.js").status_code == 200


def test_settings_from_env(monkeypatch):
    from polylate.server import ServerSettings

    monkeypatch.setenv("POLYLATE_API_KEYS", "alpha-key-1, beta-key-22")
    assert ServerSettings.from_env().api_keys == ("alpha-key-1", "beta-key-22")
    assert ServerSettings.from_env(api_keys=("gamma-key-3",)).api_keys == ("gamma-key-3",)
    with pytest.raises(ValueError, match="at least 8"):
        ServerSettings(api_keys=("short",))
    with pytest.raises(ValueError, match="dtype must be"):
        ServerSettings(dtype="fp8")


def test_server_loads_its_model_in_the_requested_precision(tmp_path):
    import torch

    from polylate.server import ServerSettings, create_app

    app = create_app(ServerSettings(index_root=tmp_path, dtype="bfloat16"))
    assert app.state.runner.model.dtype == torch.bfloat16


# -- limits ----------------------------------------------------------------------------------


def test_request_limits(model, tmp_path):
    app = app_for(model, tmp_path, max_batch=3, max_text_chars=50, max_request_bytes=2000)
    with TestClient(app) as c:
        res = c.post("/v1/multi-vector", json={"input": ["x"] * 4})
        assert res.status_code == 413 and "at most 3" in _detail(res)
        res = c.post("/v1/multi-vector", json={"input": ["y" * 51]})
        assert res.status_code == 413 and "max_text_chars" in _detail(res)
        res = c.post("/v1/rerank", json={"query": "q", "documents": ["d"] * 4})
        assert res.status_code == 413
        res = c.post("/v1/multi-vector", json={"input": ["z" * 40] * 60})
        assert res.status_code == 413 and "2000 bytes" in _detail(res)

        def chunks():  # no Content-Length: counted as it streams
            yield b'{"input": ["'
            for _ in range(30):
                yield b"a" * 100
            yield b'"]}'

        res = c.post("/v1/multi-vector", content=chunks(), headers={"content-type": "application/json"})
        assert res.status_code == 413 and "2000 bytes" in _detail(res)
        assert c.post("/v1/multi-vector", json={"input": ["x"] * 3}).status_code == 200
    # the encoder's work is bounded in tokens, whatever the texts' count and characters
    text = "Paris is the capital of France."
    one = len(model.tokenizer.sequences([text], False)[0])
    with TestClient(app_for(model, tmp_path, max_request_tokens=3 * one)) as c:
        doc = {"input_type": "document"}
        assert c.post("/v1/multi-vector", json={"input": ["Paris is the capital of France."] * 2, **doc}).status_code == 200
        res = c.post("/v1/multi-vector", json={"input": ["Paris is the capital of France."] * 6, **doc})
        assert res.status_code == 413 and "max_request_tokens" in _detail(res)
        res = c.post("/v1/rerank", json={"query": "capital", "documents": ["Paris is the capital of France."] * 6})
        assert res.status_code == 413 and "the request's texts come to" in _detail(res)
        # rerank's limit is the request's total: three documents fill it alone, the query tips it over
        res = c.post("/v1/rerank", json={"query": text, "documents": [text] * 3})
        assert res.status_code == 413 and "max_request_tokens" in _detail(res)
        assert c.post("/v1/rerank", json={"query": text, "documents": [text]}).status_code == 200


# -- polylate serve --------------------------------------------------------------------------


def test_cli_serve_subprocess(model, tmp_path):
    """The real command: uvicorn in a child process, keys from the environment."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.server_fixtures import free_port

    model.save(tmp_path / "model")
    port = free_port()
    cmd = [sys.executable, "-m", "polylate.cli", "serve", "--port", str(port), "--model", str(tmp_path / "model"),
           "--index-root", str(tmp_path / "indexes"), "--max-batch", "2", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env={**os.environ, "POLYLATE_API_KEYS": KEY}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "polylate serve exited"
            try:
                health = httpx.get(url + "/health", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "polylate serve did not come up"
                time.sleep(0.1)
        assert health.json()["auth"] is True and health.json()["model"] == model.name
        assert httpx.post(url + "/v1/indexes", json={"name": "c"}).status_code == 401
        ok = httpx.post(url + "/v1/indexes", json={"name": "c"}, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 201 and (tmp_path / "indexes" / "c").is_dir()
        assert httpx.post(url + "/v1/multi-vector", json={"input": ["a", "b", "c"]}).status_code == 413
        assert httpx.get(url + "/").headers["content-type"].startswith("text/html")
    finally:
        proc.terminate()  # graceful shutdown; uvicorn then re-raises SIGTERM, so -15 is a clean exit
        assert proc.wait(timeout=20) in (0, -15)


def test_cli_serve_refuses_bad_settings(tmp_path):
    from typer.testing import CliRunner

    from polylate.cli import app as cli

    res = CliRunner().invoke(cli, ["serve", "--protect-reads", "--index-root", str(tmp_path)],
                             env={"POLYLATE_API_KEYS": ""})
    assert res.exit_code == 2 and "needs API keys" in res.output
    res = CliRunner().invoke(cli, ["serve", "--api-key", "short", "--index-root", str(tmp_path)])
    assert res.exit_code == 2 and "at least 8" in res.output


def test_model_turns_go_in_the_order_asked_and_skip_abandoned_ones():
    """A query asked for during an add's slice goes before the add's next slice (a plain lock
    let the releasing thread take it straight back, and the readers starved writers or back)."""
    import threading
    import time

    from polylate.server.runner import _Turns

    turns, order = _Turns(), []

    def take(name):
        with turns.hold():
            order.append(name)

    with turns.hold():
        waiters = []
        for name in "abc":
            waiters.append(threading.Thread(target=take, args=(name,)))
            waiters[-1].start()
            deadline = time.monotonic() + 10
            while turns._next < len(waiters) + 1 and time.monotonic() < deadline:  # each has its ticket first
                time.sleep(0.001)
    for w in waiters:
        w.join(timeout=10)
    assert order == ["a", "b", "c"]
    # a ticket whose holder stopped waiting (an exception in the wait) is passed over
    with turns.hold():
        turns._done.add(turns._next)  # the ticket after this one: its holder gave up
        turns._next += 1
        d = threading.Thread(target=take, args=("d",))
        d.start()
        deadline = time.monotonic() + 10
        while turns._next < 7 and time.monotonic() < deadline:
            time.sleep(0.001)
    d.join(timeout=10)
    assert order == ["a", "b", "c", "d"]


def test_many_texts_are_encoded_in_token_budget_slices_and_come_back_in_order(model, monkeypatch):
    """Slices hold at most SLICE_TOKENS padded tokens (a longer text alone), so a query waits
    about as long behind long documents as behind short ones; answers keep the input order."""
    from polylate.server.runner import ModelRunner

    runner = ModelRunner(model)
    texts = ["word " * n for n in (40, 2, 9, 3, 25, 1, 60, 5, 14, 7)]
    monkeypatch.setattr(runner, "SLICE_TOKENS", 48)
    slices, encode = [], model.encode
    monkeypatch.setattr(model, "encode", lambda batch, **kw: slices.append(list(batch)) or encode(batch, **kw))
    for is_query in (False, True):
        slices.clear()
        got = runner.encode(texts, is_query=is_query, dim=64)
        for g, ref in zip(got, encode(texts, is_query=is_query, dim=64), strict=True):
            np.testing.assert_allclose(g, ref, atol=1e-5)
        assert sorted(t for s in slices for t in s) == sorted(texts)
        for s in slices:
            padded = len(s) * max(len(q) for q in model.tokenizer.sequences(s, is_query))
            assert len(s) == 1 or padded <= 48, (is_query, padded)
        assert 1 < len(slices) <= len(texts)
        if not is_query:  # short documents share a slice
            assert len(slices) < len(texts)
