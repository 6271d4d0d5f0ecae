"""Defaults that follow the data and say so: token lengths, a held-out dev slice, a warning when worse than the base."""

from __future__ import annotations

import json
import warnings

import pytest
from helpers import train_config, write_beir

from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.models import load_model
from embedtune.training import TRAIN_RECORD, TrainConfig, train
from embedtune.training.choices import choose_lengths
from embedtune.training.holdout import choose_dev
from embedtune.training_data import load_training_data

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def _beir(root, queries=60, doc_words=6, dev=False):
    """A BEIR folder of ``queries`` training queries (one document each); ``q-twin`` repeats q-0's text."""
    corpus = {f"d{i}": " ".join(WORDS[(i + j) % 10] for j in range(doc_words)) + f" {i}" for i in range(queries)}
    texts = {f"q{i}": f"query {WORDS[i % 10]} {i}" for i in range(queries)}
    texts["q-twin"] = texts["q0"]
    qrels = {"train": [(f"q{i}", f"d{i}") for i in range(queries)] + [("q-twin", "d1")]}
    if dev:
        qrels["dev"] = [("q0", "d0")]
    return write_beir(root, corpus, texts, qrels)


def _config(tmp_path, model, data, name="m", **overrides) -> TrainConfig:
    settings = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "checkpoint_steps": 2}
    return train_config(tmp_path / name, model, data, **{**settings, **overrides})


def test_without_a_dev_split_whole_queries_are_held_out_and_never_trained_on(tmp_path):
    root = _beir(tmp_path / "beir")
    config = TrainConfig(output=tmp_path / "m", data=root, seed=1)
    data = load_training_data(root)
    plan = choose_dev(config.dev_settings(), data, "fp32")
    assert len(plan.held_out) == 6  # 10% of 60 distinct query texts (q-twin shares q0's)
    trained = set(plan.data.dataset["anchor"])
    assert not trained & set(plan.held_out)
    assert len(plan.data.dataset) + sum(1 for t in data.dataset["anchor"] if t in plan.held_out) == len(data.dataset)
    # The dev queries are every query id of a held-out text (twins included), ranked over the corpus.
    held_ids = sorted(q for q, t in _queries(root).items() if t in plan.held_out)
    candidates = plan.evaluator.candidates  # the dev corpus is picked from them by the base model, at the baseline
    assert sorted(candidates.queries) == held_ids and len(candidates.corpus) == 60
    assert plan.choice.source == "data" and "6 of 60 training queries" in plan.choice.why
    # Seeded: the same seed holds out the same queries; capped at dev_queries.
    assert choose_dev(config.dev_settings(), data, "fp32").held_out == plan.held_out
    capped = TrainConfig(output=tmp_path / "m", data=root, dev_queries=5, dev_holdout=0.5)
    assert len(choose_dev(capped.dev_settings(), data, "fp32").held_out) == 5
    # Two query ids with one text go together: q-twin is held out with q0.
    half = TrainConfig(output=tmp_path / "m", data=root, dev_holdout=0.5, seed=1).dev_settings()
    twins = choose_dev(half, data, "fp32")
    assert "query alpha 0" in twins.held_out and {"q0", "q-twin"} <= set(twins.evaluator.candidates.queries)


def _queries(root) -> dict[str, str]:
    return {row["_id"]: row["text"] for row in map(json.loads, (root / "queries.jsonl").read_text().splitlines())}


def test_too_little_data_to_hold_out_trains_without_dev_and_says_so(tmp_path):
    root = _beir(tmp_path / "beir", queries=20)
    config = TrainConfig(output=tmp_path / "m", data=root)
    with pytest.warns(EmbedtuneWarning, match=r"no 'dev' split in .*fewer than 5: training without dev evaluation"):
        plan = choose_dev(config.dev_settings(), load_training_data(root), "fp32")
    assert plan.evaluator is None and plan.choice.value == "none" and len(plan.data.dataset) == 21


def test_a_pairs_file_holds_out_queries_with_the_other_documents_as_candidates(tmp_path, tiny_model):
    path = tmp_path / "pairs.jsonl"
    rows = [{"query": f"query {i}", "positive": f"document {i} {WORDS[i % 10]}"} for i in range(50)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = TrainConfig(output=tmp_path / "m", data=path, dev_corpus=20)
    plan = choose_dev(config.dev_settings(), load_training_data(path), "fp32")
    assert len(plan.evaluator.candidates.corpus) == 50  # the 5 positives and the 45 trained rows' documents
    plan.evaluator(tiny_model)  # the base model picks the dev corpus
    split = plan.evaluator.split
    assert len(split.queries) == 5 and len(plan.data.dataset) == 45
    assert len(split.corpus) == 20 and all(d in split.corpus for docs in split.qrels.values() for d in docs)
    with pytest.raises(Exception, match=r"dev_split: 'validation' names a qrels split, but .*pairs\.jsonl is a file"):
        choose_dev(TrainConfig(output="m", data=path, dev_split="validation").dev_settings(), plan.data, "fp32")


def test_training_length_follows_the_data_and_the_saved_model_keeps_the_base_limit(tmp_path, tiny_st, tiny_model):
    short = _beir(tmp_path / "short", doc_words=6)
    lengths = choose_lengths(TrainConfig(output="m", data=short), tiny_model, load_training_data(short), 128)
    assert lengths["max_seq_length"].value == 32 and lengths["max_seq_length"].source == "data"  # at least 32
    long = _beir(tmp_path / "long", doc_words=60)
    data = load_training_data(long)
    lengths = choose_lengths(TrainConfig(output="m", data=long), tiny_model, data, 128)
    counted = max(len(tiny_model.tokenizer(t)["input_ids"]) for t in data.dataset["positive"])
    assert lengths["max_seq_length"].value == 8 * -(-counted // 8) < 128
    assert "documents " in lengths["max_seq_length"].why and lengths["inference_max_seq_length"].value == 128
    assert choose_lengths(TrainConfig(output="m", data=long), tiny_model, data, 48)["max_seq_length"].value == 48

    lines: list[str] = []
    result = train(_config(tmp_path, tiny_st, long, dev_split="none"), log=lines.append)
    assert result.choices["max_seq_length"].value == lengths["max_seq_length"].value
    assert load_model(result.output, device="cpu").max_seq_length == 128  # the base model's limit, not the training one
    assert any(line.startswith("max_seq_length: ") and "95th percentile" in line for line in lines)
    assert any(line.startswith("dev: none (given: dev_split='none'") for line in lines)
    record = json.loads((result.output / TRAIN_RECORD).read_text())
    assert record["config"]["max_seq_length"] is None  # resolved again on resume, to the recorded value
    assert record["choices"]["inference_max_seq_length"]["value"] == 128
    assert record["choices"]["inference_max_seq_length"]["source"] == "base model"
    asked = train(_config(tmp_path, tiny_st, long, "m2", dev_split="none", inference_max_seq_length=64))
    assert load_model(asked.output, device="cpu").max_seq_length == 64


def test_a_run_with_a_held_out_dev_slice_records_and_shows_its_choices(tmp_path, tiny_st):
    root = _beir(tmp_path / "beir")
    result = train(_config(tmp_path, tiny_st, root))
    record = json.loads((result.output / TRAIN_RECORD).read_text())
    held = record["dev_held_out_queries"]
    assert len(held) == 6 and result.rows == 61 - sum(1 for t in _queries(root).values() if t in held)
    assert record["choices"]["dev"]["value"] == "6 held-out training queries"
    assert record["choices"]["loss"] == {"value": "mnrl", "source": "data", "why": "auto: pair rows"}
    assert record["dev_after"] and record["dev_before"]
    card = (result.output / "README.md").read_text()
    assert "## Choices" in card and "| dev | `6 held-out training queries` | data |" in card
    assert "| max_seq_length | 32 | data |" in card and "| inference_max_seq_length | 128 |" in card
    assert "train (held-out queries)" in card  # the model-index names the split the dev metrics come from


def test_a_model_worse_than_its_base_on_dev_is_written_with_a_warning(tmp_path, tiny_st, beir_dir, monkeypatch):
    import embedtune.training.run as run

    real = run._baseline
    monkeypatch.setattr(run, "_baseline", lambda *a: {k: 1.0 for k in real(*a)})  # a base model that is perfect
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(_config(tmp_path, tiny_st, beir_dir, dev=True, dev_corpus=8))  # the whole corpus
    assert result.worse_than_base
    messages = [str(w.message) for w in caught if issubclass(w.category, EmbedtuneWarning)]
    assert any(f"ndcg@10 {result.dev_after[result.metric]:.4f} after training, 1.0000 before" in m for m in messages)
    assert json.loads((result.output / TRAIN_RECORD).read_text())["worse_than_base"] is True
    assert "**Below the base model on dev ndcg@10**" in (result.output / "README.md").read_text()


def test_a_resume_that_resolves_to_other_choices_is_refused(tmp_path, tiny_st):
    root = _beir(tmp_path / "beir", doc_words=6)
    train(_config(tmp_path, tiny_st, root, dev_split="none", keep_checkpoints=True))
    _beir(root, doc_words=60)  # the documents grew: the training length would differ
    with pytest.raises(EmbedtuneError, match=r"different choices .*max_seq_length: 32 -> \d+"):
        train(_config(tmp_path, tiny_st, root, dev_split="none", resume=True))


def test_the_command_line_says_what_was_chosen(tmp_path, tiny_st, beir_dir):
    from helpers import run

    out = run(
        "train", "-o", tmp_path / "m", "--model", tiny_st, "--data", beir_dir, "--max-steps", 1, "--dev-split", "none"
    )
    assert "chose max_seq_length: 32 (data: 95th percentile of token lengths: queries" in out.stderr
    assert "chose inference_max_seq_length: 128 (base model:" in out.stderr and "chose dev: none (given:" in out.stderr
    assert (
        "--inference-max-seq-length" in run("train", "--help").output
        and "--dev-holdout" in run("train", "--help").output
    )


def test_scored_pairs_hold_out_whole_first_sentences(tmp_path):
    path = tmp_path / "sts.jsonl"
    rows = [{"sentence1": f"s {i // 2}", "sentence2": f"t {i}", "score": i % 5} for i in range(100)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = TrainConfig(output=tmp_path / "m", data=path, score_range=(0, 5))
    plan = choose_dev(config.dev_settings(), load_training_data(path, score_range=(0, 5)), "fp32")
    assert plan.evaluator.primary_metric == "dev_spearman_cosine" and len(plan.held_out) == 5
    assert len(plan.data.dataset) == 90 and not set(plan.data.dataset["sentence1"]) & set(plan.held_out)
