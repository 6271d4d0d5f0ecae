"""Weighting rows by how hard the base model finds them (``weight_by="difficulty"``), once, before training.

A row the base model already gets right teaches little; a row it gets wrong teaches more. The
difficulty of a row is read off the base model's own embeddings: ``1 - cosine(query, positive)``
for pairs, triplets and n-tuples, ``|cosine(sentence1, sentence2) - score|`` for scored pairs
(score rescaled to 0..1). A row's weight is its difficulty over the mean difficulty, clipped to
``WEIGHT_RANGE``: the clip bounds how much the hardest rows can dominate, because the hardest rows
of mined or scraped data are often the mislabelled ones, which an unbounded weight would train on
most. The weight multiplies the data's own ``weight`` column, if any, and becomes the row's sampling
weight (:mod:`embedtune.training.sampling`). What was done is said as a
:class:`~embedtune.training.choices.Choice` in the log, the run record and the model card.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from embedtune.training.choices import Choice
from embedtune.training_data import WEIGHT, TrainingData

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer

WEIGHT_RANGE = (0.5, 2.0)  # difficulty weights, relative to the mean difficulty
BATCH_SIZE = 64


def difficulty(model: SentenceTransformer, data: TrainingData, precision: str, show_progress: bool) -> np.ndarray:
    """Each row's difficulty under ``model`` (see the module docstring)."""
    import numpy as np

    from embedtune.encoding import Encoder, prompt_names

    encoder = Encoder(model, precision)
    rows = data.dataset
    scored = data.format == "scored-pair"
    query_prompt, document_prompt = (None, None) if scored else prompt_names(encoder.model)
    first, second = data.text_columns[:2]

    options = {"batch_size": BATCH_SIZE, "show_progress": show_progress}  # the encoder encodes a text once
    a = encoder.encode(rows[first], prompt_name=query_prompt, desc=f"difficulty: {first}", **options)
    b = encoder.encode(rows[second], prompt_name=document_prompt, desc=f"difficulty: {second}", **options)
    cosine = (a * b).sum(axis=1)
    return np.abs(cosine - np.asarray(rows["label"])) if scored else 1.0 - cosine


def difficulty_weights(hardness: np.ndarray) -> np.ndarray:
    """Difficulty over its mean, clipped to ``WEIGHT_RANGE`` (all 1 when nothing is hard)."""
    import numpy as np

    hardness = np.clip(np.asarray(hardness, dtype=np.float64), 0.0, None)
    mean = float(hardness.mean()) if len(hardness) else 0.0
    if mean <= 0:
        return np.ones_like(hardness)
    return np.clip(hardness / mean, *WEIGHT_RANGE)


def weigh_by_difficulty(
    model: SentenceTransformer, data: TrainingData, precision: str, show_progress: bool
) -> tuple[TrainingData, Choice]:
    """``data`` with its ``weight`` column multiplied by difficulty weights, and the choice in words."""
    import numpy as np

    weights = difficulty_weights(difficulty(model, data, precision, show_progress))
    low, high = WEIGHT_RANGE
    clipped = int(((weights <= low) | (weights >= high)).sum())
    given = data.weights
    combined = weights * np.asarray(given) if given is not None else weights
    dataset = data.dataset.remove_columns(WEIGHT) if given is not None else data.dataset
    dataset = dataset.add_column(WEIGHT, combined.tolist())
    rule = "1 - cosine(query, positive)" if data.format != "scored-pair" else "|cosine(sentence1, sentence2) - score|"
    why = (
        f"{rule} under the base model, over its mean, clipped to {low:g}..{high:g} ({clipped} of {len(weights)} "
        f"rows at a bound)" + ("; times the data's weight column" if given is not None else "")
    )
    return dataclasses.replace(data, dataset=dataset), Choice("difficulty", "given", why)
