"""Fine-tuning an encoder into a sentence embedder, on top of the sentence-transformers trainer.

What this adds to a hand-written trainer script: data of any supported shape validated up front
(:mod:`embedtune.training_data`), a loss chosen by name or by the data (:mod:`embedtune.training.losses`),
batches without duplicate texts (a text must never be an in-batch negative of its own twin), dev
evaluation with the best checkpoint kept, checkpoints that survive a kill and ``resume`` that refuses
a different run, bf16 autocast where it is measured faster (:mod:`embedtune.training.autocast`), dev
evaluation held to a share of the run (:mod:`embedtune.training.progress`), an atomic output directory,
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

import contextlib
import dataclasses
import json
import math
import platform
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtune import __version__
from embedtune.errors import EmbedtuneError, EmbedtuneWarning
from embedtune.io import (
    atomic_directory,
    check_destination,
    check_writable,
    file_sha256,
    follow_umask,
    name_lock,
    refuse_overlap,
    write_text_atomic,
    writing,
)
from embedtune.models import freeze_layers, load_model, resolve_model_path
from embedtune.settings import SettingError
from embedtune.training import distributed, mixing
from embedtune.training.augment import augment
from embedtune.training.autocast import choose_precision, probe_rows
from embedtune.training.checkpoints import (
    CONFIG_FILE,
    last_good_checkpoint,
    machine_fault,
    open_run_dir,
    restore_finished,
    run_failures,
)
from embedtune.training.choices import Choice, as_record, base_limit, choose_lengths
from embedtune.training.config import NO_DEV, TrainConfig, metric_label
from embedtune.training.dev import DevEvaluator, trainer_evaluator
from embedtune.training.holdout import DevPlan, choose_dev
from embedtune.training.losses import LossParams, LossSpec
from embedtune.training.model_card import card_facts, write_run_report
from embedtune.training.optim import layer_learning_rates
from embedtune.training.progress import StageClock, evaluations, run_clock
from embedtune.training.schedule import choose_schedule
from embedtune.training.weighting import weigh_by_difficulty
from embedtune.training_data import TrainingData, load_training_data

if TYPE_CHECKING:
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
PARTS = 4  # evaluations of a run whose schedule sets no interval (fewer where they would cost too much)


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
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per stage (setup, baseline, ...)

    @property
    def worse_than_base(self) -> bool:
        """Whether the kept model scores below the base model on the dev metric."""
        if not self.metric or self.metric not in self.dev_after or self.metric not in self.dev_before:
            return False
        return self.dev_after[self.metric] < self.dev_before[self.metric]

    def mean_loss(self, start: float, end: float) -> float | None:
        """Mean logged loss over steps in ``(start, end]`` (fractions of the run); None if none was logged.

        One 10-step window of in-batch loss is too noisy to compare; windows of a fifth of the run
        (e.g. ``mean_loss(0, 0.2)`` against ``mean_loss(0.8, 1)``) show the trend. A run too short to
        log a loss inside the window (1-4 steps) gets the logged loss nearest to it, never NaN.
        """
        if not self.losses:
            return None
        window = [loss for step, loss in self.losses if start * self.steps < step <= end * self.steps]
        if not window:
            middle = (start + end) / 2 * self.steps
            window = [min(self.losses, key=lambda logged: abs(logged[0] - middle))[1]]
        return sum(window) / len(window)


def _planned_steps(config: TrainConfig, rows: int) -> int:
    if config.max_steps is not None:
        return config.max_steps
    per_epoch = math.ceil(distributed.batches(rows, config.batch_size) / config.gradient_accumulation_steps)
    return max(1, math.ceil(per_epoch * config.epochs))


def evaluation_interval(config: TrainConfig, dev: DevEvaluator, chosen: Choice, steps: int, columns: int) -> Choice:
    """Steps between dev evaluations (and checkpoints), with the dev set sized to match.

    The schedule's interval (the end of every pass) or the user's, else the run in :data:`PARTS`.
    The dev set is then sized (:meth:`DevEvaluator.fit`) so that these evaluations cost at most
    :data:`~embedtune.training.dev.DEV_COST_SHARE` of the run, counted in texts: a training step
    runs forward and backward (about three forward passes) over ``batch x columns`` texts, an
    evaluation one forward pass over the dev texts. A run too short to pay for that many
    evaluations of even the smallest useful dev set is evaluated less often (whole multiples of the
    interval, so evaluations stay at the ends of passes); an interval the user gave is kept.
    During the run :mod:`embedtune.training.progress` checks the cost in seconds.
    """
    every = chosen.value or math.ceil(steps / PARTS)
    texts = 3 * steps * config.batch_size * config.gradient_accumulation_steps * columns
    asked = evaluations(steps, every)
    fitting = dev.fit(texts, asked)
    if chosen.source == "given" or fitting >= asked:
        return Choice(every, chosen.source, chosen.why if chosen.value else f"{PARTS} evaluations in the run")
    wider = every
    while evaluations(steps, wider) > fitting and wider < steps:
        wider += every
    why = (
        f"every {every} would cost dev evaluation over its share of this short run: {evaluations(steps, wider)} of them"
    )
    return Choice(wider, "rule", why)


@dataclass
class _Setup:
    """What a run is made of, loaded and checked before any checkpoint folder is touched."""

    config: TrainConfig  # the schedule filled in (embedtune.training.schedule)
    data: TrainingData
    mixture: mixing.Mixture  # the rows, loss(es) and batch samplers the trainer gets: one dataset or several
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
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fine-tune ``config.model`` on ``config.data`` and write the model to ``config.output``.

    The output appears only once training has finished; until then the previous contents (if any)
    stay in place, and checkpoints accumulate in ``<output>.checkpoints`` so that a killed run can
    be continued with ``resume=True``. ``callbacks`` are extra Hugging Face trainer callbacks.
    ``log`` gets one line per choice the run made for the user (training and inference length,
    dev set, loss) before training starts; the same choices are in the result, the run record and
    the model card. ``progress`` (default: ``log``) gets the run's progress lines: its whole-run ETA
    and any change of the evaluation interval (:mod:`embedtune.training.progress`). A kept model
    that scores below the base model on dev is written with an
    :class:`~embedtune.errors.EmbedtuneWarning` that gives both numbers.
    """
    from transformers.utils import logging as hf_logging

    # Checkpoint rotation warns that mtime "may not be reliable" on many filesystems: noise here.
    hf_logging.get_logger("transformers.trainer_utils").setLevel(hf_logging.ERROR)
    distributed.start()  # under torchrun/accelerate: join the process group before any file is touched
    with run_failures(config):
        base_path = distributed.on_main(lambda: _preflight(config))  # refused before the lock is taken
        with _output_lock(config.output):
            return _train(config, base_path, callbacks, log, progress or log)


@contextlib.contextmanager
def _output_lock(output: Path) -> Iterator[None]:
    """Hold the output's lock for the whole run (rank 0): a second run into the same output, started while
    this one goes, is refused at once, before it could take this run's checkpoints for an earlier run's."""
    if not distributed.is_main():
        yield
        return
    with writing(output):
        output.parent.mkdir(parents=True, exist_ok=True)
    with name_lock(output):
        yield


def _train(
    config: TrainConfig,
    base_path: Path,
    callbacks: Sequence[TrainerCallback],
    log: Callable[[str], None] | None,
    progress: Callable[[str], None] | None,
) -> TrainResult:
    clock = StageClock()
    setup = _set_up(config, base_path)
    config = setup.config  # with the schedule chosen from the data (embedtune.training.schedule)
    say = log if log is not None and distributed.is_main() else None
    for name, choice in setup.choices.items() if say is not None else ():
        say(choice.line(name))
    run_dir, checkpoint, fingerprint = distributed.on_main(
        lambda: open_run_dir(config, setup.base_path, setup.choices, setup.held_out)
    )
    clock.lap("setup")
    dev_before = {} if setup.dev is None else distributed.on_main(lambda: _baseline(setup.dev, setup.model, run_dir))
    clock.lap("baseline")
    baseline_seconds = setup.dev.seconds if setup.dev is not None else 0.0
    given = setup.choices.get("checkpoint_steps", Choice(None, "", "")).source == "given"
    timer = run_clock(setup.dev, progress if distributed.is_main() else None, clock.started, space=not given)
    trainer = _trainer(config, setup, run_dir, [*callbacks, timer])
    if not restore_finished(trainer, checkpoint, best=setup.dev is not None):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    clock.lap("training")
    evaluating = (setup.dev.seconds if setup.dev is not None else 0.0) - baseline_seconds
    clock.seconds["training"] -= evaluating
    clock.seconds["dev evaluations"] = evaluating
    seconds = clock.seconds["training"] + evaluating
    history = trainer.state.log_history
    losses = [(int(e["step"]), float(e["loss"])) for e in history if "loss" in e]
    dev_after = _best_eval(history, setup.metric, trainer.state.best_global_step) if setup.dev is not None else {}
    steps = int(trainer.state.global_step)
    if timer.widened:  # the interval used is the one recorded
        step, every, why = timer.widened[-1]
        setup.choices["checkpoint_steps"] = Choice(every, "measured", f"from step {step}: {why}")
    result = TrainResult(
        config.output, steps, setup.mixture.rows, seconds, losses, dev_before, dev_after, setup.metric, setup.choices
    )
    if result.worse_than_base and distributed.is_main():
        _warn_worse(result)
    if distributed.is_main():
        _warn_zero_loss(losses)
    record = {
        **_record(config, setup, trainer.state, fingerprint),
        "resumed_from": str(checkpoint) if checkpoint else None,
        "train_seconds": round(seconds, 1),
        "timings": clock.record(),  # wall seconds per stage, up to writing the output
        "dev_evaluations": setup.dev.calls if setup.dev is not None else 0,
        "dev_curve": timer.curve,  # the dev metric at each evaluation, and the seconds since the run started
        "dev_before": dev_before,
        "dev_after": dev_after,
        "worse_than_base": result.worse_than_base,
        "losses": losses,
    }
    trainer.model.max_seq_length = setup.choices["inference_max_seq_length"].value  # the limit it searches with
    distributed.on_main(lambda: _write_output(config, trainer.model, run_dir, record, history, dev_before))
    clock.lap("writing")
    result.timings = clock.record()
    return result


def _preflight(config: TrainConfig) -> Path:
    """The checks before anything loads (output, tracker, base model's path); returns the model's path."""
    model = resolve_model_path(config.model)
    refuse_overlap(config.output, [config.data, *config.more_data, config.dev_data, model])
    if not config.resume:
        check_destination(config.output, config.overwrite, made_by=TRAIN_RECORD)
    check_writable(config.output, directory=True)
    check_reporter(config.report_to)
    return model


def _write_output(config: TrainConfig, model, run_dir: Path, record: dict, history: list, dev_before: dict) -> None:
    """The model, its record, config, card and plots, written to a temporary folder renamed to the output;
    then the checkpoints are removed unless kept.

    A full disk or read-only file system is one line naming the output (also where safetensors hides the
    ``OSError``), saying that the finished run stays in the checkpoints folder for a resume to write.
    """
    try:
        with atomic_directory(config.output, overwrite=config.overwrite or config.resume) as tmp:
            model.save(str(tmp))
            (tmp / TRAIN_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            (tmp / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
            write_run_report(tmp, record, history, dev_before, name=config.output.name)
            if (run_dir / TENSORBOARD_DIR).is_dir():  # the Hub shows a model's runs/ in its TensorBoard tab
                shutil.copytree(run_dir / TENSORBOARD_DIR, tmp / TENSORBOARD_DIR)
            follow_umask(tmp)  # safetensors writes its weights 0600
    except Exception as e:
        fault = machine_fault(e, config.output)
        if fault is None:
            raise
        kept = f"; the finished run is kept in {run_dir}: resume=True writes the model from it"
        raise EmbedtuneError(f"{fault}{kept if last_good_checkpoint(run_dir) else ''}") from e
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


def _warn_unlearnable(part: mixing.Part, spec: LossSpec, batch_size: int, *, alone: bool) -> None:
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


def _warn_zero_loss(losses: list[tuple[int, float]]) -> None:
    """A loss of exactly 0 at every logged step: the batches gave it nothing to learn from."""
    if losses and all(loss == 0.0 for _, loss in losses):
        warnings.warn(
            f"the training loss was exactly 0 at all {len(losses)} logged steps: the batches gave the loss "
            "nothing to tell apart (duplicate rows or batches of one row); the model did not learn",
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
    # Dev evaluation and difficulty weights encode: in the machine's fastest encoding precision.
    config, parts, dev, choices, held_out = distributed.on_main(lambda: _plan(config, model, limit, "auto"))
    model.max_seq_length = choices["max_seq_length"].value
    params = LossParams(
        config.temperature,
        config.mini_batch_size,
        config.triplet_margin,
        config.matryoshka_dims,
        gather_across_devices=distributed.world_size() > 1,
    )
    mixture = mixing.Mixture.build(parts, mixing.resolve_losses(config, parts), model, params, config.mix)
    spec, loss = mixture.specs[0], mixture.losses[0]
    choices["precision"] = distributed.on_main(
        lambda: choose_precision(config.precision, model, loss, probe_rows(mixture.train_dataset))
    )
    precision = choices["precision"].value
    return _Setup(config, parts[0].data, mixture, spec, loss, model, base_path, precision, dev, choices, held_out)


def _plan(
    config: TrainConfig, model: SentenceTransformer, limit: int, precision: str
) -> tuple[TrainConfig, list[mixing.Part], DevEvaluator | None, dict[str, Choice], list[str]]:
    """Read and check the data, choose the dev set, schedule, lengths and loss: done once (rank 0 under DDP)."""
    data = load_training_data(config.data, split=config.split, score_range=config.score_range)
    parts = [mixing.first_part(config, data), *mixing.load_more(config)]
    specs = mixing.resolve_losses(config, parts)
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
    parts, weights = mixing.weigh(
        config, parts, data, lambda d: weigh_by_difficulty(model, d, precision, config.show_progress)
    )
    rows = mixing.epoch_rows(config.mix, [len(p.data.dataset) for p in parts])
    config, schedule = choose_schedule(config, rows, plan.evaluator is not None, distributed.world_size())
    for part, spec in zip(parts, specs, strict=True):
        distributed.check_rows(len(part.data.dataset), config.batch_size)
        _warn_unlearnable(part, spec, config.batch_size, alone=len(parts) == 1)
    choices = choose_lengths(config, model, data, limit)
    if plan.evaluator is not None:  # dev metrics at the length the model will be used with
        plan.evaluator.max_seq_length = choices["inference_max_seq_length"].value
        steps = _planned_steps(config, rows)
        interval = evaluation_interval(
            config, plan.evaluator, schedule["checkpoint_steps"], steps, len(data.text_columns)
        )
        schedule["checkpoint_steps"] = interval
        config = dataclasses.replace(config, checkpoint_steps=interval.value)
    choices |= {"dev": plan.choice, **mixing.choices(config, parts, specs), **weights}
    return config, parts, plan.evaluator, choices | schedule | augmented, plan.held_out


def _training_args(config: TrainConfig, setup: _Setup, run_dir: Path) -> SentenceTransformerTrainingArguments:
    from sentence_transformers import SentenceTransformerTrainingArguments

    dev, device = setup.dev, str(setup.model.device)
    steps = _planned_steps(config, setup.mixture.epoch_rows)
    every = config.checkpoint_steps or math.ceil(steps / PARTS)
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
        batch_sampler=setup.mixture.batch_sampler(
            config.length_window
        ),  # NO_DUPLICATES, drawn by weight; DDP: global batches sliced
        multi_dataset_batch_sampler=setup.mixture.multi_dataset_batch_sampler(),  # several datasets: config.mix
        prompts=_column_prompts(config, setup.mixture.text_columns),
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
        train_dataset=setup.mixture.train_dataset,
        loss=setup.mixture.train_loss,
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
        "data_files": {str(f): file_sha256(f) for f in setup.mixture.files},
        "data": setup.mixture.describe(),
        "loss": setup.spec.name,
        "loss_module": type(setup.loss).__name__,
        "batch_sampler": "NO_DUPLICATES"
        + (f", length window {config.length_window}" if config.length_window > 1 else ""),
        "sampling": setup.mixture.record(),  # datasets, their losses, weights and the mix
        "processes": distributed.world_size(),  # data-parallel: each step sees processes x batch_size rows
        "negatives_across_processes": distributed.world_size() > 1 and distributed.gathers(setup.loss),
        "precision": setup.precision,
        "device": str(setup.model.device),
        "rows": setup.mixture.rows,
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


def _baseline(dev: DevEvaluator, model, run_dir: Path) -> dict[str, float]:
    """Dev metrics of the untrained model, computed once per run (a resume reuses them).

    The first call of a retrieval dev evaluator also picks its dev corpus with this model; a resumed
    run has it picked again (the same base model picks the same documents).
    """
    path = run_dir / BASELINE_FILE
    if path.is_file():
        dev.prepare(model)
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
