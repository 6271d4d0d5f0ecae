"""How long and how hard a run trains follows the data's size; given values win; early stopping guards extra passes."""

from __future__ import annotations

import json
import math

import pytest
from helpers import train_config, write_beir

from embedtune.training import TRAIN_RECORD, TrainConfig, train
from embedtune.training.checkpoints import CONFIG_FILE
from embedtune.training.schedule import BASE_LR, MAX_EPOCHS, MAX_WARMUP_STEPS, PARTS, choose_schedule, run_steps

SCHEDULE = ("epochs", "batch_size", "learning_rate", "warmup_ratio", "temperature", "early_stopping_patience")


def _chosen(rows: int, has_dev: bool = True, **given):
    return choose_schedule(TrainConfig(output="m", **given), rows, has_dev)


def test_a_small_set_gets_several_passes_and_a_large_one_less_than_one():
    small, small_why = _chosen(2_000)
    large, large_why = _chosen(30_000)
    assert small.epochs == 3 and large.epochs < 1  # sqrt(10) = 3.16 -> 3 whole passes
    # ...while the large set is still shown more examples in all.
    assert 30_000 * large.epochs > 2_000 * small.epochs
    assert small_why["epochs"].source == large_why["epochs"].source == "data"
    assert "2000 rows" in small_why["epochs"].why
    capped, capped_why = _chosen(300)  # sqrt(66.7) = 8.2 passes, capped
    assert capped.epochs == MAX_EPOCHS and "capped" in capped_why["epochs"].why
    assert all(getattr(small, name) is not None for name in SCHEDULE)


def test_a_set_too_small_for_16_batches_gets_smaller_batches_and_a_scaled_learning_rate():
    config, why = _chosen(300)
    assert config.batch_size == 16 and why["batch_size"].source == "data"
    assert config.learning_rate == pytest.approx(BASE_LR * math.sqrt(16 / 32), rel=1e-2)
    big, _ = _chosen(5_000)
    assert big.batch_size == 32 and big.learning_rate == BASE_LR
    assert _chosen(10)[0].batch_size == 8  # never below 8
    # cached-mnrl's chunk is a floor: the batch is never smaller than its mini-batch.
    assert _chosen(100, loss="cached-mnrl", mini_batch_size=16)[0].batch_size == 16


def test_given_values_win_and_the_rules_that_depend_on_them_follow():
    given = {
        "epochs": 3.0,
        "batch_size": 64,
        "learning_rate": 1e-5,
        "warmup_ratio": 0.2,
        "temperature": 0.1,
        "early_stopping_patience": 0,
        "checkpoint_steps": 7,
    }
    config, why = _chosen(300, **given)
    assert {name: getattr(config, name) for name in given} == given
    assert all(why[name].source == "given" for name in given)
    # A given batch size moves the chosen learning rate with it.
    assert _chosen(300, batch_size=64)[0].learning_rate == pytest.approx(BASE_LR * math.sqrt(2), rel=1e-2)
    # max_steps overrides the passes from the data.
    steps, why = _chosen(300, max_steps=40)
    assert steps.max_steps == 40 and why["max_steps"].source == "given"


def test_under_ddp_an_epoch_has_fewer_steps_and_a_small_set_smaller_batches():
    one, _ = _chosen(800)
    four, _ = choose_schedule(TrainConfig(output="m"), 800, True, processes=4)
    assert four.epochs == one.epochs and four.batch_size == 8  # 200 rows a process: 16 batches of 8 each
    assert four.checkpoint_steps == 800 // (8 * 4) and one.checkpoint_steps == 25
    # the learning rate follows the global batch (4 x 8 = 32), whose gradients DDP averages
    assert four.learning_rate == choose_schedule(TrainConfig(output="m", batch_size=32), 800, True)[0].learning_rate


def test_warm_up_is_a_tenth_of_the_steps_but_at_most_500():
    assert _chosen(2_000)[0].warmup_ratio == 0.1
    long_run, why = _chosen(1_000_000, epochs=1.0)
    steps = math.ceil(1_000_000 / 32)
    assert long_run.warmup_ratio * steps == pytest.approx(MAX_WARMUP_STEPS, rel=1e-2)
    assert "500 of the" in why["warmup_ratio"].why


def test_a_multi_pass_run_is_evaluated_each_epoch_and_stops_early_only_with_a_dev_set():
    config, why = _chosen(800)  # 25 steps an epoch, 4 passes (sqrt(25) = 5, capped)
    assert config.epochs == MAX_EPOCHS and config.checkpoint_steps == 25 and config.early_stopping_patience == 2
    many, _ = _chosen(30)  # capped passes of 4 steps
    assert many.epochs == MAX_EPOCHS and many.checkpoint_steps == 4
    assert _chosen(1_000)[0].epochs == 4  # whole passes from two up: sqrt(20) = 4.47 -> 4
    blind, why = _chosen(800, has_dev=False)  # checkpointed PARTS times: the interval the trainer saves at
    assert blind.checkpoint_steps == why["checkpoint_steps"].value == 25 and blind.early_stopping_patience == 0
    assert "no dev set" in why["early_stopping_patience"].why and "4 checkpoints" in why["checkpoint_steps"].why
    single, why = _chosen(30_000)  # under two passes: evaluated PARTS times, no early stopping
    assert single.checkpoint_steps == math.ceil(run_steps(single, 30_000) / PARTS) == 192
    assert single.early_stopping_patience == 0
    assert why["checkpoint_steps"].why == "under 2 passes: 4 evaluations in the run"


def _beir(root, queries=60):
    corpus = {f"d{i}": f"document {i} about topic {i % 7} and item {i}" for i in range(queries)}
    texts = {f"q{i}": f"query {i} topic {i % 7}" for i in range(queries)}
    return write_beir(root, corpus, texts, {"train": [(f"q{i}", f"d{i}") for i in range(queries)]})


def test_defaults_stop_early_when_the_held_out_dev_metric_stops_improving(tmp_path, tiny_st):
    # 54 rows after the 6 held-out queries: batch 8, 7 steps an epoch, 4 passes (the cap), each evaluated.
    # With a zero learning rate the dev metric cannot improve: patience 2 stops after two evaluations
    # past the first. The run may space its evaluations wider by their measured cost (whole epochs,
    # so a loaded machine changes when, not whether): the interval it used is the one recorded.
    config = train_config(tmp_path / "m", tiny_st, _beir(tmp_path / "beir"), learning_rate=0.0, warmup_ratio=None)
    result = train(config)
    chosen = {name: c.value for name, c in result.choices.items()}
    every = chosen["checkpoint_steps"]
    assert chosen["epochs"] == MAX_EPOCHS and chosen["batch_size"] == 8 and every % 7 == 0
    assert chosen["early_stopping_patience"] == 2 and result.steps == min(3 * every, 28)
    # The resolved schedule is what the model folder records: the config saved with it repeats the run.
    record = json.loads((result.output / TRAIN_RECORD).read_text())
    assert record["choices"]["epochs"]["source"] == "data" and record["config"]["batch_size"] == 8
    saved = TrainConfig.from_yaml(result.output / CONFIG_FILE)
    assert saved.epochs == MAX_EPOCHS and saved.learning_rate == 0.0 and saved.temperature == 0.05
    card = (result.output / "README.md").read_text()
    assert f"| epochs | {MAX_EPOCHS:g} | data |" in card and "| early_stopping_patience | 2 | rule |" in card
