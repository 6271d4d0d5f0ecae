"""Fine-tuning an encoder into a sentence embedder, on top of the sentence-transformers trainer.

What this adds to a hand-written trainer script: data of any supported shape validated up front
(:mod:`embedtune.training_data`), a loss chosen by name or by the data (:mod:`embedtune.training.losses`),
batches without duplicate texts (a text must never be an in-batch negative of its own twin), dev
evaluation with the best checkpoint kept, checkpoints that survive a kill and ``resume`` that refuses
a different run, bf16 autocast where the CPU/GPU has native bf16 units, an atomic output directory,
and a record of the run (resolved config, model card, ``metrics.jsonl``, a PNG of the curves).
What follows the data is resolved here and said (:mod:`embedtune.training.choices`): the training
token length, the limit the saved model keeps (its base model's, not the training length), the dev
set (a held-out slice of the training queries when the data has none, :mod:`embedtune.training.holdout`)
and the loss; a kept model worse than its base on dev is written with a warning.

Gradient accumulation averages gradients over several batches but does not add in-batch negatives:
each query still competes only with its own batch. For more negatives per query use a larger batch
with the ``cached-mnrl`` loss, whose memory stays bounded by its mini-batch.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtune import __version__
from embedtune.encoding import resolve_training_precision
from embedtune.errors import EmbedtuneWarning
from embedtune.io import atomic_directory, check_destination, check_writable, file_sha256, write_text_atomic
from embedtune.models import freeze_layers, load_model, resolve_model_path
from embedtune.settings import SettingError
from embedtune.training import distributed
from embedtune.training.augment import augment
from embedtune.training.checkpoints import CONFIG_FILE, open_run_dir, restore_finished
from embedtune.training.choices import Choice, as_record, base_limit, choose_lengths
from embedtune.training.config import NO_DEV, TrainConfig, metric_label
from embedtune.training.dev import DevEvaluator, trainer_evaluator
from embedtune.training.holdout import DevPlan, choose_dev
from embedtune.training.losses import LossParams, LossSpec, build_loss, resolve_loss
from embedtune.training.model_card import card_facts, write_run_report
from embedtune.training.optim import layer_learning_rates
from embedtune.training.schedule import choose_schedule
from embedtune.training_data import TrainingData, load_training_data

if TYPE_CHECKING:
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from torch import nn
    from transformers import TrainerCallback, TrainerState

TRAIN_RECORD = "embedtune_train.json"
BASELINE_FILE = "baseline_metrics.json"
TENSORBOARD_DIR = "runs"  # where the trainer's TensorBoard callback writes, under the checkpoints folder
# By default dev evaluations may cost at most this share of the training compute.
DEV_COST_SHARE = 0.1


@dataclass
class TrainResult:
    output: Path
    steps: int
    pairs: int
    seconds: float
    losses: list[tuple[int, float]]  # (step, mean training loss since the previous log)
    dev_before: dict[str, float] = field(default_factory=dict)
    dev_after: dict[str, float] = field(default_factory=dict)
    metric: str | None = None
    choices: dict[str, Choice] = field(default_factory=dict)  # what was resolved for the user, and why

    @property
    def worse_than_base(self) -> bool:
        """Whether the kept model scores below the base model on the dev metric."""
        if not self.metric or self.metric not in self.dev_after or self.metric not in self.dev_before:
            return False
        return self.dev_after[self.metric] < self.dev_before[self.metric]

    def mean_loss(self, start: float, end: float) -> float:
        """Mean logged loss over steps in ``(start, end]`` (fractions of the run).

        One 10-step window of in-batch loss is too noisy to compare; windows of a fifth of the run
        (e.g. ``mean_loss(0, 0.2)`` against ``mean_loss(0.8, 1)``) show the trend.
        """
        window = [loss for step, loss in self.losses if start * self.steps < step <= end * self.steps]
        return sum(window) / len(window) if window else float("nan")


def _planned_steps(config: TrainConfig, rows: int) -> int:
    if config.max_steps is not None:
        return config.max_steps
    per_epoch = math.ceil(distributed.batches(rows, config.batch_size) / config.gradient_accumulation_steps)
    return max(1, math.ceil(per_epoch * config.epochs))


def eval_interval(config: TrainConfig, steps: int, columns: int, dev_texts: int | None) -> int:
    """Steps between dev evaluations and checkpoints: ``checkpoint_steps`` if given, else the run split
    evenly into at most four parts, fewer where needed so that evaluating costs at most
    ``DEV_COST_SHARE`` of training.

    A training step runs forward and backward (about three forward passes) over ``batch x columns``
    texts; an evaluation runs one forward pass over ``dev_texts``. With the default 5,500-text dev
    sample and batch 32 of pairs, evaluations must be at least 287 steps apart, so a run of a few
    hundred steps is evaluated only before training and at its end, instead of spending as long on
    evaluation as on training.
    """
    if config.checkpoint_steps:
        return config.checkpoint_steps
    parts = 4
    if dev_texts:
        per_step = 3 * config.batch_size * config.gradient_accumulation_steps * columns
        parts = max(1, min(parts, int(steps * DEV_COST_SHARE * per_step / dev_texts)))
    return max(1, math.ceil(steps / parts))


@dataclass
class _Setup:
    """What a run is made of, loaded and checked before any checkpoint folder is touched."""

    config: TrainConfig  # the schedule filled in (embedtune.training.schedule)
    data: TrainingData
    dataset: Dataset  # the rows the trainer sees (without a label column the loss does not use)
    spec: LossSpec
    loss: nn.Module
    model: SentenceTransformer
    base_path: Path
    precision: str
    dev: DevEvaluator | None
    choices: dict[str, Choice]  # what was resolved for the user: lengths, dev set, loss
    held_out: list[str]  # the held-out dev query texts, if the dev set is a slice of the training data

    @property
    def metric(self) -> str | None:
        """The trainer's key of the dev metric that picks the kept checkpoint."""
        return f"eval_{self.dev.primary_metric}" if self.dev is not None else None


def train(
    config: TrainConfig,
    *,
    callbacks: Sequence[TrainerCallback] = (),
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fine-tune ``config.model`` on ``config.data`` and write the model to ``config.output``.

    The output appears only once training has finished; until then the previous contents (if any)
    stay in place, and checkpoints accumulate in ``<output>.checkpoints`` so that a killed run can
    be continued with ``resume=True``. ``callbacks`` are extra Hugging Face trainer callbacks.
    ``log`` gets one line per choice the run made for the user (training and inference length,
    dev set, loss) before training starts; the same choices are in the result, the run record and
    the model card. A kept model that scores below the base model on dev is written with an
    :class:`~embedtune.errors.EmbedtuneWarning` that gives both numbers.
    """
    from transformers.utils import logging as hf_logging

    # Checkpoint rotation warns that mtime "may not be reliable" on many filesystems: noise here.
    hf_logging.get_logger("transformers.trainer_utils").setLevel(hf_logging.ERROR)
    distributed.start()  # under torchrun/accelerate: join the process group before any file is touched
    setup = _set_up(config, distributed.on_main(lambda: _preflight(config)))
    config = setup.config  # with the schedule chosen from the data (embedtune.training.schedule)
    for name, choice in setup.choices.items() if log is not None and distributed.is_main() else ():
        log(choice.line(name))
    run_dir, checkpoint, fingerprint = distributed.on_main(
        lambda: open_run_dir(config, setup.base_path, setup.choices, setup.held_out)
    )
    dev_before = {} if setup.dev is None else distributed.on_main(lambda: _baseline(setup.dev, setup.model, run_dir))
    trainer = _trainer(config, setup, run_dir, callbacks)
    started = time.perf_counter()
    if not restore_finished(trainer, checkpoint, best=setup.dev is not None):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    history = trainer.state.log_history
    losses = [(int(e["step"]), float(e["loss"])) for e in history if "loss" in e]
    dev_after = _best_eval(history, setup.metric, trainer.state.best_global_step) if setup.dev is not None else {}
    steps = int(trainer.state.global_step)
    result = TrainResult(
        config.output, steps, len(setup.dataset), seconds, losses, dev_before, dev_after, setup.metric, setup.choices
    )
    if result.worse_than_base and distributed.is_main():
        _warn_worse(result)
    record = {
        **_record(config, setup, trainer.state, fingerprint),
        "resumed_from": str(checkpoint) if checkpoint else None,
        "train_seconds": round(seconds, 1),
        "dev_before": dev_before,
        "dev_after": dev_after,
        "worse_than_base": result.worse_than_base,
        "losses": losses,
    }
    trainer.model.max_seq_length = setup.choices["inference_max_seq_length"].value  # the limit it searches with
    distributed.on_main(lambda: _write_output(config, trainer.model, run_dir, record, history, dev_before))
    return result


def _preflight(config: TrainConfig) -> Path:
    """The checks before anything loads (output, tracker, base model's path); returns the model's path."""
    if not config.resume:
        check_destination(config.output, config.overwrite)
    check_writable(config.output, directory=True)
    check_reporter(config.report_to)
    return resolve_model_path(config.model)


def _write_output(config: TrainConfig, model, run_dir: Path, record: dict, history: list, dev_before: dict) -> None:
    """The model, its record, config, card and plots, written to a temporary folder renamed to the output;
    then the checkpoints are removed unless kept."""
    with atomic_directory(config.output, overwrite=config.overwrite or config.resume) as tmp:
        model.save(str(tmp))
        (tmp / TRAIN_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
        write_run_report(tmp, record, history, dev_before, name=config.output.name)
        if (run_dir / TENSORBOARD_DIR).is_dir():  # the Hub shows a model's runs/ in its TensorBoard tab
            shutil.copytree(run_dir / TENSORBOARD_DIR, tmp / TENSORBOARD_DIR)
    if not config.keep_checkpoints:
        shutil.rmtree(run_dir, ignore_errors=True)


def _warn_worse(result: TrainResult) -> None:
    label, metric = metric_label(result.metric or ""), result.metric or ""
    warnings.warn(
        f"the trained model scores below its base model on the dev set ({label} {result.dev_after[metric]:.4f} "
        f"after training, {result.dev_before[metric]:.4f} before): it is written, but the base model is better "
        "on this data (try a lower learning_rate or fewer epochs)",
        EmbedtuneWarning,
        stacklevel=3,
    )


def _set_up(config: TrainConfig, base_path: Path) -> _Setup:
    """Load the base model on every process; the data, dev set and lengths are resolved once (rank 0)."""
    model = load_model(base_path, device=distributed.device(), pooling=config.pooling, normalize=config.normalize)
    limit = base_limit(model)  # read before the training length replaces it
    if config.query_prompt or config.document_prompt:
        model.prompts = {k: v for k, v in (("query", config.query_prompt), ("document", config.document_prompt)) if v}
    freeze_layers(model, embeddings=config.freeze_embeddings, layers=config.freeze_layers)
    layer_learning_rates(model, model, 1.0, config.layer_lr_decay)  # a model without findable layers: refused now
    precision = resolve_training_precision(config.precision, str(model.device))
    config, data, dev, choices, held_out = distributed.on_main(lambda: _plan(config, model, limit, precision))
    model.max_seq_length = choices["max_seq_length"].value
    spec = resolve_loss(config.loss, data)
    params = LossParams(
        config.temperature,
        config.mini_batch_size,
        config.triplet_margin,
        config.matryoshka_dims,
        gather_across_devices=distributed.world_size() > 1,
    )
    loss = build_loss(spec, model, params)
    dataset = (
        data.dataset
        if spec.uses_label or "label" not in data.dataset.column_names
        else data.dataset.remove_columns("label")
    )
    return _Setup(config, data, dataset, spec, loss, model, base_path, precision, dev, choices, held_out)


def _plan(
    config: TrainConfig, model: SentenceTransformer, limit: int, precision: str
) -> tuple[TrainConfig, TrainingData, DevEvaluator | None, dict[str, Choice], list[str]]:
    """Read and check the data, choose the dev set, schedule, lengths and loss: done once (rank 0 under DDP)."""
    data = load_training_data(config.data, split=config.split, score_range=config.score_range)
    spec = resolve_loss(config.loss, data)
    plan = (
        choose_dev(config.dev_settings(), data, precision)
        if config.dev
        else DevPlan(None, data, Choice(NO_DEV, "given", "dev=False: no dev evaluation, no checkpoint choice"))
    )
    if plan.evaluator is None and config.early_stopping_patience:
        raise SettingError(
            "early_stopping_patience",
            "needs a dev set: give dev_data, a BEIR folder with a dev split, or data with enough queries to "
            "hold out (dev_holdout)",
        )
    data = plan.data  # without the held-out dev queries
    data, augmented = augment(config, data)  # corpus pairs, query noise (embedtune.training.augment)
    config, schedule = choose_schedule(config, len(data.dataset), plan.evaluator is not None, distributed.world_size())
    distributed.check_rows(len(data.dataset), config.batch_size)
    choices = choose_lengths(config, model, data, limit)
    if plan.evaluator is not None:  # dev metrics at the length the model will be used with
        plan.evaluator.max_seq_length = choices["inference_max_seq_length"].value
    reason = f"auto: {data.format} rows" if config.loss == "auto" else "loss"
    choices |= {"dev": plan.choice, "loss": Choice(spec.name, "data" if config.loss == "auto" else "given", reason)}
    return config, data, plan.evaluator, choices | schedule | augmented, plan.held_out


def _training_args(config: TrainConfig, setup: _Setup, run_dir: Path) -> SentenceTransformerTrainingArguments:
    from sentence_transformers import SentenceTransformerTrainingArguments

    dev, device = setup.dev, str(setup.model.device)
    steps = _planned_steps(config, len(setup.dataset))
    every = eval_interval(config, steps, len(setup.data.text_columns), dev.texts if dev is not None else None)
    decay = config.layer_lr_decay  # below 1: lower layers learn more slowly (embedtune.training.optim)
    return SentenceTransformerTrainingArguments(
        output_dir=str(run_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # below 1: a ratio of the steps
        weight_decay=config.weight_decay,
        learning_rate_mapping=layer_learning_rates(setup.loss, setup.model, config.learning_rate, decay),
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_drop_last=distributed.world_size() > 1,  # what the batch sampler does under DDP anyway
        bf16=setup.precision == "bf16",
        use_cpu=device == "cpu",
        batch_sampler=distributed.batch_sampler,  # NO_DUPLICATES; under DDP one global batch sliced per process
        prompts=_column_prompts(config, setup.data.text_columns),
        logging_first_step=True,
        logging_steps=max(1, min(10, steps // 20)),
        eval_strategy="steps" if dev is not None else "no",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=2,
        load_best_model_at_end=dev is not None,
        metric_for_best_model=setup.metric,
        greater_is_better=True,
        report_to=config.report_to,
        disable_tqdm=not config.show_progress,
    )


def _trainer(
    config: TrainConfig, setup: _Setup, run_dir: Path, callbacks: Sequence[TrainerCallback]
) -> SentenceTransformerTrainer:
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback

    stoppers = [EarlyStoppingCallback(config.early_stopping_patience)] if config.early_stopping_patience else []
    trainer = SentenceTransformerTrainer(
        model=setup.model,
        args=_training_args(config, setup, run_dir),
        train_dataset=setup.dataset,
        loss=setup.loss,
        evaluator=trainer_evaluator(setup.dev) if setup.dev is not None else None,
        callbacks=[*stoppers, *callbacks],
    )
    # Without bars the trainer prints each log dict on stdout instead, which is a program's result channel
    # (``train --json``); the logs are kept in metrics.jsonl either way.
    trainer.remove_callback(PrinterCallback)
    return trainer


def _record(config: TrainConfig, setup: _Setup, state: TrainerState, fingerprint: str) -> dict[str, Any]:
    """What the run was (``embedtune_train.json``), besides its timing, losses and dev metrics."""
    return {
        "embedtune_version": __version__,
        "config": config.identity(),
        "base_model_path": str(setup.base_path),
        "base_model_fingerprint": fingerprint,
        "data_files": {str(f): file_sha256(f) for f in setup.data.files},
        "data": setup.data.describe(),
        "loss": setup.spec.name,
        "loss_module": type(setup.loss).__name__,
        "batch_sampler": "NO_DUPLICATES",
        "processes": distributed.world_size(),  # data-parallel: each step sees processes x batch_size rows
        "negatives_across_processes": distributed.world_size() > 1 and distributed.gathers(setup.loss),
        "precision": setup.precision,
        "device": str(setup.model.device),
        "rows": len(setup.dataset),
        "steps": int(state.global_step),
        "dev_metric": setup.metric,
        "choices": as_record(setup.choices),
        "dev_held_out_queries": setup.held_out,
        "best_step": state.best_global_step,
        "python": platform.python_version(),
        "card": card_facts(setup.base_path, config.license, config.dataset_ids),
    }


def check_reporter(report_to: str) -> None:
    """Refuse a tracker whose package is missing now, not after the model and data are loaded."""
    import importlib.util

    needs = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}.get(report_to, ())
    if needs and not any(importlib.util.find_spec(name) for name in needs):
        extra = "pip install 'embedtune[tensorboard]'" if report_to == "tensorboard" else "pip install wandb"
        raise SettingError("report_to", f"'{report_to}' needs the {' or '.join(needs)} package ({extra})")


def _column_prompts(config: TrainConfig, text_columns: list[str]) -> dict[str, str] | None:
    """Prefix queries with the query prompt and every other text with the document prompt (E5/BGE style)."""
    prompts = {}
    for column in text_columns:
        prompt = config.query_prompt if column == "anchor" else config.document_prompt
        if prompt:
            prompts[column] = prompt
    return prompts or None


def _baseline(dev, model, run_dir: Path) -> dict[str, float]:
    """Dev metrics of the untrained model, computed once per run (a resume reuses them)."""
    path = run_dir / BASELINE_FILE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    metrics = {f"eval_{k}": float(v) for k, v in dev(model).items()}
    write_text_atomic(path, json.dumps(metrics, indent=2) + "\n")
    return metrics


def _best_eval(history: list[dict], metric: str | None, best_step: int | None) -> dict[str, float]:
    """The dev metrics of the checkpoint that was kept (the best one), else of the last evaluation."""
    evals = [e for e in history if metric in e]
    if not evals:
        return {}
    chosen = next((e for e in evals if e.get("step") == best_step), evals[-1])
    return {k: float(v) for k, v in chosen.items() if k.startswith("eval_") and isinstance(v, int | float)}
