"""Fine-tuning an encoder into a sentence embedder: the training stage of the pipeline.

``from embedtune.training import TrainConfig, train`` is the public path::

    result = train(TrainConfig(output="models/mine", data="data/debian", max_steps=200))

The modules, from the bottom up:

* :mod:`~embedtune.training.losses` — the losses by name, matched to the data formats they fit;
* :mod:`~embedtune.training.config` — :class:`TrainConfig`, every setting declared once and checked
  at construction, and :class:`DevSettings`, the part of it the dev evaluation reads;
* :mod:`~embedtune.training.choices` — what a run resolves from the data (the training and inference
  lengths), each as a :class:`Choice` with its reason;
* :mod:`~embedtune.training.schedule` — epochs, batch size, learning rate, warm-up, temperature,
  checkpoint interval and early stopping chosen from the data's size, each as a :class:`Choice` (a
  given value wins);
* :mod:`~embedtune.training.dev` — the dev evaluator (scored with ``embedtune eval``'s metrics);
* :mod:`~embedtune.training.holdout` — which dev set: ``dev_data``, the dev split, or a held-out slice
  of the training queries;
* :mod:`~embedtune.training.plan` — :func:`plan_run`: every decision of a run, made once before it
  trains, as one :class:`RunPlan` (each choice with its reason) that the trainer, the log, the record
  and the card read;
* :mod:`~embedtune.training.model_card` — the run's record (:class:`RunRecord`,
  ``embedtune_train.json``), the card, ``metrics.jsonl`` and the plot beside the model;
* :mod:`~embedtune.training.checkpoints` — the checkpoints folder and what a resume must match;
* :mod:`~embedtune.training.run` — :func:`train`: the trainer built from the plan.

Importing this package loads neither torch nor sentence-transformers; :func:`train` does.
"""

from embedtune.training.checkpoints import CONFIG_FILE, checkpoints_dir, last_good_checkpoint
from embedtune.training.choices import Choice
from embedtune.training.config import RUN_OPTIONS, DevSettings, TrainConfig, metric_label
from embedtune.training.losses import LOSSES, LossParams, LossSpec, build_loss, describe_losses, resolve_loss
from embedtune.training.model_card import TRAIN_RECORD, RunRecord
from embedtune.training.plan import RunPlan, evaluation_interval
from embedtune.training.run import TrainResult, train

__all__ = [
    "CONFIG_FILE",
    "LOSSES",
    "RUN_OPTIONS",
    "TRAIN_RECORD",
    "Choice",
    "DevSettings",
    "LossParams",
    "LossSpec",
    "RunPlan",
    "RunRecord",
    "TrainConfig",
    "TrainResult",
    "build_loss",
    "checkpoints_dir",
    "describe_losses",
    "evaluation_interval",
    "last_good_checkpoint",
    "metric_label",
    "resolve_loss",
    "train",
]
