"""Fine-tuning an encoder into a sentence embedder, on top of the sentence-transformers trainer.

What this adds to a hand-written trainer script: data of any supported shape validated up front
(:mod:`embedtune.training_data`), a loss chosen by name or by the data (:mod:`embedtune.losses`),
batches without duplicate texts (a text must never be an in-batch negative of its own twin), dev
evaluation with the best checkpoint kept, checkpoints that survive a kill and ``resume`` that refuses
a different run, bf16 autocast where the CPU/GPU has native bf16 units, an atomic output directory,
and a record of the run (resolved config, model card, ``metrics.jsonl``, a PNG of the curves).

Gradient accumulation averages gradients over several batches but does not add in-batch negatives:
each query still competes only with its own batch. For more negatives per query use a larger batch
with the ``cached-mnrl`` loss, whose memory stays bounded by its mini-batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtune import __version__
from embedtune.data import default_data_dir
from embedtune.dev_evaluation import build_dev_evaluator
from embedtune.encoding import TRAIN_PRECISIONS, resolve_training_precision
from embedtune.errors import EmbedtuneError
from embedtune.io import atomic_directory, check_destination, file_sha256, write_text_atomic
from embedtune.losses import LossParams, build_loss, resolve_loss
from embedtune.model_card import write_run_report
from embedtune.models import freeze_layers, load_model, model_fingerprint, resolve_model_path
from embedtune.training_data import load_training_data

if TYPE_CHECKING:
    from transformers import TrainerCallback

TRAIN_RECORD = "embedtune_train.json"
CONFIG_FILE = "train_config.yaml"
BASELINE_FILE = "baseline_metrics.json"
CHECKPOINTS_SUFFIX = ".checkpoints"
# Fields that say how to run, not what to train: they may differ between a run and its resume.
RUN_OPTIONS = ("output", "overwrite", "resume", "keep_checkpoints", "show_progress")
# By default dev evaluations may cost at most this share of the training compute.
DEV_COST_SHARE = 0.1


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved resolved with the model so it can be repeated.

    ``temperature`` is the softmax temperature of the in-batch and CoSENT-style losses (0.05 is
    sentence-transformers' scale 20). ``max_steps`` overrides ``epochs``. ``checkpoint_steps`` is how
    often the dev set is evaluated and a checkpoint saved (default: see :func:`eval_interval`).
    ``pooling``/``normalize`` apply only to plain Hugging Face checkpoints, which have no pooling yet.
    """

    output: Path
    model: str = "default"
    data: Path = field(default_factory=default_data_dir)
    split: str = "train"
    score_range: tuple[float, float] | None = None
    loss: str = "auto"
    temperature: float = 0.05
    mini_batch_size: int = 32
    triplet_margin: float = 0.1
    matryoshka_dims: tuple[int, ...] | None = None
    pooling: str | None = None
    normalize: bool = True
    query_prompt: str | None = None
    document_prompt: str | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_seq_length: int | None = 128
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    dev: bool = True
    dev_data: Path | None = None
    dev_split: str = "dev"
    dev_queries: int = 500
    dev_corpus: int = 5000
    metric: str = "auto"
    checkpoint_steps: int | None = None
    early_stopping_patience: int | None = None
    seed: int = 42
    precision: str = "auto"
    overwrite: bool = False
    resume: bool = False
    keep_checkpoints: bool = False
    show_progress: bool = True

    def __post_init__(self) -> None:
        for name in ("output", "data", "dev_data"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))
        if self.score_range is not None:
            self.score_range = tuple(float(x) for x in self.score_range)
        if self.matryoshka_dims is not None:
            self.matryoshka_dims = tuple(int(x) for x in self.matryoshka_dims)
        if self.precision not in TRAIN_PRECISIONS:  # refuse int8/fp16 before any mining or loading
            resolve_training_precision(self.precision, "cpu")

    @classmethod
    def from_yaml(cls, path: Path, **overrides: Any) -> TrainConfig:
        """Read a YAML config; ``overrides`` (e.g. CLI options the user gave) win over the file."""
        import yaml

        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise EmbedtuneError(f"{path}: cannot read config ({str(e).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise EmbedtuneError(f"{path}: expected a mapping of option: value")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise EmbedtuneError(f"{path}: unknown option '{key}' (known: {', '.join(sorted(known))})")
        merged = {**values, **overrides}
        if "output" not in merged:
            raise EmbedtuneError(f"{path}: no 'output' (give it in the file or with --output)")
        try:
            return cls(**merged)
        except (TypeError, ValueError) as e:
            raise EmbedtuneError(f"{path}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (str paths, lists), as written to YAML/JSON."""
        out = {}
        for key, value in asdict(self).items():
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    def identity(self) -> dict[str, Any]:
        """The fields that make two runs the same run (what ``resume`` must match)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_OPTIONS}

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


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

    def mean_loss(self, start: float, end: float) -> float:
        """Mean logged loss over steps in ``(start, end]`` (fractions of the run).

        One 10-step window of in-batch loss is too noisy to compare; windows of a fifth of the run
        (e.g. ``mean_loss(0, 0.2)`` against ``mean_loss(0.8, 1)``) show the trend.
        """
        window = [loss for step, loss in self.losses if start * self.steps < step <= end * self.steps]
        return sum(window) / len(window) if window else float("nan")


def checkpoints_dir(output: Path) -> Path:
    """Where a run keeps its checkpoints: beside the output, which only appears once training is done."""
    output = Path(output)
    return output.with_name(output.name + CHECKPOINTS_SUFFIX)


def last_good_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint that was completely written; incomplete ones (a kill mid-save) are removed.

    The Hugging Face trainer writes ``trainer_state.json`` last, so a checkpoint is complete when
    that file parses.
    """
    good: list[tuple[int, Path]] = []
    for path in run_dir.glob("checkpoint-*"):
        try:
            step = int(path.name.rsplit("-", 1)[1])
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (ValueError, OSError):
            shutil.rmtree(path, ignore_errors=True)
            continue
        good.append((step, path))
    return max(good)[1] if good else None


def _prepare_run_dir(config: TrainConfig) -> tuple[Path, Path | None]:
    """Create or reopen the checkpoints folder; return it and the checkpoint to resume from."""
    run_dir = checkpoints_dir(config.output)
    saved = run_dir / CONFIG_FILE
    if config.resume:
        if not saved.is_file():
            raise EmbedtuneError(f"{run_dir}: no run to resume (start it without --resume)")
        import yaml

        before = TrainConfig(**yaml.safe_load(saved.read_text(encoding="utf-8"))).identity()
        changed = [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in config.identity().items() if before.get(k) != v]
        if changed:
            raise EmbedtuneError(f"{run_dir}: cannot resume a different run ({'; '.join(changed)})")
        checkpoint = last_good_checkpoint(run_dir)
        if checkpoint is None:
            raise EmbedtuneError(f"{run_dir}: no complete checkpoint to resume from yet (start again with --overwrite)")
        return run_dir, checkpoint
    if run_dir.exists():
        if not config.overwrite:
            raise EmbedtuneError(
                f"{run_dir}: checkpoints of an earlier run exist; "
                "pass --resume to continue it or --overwrite to restart"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    write_text_atomic(saved, config.to_yaml())
    return run_dir, None


def _planned_steps(config: TrainConfig, rows: int) -> int:
    if config.max_steps is not None:
        return config.max_steps
    per_epoch = math.ceil(math.ceil(rows / config.batch_size) / config.gradient_accumulation_steps)
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


def _check_base_model(config: TrainConfig, base_path: Path, run_dir: Path) -> str:
    """Fingerprint the base model; on resume it must be the model the checkpoints were made from."""
    fingerprint = model_fingerprint(base_path)
    marker = run_dir / "base_model.sha256"
    if config.resume and marker.is_file() and marker.read_text().strip() != fingerprint:
        raise EmbedtuneError(f"{base_path}: the checkpoints in {run_dir} were trained from a different model")
    if not marker.is_file():
        write_text_atomic(marker, fingerprint + "\n")
    return fingerprint


def train(config: TrainConfig, *, callbacks: Sequence[TrainerCallback] = ()) -> TrainResult:
    """Fine-tune ``config.model`` on ``config.data`` and write the model to ``config.output``.

    The output appears only once training has finished; until then the previous contents (if any)
    stay in place, and checkpoints accumulate in ``<output>.checkpoints`` so that a killed run can
    be continued with ``resume=True``. ``callbacks`` are extra Hugging Face trainer callbacks.
    """
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import EarlyStoppingCallback
    from transformers.utils import logging as hf_logging

    # Checkpoint rotation warns that mtime "may not be reliable" on many filesystems: noise here.
    hf_logging.get_logger("transformers.trainer_utils").setLevel(hf_logging.ERROR)

    output = Path(config.output)
    if not config.resume:
        check_destination(output, config.overwrite)
    data = load_training_data(config.data, split=config.split, score_range=config.score_range)
    spec = resolve_loss(config.loss, data)
    params = LossParams(config.temperature, config.mini_batch_size, config.triplet_margin, config.matryoshka_dims)
    base_path = resolve_model_path(config.model)
    model = load_model(
        base_path, max_seq_length=config.max_seq_length, pooling=config.pooling, normalize=config.normalize
    )
    if config.query_prompt or config.document_prompt:
        model.prompts = {k: v for k, v in (("query", config.query_prompt), ("document", config.document_prompt)) if v}
    freeze_layers(model, embeddings=config.freeze_embeddings, layers=config.freeze_layers)
    loss = build_loss(spec, model, params)
    precision = resolve_training_precision(config.precision, str(model.device))
    dataset = (
        data.dataset
        if spec.uses_label or "label" not in data.dataset.column_names
        else data.dataset.remove_columns("label")
    )
    dev, metric = build_dev_evaluator(config, data, precision) if config.dev else (None, None)

    run_dir, checkpoint = _prepare_run_dir(config)
    fingerprint = _check_base_model(config, base_path, run_dir)
    dev_before = _baseline(dev, model, run_dir) if dev is not None else {}
    steps = _planned_steps(config, len(dataset))
    every = eval_interval(config, steps, len(data.text_columns), dev.texts if dev is not None else None)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(run_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        bf16=precision == "bf16",
        use_cpu=str(model.device) == "cpu",
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        prompts=_column_prompts(config, data.text_columns),
        logging_first_step=True,
        logging_steps=max(1, min(10, steps // 20)),
        eval_strategy="steps" if dev is not None else "no",
        eval_steps=every,
        save_strategy="steps",
        save_steps=every,
        save_total_limit=2,
        load_best_model_at_end=dev is not None,
        metric_for_best_model=metric,
        greater_is_better=True,
        report_to="none",
        disable_tqdm=not config.show_progress,
    )
    stoppers = [EarlyStoppingCallback(config.early_stopping_patience)] if config.early_stopping_patience else []
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss, evaluator=dev, callbacks=[*stoppers, *callbacks]
    )
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    history = trainer.state.log_history
    losses = [(int(e["step"]), float(e["loss"])) for e in history if "loss" in e]
    dev_after = _best_eval(history, metric, trainer.state.best_global_step) if dev is not None else {}
    steps_done = int(trainer.state.global_step)

    record = {
        "embedtune_version": __version__,
        "config": config.identity(),
        "base_model_path": str(base_path),
        "base_model_fingerprint": fingerprint,
        "data_files": {str(f): file_sha256(f) for f in data.files},
        "data": data.describe(),
        "loss": spec.name,
        "loss_module": type(loss).__name__,
        "batch_sampler": "NO_DUPLICATES",
        "precision": precision,
        "device": str(model.device),
        "rows": len(dataset),
        "steps": steps_done,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "train_seconds": round(seconds, 1),
        "dev_metric": metric,
        "dev_before": dev_before,
        "dev_after": dev_after,
        "best_step": trainer.state.best_global_step,
        "losses": losses,
        "python": platform.python_version(),
    }
    with atomic_directory(output, overwrite=config.overwrite or config.resume) as tmp:
        trainer.model.save(str(tmp))
        (tmp / TRAIN_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(config.to_yaml(), encoding="utf-8")
        write_run_report(tmp, record, history, dev_before)
    if not config.keep_checkpoints:
        shutil.rmtree(run_dir, ignore_errors=True)
    return TrainResult(output, steps_done, len(dataset), seconds, losses, dev_before, dev_after, metric)


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
