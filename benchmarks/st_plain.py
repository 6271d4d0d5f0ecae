"""The peer: the sentence-transformers training script a practitioner would write by hand.

MultipleNegativesRankingLoss, batch 32, lr 2e-5, the NO_DUPLICATES batch sampler, the model's own
max_seq_length and fp32 (the trainer's defaults), on the same (query, positive) pairs embedtune
trains on. The benchmarks import :func:`train_plain`; run as a script it trains one model:

    python benchmarks/st_plain.py --output models/st-plain --max-steps 200 [--data DIR] [--max-seq-length 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from embedtune.data import default_data_dir
from embedtune.models import resolve_model_path
from embedtune.training_data import load_training_data


def train_plain(
    output: Path,
    *,
    max_steps: int,
    data: Path | None = None,
    max_seq_length: int | None = None,
    callbacks: list | None = None,
) -> float:
    """Train the hand-written way; return the trainer's wall time in seconds."""
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    pairs = load_training_data(data or default_data_dir()).dataset  # the same pairs embedtune reads
    model = SentenceTransformer(str(resolve_model_path("default")))
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    with tempfile.TemporaryDirectory() as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            max_steps=max_steps,
            per_device_train_batch_size=32,
            learning_rate=2e-5,
            warmup_steps=0.1,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            save_strategy="no",
            report_to="none",
            logging_steps=10,
            seed=42,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=pairs,
            loss=MultipleNegativesRankingLoss(model),
            callbacks=callbacks or [],
        )
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    model.save(str(output))
    return seconds


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--max-steps", type=int, required=True)
    parser.add_argument("--max-seq-length", type=int, default=None)
    parser.add_argument("--data", type=Path, default=None, help="training data (default: the bundled Debian set)")
    a = parser.parse_args()
    seconds = train_plain(a.output, max_steps=a.max_steps, data=a.data, max_seq_length=a.max_seq_length)
    print(f"trained in {seconds:.0f} s")
