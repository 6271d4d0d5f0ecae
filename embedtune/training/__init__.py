"""Fine-tuning an encoder into a sentence embedder: the training stage of the pipeline.

``from embedtune.training import TrainConfig, train`` is the public path::

    result = train(TrainConfig(output="models/mine", data="data/debian", max_steps=200))

The modules, from the bottom up:

* :mod:`~embedtune.training.losses` — the losses by name, matched to the data formats they fit;
* :mod:`~embedtune.training.config` — :class:`TrainConfig`, every setting declared once and checked
  at construction, and :class:`DevSettings`, the part of it the dev evaluation reads;
* :mod:`~embedtune.training.dev` — the dev evaluator (scored with ``embedtune eval``'s metrics);
* :mod:`~embedtune.training.model_card` — the card, ``metrics.jsonl`` and the plot beside the model;
* :mod:`~embedtune.training.run` — :func:`train`: checkpoints, resume and the trainer.

Importing this package loads neither torch nor sentence-transformers; :func:`train` does.
"""

from embedtune.training.config import RUN_OPTIONS, DevSettings, TrainConfig, metric_label
from embedtune.training.losses import LOSSES, LossParams, LossSpec, build_loss, describe_losses, resolve_loss
from embedtune.training.run import (
    CONFIG_FILE,
    TRAIN_RECORD,
    TrainResult,
    checkpoints_dir,
    eval_interval,
    last_good_checkpoint,
    train,
)

__all__ = [
    "CONFIG_FILE",
    "LOSSES",
    "RUN_OPTIONS",
    "TRAIN_RECORD",
    "DevSettings",
    "LossParams",
    "LossSpec",
    "TrainConfig",
    "TrainResult",
    "build_loss",
    "checkpoints_dir",
    "describe_losses",
    "eval_interval",
    "last_good_checkpoint",
    "metric_label",
    "resolve_loss",
    "train",
]
