"""What a run chose for the user, and why: the :class:`Choice` every decision is said as, and the text lengths.

A default that does not follow the data fails silently: a fixed 128-token cut trains on the first
hundred words of every long document, and saving that cut as the model's limit makes the fine-tuned
model search with less text than its base model did. So two lengths are kept apart:

* the *training* length is ``max_seq_length`` when given, else read off the data: the token lengths
  (the model's own tokenizer, prompts included) of a seeded sample of queries and, separately, of
  documents, at the 95th percentile, rounded up to a multiple of 8, at least 32, at most the base
  model's limit;
* the *inference* length saved with the model is ``inference_max_seq_length`` when given, else the
  base model's limit (or the training length, when that was set higher).

Each resolved value is a :class:`Choice` with where it came from, which the run's plan
(:mod:`embedtune.training.plan`) gathers for the log, the run record and the model card, and which a
resume must resolve to again (:mod:`embedtune.training.checkpoints`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from embedtune.training.config import TrainConfig
    from embedtune.training_data import TrainingData

SAMPLE_TEXTS = 2000  # texts per role whose token lengths are counted
PERCENTILE = 95
LENGTH_STEP = 8
MIN_LENGTH = 32
FALLBACK_LIMIT = 512  # a model that states no limit at all


@dataclass(frozen=True)
class Choice:
    """A resolved setting: its value, ``source`` (``given``, ``data``, ``base model``, ...) and why, in words."""

    value: Any
    source: str
    why: str

    def line(self, name: str) -> str:
        return f"{name}: {self.value} ({self.source}: {self.why})"


def base_limit(model: SentenceTransformer) -> int:
    """The base model's token limit as loaded (its tokenizer's, capped by its position embeddings)."""
    limit = model.max_seq_length
    return int(limit) if limit else FALLBACK_LIMIT


def choose_lengths(
    config: TrainConfig, model: SentenceTransformer, data: TrainingData, limit: int
) -> dict[str, Choice]:
    """The training length and the inference length of this run (``limit``: the base model's)."""
    if config.max_seq_length is not None:
        training = Choice(config.max_seq_length, "given", "max_seq_length")
    else:
        training = _from_data(config, model, data, limit)
    if config.inference_max_seq_length is not None:
        inference = Choice(config.inference_max_seq_length, "given", "inference_max_seq_length")
    elif training.value > limit:
        inference = Choice(training.value, "training length", f"trained on more than the base model's {limit}")
    else:
        inference = Choice(limit, "base model", "the base model's limit, whatever the training length")
    return {"max_seq_length": training, "inference_max_seq_length": inference}


def _from_data(config: TrainConfig, model: SentenceTransformer, data: TrainingData, limit: int) -> Choice:
    """The 95th percentile of the sampled token lengths of each role, the larger of the two, rounded."""
    rows = data.dataset
    rng = random.Random(config.seed)
    picked = rows.select(sorted(rng.sample(range(len(rows)), min(len(rows), SAMPLE_TEXTS))))
    first, *others = data.text_columns
    query_prompt = config.query_prompt if first == "anchor" else None
    queries = picked[first]
    documents = [text for column in others for text in picked[column]]
    if len(documents) > SAMPLE_TEXTS:
        documents = rng.sample(documents, SAMPLE_TEXTS)
    roles = {"queries": (queries, query_prompt), "documents": (documents, config.document_prompt)}
    if data.format == "scored-pair":
        roles = {"first sentences": roles["queries"], "second sentences": roles["documents"]}
    found = {role: _percentile(model, texts, prompt, limit) for role, (texts, prompt) in roles.items()}
    longest = max(found.values())
    value = min(limit, max(MIN_LENGTH, LENGTH_STEP * math.ceil(longest / LENGTH_STEP)))
    counted = ", ".join(f"{role} {n}" for role, n in found.items())
    return Choice(
        value,
        "data",
        f"{PERCENTILE}th percentile of token lengths: {counted} (seeded sample of up to {SAMPLE_TEXTS} each), "
        f"rounded up to a multiple of {LENGTH_STEP}, at least {MIN_LENGTH}, at most the base model's {limit}",
    )


def _percentile(model: SentenceTransformer, texts: list[str], prompt: str | None, limit: int) -> int:
    """The token length (special tokens included) of ``texts`` at ``PERCENTILE``, counted up to ``limit``."""
    if not texts:
        return 0
    import numpy as np

    texts = [prompt + t for t in texts] if prompt else list(texts)
    ids = model.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
    return int(np.percentile([len(i) for i in ids], PERCENTILE, method="higher"))
