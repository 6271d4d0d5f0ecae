"""Every decision of a training run, made once before it trains, typed, each with its reason: :class:`RunPlan`.

A run decides a dozen things for its user: the dev set, the loss of each dataset, the weights, the
schedule, the token lengths, the checkpoint interval, the precision. A decision made in two places
can come out two ways (a checkpoint interval recorded as "the trainer's" while the trainer took a
quarter of the steps; a loss resolved once to plan and again to build), and one read by string key
from a dict breaks silently when the key moves. :func:`plan_run` makes each decision once, in this
order, and :class:`RunPlan` holds them, typed: the trainer's arguments, the log, the run record, the
model card and ``train --json`` all read the plan, so the value a run uses is the value it says.

The rules themselves live with their concept (:mod:`~embedtune.training.holdout`,
:mod:`~embedtune.training.augment`, :mod:`~embedtune.training.weighting`,
:mod:`~embedtune.training.mixing`, :mod:`~embedtune.training.schedule`,
:mod:`~embedtune.training.choices`, :mod:`~embedtune.training.autocast`); this module orders them
(each needs the ones before: the schedule counts the rows left after the dev slice and augmentation)
and fits the checkpoint interval to the dev set's cost (:func:`evaluation_interval`).

One decision is made while the run goes: :mod:`~embedtune.training.progress` may space the dev
evaluations further apart when they cost more than planned; :meth:`RunPlan.measured` gives the
plan with the interval used, which is what the record says.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from embedtune.errors import EmbedtuneWarning
from embedtune.settings import SettingError
from embedtune.training.augment import augment
from embedtune.training.autocast import choose_precision, probe_rows
from embedtune.training.choices import Choice, choose_lengths
from embedtune.training.config import NO_DEV, TrainConfig
from embedtune.training.dev import DevEvaluator
from embedtune.training.distributed import check_rows, world_size
from embedtune.training.holdout import DevPlan, choose_dev
from embedtune.training.losses import LOSSES, LossSpec
from embedtune.training.mixing import Mixture, Part, first_part, load_more, resolve_losses, weigh
from embedtune.training.mixing import choices as dataset_choices
from embedtune.training.progress import evaluations
from embedtune.training.sampling import epoch_rows
from embedtune.training.schedule import choose_schedule, run_steps
from embedtune.training.weighting import weigh_by_difficulty
from embedtune.training_data import load_training_data

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ENCODING = "auto"  # dev evaluation and difficulty weights encode in the machine's fastest encoding precision


@dataclass(frozen=True)
class RunPlan:
    """What a run decided before training, and why.

    ``config`` has the schedule filled in (epochs, batch size, learning rate, warm-up, temperature,
    checkpoint interval, early stopping): it is what ``train_config.yaml`` holds and a resume
    compares. ``parts`` are the training datasets as trained on (without the held-out dev queries,
    augmented, weighted); ``loss_names`` the resolved loss of each, by name (a loss spec holds its
    builder, which does not pickle, and the plan is handed to the other processes of a DDP run);
    ``dev`` the dev evaluator (None: no dev set); ``held_out`` the held-out dev query texts (sorted;
    empty unless the dev set is a slice of the training queries); ``steps`` the optimiser steps
    planned. ``choices`` holds every resolved setting as a :class:`Choice` in the order the log says
    them; the accessors read the values the config does not hold.
    """

    config: TrainConfig
    parts: tuple[Part, ...]
    loss_names: tuple[str, ...]
    dev: DevEvaluator | None
    held_out: tuple[str, ...]
    steps: int
    choices: Mapping[str, Choice]

    @property
    def losses(self) -> tuple[LossSpec, ...]:
        """The loss of each dataset."""
        return tuple(LOSSES[name] for name in self.loss_names)

    @property
    def max_seq_length(self) -> int:
        """Tokens kept per text in training."""
        return self.choices["max_seq_length"].value

    @property
    def inference_max_seq_length(self) -> int:
        """The token limit saved with the model, which the dev set is evaluated at."""
        return self.choices["inference_max_seq_length"].value

    @property
    def precision(self) -> str:
        """``fp32`` or ``bf16`` (autocast), never ``auto``."""
        return self.choices["precision"].value

    @property
    def interval_given(self) -> bool:
        """Whether the user gave the checkpoint interval: then it is kept, however costly."""
        return self.choices["checkpoint_steps"].source == "given"

    @property
    def metric(self) -> str | None:
        """The trainer's key of the dev metric that picks the kept checkpoint."""
        return f"eval_{self.dev.primary_metric}" if self.dev is not None else None

    def lines(self) -> list[str]:
        """One line per choice, as the log says them."""
        return [choice.line(name) for name, choice in self.choices.items()]

    def measured(self, name: str, choice: Choice) -> RunPlan:
        """The plan with ``name`` as measured while the run went (the interval the run really used)."""
        return dataclasses.replace(self, choices={**self.choices, name: choice})


def plan_run(config: TrainConfig, model: SentenceTransformer, limit: int) -> RunPlan:
    """Read and check the data and decide the run; done once (on rank 0 under DDP, which hands the plan on).

    ``model`` is the base model on the device the run trains on and ``limit`` its token limit as
    loaded. The model is left at the training length: the precision is measured on one training
    step at that length (:func:`~embedtune.training.autocast.choose_precision`).
    """
    data = load_training_data(config.data, split=config.split, score_range=config.score_range)
    parts = [first_part(config, data), *load_more(config)]
    specs = resolve_losses(config, parts)
    dev = (
        choose_dev(config.dev_settings(), data, ENCODING)
        if config.dev
        else DevPlan(None, data, Choice(NO_DEV, "given", "dev=False: no dev evaluation, no checkpoint choice"))
    )
    if dev.evaluator is None and config.early_stopping_patience:
        raise SettingError(
            "early_stopping_patience",
            "needs a dev set: give dev_data, a BEIR folder with a dev split, or data with enough queries to "
            "hold out (dev_holdout)",
        )
    data, augmented = augment(config, dev.data)  # corpus pairs, query noise, on the rows left for training
    parts, weights = weigh(config, parts, data, lambda d: weigh_by_difficulty(model, d, ENCODING, config.show_progress))
    rows = epoch_rows(config.mix, [len(p.data.dataset) for p in parts])
    processes = world_size()
    config, schedule = choose_schedule(config, rows, dev.evaluator is not None, processes)
    for part, spec in zip(parts, specs, strict=True):
        check_rows(len(part.data.dataset), config.batch_size)
        _warn_unlearnable(part, spec, config.batch_size, alone=len(parts) == 1)
    lengths = choose_lengths(config, model, data, limit)
    steps = run_steps(config, rows, processes)
    if dev.evaluator is not None:  # dev metrics at the length the model will be used with
        dev.evaluator.max_seq_length = lengths["inference_max_seq_length"].value
        columns = len(data.text_columns)
        interval = evaluation_interval(config, dev.evaluator, schedule["checkpoint_steps"], steps, columns)
        schedule["checkpoint_steps"] = interval
        config = dataclasses.replace(config, checkpoint_steps=interval.value)
    model.max_seq_length = lengths["max_seq_length"].value
    choices = {
        **lengths,
        "dev": dev.choice,
        **dataset_choices(config, parts, specs),
        **weights,
        **schedule,
        **augmented,
        "precision": _precision(config, model, parts[0], specs[0]),
    }
    names = tuple(spec.name for spec in specs)
    return RunPlan(config, tuple(parts), names, dev.evaluator, tuple(dev.held_out), steps, choices)


def evaluation_interval(config: TrainConfig, dev: DevEvaluator, chosen: Choice, steps: int, columns: int) -> Choice:
    """Steps between dev evaluations (and checkpoints), with the dev set sized to match.

    ``chosen`` is the schedule's interval (the end of every pass, or a share of the run) or the
    user's. The dev set is sized (:meth:`DevEvaluator.fit`) so that these evaluations cost at most
    :data:`~embedtune.training.dev.DEV_COST_SHARE` of the run, counted in texts: a training step
    runs forward and backward (about three forward passes) over ``batch x columns`` texts, an
    evaluation one forward pass over the dev texts. A run too short to pay for that many
    evaluations of even the smallest useful dev set is evaluated less often (whole multiples of the
    interval, so evaluations stay at the ends of passes); an interval the user gave is kept.
    During the run :mod:`embedtune.training.progress` checks the cost in seconds.
    """
    every = chosen.value
    texts = 3 * steps * config.batch_size * config.gradient_accumulation_steps * columns
    asked = evaluations(steps, every)
    fitting = dev.fit(texts, asked)
    if chosen.source == "given" or fitting >= asked:
        return chosen
    wider = every
    while evaluations(steps, wider) > fitting and wider < steps:
        wider += every
    why = (
        f"every {every} would cost dev evaluation over its share of this short run: {evaluations(steps, wider)} of them"
    )
    return Choice(wider, "rule", why)


def _precision(config: TrainConfig, model: SentenceTransformer, part: Part, spec: LossSpec) -> Choice:
    """The training precision, measured on the first dataset's first rows under its loss.

    The loss is built for the measurement alone and takes no other process's texts: the other
    processes of a DDP run wait for the plan meanwhile, so a gathering loss would wait for them.
    """
    probe = Mixture.build([part], [spec], model, config.loss_params(gather_across_devices=False), config.mix)
    return choose_precision(config.precision, model, probe.losses[0], probe_rows(probe.train_dataset))


def _warn_unlearnable(part: Part, spec: LossSpec, batch_size: int, *, alone: bool) -> None:
    """Warn about data an in-batch loss can learn (almost) nothing from, before the run spends time on it.

    Each query of an in-batch loss is told apart from the batch's other documents: rows that are all one
    pair give it none (the loss is 0 from the first step), and fewer distinct rows than a batch give it
    fewer negatives than the batch size promises (said of a run's only dataset: a small second one, such
    as ``train --mine``'s plain pairs, is expected to be). Such data trains without error, so it would
    otherwise "succeed" with a loss of 0.
    """
    if not spec.in_batch:
        return
    rows = part.data.dataset
    distinct = len(set(zip(*(rows[c] for c in part.data.text_columns), strict=True)))
    name = f"{part.name}: " if part.name else ""
    if distinct < 2:
        why = f"all {len(rows)} rows are one pair" if len(rows) > 1 else "1 row"
        warnings.warn(
            f"{name}{why}: loss '{spec.name}' tells each query apart from the other documents of its batch, "
            "and there are none, so the model learns nothing (give more distinct pairs)",
            EmbedtuneWarning,
            stacklevel=4,
        )
    elif distinct < batch_size and alone:
        warnings.warn(
            f"{name}{distinct} distinct rows, fewer than a batch of {batch_size}: each query has at most "
            f"{distinct - 1} in-batch negatives, and the run learns little (give more distinct pairs)",
            EmbedtuneWarning,
            stacklevel=4,
        )
