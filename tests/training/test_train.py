"""Training a tiny real BERT: the loss must move, and the output must be a complete, usable model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import train_config

from embedtune.data import RetrievalSplit
from embedtune.errors import DataError, EmbedtuneError
from embedtune.models import load_model
from embedtune.training import TRAIN_RECORD, TrainConfig, evaluation_interval, train
from embedtune.training.choices import Choice
from embedtune.training.dev import DEV_COST_SHARE, MIN_DEV_QUERIES, POOL_EVALUATIONS, RetrievalDevEvaluator
from embedtune.training.progress import evaluations


def _config(tmp_path, model, data, **overrides):
    settings = {"max_steps": 30, "batch_size": 4, "learning_rate": 1e-3, **overrides}
    return train_config(tmp_path / "model", model, data, **settings)


def test_plain_bert_checkpoint_trains_and_loss_falls(tmp_path, tiny_bert, beir_dir):
    result = train(_config(tmp_path, tiny_bert, beir_dir))
    assert result.steps == 30 and result.rows == 5
    first, last = result.losses[0][1], result.losses[-1][1]
    assert last < 0.5 * first, result.losses
    assert result.mean_loss(0.8, 1) < 0.5 * result.mean_loss(0, 0.2)

    # A sentence-transformers directory with the pooling and normalisation embedtune added.
    modules = json.loads((result.output / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    record = json.loads((result.output / TRAIN_RECORD).read_text())
    assert record["steps"] == 30 and record["config"]["learning_rate"] == 1e-3
    assert record["losses"][0] == list(result.losses[0])
    assert sorted(Path(f).name for f in record["data_files"]) == ["corpus.jsonl", "queries.jsonl", "train.tsv"]

    model = load_model(result.output, device="cpu")
    vectors = model.encode(["web server", "text editor"], normalize_embeddings=True)
    assert vectors.shape == (2, 32)


def test_training_changes_the_weights_and_seeds_repeat(tmp_path, tiny_st, beir_dir):
    import torch

    a = train(_config(tmp_path / "a", tiny_st, beir_dir, max_steps=5))
    b = train(_config(tmp_path / "b", tiny_st, beir_dir, max_steps=5))
    base = load_model(tiny_st, device="cpu")[0].auto_model.state_dict()
    wa = load_model(a.output, device="cpu")[0].auto_model.state_dict()
    wb = load_model(b.output, device="cpu")[0].auto_model.state_dict()
    name = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(base[name], wa[name])
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_trains_from_a_pairs_file(tmp_path, tiny_st):
    path = tmp_path / "pairs.jsonl"
    rows = [{"query": f"query {i}", "positive": f"document number {i} about topic {i}"} for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = train(_config(tmp_path, tiny_st, path, max_steps=4))
    assert result.rows == 8 and (result.output / "model.safetensors").is_file()


def test_bad_data_leaves_nothing_behind(tmp_path, tiny_st):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "a", "positive": "b"}\n{"query": "c", "positive": ""}\n')
    with pytest.raises(DataError, match=r"pairs\.jsonl:2: field 'positive': empty"):
        train(_config(tmp_path, tiny_st, path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]


def test_existing_output_needs_overwrite(tmp_path, tiny_st, beir_dir):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("precious")
    with pytest.raises(EmbedtuneError, match="already exists"):
        train(_config(tmp_path, tiny_st, beir_dir, max_steps=1))
    assert (tmp_path / "model" / "keep.txt").read_text() == "precious"
    with pytest.raises(EmbedtuneError, match="holds files this command did not write"):  # never deleted by overwrite
        train(_config(tmp_path, tiny_st, beir_dir, max_steps=1, overwrite=True))
    (tmp_path / "model" / "keep.txt").unlink()
    train(_config(tmp_path, tiny_st, beir_dir, max_steps=1, overwrite=True))  # an empty folder: replaced
    train(_config(tmp_path, tiny_st, beir_dir, max_steps=1, overwrite=True))  # a model it wrote: replaced
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_epoch_based_training_covers_every_pair_once(tmp_path, tiny_st, beir_dir):
    # 5 train pairs, batch 4: one epoch is 2 steps (the last batch is not dropped).
    result = train(_config(tmp_path, tiny_st, beir_dir, max_steps=None, epochs=1.0))
    assert result.steps == 2


def _candidates(queries: int, documents: int) -> RetrievalSplit:
    corpus = {f"d{i}": f"document {i}" for i in range(documents)}
    return RetrievalSplit(
        corpus, {f"q{i}": f"query {i}" for i in range(queries)}, {f"q{i}": {f"d{i}": 1} for i in range(queries)}
    )


@pytest.mark.parametrize(
    ("steps", "chosen", "expected"),
    [
        (120, Choice(24, "rule", "every pass"), 24),  # 5 passes of a small set: each evaluated, a small dev set
        (1710, Choice(428, "rule", "4 evaluations"), 428),  # a long run: a quarter of it
        (20, Choice(5, "rule", "4 evaluations"), 20),  # too short to pay for 4 evaluations: the end only
        (20, Choice(7, "given", "checkpoint_steps"), 7),  # an explicit interval wins
    ],
)
def test_the_dev_set_and_its_evaluations_cost_at_most_their_share_of_the_run(steps, chosen, expected):
    config = TrainConfig(output=Path("unused"), batch_size=32)
    dev = RetrievalDevEvaluator(_candidates(200, 5000), "ndcg", 10, "fp32")
    interval = evaluation_interval(config, dev, chosen, steps, columns=2)
    assert interval.value == expected
    train_texts = 3 * steps * 32 * 2
    spent = dev.texts * (evaluations(steps, interval.value) + POOL_EVALUATIONS)
    if chosen.source != "given":  # the smallest useful dev set, evaluated as often as the share allows
        assert spent <= DEV_COST_SHARE / (1 - DEV_COST_SHARE) * train_texts + 1
        assert len(dev.candidates.queries) >= MIN_DEV_QUERIES and dev.size >= 3 * len(dev.candidates.queries)
