"""Several training datasets in one run (``data`` plus ``more_data``): each loaded, checked and given its loss.

Datasets of different shapes train together — a BEIR folder of (query, document) pairs with a file
of STS scored pairs — so each is read and validated on its own (:func:`embedtune.training_data.load_training_data`),
each gets the loss its data picks, or the one ``loss`` named for all (refused, naming the dataset,
where it does not fit), and they meet only in the trainer, as a ``DatasetDict`` whose batches each
come from one dataset (:mod:`embedtune.training.sampling`). The dev set comes from the first dataset
alone (its dev split, ``dev_data``, or a slice held out of it); the training token length is read
off the first dataset too. A run with one dataset is exactly the single-dataset run: a plain
``Dataset`` and one loss.

:class:`Mixture` is what the trainer is handed (rows, loss or losses, batch samplers) and what the
run record says about it; the weight column is taken out here, so no loss sees it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtune.errors import EmbedtuneError
from embedtune.training.choices import Choice
from embedtune.training.losses import LossParams, LossSpec, build_loss, resolve_loss
from embedtune.training.sampling import BatchSamplers, MultiDatasetSampler, epoch_rows
from embedtune.training_data import WEIGHT, TrainingData, load_training_data

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer
    from torch import nn

    from embedtune.training.config import TrainConfig


@dataclass
class Part:
    """One training dataset of a run: a name (the trainer's dataset key), where it came from, its rows."""

    name: str
    source: Path
    data: TrainingData


def part_names(sources: list[Path]) -> list[str]:
    """Distinct, readable dataset keys: the file or folder names, numbered where two are the same."""
    names = [Path(s).name.split(".")[0] or f"data{i}" for i, s in enumerate(sources, start=1)]
    return [f"{i}-{n}" if names.count(n) > 1 else n for i, n in enumerate(names, start=1)]


def load_more(config: TrainConfig) -> list[Part]:
    """The ``more_data`` datasets, each loaded and validated on its own (the first is loaded by the run)."""
    sources = [config.data, *config.more_data]
    names = part_names(sources)
    return [
        Part(name, Path(source), load_training_data(source, split=config.split, score_range=config.score_range))
        for name, source in zip(names[1:], sources[1:], strict=True)
    ]


def first_part(config: TrainConfig, data: TrainingData) -> Part:
    return Part(part_names([config.data, *config.more_data])[0], Path(config.data), data)


def resolve_losses(config: TrainConfig, parts: list[Part]) -> list[LossSpec]:
    """Each dataset's loss: ``config.loss`` for all, or what each one's data picks."""
    specs = []
    for part in parts:
        try:
            specs.append(resolve_loss(config.loss, part.data))
        except EmbedtuneError as e:
            if len(parts) == 1:
                raise
            raise EmbedtuneError(f"{part.source}: {e}") from e
    return specs


def weigh(
    config: TrainConfig,
    parts: list[Part],
    first: TrainingData,
    by_difficulty: Callable[[TrainingData], tuple[TrainingData, Choice]],
) -> tuple[list[Part], dict[str, Choice]]:
    """The parts with the first one's rows replaced by ``first`` (the training rows left after the dev
    slice), weighted by difficulty when ``config.weight_by`` asks, and the ``weights`` choice (none
    when no dataset is weighted)."""
    parts = [dataclasses.replace(parts[0], data=first), *parts[1:]]
    if config.weight_by == "difficulty":
        done = [by_difficulty(p.data) for p in parts]
        parts = [dataclasses.replace(p, data=d) for p, (d, _) in zip(parts, done, strict=True)]
        whys = [c.why if len(parts) == 1 else f"{p.name}: {c.why}" for p, (_, c) in zip(parts, done, strict=True)]
        return parts, {"weights": Choice("difficulty", "given", "; ".join(whys))}
    weighted = [p.name for p in parts if p.data.weights is not None]
    if not weighted:
        return parts, {}
    where = "" if len(parts) == 1 else f" ({', '.join(weighted)})"
    why = f"the data's weight column{where}: rows drawn with probability proportional to their weight"
    return parts, {"weights": Choice("weight column", "data", why)}


def choices(config: TrainConfig, parts: list[Part], specs: list[LossSpec]) -> dict[str, Choice]:
    """The loss and, with several datasets, the mix, as said in the log, record and model card."""
    how = "data" if config.loss == "auto" else "given"
    if len(parts) == 1:
        reason = f"auto: {parts[0].data.format} rows" if config.loss == "auto" else "loss"
        return {"loss": Choice(specs[0].name, how, reason)}
    each = ", ".join(f"{p.name}: {s.name}" for p, s in zip(parts, specs, strict=True))
    sizes = ", ".join(f"{p.name} {len(p.data.dataset)} {p.data.format}s" for p in parts)
    rows = epoch_rows(config.mix, [len(p.data.dataset) for p in parts])
    return {
        "loss": Choice(each, how, "each dataset's format" if how == "data" else "loss, for every dataset"),
        "mix": Choice(
            config.mix,
            "given" if config.mix != "proportional" else "default",
            f"{len(parts)} datasets ({sizes}); a batch comes from one dataset; {rows} rows an epoch; "
            f"the dev set comes from the first dataset, {parts[0].name}",
        ),
    }


@dataclass
class Mixture:
    """The datasets of a run as the trainer takes them, with one built loss per dataset."""

    parts: list[Part]
    specs: list[LossSpec]
    losses: list[nn.Module]
    mix: str = "proportional"
    _datasets: list[Dataset] = dataclasses.field(default_factory=list, repr=False)

    @classmethod
    def build(cls, parts: list[Part], specs: list[LossSpec], model: SentenceTransformer, params: LossParams, mix: str):
        losses = [build_loss(spec, model, params) for spec in specs]
        return cls(parts, specs, losses, mix, [_trainer_rows(p.data, s) for p, s in zip(parts, specs, strict=True)])

    @property
    def rows(self) -> int:
        return sum(len(d) for d in self._datasets)

    @property
    def train_dataset(self) -> Dataset | DatasetDict:
        if len(self.parts) == 1:
            return self._datasets[0]
        from datasets import DatasetDict

        return DatasetDict({p.name: d for p, d in zip(self.parts, self._datasets, strict=True)})

    @property
    def train_loss(self) -> nn.Module | dict[str, nn.Module]:
        if len(self.parts) == 1:
            return self.losses[0]
        return {p.name: loss for p, loss in zip(self.parts, self.losses, strict=True)}

    def batch_sampler(self, length_window: int = 0) -> BatchSamplers:
        """The trainer's batch sampler function; ``length_window`` > 1 batches rows of similar length."""
        weighted = [(d, p.data.weights) for p, d in zip(self.parts, self._datasets, strict=True)]
        return BatchSamplers(weighted, length_window=length_window)

    def multi_dataset_batch_sampler(self):
        return MultiDatasetSampler(self.mix)

    @property
    def text_columns(self) -> list[str]:
        """Every dataset's text columns, each once, in order of appearance."""
        return list(dict.fromkeys(c for p in self.parts for c in p.data.text_columns))

    @property
    def files(self) -> list[Path]:
        return [f for p in self.parts for f in p.data.files]

    def describe(self) -> str:
        if len(self.parts) == 1:
            return self.parts[0].data.describe()
        return " + ".join(f"{p.name}: {p.data.describe()}" for p in self.parts)

    def record(self) -> dict[str, Any]:
        """The run record's account of the datasets, their losses and weights, and how batches are drawn."""
        return {
            "mix": self.mix if len(self.parts) > 1 else None,
            "datasets": [
                {
                    "name": p.name,
                    "source": str(p.source),
                    "rows": len(d),
                    "format": p.data.format,
                    "loss": s.name,
                    "weighted": p.data.weights is not None,
                }
                for p, s, d in zip(self.parts, self.specs, self._datasets, strict=True)
            ],
        }


def _trainer_rows(data: TrainingData, spec: LossSpec) -> Dataset:
    """The rows the trainer sees: without the weight column, and without a label the loss does not use."""
    drop = [WEIGHT] if WEIGHT in data.dataset.column_names else []
    if not spec.uses_label and "label" in data.dataset.column_names:
        drop.append("label")
    return data.dataset.remove_columns(drop) if drop else data.dataset
