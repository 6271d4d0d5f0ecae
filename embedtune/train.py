"""Fine-tuning an encoder into a sentence embedder with in-batch negatives.

Built on the sentence-transformers trainer (which in turn is the Hugging Face trainer), adding what
a hand-written script leaves to the user: validated data, a duplicate-free batch sampler (a text
must never be an in-batch negative of its own twin), bf16 autocast where the hardware has native
bf16 units, an atomic output directory and a record of how the model was made.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from embedtune import __version__
from embedtune.atomic import atomic_directory, check_destination
from embedtune.data import default_data_dir, load_training_pairs, training_data_files
from embedtune.encoding import resolve_precision
from embedtune.hashing import file_sha256
from embedtune.models import load_model, model_fingerprint, resolve_model_path

TRAIN_RECORD = "embedtune_train.json"


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved with the model so the run can be repeated.

    ``scale`` is the inverse temperature of the in-batch softmax (20 = temperature 0.05, the value
    sentence-transformers and most retrieval papers use). ``max_steps`` overrides ``epochs``.
    """

    output: Path
    model: str = "default"
    data: Path = field(default_factory=default_data_dir)
    split: str = "train"
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    max_seq_length: int | None = 128
    scale: float = 20.0
    seed: int = 42
    precision: str = "auto"
    overwrite: bool = False
    show_progress: bool = True


@dataclass
class TrainResult:
    output: Path
    steps: int
    pairs: int
    seconds: float
    losses: list[tuple[int, float]]  # (step, mean training loss since the previous log)

    def mean_loss(self, start: float, end: float) -> float:
        """Mean logged loss over steps in ``(start, end]`` (fractions of the run).

        One 10-step window of in-batch loss is too noisy to compare; windows of a fifth of the run
        (e.g. ``mean_loss(0, 0.2)`` against ``mean_loss(0.8, 1)``) show the trend.
        """
        window = [loss for step, loss in self.losses if start * self.steps < step <= end * self.steps]
        return sum(window) / len(window) if window else float("nan")


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune ``config.model`` on query/positive pairs with MultipleNegativesRankingLoss.

    The model is written to ``config.output`` only once training has finished; until then the
    previous contents (if any) stay in place.
    """
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    output = Path(config.output)
    check_destination(output, config.overwrite)
    base_path = resolve_model_path(config.model)
    pairs = load_training_pairs(Path(config.data), config.split)
    model = load_model(base_path, max_seq_length=config.max_seq_length)
    precision = resolve_precision(config.precision, str(model.device))
    loss = MultipleNegativesRankingLoss(model, scale=config.scale)

    with tempfile.TemporaryDirectory(prefix="embedtune-trainer-") as trainer_dir:
        args = SentenceTransformerTrainingArguments(
            output_dir=trainer_dir,
            num_train_epochs=config.epochs,
            max_steps=config.max_steps if config.max_steps is not None else -1,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            warmup_steps=config.warmup_ratio,
            seed=config.seed,
            data_seed=config.seed,
            bf16=precision == "bf16",
            use_cpu=str(model.device) == "cpu",
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            logging_first_step=True,
            logging_steps=10,
            save_strategy="no",
            report_to="none",
            disable_tqdm=not config.show_progress,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=pairs, loss=loss)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        losses = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
        steps = int(trainer.state.global_step)

    record = {
        "embedtune_version": __version__,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "base_model_path": str(base_path),
        "base_model_fingerprint": model_fingerprint(base_path),
        "data_files": {str(f): file_sha256(f) for f in training_data_files(Path(config.data), config.split)},
        "loss": f"MultipleNegativesRankingLoss(scale={config.scale})",
        "batch_sampler": "NO_DUPLICATES",
        "precision": precision,
        "device": str(model.device),
        "pairs": len(pairs),
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "losses": losses,
        "python": platform.python_version(),
    }
    with atomic_directory(output, overwrite=config.overwrite) as tmp:
        model.save(str(tmp))
        (tmp / TRAIN_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return TrainResult(output, steps, len(pairs), seconds, losses)
