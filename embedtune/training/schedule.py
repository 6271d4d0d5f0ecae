"""How long and how hard a run trains, chosen from the data's size: the rules, and why.

A fixed schedule fits one dataset. One epoch of a 55,000-pair set is a thousand steps; one epoch
of 800 pairs is 25 steps, too few for the model to learn what the data can teach, while ten epochs
of the large set spend hours for nothing. So every schedule setting left at None is chosen here,
from the number of training rows, and said as a :class:`~embedtune.training.choices.Choice`:

* **Epochs.** The number of examples seen grows as the square root of the data size:
  ``examples = sqrt(rows x REFERENCE_ROWS)``, i.e. ``epochs = sqrt(REFERENCE_ROWS / rows)``, at most
  ``MAX_EPOCHS``, rounded to whole passes from two passes up (so that the last step ends an epoch
  and is evaluated). At ``REFERENCE_ROWS`` (20,000) that is one pass; 2,000 rows get 3 passes,
  1,000 rows 4 (the cap), 55,000 rows 0.6 of a pass (33,000 examples). The reasoning: a fine-tune
  starts from an embedder that already works, so what a large set adds past a few tens of
  thousands of examples comes slowly, while a small set has to be seen several times before its
  signal outweighs the noise of one pass. The cap is there for time: on every regime of
  benchmarks/regimes.py the test score after a fourth pass was within noise of the best any later
  pass reached, while each pass past it costs the CPU user as much as the first. Several passes
  can over-fit, which the next two rules design out rather than hope away.
* **Dev evaluation and early stopping.** A run of two passes or more is evaluated at the end of
  every epoch, the best checkpoint is kept, and training stops
  after ``PATIENCE`` evaluations without improvement; so extra passes cannot make the kept model
  worse, they can only cost time. A shorter run, or one whose length the user gave (``epochs`` or
  ``max_steps``: they asked for that many steps), is evaluated ``PARTS`` times (a run without a dev
  set is checkpointed as often) and not stopped early; it still keeps the best checkpoint. The plan
  then spaces the evaluations further apart where they would cost too much
  (:func:`embedtune.training.plan.evaluation_interval`).
* **Batch size.** ``BATCH_SIZE`` (32) rows: with the in-batch losses each query competes with the
  batch's other 31 documents, as in sentence-transformers' own recipes. A set too small to fill
  ``MIN_BATCHES`` batches per epoch gets the largest power of two that does (at least ``MIN_BATCH``),
  so that an epoch is more than a handful of steps. The batch is never below the GradCache chunk
  of ``cached-mnrl``.
* **Learning rate.** ``BASE_LR`` at batch 32, scaled by the square root of ``batch / 32`` (the
  square-root rule for Adam: the gradient noise of a batch falls with its square root), where the
  batch is the global one (per-process batch x processes under DDP, whose gradients are averaged).
  An explicit batch size moves the chosen learning rate with it.
* **Warm-up.** ``WARMUP_RATIO`` of the steps, at most ``MAX_WARMUP_STEPS`` steps: the warm-up
  protects the pretrained weights from the first, noisy updates, which takes a few hundred
  steps, not a tenth of a long run.
* **Temperature.** 0.05 (sentence-transformers' scale 20), the scale the common base models were
  trained with: another scale reshapes the similarities the base model learnt, which costs
  quality on data the run does not train on.

A value the user gives always wins, and the rules that depend on it (the learning rate on the batch
size, the warm-up on the steps) follow the value given.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from embedtune.training.choices import Choice
from embedtune.training.config import TrainConfig
from embedtune.training.losses import ALIASES, LOSSES

REFERENCE_ROWS = 20_000  # rows that get exactly one pass
MAX_EPOCHS = 4.0  # passes past this bought no test quality on the regimes, only time
BATCH_SIZE = 32
MIN_BATCHES = 16  # batches per epoch below which a smaller batch is chosen
MIN_BATCH = 8
BASE_LR = 5e-5  # at BATCH_SIZE
WARMUP_RATIO = 0.1
MAX_WARMUP_STEPS = 500
TEMPERATURE = 0.05
PATIENCE = 2  # evaluations without improvement before stopping
MIN_EVALS_FOR_PATIENCE = 4
PARTS = 4  # evaluations (checkpoints) of a run that is not evaluated at the end of every pass


def choose_schedule(
    config: TrainConfig, rows: int, has_dev: bool, processes: int = 1
) -> tuple[TrainConfig, dict[str, Choice]]:
    """``config`` with every schedule setting filled in for ``rows`` training rows, and each choice with its reason.

    ``has_dev`` says whether the run has a dev set (early stopping and the per-epoch evaluation need
    one). ``processes`` (DDP) each take ``batch_size`` rows a step, only in full global batches, so
    an epoch has fewer steps and a small set a smaller per-process batch. The returned config is
    checked again (:class:`TrainConfig` validates on construction).
    """
    rows = max(1, rows)
    choices: dict[str, Choice] = {"batch_size": _batch_size(config, max(1, rows // processes))}
    batch = choices["batch_size"].value
    choices["learning_rate"] = _learning_rate(config, batch * processes)  # DDP averages the N processes' gradients
    per_epoch = steps_per_epoch(rows, batch, config.gradient_accumulation_steps, processes)
    choices |= _length(config, rows, per_epoch)
    steps = _steps(config.max_steps, per_epoch, choices["epochs"].value)
    choices["warmup_ratio"] = _warmup(config, steps)
    choices["temperature"] = (
        Choice(config.temperature, "given", "temperature")
        if config.temperature is not None
        else Choice(TEMPERATURE, "rule", "sentence-transformers' scale 20, the scale common base models learnt with")
    )
    choices |= _evaluation(config, steps, per_epoch, has_dev)
    values: dict[str, Any] = {name: choice.value for name, choice in choices.items() if name != "max_steps"}
    return dataclasses.replace(config, **values), choices


def steps_per_epoch(rows: int, batch: int, accumulation: int, processes: int = 1) -> int:
    """Optimiser steps in one pass over ``rows``: under DDP only full global batches of ``processes x batch``
    (what :func:`embedtune.training.distributed.batch_sampler` serves), at least one."""
    batches = math.ceil(rows / batch) if processes == 1 else max(1, rows // (batch * processes))
    return math.ceil(batches / accumulation)


def run_steps(config: TrainConfig, rows: int, processes: int = 1) -> int:
    """The optimiser steps of a run of ``config`` (its schedule filled in) over ``rows`` a pass."""
    per_epoch = steps_per_epoch(rows, config.batch_size, config.gradient_accumulation_steps, processes)
    return _steps(config.max_steps, per_epoch, config.epochs)


def _steps(max_steps: int | None, per_epoch: int, epochs: float) -> int:
    return max_steps if max_steps is not None else max(1, math.ceil(per_epoch * epochs))


def _batch_size(config: TrainConfig, rows: int) -> Choice:
    if config.batch_size is not None:
        return Choice(config.batch_size, "given", "batch_size")
    spec = LOSSES.get(ALIASES.get(config.loss, config.loss))
    floor = config.mini_batch_size if spec is not None and spec.name == "cached-mnrl" else MIN_BATCH
    if rows >= BATCH_SIZE * MIN_BATCHES:
        return Choice(max(BATCH_SIZE, floor), "rule", f"{BATCH_SIZE} rows: each query competes with 31 documents")
    fitted = max(floor, 2 ** int(math.log2(max(1, rows // MIN_BATCHES))))
    return Choice(
        fitted,
        "data",
        f"{rows} rows fill fewer than {MIN_BATCHES} batches of {BATCH_SIZE}: the largest power of two that "
        f"fills {MIN_BATCHES}, at least {floor}",
    )


def _learning_rate(config: TrainConfig, batch: int) -> Choice:
    if config.learning_rate is not None:
        return Choice(config.learning_rate, "given", "learning_rate")
    value = float(f"{BASE_LR * math.sqrt(batch / BATCH_SIZE):.3g}")
    return Choice(value, "rule", f"{BASE_LR:g} at batch {BATCH_SIZE}, times sqrt(batch {batch} / {BATCH_SIZE})")


def _length(config: TrainConfig, rows: int, per_epoch: int) -> dict[str, Choice]:
    """The number of passes (or the steps given), from the rows: examples seen = sqrt(rows x REFERENCE_ROWS)."""
    if config.max_steps is not None:
        epochs = config.epochs if config.epochs is not None else round(config.max_steps / per_epoch, 3)
        return {
            "max_steps": Choice(config.max_steps, "given", "max_steps"),
            "epochs": Choice(epochs, "given", f"max_steps: {config.max_steps / per_epoch:.3g} passes"),
        }
    if config.epochs is not None:
        return {"epochs": Choice(config.epochs, "given", "epochs")}
    raw = math.sqrt(REFERENCE_ROWS / rows)
    epochs = min(MAX_EPOCHS, float(round(raw)) if raw >= 2 else float(f"{raw:.3g}"))
    capped = f", capped at {MAX_EPOCHS:g}" if raw > MAX_EPOCHS else ""
    why = f"{rows} rows: examples seen = sqrt(rows x {REFERENCE_ROWS}), so sqrt({REFERENCE_ROWS}/{rows}) passes"
    return {"epochs": Choice(epochs, "data", f"{why}{capped} ({math.ceil(per_epoch * epochs)} steps)")}


def _warmup(config: TrainConfig, steps: int) -> Choice:
    if config.warmup_ratio is not None:
        return Choice(config.warmup_ratio, "given", "warmup_ratio")
    if steps * WARMUP_RATIO <= MAX_WARMUP_STEPS:
        return Choice(WARMUP_RATIO, "rule", f"{WARMUP_RATIO:g} of the {steps} steps")
    ratio = float(f"{MAX_WARMUP_STEPS / steps:.3g}")
    return Choice(ratio, "rule", f"{MAX_WARMUP_STEPS} of the {steps} steps ({WARMUP_RATIO:g} of them would be more)")


def _evaluation(config: TrainConfig, steps: int, per_epoch: int, has_dev: bool) -> dict[str, Choice]:
    """How often the dev set is evaluated (a checkpoint saved), and the patience of early stopping.

    The patience is chosen from an interval given or one at the end of every pass, never from the
    ``PARTS`` interval: early stopping guards the extra passes of a chosen length, which a run on
    that rule does not have.
    """
    passes = steps / per_epoch
    chosen_length = config.epochs is None and config.max_steps is None
    every: int | None = config.checkpoint_steps
    if every is not None:
        interval = Choice(every, "given", "checkpoint_steps")
    elif has_dev and passes >= 2 and chosen_length:
        every = per_epoch
        interval = Choice(every, "rule", f"{passes:g} passes: evaluated at the end of each, so that the best is kept")
    else:
        why = "no dev set" if not has_dev else "the run's length was given" if not chosen_length else "under 2 passes"
        what = "evaluations" if has_dev else "checkpoints"
        interval = Choice(math.ceil(steps / PARTS), "rule", f"{why}: {PARTS} {what} in the run")
    if config.early_stopping_patience is not None:
        patience = Choice(config.early_stopping_patience, "given", "early_stopping_patience")
    elif not has_dev:
        patience = Choice(0, "rule", "no dev set: nothing to stop on")
    elif not chosen_length:
        patience = Choice(0, "rule", "the run's length was given: it runs to the end and keeps its best checkpoint")
    elif every is not None and steps // every >= MIN_EVALS_FOR_PATIENCE:
        patience = Choice(PATIENCE, "rule", f"stop after {PATIENCE} evaluations without a better dev metric")
    else:
        patience = Choice(0, "rule", f"fewer than {MIN_EVALS_FOR_PATIENCE} evaluations; the best of them is kept")
    return {"checkpoint_steps": interval, "early_stopping_patience": patience}
