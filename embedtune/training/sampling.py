"""How training rows are drawn into batches: per-row weights, and several datasets in one run.

**Weights.** A row's ``weight`` (a data column, or difficulty weighting, :mod:`embedtune.training.weighting`)
is honoured by *drawing*: each epoch draws as many rows as the dataset has, with replacement, each
with probability proportional to its weight, seeded by ``seed`` and the epoch. In expectation a
row of weight 3 contributes three times the gradient of a row of weight 1, which is what a weighted
loss would do. Sampling is chosen over weighting the loss because it applies to every loss
uniformly: sentence-transformers' losses (MNRL and its cached and symmetric variants, CoSENT, AnglE,
MarginMSE, triplet, Matryoshka around any of them) return one reduced number per batch and take no
per-sample weights, so a weighted loss would mean re-implementing each of them; and for the in-batch
losses a row is also a negative of the others, which a per-row factor on the loss would not weigh.
The drawn rows are batched by the duplicate-free sampler as before
(:func:`embedtune.training.distributed.batch_sampler`), so no text appears twice in a batch — a row
drawn twice goes to two batches — and under DDP the drawn epoch is cut into the same global batches
and per-process slices as unweighted rows.

**Several datasets.** sentence-transformers trains a ``DatasetDict`` with one batch sampler per
dataset and a multi-dataset sampler that picks which dataset the next batch comes from
(``proportional``: every batch of every dataset once per epoch, in a seeded random order;
``round-robin``: one batch of each in turn, until the smallest runs out). A batch never mixes
datasets, so each batch has one format and one loss. Under DDP the per-dataset samplers yield each
global batch as N consecutive slices; :class:`MultiDatasetSampler` picks datasets per *global*
batch, so all processes train on the same dataset (and loss) in a step, as the all-gather of the
in-batch losses needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import embedtune.training.distributed as distributed
from embedtune.errors import EmbedtuneError

if TYPE_CHECKING:
    from datasets import Dataset
    from torch import Generator

MIXES = ("proportional", "round-robin")


class WeightedBatchSampler:
    """Each epoch: ``len(dataset)`` rows drawn with probability proportional to ``weights`` (with
    replacement, seeded by ``seed`` and the epoch), batched by ``batches`` (a duplicate-free batch
    sampler factory over a dataset), indices mapped back to ``dataset``'s rows."""

    def __init__(
        self, dataset: Dataset, weights: Sequence[float], batches: Callable[[Dataset], object], seed: int
    ) -> None:
        import numpy as np

        if len(weights) != len(dataset):
            raise EmbedtuneError(f"{len(weights)} weights for {len(dataset)} rows")
        w = np.asarray(weights, dtype=np.float64)
        if not (np.isfinite(w).all() and (w > 0).all()):
            raise EmbedtuneError("weights must be finite numbers above 0")
        self.dataset, self.batches, self.seed, self.epoch = dataset, batches, seed, 0
        self.probabilities = w / w.sum()
        self._shape = batches(dataset)  # the same row count gives the same length, batch size, drop_last
        self.batch_size = self._shape.batch_size
        self.drop_last = self._shape.drop_last

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._shape)

    def draw(self, epoch: int) -> list[int]:
        """The row indices of ``epoch``'s draw (as many as there are rows, repeats allowed)."""
        import numpy as np

        rng = np.random.default_rng([self.seed, epoch])
        return rng.choice(len(self.probabilities), size=len(self.probabilities), p=self.probabilities).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        drawn = self.draw(self.epoch)
        inner = self.batches(self.dataset.select(drawn))
        inner.set_epoch(self.epoch)
        for batch in inner:
            yield [drawn[i] for i in batch]


class BatchSamplers:
    """The trainer's ``batch_sampler`` function: the duplicate-free sampler of
    :mod:`embedtune.training.distributed`, drawing by weight for a dataset that has weights.

    ``weighted`` pairs each trainer dataset object with its weights (None: unweighted). The trainer
    calls this once per dataset of a ``DatasetDict``, with the dataset object it was given, which is
    how the weights are found (they are not a column the trainer sees).
    """

    def __init__(self, weighted: Sequence[tuple[Dataset, Sequence[float] | None]] = ()) -> None:
        self.weighted = list(weighted)

    def __reduce__(self):
        # The trainer pickles its arguments into every checkpoint (training_args.bin, read by no resume):
        # keep the rows and weights out of it; a resumed run reads them from the data again.
        return (type(self), ())

    def __call__(self, dataset: Dataset, batch_size: int, drop_last: bool, **options: Any):
        """``options``: the rest of sentence-transformers' batch sampler call (valid_label_columns, generator, seed)."""
        weights = next((w for d, w in self.weighted if d is dataset), None)
        if weights is None:
            return distributed.batch_sampler(dataset, batch_size, drop_last, **options)
        if options.get("generator") is None:  # the duplicate-free sampler seeds it with seed + epoch
            import torch

            options["generator"] = torch.Generator()

        def batches(rows: Dataset):
            return distributed.batch_sampler(rows, batch_size, drop_last, **options)

        return WeightedBatchSampler(dataset, weights, batches, options.get("seed", 0))


class MultiDatasetSampler:
    """The trainer's ``multi_dataset_batch_sampler`` function for ``mix`` (see the module docstring);
    a class, not a closure, because the trainer pickles its arguments with every checkpoint."""

    def __init__(self, mix: str) -> None:
        if mix not in MIXES:
            raise EmbedtuneError(f"unknown mix '{mix}' (choose from {', '.join(MIXES)})")
        self.mix = mix

    def __call__(self, dataset, batch_samplers: list, generator: Generator | None = None, seed: int = 0):
        from sentence_transformers.base.sampler import ProportionalBatchSampler, RoundRobinBatchSampler

        cls = ProportionalBatchSampler if self.mix == "proportional" else RoundRobinBatchSampler
        processes = distributed.world_size()
        if processes == 1:
            return cls(dataset, batch_samplers, generator=generator, seed=seed)
        grouped = [_Grouped(sampler, processes) for sampler in batch_samplers]
        return distributed.SlicedBatchSampler(cls(dataset, grouped, generator=generator, seed=seed), processes)


class _Grouped:
    """A sliced (DDP) batch sampler whose N consecutive slices are joined into their global batch again."""

    def __init__(self, sampler, processes: int) -> None:
        self.sampler, self.processes = sampler, processes
        self.batch_size = sampler.batch_size * processes
        self.drop_last = True

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) // self.processes

    def __iter__(self) -> Iterator[list[int]]:
        slices = iter(self.sampler)
        for first in slices:
            yield first + [i for _ in range(self.processes - 1) for i in next(slices)]


def epoch_rows(mix: str, sizes: Sequence[int]) -> int:
    """The rows one epoch goes through: all of them (proportional), or as many from each dataset as the
    smallest has (round-robin stops when the smallest runs out). The schedule counts these."""
    if len(sizes) <= 1 or mix == "proportional":
        return sum(sizes)
    return len(sizes) * min(sizes)
