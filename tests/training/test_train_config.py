"""TrainConfig checks itself: the Python API and a YAML file refuse the same values with the same message."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from embedtune.errors import EmbedtuneError
from embedtune.settings import SettingError
from embedtune.training import DevSettings, TrainConfig, train

BAD = [
    ({"batch_size": 0}, "batch_size: must be at least 1, got 0"),
    ({"warmup_ratio": 3.0}, "warmup_ratio: must be less than 1, got 3"),
    ({"lr_scheduler": "nonsense"}, "lr_scheduler: 'nonsense' is not one of linear, cosine, constant"),
    ({"learning_rate": "1e-5"}, "learning_rate: expected a number, got '1e-5'"),
    ({"batch_size": "two"}, "batch_size: expected a whole number, got 'two'"),
    ({"loss": 42}, "loss: expected text, got 42"),
    ({"loss": "focal"}, "loss: 'focal' is not one of auto, mnrl, cached-mnrl"),
    ({"temperature": 0}, "temperature: must be greater than 0, got 0"),
    ({"max_steps": -5}, "max_steps: must be at least 1, got -5"),
    ({"epochs": 0}, "epochs: must be greater than 0, got 0"),
    ({"max_seq_length": 4}, "max_seq_length: must be at least 8, got 4"),
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps: must be at least 1, got 0"),
    ({"matryoshka_dims": [32, 0]}, "matryoshka_dims: must be at least 1, got 0"),
    ({"score_range": [5, 0]}, "score_range: the low end must be below the high end, got [5.0, 0.0]"),
    ({"pooling": "median"}, "pooling: 'median' is not one of mean, cls, max"),
    ({"metric": "ndcg"}, "metric: unknown dev metric 'ndcg'; use one of ndcg@k, mrr@k"),
    ({"precision": "int8"}, "precision: 'int8' is for encoding only; training runs in auto, fp32, bf16"),
    ({"precision": "fp8"}, "precision: 'fp8' is not one of auto, fp32, bf16"),
    ({"batch_size": 1}, "batch_size: loss 'auto' compares the rows of a batch with each other"),
    ({"batch_size": 1, "loss": "cosent"}, "batch_size: loss 'cosent' compares the rows of a batch"),
    ({"batch_size": 8, "loss": "cached-mnrl"}, "mini_batch_size: 32 is larger than batch_size 8"),
    ({"early_stopping_patience": 2, "dev": False}, "early_stopping_patience: needs the dev evaluation (dev=True)"),
]


def test_the_issue_example_is_refused_at_construction_in_one_line():
    with pytest.raises(SettingError) as caught:
        TrainConfig(output="x", batch_size=0, warmup_ratio=3.0, lr_scheduler="nonsense")
    assert str(caught.value) == "batch_size: must be at least 1, got 0" and caught.value.field == "batch_size"


@pytest.mark.parametrize(("values", "message"), BAD, ids=[next(iter(v)) + f"-{i}" for i, (v, _) in enumerate(BAD)])
def test_python_and_yaml_refuse_the_same_values_with_the_same_message(tmp_path, values, message):
    with pytest.raises(SettingError) as from_python:
        TrainConfig(output="x", **values)
    assert str(from_python.value).startswith(message) and "\n" not in str(from_python.value)

    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({"output": "x", **values}))  # JSON is YAML, and keeps "1e-5" a quoted string
    with pytest.raises(SettingError) as from_yaml:
        TrainConfig.from_yaml(path)
    assert str(from_yaml.value) == f"{from_python.value} (in {path})"
    assert from_yaml.value.field == from_python.value.field


def test_losses_that_learn_from_single_rows_accept_batches_of_one():
    for loss in ("cosine", "triplet", "margin-mse"):
        assert TrainConfig(output="x", batch_size=1, loss=loss).batch_size == 1
    assert TrainConfig(output="x", batch_size=8, loss="cached-mnrl", mini_batch_size=8).mini_batch_size == 8
    assert TrainConfig(output="x", batch_size=8, loss="mnrl").mini_batch_size == 32  # only cached-mnrl uses it


def test_values_are_normalised_and_survive_a_yaml_round_trip(tmp_path):
    config = TrainConfig(
        output="out", data=str(tmp_path), epochs=2, score_range=[0, 5], matryoshka_dims=[32, 16], metric="map@20"
    )
    assert config.output == Path("out") and config.data == tmp_path and config.epochs == 2.0
    assert config.score_range == (0.0, 5.0) and config.matryoshka_dims == (32, 16)
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())
    again = TrainConfig.from_yaml(path)
    assert again == config and again.identity() == config.identity()
    assert json.loads(json.dumps(config.to_dict()))["score_range"] == [0.0, 5.0]
    # dataclasses.replace (how a mined data set is swapped in) checks the new value too
    with pytest.raises(SettingError, match="batch_size"):
        dataclasses.replace(config, batch_size=0)


def test_yaml_files_are_read_with_located_errors(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learning_rate: 0.001\n")
    with pytest.raises(EmbedtuneError, match=r"run\.yaml: no 'output'"):
        TrainConfig.from_yaml(path)
    assert TrainConfig.from_yaml(path, output="m").learning_rate == 0.001
    path.write_text("- a list\n")
    with pytest.raises(EmbedtuneError, match=r"run\.yaml: expected a mapping"):
        TrainConfig.from_yaml(path)
    path.write_text("output: x\nbatch_size: [\n")
    with pytest.raises(EmbedtuneError, match=r"run\.yaml: cannot read config") as caught:
        TrainConfig.from_yaml(path)
    assert caught.value.__cause__ is not None  # the YAML parser's error is kept for library users
    path.write_text("output: x\nbatch_size: 0\n")
    assert TrainConfig.from_yaml(path, batch_size=4).batch_size == 4  # overrides win over the file


def test_every_setting_carries_its_help():
    from embedtune.settings import meta

    for f in dataclasses.fields(TrainConfig):
        assert meta(f) is not None and meta(f).help, f.name


def test_dev_settings_are_the_fields_the_dev_evaluation_reads(tmp_path):
    config = TrainConfig(
        output="x",
        data=tmp_path,
        dev_data=tmp_path / "dev.jsonl",
        dev_split="validation",
        dev_queries=7,
        dev_corpus=70,
        metric="recall@5",
        seed=3,
        score_range=(0, 5),
    )
    dev = config.dev_settings()
    assert dev == DevSettings(tmp_path, tmp_path / "dev.jsonl", "validation", 7, 70, "recall@5", 3, (0.0, 5.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        dev.metric = "mrr@10"  # type: ignore[misc]
    assert {f.name for f in dataclasses.fields(DevSettings)} <= {f.name for f in dataclasses.fields(TrainConfig)}


def test_early_stopping_without_a_dev_set_is_refused_before_training(tmp_path, tiny_st):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"query": f"q {i}", "positive": f"doc {i}"}) + "\n" for i in range(4)))
    config = TrainConfig(output=tmp_path / "m", model=str(tiny_st), data=path, early_stopping_patience=1)
    with pytest.raises(SettingError, match="early_stopping_patience: needs a dev set: give dev_data"):
        train(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]


def test_the_old_name_of_the_hit_rate_is_read_as_eval_names_it_with_a_warning(tmp_path):
    from embedtune.errors import EmbedtuneWarning

    with pytest.warns(EmbedtuneWarning, match=r"metric: 'accuracy@5' is deprecated, use 'hit_rate@5'"):
        config = TrainConfig(output="x", metric="accuracy@5")
    assert config.metric == "hit_rate@5" and config.dev_settings().metric == "hit_rate@5"
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({"output": "x", "metric": "accuracy@10"}))
    with pytest.warns(EmbedtuneWarning, match="deprecated"):
        assert TrainConfig.from_yaml(path).metric == "hit_rate@10"
    assert TrainConfig(output="x", metric="hit_rate@3").metric == "hit_rate@3"
