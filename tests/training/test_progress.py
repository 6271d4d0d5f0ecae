"""The run's clock: evaluations spaced by their measured cost, a whole-run ETA, seconds per stage."""

from __future__ import annotations

import time

from transformers import TrainerControl, TrainerState, TrainingArguments

from embedtune.data import RetrievalSplit
from embedtune.training.dev import RetrievalDevEvaluator
from embedtune.training.progress import StageClock, evaluations, fmt_duration, run_clock


def _dev() -> RetrievalDevEvaluator:
    return RetrievalDevEvaluator(RetrievalSplit({"d": "document"}, {"q": "query"}, {"q": {"d": 1}}), "ndcg", 10, "fp32")


def _evaluated(clock, state: TrainerState, dev: RetrievalDevEvaluator, seconds: float) -> None:
    dev.seconds += seconds
    args = TrainingArguments(output_dir="unused", metric_for_best_model="eval_dev_cosine_ndcg@10")
    clock.on_evaluate(args, state, TrainerControl(), metrics={"eval_dev_cosine_ndcg@10": 0.5})


def test_evaluations_costing_over_their_share_are_spaced_further_apart():
    dev, lines = _dev(), []
    dev.seconds = 2.0  # the baseline
    clock = run_clock(dev, lines.append, time.perf_counter())
    state = TrainerState(max_steps=100, global_step=10, eval_steps=10, save_steps=10)
    clock.train_seconds = 10.0  # 1 s a step: 15% of the run allows about 17.6 s of evaluating, 2 s spent
    _evaluated(clock, state, dev, 5.0)  # 5 s an evaluation: 9 more would be 45 s
    assert state.eval_steps == state.save_steps == 50  # at 50 and 100: the share kept, at ends of intervals
    assert clock.widened[0][:2] == (10, 50) and any("dev evaluation every 50 steps" in line for line in lines)
    assert clock.curve == [{"step": 10, "seconds": clock.curve[0]["seconds"], "metric": 0.5}]
    assert any("whole run about" in line for line in lines)


def test_cheap_evaluations_and_a_given_interval_are_kept():
    dev = _dev()
    clock = run_clock(dev, None, time.perf_counter())
    state = TrainerState(max_steps=100, global_step=10, eval_steps=10, save_steps=10)
    clock.train_seconds = 10.0
    _evaluated(clock, state, dev, 0.5)  # 9 more: 4.5 s, within the share
    assert state.eval_steps == 10 and not clock.widened
    given = run_clock(dev, None, time.perf_counter(), space=False)
    given.train_seconds = 10.0
    _evaluated(given, state, dev, 60.0)
    assert state.eval_steps == 10  # the user's interval, however costly


def test_stage_clock_and_counting():
    clock = StageClock()
    clock.lap("setup")
    clock.lap("training")
    assert set(clock.record()) == {"setup", "training", "total"} and clock.total >= 0
    assert evaluations(120, 24) == 5 and evaluations(100, 40) == 3 and evaluations(10, 20) == 1
    assert (fmt_duration(5), fmt_duration(75), fmt_duration(3700)) == ("5s", "1m15s", "1h01m")
