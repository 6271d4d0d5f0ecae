"""Fine-tuning an encoder into a sentence embedder, on top of the sentence-transformers trainer.

What this adds to a hand-written trainer script: data of any supported shape validated up front
(:mod:`embedtune.training_data`), a loss chosen by name or by the data (:mod:`embedtune.training.losses`),
batches without duplicate texts (a text must never be an in-batch negative of its own twin), dev
evaluation with the best checkpoint kept, checkpoints that survive a kill and ``resume`` that refuses
a different run, bf16 autocast where it is measured faster (:mod:`embedtune.training.autocast`), dev
evaluation held to a share of the run (:mod:`embedtune.training.progress`), an atomic output directory,
and a record of the run (resolved config, model card, ``metrics.jsonl``, a PNG of the curves).
What follows the data is decided once, before training, and said (:mod:`embedtune.training.plan`):
the training token length, the limit the saved model keeps (its base model's, not the training
length), the dev set (a held-out slice of the training queries when the data has none), the loss,
the schedule, the checkpoint interval and the precision; the trainer is built from that plan, and
the log, the record and the card say it. A kept model worse than its base on dev is written with a
warning.

Gradient accumulation averages gradients over several batches but does not add in-batch negatives:
each query still competes only with its own batch. For more negatives per query use a larger batch
with the ``cached-mnrl`` loss, whose memory stays bounded by its mini-batch.
"""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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
from embedtune.training.checkpoints import (
    CONFIG_FILE,
    last_good_checkpoint,
    machine_fault,
    open_run_dir,
    restore_finished,
    run_failures,
)
from embedtune.training.choices import Choice, base_limit
from embedtune.training.config import TrainConfig, metric_label
from embedtune.training.dev import DevEvaluator, trainer_evaluator
from embedtune.training.model_card import TRAIN_RECORD, RunRecord, card_facts, write_run_report
from embedtune.training.optim import layer_learning_rates
from embedtune.training.plan import RunPlan, plan_run
from embedtune.training.progress import StageClock, run_clock

if TYPE_CHECKING:
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from transformers import TrainerCallback

BASELINE_FILE = "baseline_metrics.json"
TENSORBOARD_DIR = "runs"  # where the trainer's TensorBoard callback writes, under the checkpoints folder


@dataclass
class TrainResult:
    """What :func:`train` did: ``rows`` is the number of training rows (of any format, after a held-out dev
    slice and with augmentation) its batches were drawn from; ``plan`` every decision of the run, the
    checkpoint interval as used."""

    output: Path
    steps: int
    rows: int
    seconds: float
    losses: list[tuple[int, float]]  # (step, mean training loss since the previous log)
    plan: RunPlan
    dev_before: dict[str, float] = field(default_factory=dict)
    dev_after: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per stage (setup, baseline, ...)

    @property
    def metric(self) -> str | None:
        """The trainer's key of the dev metric that picked the kept checkpoint (None: no dev set)."""
        return self.plan.metric

    @property
    def choices(self) -> Mapping[str, Choice]:
        """What was resolved for the user, and why."""
        return self.plan.choices

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


@dataclass
class _Setup:
    """What a run is made of, loaded and decided before any checkpoint folder is touched."""

    plan: RunPlan
    mixture: mixing.Mixture  # the rows, loss(es) and batch samplers the trainer gets: one dataset or several
    model: SentenceTransformer
    base_path: Path


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
    plan, dev = setup.plan, setup.plan.dev
    for line in plan.lines() if log is not None and distributed.is_main() else ():
        log(line)
    run_dir, checkpoint, fingerprint = distributed.on_main(
        lambda: open_run_dir(plan.config, base_path, plan.choices, plan.held_out)
    )
    clock.lap("setup")
    dev_before = {} if dev is None else distributed.on_main(lambda: _baseline(dev, setup.model, run_dir))
    clock.lap("baseline")
    baseline_seconds = dev.seconds if dev is not None else 0.0
    say = progress if distributed.is_main() else None
    timer = run_clock(dev, say, clock.started, space=not plan.interval_given)
    trainer = _trainer(setup, run_dir, [*callbacks, timer])
    if not restore_finished(trainer, checkpoint, best=dev is not None):
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    clock.lap("training")
    evaluating = (dev.seconds if dev is not None else 0.0) - baseline_seconds
    clock.seconds["training"] -= evaluating
    clock.seconds["dev evaluations"] = evaluating
    seconds = clock.seconds["training"] + evaluating
    history = trainer.state.log_history
    losses = [(int(e["step"]), float(e["loss"])) for e in history if "loss" in e]
    dev_after = _best_eval(history, plan.metric, trainer.state.best_global_step) if dev is not None else {}
    if timer.widened:  # the interval used is the one recorded
        step, every, why = timer.widened[-1]
        plan = plan.measured("checkpoint_steps", Choice(every, "measured", f"from step {step}: {why}"))
    steps = int(trainer.state.global_step)
    result = TrainResult(plan.config.output, steps, setup.mixture.rows, seconds, losses, plan, dev_before, dev_after)
    if result.worse_than_base and distributed.is_main():
        _warn_worse(result)
    if distributed.is_main():
        _warn_zero_loss(losses)
    trainer.model.max_seq_length = plan.inference_max_seq_length  # the limit it searches with

    def write() -> None:
        record = _record(setup, result, trainer.state.best_global_step, fingerprint, checkpoint, clock, timer.curve)
        _write_output(plan.config, trainer.model, run_dir, record, history)

    distributed.on_main(write)
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


def _write_output(config: TrainConfig, model, run_dir: Path, record: RunRecord, history: list) -> None:
    """The model, its record, config, card and plots, written to a temporary folder renamed to the output;
    then the checkpoints are removed unless kept.

    A full disk or read-only file system is one line naming the output (also where safetensors hides the
    ``OSError``), saying that the finished run stays in the checkpoints folder for a resume to write.
    """
    try:
        with atomic_directory(config.output, overwrite=config.overwrite or config.resume) as tmp:
            model.save(str(tmp))
            (tmp / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
            write_run_report(tmp, record, history, name=config.output.name)
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
    """Load the base model on every process; the run is planned once (rank 0) and its losses built on each."""
    model = load_model(base_path, device=distributed.device(), pooling=config.pooling, normalize=config.normalize)
    limit = base_limit(model)  # read before the training length replaces it
    if config.query_prompt or config.document_prompt:
        model.prompts = {k: v for k, v in (("query", config.query_prompt), ("document", config.document_prompt)) if v}
    freeze_layers(model, embeddings=config.freeze_embeddings, layers=config.freeze_layers)
    layer_learning_rates(model, model, 1.0, config.layer_lr_decay)  # a model without findable layers: refused now
    plan = distributed.on_main(lambda: plan_run(config, model, limit))
    model.max_seq_length = plan.max_seq_length
    params = plan.config.loss_params(gather_across_devices=distributed.world_size() > 1)
    mixture = mixing.Mixture.build(list(plan.parts), list(plan.losses), model, params, plan.config.mix)
    return _Setup(plan, mixture, model, base_path)


def _training_args(setup: _Setup, run_dir: Path) -> SentenceTransformerTrainingArguments:
    from sentence_transformers import SentenceTransformerTrainingArguments

    plan, mixture = setup.plan, setup.mixture
    config, dev, device = plan.config, plan.dev, str(setup.model.device)
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
        learning_rate_mapping=layer_learning_rates(mixture.losses[0], setup.model, config.learning_rate, decay),
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_drop_last=distributed.world_size() > 1,  # what the batch sampler does under DDP anyway
        bf16=plan.precision == "bf16",
        use_cpu=device == "cpu",
        batch_sampler=mixture.batch_sampler(config.length_window),  # NO_DUPLICATES, drawn by weight; DDP: sliced
        multi_dataset_batch_sampler=mixture.multi_dataset_batch_sampler(),  # several datasets: config.mix
        prompts=_column_prompts(config, mixture.text_columns),
        logging_first_step=True,
        logging_steps=max(1, min(10, plan.steps // 20)),
        eval_strategy="steps" if dev is not None else "no",
        eval_steps=config.checkpoint_steps,
        save_strategy="steps",
        save_steps=config.checkpoint_steps,
        save_total_limit=2,
        load_best_model_at_end=dev is not None,
        metric_for_best_model=plan.metric,
        greater_is_better=True,
        report_to=config.report_to,
        disable_tqdm=not config.show_progress,
    )


def _trainer(setup: _Setup, run_dir: Path, callbacks: Sequence[TrainerCallback]) -> SentenceTransformerTrainer:
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback

    patience, dev = setup.plan.config.early_stopping_patience, setup.plan.dev
    trainer = SentenceTransformerTrainer(
        model=setup.model,
        args=_training_args(setup, run_dir),
        train_dataset=setup.mixture.train_dataset,
        loss=setup.mixture.train_loss,
        evaluator=trainer_evaluator(dev) if dev is not None else None,
        callbacks=[*([EarlyStoppingCallback(patience)] if patience else []), *callbacks],
    )
    # Without bars the trainer prints each log dict on stdout instead, which is a program's result channel
    # (``train --json``); the logs are kept in metrics.jsonl either way.
    trainer.remove_callback(PrinterCallback)
    return trainer


def _record(
    setup: _Setup,
    result: TrainResult,
    best_step: int | None,
    fingerprint: str,
    checkpoint: Path | None,
    clock: StageClock,
    curve: list[dict[str, float]],
) -> RunRecord:
    """What the run was, chose and came to (``embedtune_train.json``); ``curve``: the dev metric at each
    evaluation, with the seconds since the run started."""
    plan, mixture = result.plan, setup.mixture
    config, loss = plan.config, mixture.losses[0]
    window = f", length window {config.length_window}" if config.length_window > 1 else ""
    return RunRecord(
        embedtune_version=__version__,
        config=config.identity(),
        base_model_path=str(setup.base_path),
        base_model_fingerprint=fingerprint,
        data_files={str(f): file_sha256(f) for f in mixture.files},
        data=mixture.describe(),
        loss=plan.losses[0].name,
        loss_module=type(loss).__name__,
        batch_sampler=f"NO_DUPLICATES{window}",
        sampling=mixture.record(),
        processes=distributed.world_size(),
        negatives_across_processes=distributed.world_size() > 1 and distributed.gathers(loss),
        precision=plan.precision,
        device=str(setup.model.device),
        rows=result.rows,
        steps=result.steps,
        dev_metric=plan.metric,
        choices=dict(plan.choices),
        dev_held_out_queries=list(plan.held_out),
        best_step=best_step,
        python=platform.python_version(),
        card=card_facts(setup.base_path, config.license, config.dataset_ids),
        resumed_from=str(checkpoint) if checkpoint else None,
        train_seconds=round(result.seconds, 1),
        timings=clock.record(),  # up to writing the output
        dev_evaluations=plan.dev.calls if plan.dev is not None else 0,
        dev_curve=curve,
        dev_before=result.dev_before,
        dev_after=result.dev_after,
        worse_than_base=result.worse_than_base,
        losses=result.losses,
    )


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
